import Foundation

/// One IDX file, the container of MNIST and Fashion-MNIST.
///
/// Layout (big-endian): two zero bytes, a type byte (0x08 = unsigned byte, the only type
/// read here), the number of dimensions `d`, then `d` UInt32 sizes, then the values in
/// row-major order. The first four bytes read as one UInt32 are the magic number:
/// 0x00000803 for `[count, rows, columns]` images, 0x00000801 for `[count]` labels.
/// Files may be gzip-compressed (`.gz`) or plain.
public struct IDXFile: Sendable {
    /// Magic number of an unsigned-byte IDX file of rank 3 (images).
    public static let imagesMagic: UInt32 = 0x0000_0803
    /// Magic number of an unsigned-byte IDX file of rank 1 (labels).
    public static let labelsMagic: UInt32 = 0x0000_0801

    public let path: String
    /// The sizes from the header, outermost first.
    public let dimensions: [Int]
    /// The payload: `dimensions.reduce(1, *)` bytes in row-major order.
    public let values: [UInt8]

    /// Reads and validates `path`: the magic number must be `magic` and the (decompressed)
    /// size must be exactly the header plus the product of the dimensions.
    public init(contentsOf path: String, magic: UInt32) throws {
        var bytes = try DataFile.decompressedContents(of: path)
        guard bytes.count >= 4 else { throw DataError.truncated(path: path, expectedBytes: 4, actualBytes: bytes.count) }
        let found = IDXFile.bigEndian(bytes, at: 0)
        guard found == magic else { throw DataError.badMagic(path: path, expected: magic, found: found) }
        let rank = Int(magic & 0xFF)
        let headerSize = 4 + 4 * rank
        guard bytes.count >= headerSize else {
            throw DataError.truncated(path: path, expectedBytes: headerSize, actualBytes: bytes.count)
        }
        let dimensions = (0 ..< rank).map { Int(IDXFile.bigEndian(bytes, at: 4 + 4 * $0)) }
        var payload = 1
        for size in dimensions {
            let (product, overflow) = payload.multipliedReportingOverflow(by: size)
            guard !overflow else { throw DataError.wrongDimensions(path: path, reason: "\(dimensions) is too large") }
            payload = product
        }
        let expected = headerSize + payload
        guard bytes.count >= expected else {
            throw DataError.truncated(path: path, expectedBytes: expected, actualBytes: bytes.count)
        }
        guard bytes.count == expected else {
            throw DataError.badSize(path: path, reason: "\(bytes.count - expected) bytes after the \(expected) that "
                                        + "a \(dimensions.map(String.init).joined(separator: "×")) IDX file holds")
        }
        bytes.removeFirst(headerSize)
        self.path = path
        self.dimensions = dimensions
        self.values = bytes
    }

    private static func bigEndian(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        bytes[offset ..< offset + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }
}

extension ImageDataset {
    /// A single-channel data set from an IDX image file (`[count, height, width]`) and an IDX
    /// label file (`[count]`), each gzip-compressed or plain. Labels must lie in
    /// `0 ..< classCount`.
    public static func loadIDX(images: String, labels: String, name: String,
                               classCount: Int = 10) throws -> ImageDataset {
        let imageFile = try IDXFile(contentsOf: images, magic: IDXFile.imagesMagic)
        let labelFile = try IDXFile(contentsOf: labels, magic: IDXFile.labelsMagic)
        let count = imageFile.dimensions[0], height = imageFile.dimensions[1], width = imageFile.dimensions[2]
        guard height > 0, width > 0 else {
            throw DataError.wrongDimensions(path: images, reason: "images of \(height)×\(width) pixels")
        }
        guard labelFile.dimensions[0] == count else {
            throw DataError.countMismatch(imagesPath: images, imageCount: count,
                                          labelsPath: labels, labelCount: labelFile.dimensions[0])
        }
        for (index, label) in labelFile.values.enumerated() where Int(label) >= classCount {
            throw DataError.labelOutOfRange(path: labels, index: index, label: Int(label), classCount: classCount)
        }
        return ImageDataset(name: name, channels: 1, height: height, width: width, classCount: classCount,
                            pixels: imageFile.values, labels: labelFile.values.map { Int32($0) })
    }
}

/// Which half of a data set with a fixed train/test split to load.
public enum DatasetSplit: String, Sendable, CaseIterable {
    case train
    case test
}

/// Fashion-MNIST (and, with its directory, MNIST): 28×28 greyscale images in 10 classes,
/// 60,000 for training and 10,000 for testing, stored as the four standard IDX files
/// `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
/// `t10k-labels-idx1-ubyte`, each optionally gzip-compressed (`.gz`).
public enum FashionMNIST {
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"

    /// The label names, indexed by label.
    public static let classNames = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

    /// Loads `split` from `directory`, preferring `<file>.gz` and falling back to `<file>`.
    /// The data set is named after the directory and split, e.g. `"fashion-mnist-train"`.
    public static func load(split: DatasetSplit, directory: String = defaultDirectory) throws -> ImageDataset {
        let (images, labels) = try files(split: split, directory: directory)
        let directoryName = directory.split(separator: "/").last.map(String.init) ?? "idx"
        return try ImageDataset.loadIDX(images: images, labels: labels, name: "\(directoryName)-\(split.rawValue)")
    }

    /// The number of examples in `split` and its class count, from the labels file alone (a
    /// process that never reads an image, such as the cluster coordinator, needs no more).
    public static func count(split: DatasetSplit, directory: String = defaultDirectory) throws -> (examples: Int, classes: Int) {
        let labels = try IDXFile(contentsOf: try files(split: split, directory: directory).labels, magic: IDXFile.labelsMagic)
        return (labels.dimensions.first ?? 0, classNames.count)
    }

    /// The image and label files `load` reads for `split` (what a data fingerprint covers).
    public static func files(split: DatasetSplit, directory: String = defaultDirectory) throws -> (images: String, labels: String) {
        let prefix = split == .train ? "train" : "t10k"
        return (try locate("\(prefix)-images-idx3-ubyte", in: directory), try locate("\(prefix)-labels-idx1-ubyte", in: directory))
    }

    private static func locate(_ file: String, in directory: String) throws -> String {
        let base = directory.hasSuffix("/") ? directory + file : directory + "/" + file
        for candidate in [base + ".gz", base] where access(candidate, F_OK) == 0 { return candidate }
        throw DataError.missingFile(path: base + "[.gz]")
    }
}
