import Foundation

/// Which training data a job reads and how its batches are made: the data set's kind and, for an
/// image folder, the side of the square batch images and whether training batches are
/// augmented. It travels in the job spec, so every worker opens its own copy of the data as the
/// coordinator describes it (`LocalTrainingData`).
public struct DatasetSpec: Sendable, Equatable, Codable {
    /// Data set kinds by their `experiment.dataset` names.
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// The four IDX files of Fashion-MNIST (or MNIST), held in memory.
        case fashionMNIST = "fashion-mnist"
        /// CIFAR binary batches, held in memory.
        case cifar10, cifar100
        /// An ImageNet-style image folder, `DIR/train/<class>/…` (evaluated on `DIR/val`).
        case folder

        /// The kind of data in `directory`: a folder where `directory/train` is a directory,
        /// CIFAR-10 or CIFAR-100 where their first training file is present, else Fashion-MNIST.
        public static func detect(directory: String) -> Kind {
            let base = directory.hasSuffix("/") ? directory : directory + "/"
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: base + "train", isDirectory: &isDirectory), isDirectory.boolValue { return .folder }
            if access(base + "data_batch_1.bin", F_OK) == 0 { return .cifar10 }
            if access(base + "train.bin", F_OK) == 0 { return .cifar100 }
            return .fashionMNIST
        }

        var cifarVariant: CIFAR.Variant? { self == .cifar10 ? .cifar10 : self == .cifar100 ? .cifar100 : nil }
    }

    public var kind: Kind
    /// Folder: the side of the square images of a batch (nil for the kinds held in memory, whose
    /// images keep their stored size).
    public var imageSize: Int?
    /// Folder: training batches are random-resized crops flipped at random (torchvision's
    /// `RandomResizedCrop` + `RandomHorizontalFlip`), drawn from the configuration's augmentation
    /// seed, a function of (seed, round, configuration); false: resize and centre crop, as for
    /// evaluation.
    public var augment: Bool

    public init(kind: Kind = .fashionMNIST, imageSize: Int? = nil, augment: Bool = true) {
        self.kind = kind; self.imageSize = imageSize; self.augment = augment
    }

    /// What is wrong with this spec (nil: nothing): a folder needs an image size in 1…4096;
    /// the other kinds take none.
    public var problem: String? {
        switch (kind, imageSize) {
        case (.folder, nil): "an image folder needs an image size"
        case (.folder, let size?) where !(1...4096).contains(size): "image size \(size) is outside 1…4096"
        case (.folder, _), (_, nil): nil
        case (_, let size?): "\(kind.rawValue) images keep their stored size; image size \(size) does not apply"
        }
    }
}

/// A process's own copy of the training data in `directory`: its fingerprint (what a worker's
/// hello carries and the coordinator's job spec holds), its size, and the training and test
/// sets a job asks for. Listing an image folder reads no image; training either streams it
/// (`StreamingImageFolder`, `prefetch` batches decoded ahead on background threads, memory
/// independent of the folder's size) or, with `inMemory`, decodes it once
/// (`MemoryImageFolder`). Either way a batch is the same bits. The listing and the fingerprint
/// are made when first needed, once.
public final class LocalTrainingData: @unchecked Sendable {
    public let kind: DatasetSpec.Kind
    public let directory: String
    /// The fingerprint of a folder covers its images' bytes, not only their names and sizes.
    public let contentHashes: Bool
    /// Batches a streamed folder decodes ahead (0: each batch when it is asked for).
    public let prefetch: Int
    /// Decode an image folder into memory once instead of streaming it.
    public let inMemory: Bool
    private let lock = NSLock()
    /// The training split's listing (folder), once made.
    private var madeListing: ImageFolderDataset?
    private var madeFingerprint: DataFingerprint?
    /// The training set last opened, and what it was opened for.
    private var opened: (spec: DatasetSpec, mean: [Float], std: [Float], images: any TrainingImages)?

    public init(kind: DatasetSpec.Kind, directory: String, contentHashes: Bool = false, prefetch: Int = 8, inMemory: Bool = false) {
        precondition(prefetch >= 0, "prefetch depth \(prefetch)")
        self.kind = kind; self.directory = directory; self.contentHashes = contentHashes; self.prefetch = prefetch; self.inMemory = inMemory
    }

