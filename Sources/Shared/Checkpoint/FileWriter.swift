#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A destination for serialized bytes: an in-memory array or an open file.
///
/// Serializers are generic over the sink so that one code path both builds small byte arrays
/// (tests, network messages) and streams large checkpoints to disk without an intermediate copy.
public protocol ByteSink {
    /// What `write` can throw: `Never` for memory, `CheckpointError` for files.
    associatedtype Failure: Error
    mutating func write(_ bytes: UnsafeRawBufferPointer) throws(Failure)
}

extension Array: ByteSink where Element == UInt8 {
    public mutating func write(_ bytes: UnsafeRawBufferPointer) {
        append(contentsOf: bytes)
    }
}

/// Writes to an open file descriptor, retrying short and interrupted writes.
///
/// Obtained from `FileWriter.writeAtomically(to:_:)`, which owns the descriptor.
public struct FileWriter: ByteSink {
    public let fd: Int32
    /// The file being written, for error messages.
    public let path: String

    public mutating func write(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        guard var next = bytes.baseAddress else { return }
        var left = bytes.count
        while left > 0 {
            let written = systemWrite(fd, next, left)
            if written < 0 {
                if errno == EINTR { continue }
                throw .io(path: path, operation: "write", errno: errno)
            }
            next += written
            left -= written
        }
    }
}

/// `write(2)`, out of reach of `FileWriter.write`'s name.
private func systemWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, bytes, count)
}
