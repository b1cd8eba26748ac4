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
