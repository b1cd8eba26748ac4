import Foundation
import ArgumentParser
import NeuMeta

/// The data an INR checkpoint's sampled networks are tested on: the test split of the data set
/// it was trained on (recorded in the checkpoint, or named with --dataset; an image folder's
/// `val` split at the networks' image size), and the training split too when its networks have
/// batch norm to recalibrate.
struct SampledNetworkData {
    let dataset: DatasetSpec
    let directory: String
    let test: any TrainingImages
    let train: (any TrainingImages)?

    init(checkpoint: INRCheckpoint, dataset name: String?, directory: String?) throws {
        let recorded = name ?? checkpoint.extra["dataset"] ?? ClusterConfig.Dataset.fashionMNIST.rawValue
        guard let kind = ClusterConfig.Dataset(rawValue: recorded) else {
            throw ValidationError("unknown dataset '\(recorded)' (known: \(ClusterConfig.Dataset.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard let directory = directory ?? (kind == .fashionMNIST ? FashionMNIST.defaultDirectory : nil) else {
            throw ValidationError("the INR was trained on \(kind.rawValue): name its directory with --data")
        }
        dataset = DatasetSpec(kind: kind, imageSize: kind == .folder ? checkpoint.morph.imageSize : nil, augment: false)
        if let problem = dataset.problem { throw ValidationError("the INR's networks cannot be tested on \(kind.rawValue) data: \(problem)") }
        self.directory = directory
        let data = LocalTrainingData(kind: kind, directory: directory, prefetch: 0)
        test = try data.test(dataset, mean: checkpoint.mean, std: checkpoint.std, classCount: checkpoint.classCount)
        let hasBatchNorm = checkpoint.base.specs.contains { $0.role == .runningMean }
        train = hasBatchNorm ? try data.training(dataset, mean: checkpoint.mean, std: checkpoint.std) : nil
    }

    /// Recomputes the batch-norm statistics of a sampled network (nothing without batch norm).
    func recalibrate(_ network: Network, _ weights: ParameterSet, checkpoint: INRCheckpoint, batches: Int) throws {
        guard let train else { return }
        try BatchNormRecalibration.recalibrate(network: network, parameters: weights, data: train, mean: checkpoint.mean, std: checkpoint.std,
                                               batches: batches, batchSize: checkpoint.plan.batchSize, seed: checkpoint.plan.seed)
    }
}

/// One INR's sampled networks under test, and the training-free baselines made from its base.
struct SampledVariant {
    let checkpoint: INRCheckpoint
    let generator: NetworkGenerator
    let sets: SampledNetworkData
    /// Training batches a network with batch norm has its running statistics recomputed on.
    let recalibrationBatches: Int

    /// `dataset`/`directory` as `SampledNetworkData`'s; `ema: false` samples from the raw
    /// last-step INR parameters.
    init(_ checkpoint: INRCheckpoint, dataset: String? = nil, directory: String?, ema: Bool = true,
         recalibrationBatches: Int = BatchNormRecalibration.defaultBatches) throws {
        self.checkpoint = checkpoint
        generator = checkpoint.makeGenerator(ema: ema)
        sets = try SampledNetworkData(checkpoint: checkpoint, dataset: dataset, directory: directory)
        self.recalibrationBatches = recalibrationBatches
    }

    /// Test accuracy of a network that was never trained at its width (sampled, pruned or
    /// resampled). Its batch-norm statistics, if it has any, are recomputed first: all such
    /// networks get the same data-dependent step, so a table compares what they are made of.
    func testAccuracy(_ network: Network, _ weights: ParameterSet) throws -> Double {
        try sets.recalibrate(network, weights, checkpoint: checkpoint, batches: recalibrationBatches)
        return try BaseTrainer.accuracy(network: network, parameters: weights, data: sets.test, mean: checkpoint.mean, std: checkpoint.std)
    }

    /// Test accuracy of the width-`width` network averaged over `samples` noise draws (K),
    /// with the network and its weights.
    func accuracy(width: Int, samples: Int, seed: UInt64) throws -> (accuracy: Double, parameters: Int, network: Network, weights: ParameterSet) {
        let (network, weights) = try generator.sample(width: width, samples: samples, noise: checkpoint.plan.noise, seed: seed)
        return (try testAccuracy(network, weights), network.parameterSpecs.reduce(0) { $0 + $1.count }, network, weights)
    }

    /// Test accuracy of the permuted base network resampled to `width` (outputs averaged,
    /// inputs summed; no INR): what intra-model smoothness alone gives.
    func resampledBaseAccuracy(width: Int) throws -> Double {
        let network = try checkpoint.morph.network(width: width, classCount: checkpoint.classCount)
        let resampled = network.makeParameters()
        PretrainedResampling.resample(checkpoint.base, into: resampled)
        return try testAccuracy(network, resampled)
    }
}
