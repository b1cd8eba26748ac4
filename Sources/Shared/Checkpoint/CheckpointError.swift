import Foundation

/// Every failure of checkpoint I/O: reading, validating, writing and verifying safetensors files.
///
/// Each case carries the path it concerns, and `description` always names it, so a log line
/// alone says which file is bad and why.
public enum CheckpointError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A system call failed; `errno` is the C error code it left.
    case io(path: String, operation: String, errno: Int32)
    /// The file is not a well-formed safetensors file.
    case malformed(path: String, problem: Problem)
    /// Verification was asked for, but the header has no `blake2b` metadata entry.
    case digestMissing(path: String)
    /// The BLAKE2b of the data buffer differs from the `blake2b` recorded in the header.
    case digestMismatch(path: String, expected: String, actual: String)

    /// What is wrong with a malformed safetensors file.
    public enum Problem: Equatable, Sendable, CustomStringConvertible {
        case fileTooShort(size: Int)
        case headerTooLarge(length: UInt64, limit: Int)
        case headerExceedsFile(length: UInt64, fileSize: Int)
        case headerNotUTF8
        /// The header is not valid JSON; the payload says where and why.
        case headerNotJSON(String)
        case headerNotObject
        /// An object in the header names the same key twice (e.g. two tensors of one name).
        case duplicateKey(String)
        case metadataNotObject
        case metadataValueNotString(key: String)
        case entryNotObject(tensor: String)
        case missingDType(tensor: String)
        case unknownDType(tensor: String, dtype: String)
        /// `shape` is missing, not a list, holds a non-integer or negative entry, or overflows.
        case invalidShape(tensor: String)
        /// `data_offsets` is missing or not `[begin, end]` with integers `0 <= begin <= end`.
        case invalidOffsets(tensor: String)
        /// `end - begin` differs from `product(shape) * dtype size`.
        case sizeMismatch(tensor: String, expected: Int, actual: Int)
        case offsetsOutOfBounds(tensor: String, end: Int, dataSize: Int)
        case overlap(String, String)
        /// Bytes `begin ..< end` of the data buffer belong to no tensor.
        case uncoveredData(begin: Int, end: Int)

        public var description: String {
            switch self {
            case .fileTooShort(let size):
                return "file is \(size) bytes, shorter than the 8-byte header length"
            case .headerTooLarge(let length, let limit):
                return "header length \(length) exceeds the \(limit)-byte limit"
            case .headerExceedsFile(let length, let fileSize):
                return "header length \(length) runs past the end of the \(fileSize)-byte file"
            case .headerNotUTF8:
                return "header is not valid UTF-8"
            case .headerNotJSON(let why):
                return "header is not valid JSON: \(why)"
            case .headerNotObject:
                return "header is not a JSON object"
            case .duplicateKey(let key):
                return "header repeats the key \"\(key)\""
            case .metadataNotObject:
                return "__metadata__ is not an object"
            case .metadataValueNotString(let key):
                return "__metadata__ value for \"\(key)\" is not a string"
            case .entryNotObject(let tensor):
                return "entry for tensor \"\(tensor)\" is not an object"
            case .missingDType(let tensor):
                return "tensor \"\(tensor)\" has no dtype"
            case .unknownDType(let tensor, let dtype):
                return "tensor \"\(tensor)\" has unsupported dtype \"\(dtype)\""
            case .invalidShape(let tensor):
                return "tensor \"\(tensor)\" has no valid shape (a list of non-negative integers)"
            case .invalidOffsets(let tensor):
                return "tensor \"\(tensor)\" has no valid data_offsets ([begin, end], 0 <= begin <= end)"
            case .sizeMismatch(let tensor, let expected, let actual):
                return "tensor \"\(tensor)\" spans \(actual) bytes but its shape and dtype need \(expected)"
            case .offsetsOutOfBounds(let tensor, let end, let dataSize):
                return "tensor \"\(tensor)\" ends at byte \(end), past the \(dataSize)-byte data buffer"
            case .overlap(let a, let b):
                return "tensors \"\(a)\" and \"\(b)\" overlap in the data buffer"
            case .uncoveredData(let begin, let end):
                return "data buffer bytes \(begin)..<\(end) belong to no tensor"
            }
        }
    }

    /// The file the error concerns.
    public var path: String {
        switch self {
        case .io(let path, _, _), .malformed(let path, _), .digestMissing(let path),
             .digestMismatch(let path, _, _):
            return path
        }
    }

    public var description: String {
        switch self {
        case .io(let path, let operation, let code):
            return "\(path): \(operation) failed: \(String(cString: strerror(code)))"
        case .malformed(let path, let problem):
            return "\(path): malformed safetensors file: \(problem)"
        case .digestMissing(let path):
            return "\(path): no blake2b digest in the safetensors metadata"
        case .digestMismatch(let path, let expected, let actual):
            return "\(path): data digest mismatch: header records blake2b \(expected), data hashes to \(actual)"
        }
    }
}
