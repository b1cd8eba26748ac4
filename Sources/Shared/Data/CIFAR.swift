import Foundation

/// CIFAR-10 and CIFAR-100 in their binary distribution: files of fixed-size records, each
/// the label byte(s) followed by a 32×32 colour image as 1024 red, 1024 green and 1024 blue
/// bytes (rows top to bottom) — already the `[channels, height, width]` order of
/// `ImageDataset`.
///
/// CIFAR-10 records are 1 + 3072 bytes (label 0..<10). CIFAR-100 records are 2 + 3072 bytes:
/// a coarse label (0..<20) then the fine label (0..<100), which is the one used.
public enum CIFAR {
    public enum Variant: String, Sendable, CaseIterable {
        case cifar10
        case cifar100

        /// Label bytes before each image.
        public var labelBytes: Int { self == .cifar10 ? 1 : 2 }
        /// Classes of the label that is loaded (the fine label for CIFAR-100).
        public var classCount: Int { self == .cifar10 ? 10 : 100 }
        /// Bytes per record: labels plus a 3×32×32 image.
        public var recordSize: Int { labelBytes + CIFAR.imageSize }

        /// The files of `split` in the standard directory layout
        /// (`cifar-10-batches-bin`, `cifar-100-binary`).
        public func fileNames(split: DatasetSplit) -> [String] {
            switch (self, split) {
            case (.cifar10, .train): return (1 ... 5).map { "data_batch_\($0).bin" }
            case (.cifar10, .test): return ["test_batch.bin"]
            case (.cifar100, .train): return ["train.bin"]
            case (.cifar100, .test): return ["test.bin"]
            }
        }
    }

    public static let channels = 3
    public static let side = 32
    /// Bytes of one image: 3 × 32 × 32.
    public static let imageSize = channels * side * side

    /// The records of `files`, concatenated in order, as one data set called `name`.
    /// Each file's size must be a whole, non-zero number of records and every label in range.
    public static func load(files: [String], variant: Variant, name: String) throws -> ImageDataset {
        var pixels: [UInt8] = []
        var labels: [Int32] = []
        for path in files {
            let bytes = try DataFile.contents(of: path)
            let record = variant.recordSize
            guard !bytes.isEmpty, bytes.count % record == 0 else {
                throw DataError.badSize(
                    path: path, reason: "\(bytes.count) bytes is not a whole, non-zero number of "
                        + "\(record)-byte \(variant.rawValue) records")
            }
            let records = bytes.count / record
            pixels.reserveCapacity(pixels.count + records * imageSize)
            labels.reserveCapacity(labels.count + records)
            for index in 0 ..< records {
                let start = index * record
                if variant == .cifar100, bytes[start] >= 20 {
                    throw DataError.labelOutOfRange(path: path, index: index, label: Int(bytes[start]), classCount: 20)
                }
                let label = Int(bytes[start + variant.labelBytes - 1])
                guard label < variant.classCount else {
                    throw DataError.labelOutOfRange(path: path, index: index, label: label,
                                                    classCount: variant.classCount)
                }
                labels.append(Int32(label))
                pixels.append(contentsOf: bytes[start + variant.labelBytes ..< start + record])
            }
        }
        return ImageDataset(name: name, channels: channels, height: side, width: side,
                            classCount: variant.classCount, pixels: pixels, labels: labels)
    }

    /// `split` from `directory` in the standard layout (see `Variant.fileNames(split:)`),
    /// named e.g. `"cifar10-train"`.
    public static func load(split: DatasetSplit, directory: String, variant: Variant) throws -> ImageDataset {
        let base = directory.hasSuffix("/") ? directory : directory + "/"
        return try load(files: variant.fileNames(split: split).map { base + $0 }, variant: variant,
                        name: "\(variant.rawValue)-\(split.rawValue)")
    }

    /// The number of records in `split` and the class count, from the files' sizes alone.
    public static func count(split: DatasetSplit, directory: String, variant: Variant) throws -> (examples: Int, classes: Int) {
        let base = directory.hasSuffix("/") ? directory : directory + "/"
        var records = 0
        for name in variant.fileNames(split: split) {
            var info = stat()
            guard stat(base + name, &info) == 0 else { throw DataError.missingFile(path: base + name) }
            guard info.st_size > 0, Int(info.st_size) % variant.recordSize == 0 else {
                throw DataError.badSize(path: base + name, reason: "\(info.st_size) bytes is not a whole, non-zero number of "
                                        + "\(variant.recordSize)-byte \(variant.rawValue) records")
            }
            records += Int(info.st_size) / variant.recordSize
        }
        return (records, variant.classCount)
    }
}
