import Foundation
import ArgumentParser
import NeuMeta

/// The data sets INR training reads (`experiment.dataset`): Fashion-MNIST's IDX files or the
/// CIFAR binary batches, in their standard layouts under `experiment.data`.
extension ClusterConfig.Dataset {
    var cifarVariant: CIFAR.Variant? {
        switch self {
        case .fashionMNIST: nil
        case .cifar10: .cifar10
        case .cifar100: .cifar100
        }
    }

    func load(split: DatasetSplit, directory: String) throws -> ImageDataset {
        guard let variant = cifarVariant else { return try FashionMNIST.load(split: split, directory: directory) }
        return try CIFAR.load(split: split, directory: directory, variant: variant)
    }

    /// Images and classes of `split`, from the file sizes (nothing is decoded).
    func count(split: DatasetSplit, directory: String) throws -> (examples: Int, classes: Int) {
        guard let variant = cifarVariant else { return try FashionMNIST.count(split: split, directory: directory) }
        var bytes = 0
        for path in files(split: split, directory: directory) {
            var info = stat()
            guard stat(path, &info) == 0 else { throw DataError.unreadable(path: path, reason: String(cString: strerror(errno))) }
            bytes += Int(info.st_size)
        }
        return (bytes / variant.recordSize, variant.classCount)
    }

    /// The fingerprint workers compare their training data with.
    func fingerprint(directory: String) throws -> DataFingerprint {
        guard let variant = cifarVariant else { return try DataFingerprint.fashionMNIST(directory: directory) }
        return try DataFingerprint.of(dataset: "\(variant.rawValue)-train", paths: files(split: .train, directory: directory))
    }

    private func files(split: DatasetSplit, directory: String) -> [String] {
        let base = directory.hasSuffix("/") ? directory : directory + "/"
        return (cifarVariant?.fileNames(split: split) ?? []).map { base + $0 }
    }
}

/// The data an INR checkpoint's sampled networks are tested on: the test split of the data set
/// it was trained on (recorded in the checkpoint, or named with --dataset), and the training
/// split too when its networks have batch norm to recalibrate.
struct SampledNetworkData {
    let dataset: ClusterConfig.Dataset
    let test: ImageDataset
    let train: ImageDataset?

    init(checkpoint: INRCheckpoint, dataset name: String?, directory: String?) throws {
        let recorded = name ?? checkpoint.extra["dataset"] ?? ClusterConfig.Dataset.fashionMNIST.rawValue
        guard let dataset = ClusterConfig.Dataset(rawValue: recorded) else {
            throw ValidationError("unknown dataset '\(recorded)' (known: \(ClusterConfig.Dataset.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard let directory = directory ?? (dataset == .fashionMNIST ? FashionMNIST.defaultDirectory : nil) else {
            throw ValidationError("the INR was trained on \(dataset.rawValue): name its directory with --data")
        }
        self.dataset = dataset
        test = try dataset.load(split: .test, directory: directory)
        let hasBatchNorm = checkpoint.base.specs.contains { $0.role == .runningMean }
        train = hasBatchNorm ? try dataset.load(split: .train, directory: directory) : nil
    }

    /// Recomputes the batch-norm statistics of a sampled network (nothing without batch norm).
    func recalibrate(_ network: Network, _ weights: ParameterSet, checkpoint: INRCheckpoint, batches: Int) throws {
        guard let train else { return }
        try BatchNormRecalibration.recalibrate(network: network, parameters: weights, data: train, mean: checkpoint.mean, std: checkpoint.std,
                                               batches: batches, batchSize: checkpoint.plan.batchSize, seed: checkpoint.plan.seed)
    }
}
