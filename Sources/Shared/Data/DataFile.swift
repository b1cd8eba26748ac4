import CZlib
import Foundation

/// Whole-file reads for the data loaders, with every failure mapped to a `DataError` that
/// names the file.
enum DataFile {
    /// The bytes of `path`, exactly as stored.
    static func contents(of path: String) throws -> [UInt8] {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { throw openError(path) }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw DataError.unreadable(path: path, reason: systemMessage()) }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw DataError.unreadable(path: path, reason: "not a regular file")
        }
        let size = Int(info.st_size)
        var bytes = [UInt8](repeating: 0, count: size)
        var filled = 0
        while filled < size {
            let got = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + filled, size - filled) }
            if got < 0 {
                if errno == EINTR { continue }
                throw DataError.unreadable(path: path, reason: systemMessage())
            }
            if got == 0 { break }
            filled += got
        }
        guard filled == size else {
            throw DataError.unreadable(path: path, reason: "file shrank from \(size) to \(filled) bytes while reading")
        }
        return bytes
    }

    /// The bytes of `path` after gzip decompression; a file that is not gzip-compressed is
    /// returned as stored (zlib's transparent mode), so `.gz` and plain copies read alike.
    static func decompressedContents(of path: String) throws -> [UInt8] {
        guard let file = gzopen(path, "rb") else { throw openError(path) }
        defer { gzclose(file) }
        gzbuffer(file, 1 << 18)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let got = chunk.withUnsafeMutableBytes { gzread(file, $0.baseAddress, UInt32($0.count)) }
            if got <= 0 { break }
            bytes.append(contentsOf: chunk[0 ..< Int(got)])
        }
        var code: Int32 = Z_OK
        let message = gzerror(file, &code).map { String(cString: $0) } ?? "unknown zlib error"
        switch code {
        case Z_OK:
            return bytes
        case Z_BUF_ERROR:
            throw DataError.unreadable(
                path: path, reason: "gzip stream ends early after \(bytes.count) decompressed bytes (truncated .gz file)")
        default:
            throw DataError.unreadable(path: path, reason: "gzip: \(message)")
        }
    }

    private static func openError(_ path: String) -> DataError {
        errno == ENOENT ? .missingFile(path: path) : .unreadable(path: path, reason: systemMessage())
    }

    private static func systemMessage() -> String {
        String(cString: strerror(errno))
    }
}
