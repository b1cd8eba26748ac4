import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension FileWriter {
    /// Writes a file so that `path` holds either its old content or the complete new content,
    /// even across crashes and power loss.
    ///
    /// `body` writes into `.<name>.tmp-<pid>` beside the target; the temp file is fsynced, renamed
    /// over `path`, and the directory is fsynced so the rename itself is durable. Missing parent
    /// directories are created. If anything fails before the rename, the temp file is removed
    /// and `path` is untouched. Two threads of one process must not write the same path at once
    /// (they would share the temp name).
    public static func writeAtomically(
        to path: String, _ body: (inout FileWriter) throws(CheckpointError) -> Void
    ) throws(CheckpointError) {
        let directory = parentDirectory(of: path)
        let name = (path as NSString).lastPathComponent
        let temp = (directory as NSString).appendingPathComponent(".\(name).tmp-\(getpid())")
        try makeDirectories(directory)

        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io(path: temp, operation: "create", errno: errno) }
        do throws(CheckpointError) {
            var writer = FileWriter(fd: fd, path: temp)
            try body(&writer)
            guard fsync(fd) == 0 else { throw .io(path: temp, operation: "fsync", errno: errno) }
        } catch {
            close(fd)
            unlink(temp)
            throw error
        }
        guard close(fd) == 0 else {
            let code = errno
            unlink(temp)
            throw .io(path: temp, operation: "close", errno: code)
        }
        guard rename(temp, path) == 0 else {
            let code = errno
            unlink(temp)
            throw .io(path: path, operation: "rename", errno: code)
        }
        try syncDirectory(directory)
    }

    /// Atomically replaces `path` with `bytes`; see `writeAtomically(to:_:)`.
    public static func writeAtomically(_ bytes: [UInt8], to path: String) throws(CheckpointError) {
        try writeAtomically(to: path) { (writer: inout FileWriter) throws(CheckpointError) in
            try bytes.withUnsafeBufferPointer { (buffer) throws(CheckpointError) in
                try writer.write(UnsafeRawBufferPointer(buffer))
            }
        }
    }

    /// The directory holding `path` (`.` for a bare file name).
    static func parentDirectory(of path: String) -> String {
        let parent = (path as NSString).deletingLastPathComponent
        return parent.isEmpty ? "." : parent
    }

    /// `mkdir -p`.
    static func makeDirectories(_ directory: String) throws(CheckpointError) {
        var status = stat()
        if stat(directory, &status) == 0 {
            guard status.st_mode & S_IFMT == S_IFDIR else {
                throw .io(path: directory, operation: "create directory", errno: ENOTDIR)
            }
            return
        }
        let parent = (directory as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != directory { try makeDirectories(parent) }
        guard mkdir(directory, 0o755) == 0 || errno == EEXIST else {
            throw .io(path: directory, operation: "create directory", errno: errno)
        }
    }

    /// Flushes a directory's entries (e.g. a rename into it) to disk.
    private static func syncDirectory(_ directory: String) throws(CheckpointError) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: directory, operation: "open directory", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw .io(path: directory, operation: "fsync directory", errno: errno) }
    }
}