    /// The training split's listing (folder).
    private func listing() throws -> ImageFolderDataset {
        lock.lock(); defer { lock.unlock() }
        if let madeListing { return madeListing }
        let folder = try ImageFolderDataset(root: directory, split: "train")
        madeListing = folder
        return folder
    }

    /// The training split's fingerprint: names, sizes and BLAKE2b of the files of the kinds held
    /// in memory; for a folder one entry per class over names and sizes, and with
    /// `contentHashes` the bytes of every image too.
    public func fingerprint() throws -> DataFingerprint {
        if let made = lock.withLock({ madeFingerprint }) { return made }
        let fingerprint: DataFingerprint
        switch kind {
        case .folder:
            fingerprint = try DataFingerprint.imageFolder(try listing(), contentHashes: contentHashes)
        case .cifar10, .cifar100:
            let variant = kind.cifarVariant!, base = directory.hasSuffix("/") ? directory : directory + "/"
            fingerprint = try DataFingerprint.of(dataset: "\(variant.rawValue)-train", paths: variant.fileNames(split: .train).map { base + $0 })
        case .fashionMNIST:
            fingerprint = try DataFingerprint.fashionMNIST(directory: directory)
        }
        lock.withLock { madeFingerprint = fingerprint }
        return fingerprint
    }

    /// Training examples and classes, without reading an image.
    public func count() throws -> (examples: Int, classes: Int) {
        switch kind {
        case .folder:
            let folder = try listing()
            return (folder.count, folder.classNames.count)
        case .cifar10, .cifar100: return try CIFAR.count(split: .train, directory: directory, variant: kind.cifarVariant!)
        case .fashionMNIST: return try FashionMNIST.count(split: .train, directory: directory)
        }
    }

    /// The training set as `spec` describes it, normalised with `mean` and `std`; opened once
    /// and handed out again while the same is asked for.
    public func training(_ spec: DatasetSpec, mean: [Float], std: [Float]) throws -> any TrainingImages {
        try check(spec)
        let folder = kind == .folder ? try listing() : nil
        lock.lock(); defer { lock.unlock() }
        if let opened, opened.spec == spec, opened.mean == mean, opened.std == std { return opened.images }
        opened = nil  // the old one's memory goes before the new one's comes
        let images: any TrainingImages
        switch kind {
        case .folder:
            let transform: ImageTransform = spec.augment ? .train : .eval
            images = inMemory ? try MemoryImageFolder(folder: folder!, transform: transform, size: spec.imageSize!)
                : StreamingImageFolder(folder: folder!, transform: transform, size: spec.imageSize!, mean: mean, std: std, depth: prefetch)
        case .cifar10, .cifar100: images = try CIFAR.load(split: .train, directory: directory, variant: kind.cifarVariant!)
        case .fashionMNIST: images = try FashionMNIST.load(split: .train, directory: directory)
        }
        opened = (spec, mean, std, images)
        return images
    }

    /// The test set (a folder's `val` split, resized and centre-cropped to the spec's size),
    /// which must have `classCount` classes.
    public func test(_ spec: DatasetSpec, mean: [Float], std: [Float], classCount: Int) throws -> any TrainingImages {
        try check(spec)
        switch kind {
        case .folder:
            let folder = try ImageFolderDataset(root: directory, split: "val")
            guard folder.classNames.count == classCount else {
                throw DataError.badDirectory(path: folder.directory, reason: "has \(folder.classNames.count) classes, the training data \(classCount) "
                                             + "(labels follow the sorted class names, so both splits need every class)")
            }
            return StreamingImageFolder(folder: folder, transform: .eval, size: spec.imageSize!, mean: mean, std: std, depth: 0)
        case .cifar10, .cifar100: return try CIFAR.load(split: .test, directory: directory, variant: kind.cifarVariant!)
        case .fashionMNIST: return try FashionMNIST.load(split: .test, directory: directory)
        }
    }

    private func check(_ spec: DatasetSpec) throws {
        guard spec.kind == kind else {
            throw DataError.badDirectory(path: directory, reason: "holds \(kind.rawValue) data, not the \(spec.kind.rawValue) data asked for")
        }
        if let problem = spec.problem { throw DataError.badDirectory(path: directory, reason: problem) }
    }
}
