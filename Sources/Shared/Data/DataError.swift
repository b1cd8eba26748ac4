/// Why a data set, data file or image could not be loaded.
///
/// Every case carries the path of the offending file or directory, and every description
/// names it together with the problem, so a failure deep inside a training run can be
/// traced to one file without a debugger.
public enum DataError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Nothing exists at `path`.
    case missingFile(path: String)
    /// `path` exists but could not be opened or read (permissions, I/O or compression error).
    case unreadable(path: String, reason: String)
    /// `path` ends before the `expectedBytes` its header or format promises.
    case truncated(path: String, expectedBytes: Int, actualBytes: Int)
    /// `path` has a size its format cannot have (trailing bytes, not a whole number of records).
    case badSize(path: String, reason: String)
    /// The leading magic number of `path` is not the one its format requires.
    case badMagic(path: String, expected: UInt32, found: UInt32)
    /// The dimensions recorded in or implied by `path` are not the ones expected.
    case wrongDimensions(path: String, reason: String)
    /// Record `index` of `path` has a label outside `0 ..< classCount`.
    case labelOutOfRange(path: String, index: Int, label: Int, classCount: Int)
    /// An image file and its label file disagree on how many records they hold.
    case countMismatch(imagesPath: String, imageCount: Int, labelsPath: String, labelCount: Int)
    /// The image at `path` is damaged: bad structure, truncated data, decoder complaint.
    case corruptImage(path: String, reason: String)
    /// The image at `path` is well formed but uses a feature this loader does not decode.
    case unsupportedImage(path: String, reason: String)
    /// The directory at `path` does not contain what a data set needs there.
    case badDirectory(path: String, reason: String)

    public var description: String {
        switch self {
        case let .missingFile(path):
            return "\(path): no such file or directory"
        case let .unreadable(path, reason):
            return "\(path): cannot be read: \(reason)"
        case let .truncated(path, expected, actual):
            return "\(path): truncated: expected \(expected) bytes, found \(actual)"
        case let .badSize(path, reason):
            return "\(path): wrong size: \(reason)"
        case let .badMagic(path, expected, found):
            return "\(path): bad magic number \(hex(found)), expected \(hex(expected))"
        case let .wrongDimensions(path, reason):
            return "\(path): wrong dimensions: \(reason)"
        case let .labelOutOfRange(path, index, label, classCount):
            return "\(path): label \(label) of record \(index) is outside 0..<\(classCount)"
        case let .countMismatch(imagesPath, imageCount, labelsPath, labelCount):
            return "\(imagesPath) holds \(imageCount) images but \(labelsPath) holds \(labelCount) labels"
        case let .corruptImage(path, reason):
            return "\(path): corrupt image: \(reason)"
        case let .unsupportedImage(path, reason):
            return "\(path): unsupported image: \(reason)"
        case let .badDirectory(path, reason):
            return "\(path): \(reason)"
        }
    }

    private func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }
}
