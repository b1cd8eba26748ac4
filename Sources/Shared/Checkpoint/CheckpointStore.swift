import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Numbered, digest-protected checkpoints `<directory>/<prefix>-<step>.safetensors`.
///
/// Each file is written atomically and records the hex BLAKE2b of its data buffer (the tensor
/// bytes, in file order) under the metadata key `blake2b`; reading recomputes and compares it,
/// so a torn or bit-rotted checkpoint is detected instead of silently resuming from garbage.
public struct CheckpointStore: Sendable {
    /// The metadata key holding the data digest.
    public static let digestKey = "blake2b"

    public let directory: String
    public let prefix: String

    public init(directory: String, prefix: String) {
        self.directory = directory
        self.prefix = prefix
    }

    /// Where the checkpoint for `step` lives (step zero-padded to 8 digits for tidy listings).
    public func path(step: Int) -> String {
        precondition(step >= 0, "negative checkpoint step \(step)")
        let digits = String(step)
        let padded = String(repeating: "0", count: max(0, 8 - digits.count)) + digits
        return (directory as NSString).appendingPathComponent("\(prefix)-\(padded).safetensors")
    }

    /// Atomically writes the checkpoint for `step` and returns its path.
    @discardableResult
    public func save(_ tensors: [(String, Tensor)], metadata: [String: String] = [:], step: Int) throws(CheckpointError) -> String {
        let path = path(step: step)
        try CheckpointStore.save(tensors, metadata: metadata, to: path)
        return path
    }

    /// This store's checkpoints, newest (highest step) first; none if the directory is missing.
    ///
    /// Only names of the form `<prefix>-<digits>.safetensors` count; temp files and other
    /// prefixes are ignored.
    public func checkpoints() throws(CheckpointError) -> [(step: Int, path: String)] {
        guard let stream = opendir(directory) else {
            if errno == ENOENT { return [] }
            throw .io(path: directory, operation: "list directory", errno: errno)
        }
        defer { closedir(stream) }
        let head = prefix + "-", tail = ".safetensors"
        var found: [(step: Int, path: String)] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            guard name.hasPrefix(head), name.hasSuffix(tail), name.count > head.count + tail.count else { continue }
            let number = name.dropFirst(head.count).dropLast(tail.count)
            guard number.utf8.allSatisfy({ (0x30 ... 0x39).contains($0) }), let step = Int(number) else { continue }
            found.append((step, (directory as NSString).appendingPathComponent(name)))
        }
        return found.sorted { $0.step > $1.step }
    }

    /// The newest checkpoint that reads and verifies, or nil if none does.
    ///
    /// Each newer file that fails is passed to `onSkip` with the reason, so the caller can log
    /// it; a corrupt newest checkpoint thus falls back to the one before it.
    public func latestGood(
        onSkip: (String, CheckpointError) -> Void = { _, _ in }
    ) throws(CheckpointError) -> (path: String, file: SafeTensorsFile)? {
        for (_, path) in try checkpoints() {
            do throws(CheckpointError) {
                return (path, try CheckpointStore.read(path: path, verify: true))
            } catch {
                onSkip(path, error)
            }
        }
        return nil
    }

    /// `latestGood` for the store `<directory>/<prefix>-*.safetensors`.
    public static func latestGood(
        in directory: String, prefix: String, onSkip: (String, CheckpointError) -> Void = { _, _ in }
    ) throws(CheckpointError) -> (path: String, file: SafeTensorsFile)? {
        try CheckpointStore(directory: directory, prefix: prefix).latestGood(onSkip: onSkip)
    }

    /// Deletes all but the newest `keep` checkpoints and returns the removed paths.
    @discardableResult
    public func prune(keep: Int) throws(CheckpointError) -> [String] {
        precondition(keep >= 0, "cannot keep \(keep) checkpoints")
        let stale = try checkpoints().dropFirst(keep).map(\.path)
        for path in stale {
            guard unlink(path) == 0 || errno == ENOENT else { throw .io(path: path, operation: "remove", errno: errno) }
        }
        return stale
    }

    /// Atomically writes `tensors` to `path` with `metadata` plus the data digest.
    ///
    /// The tensors must not change while this runs (they are hashed, then written).
    public static func save(_ tensors: [(String, Tensor)], metadata: [String: String] = [:], to path: String) throws(CheckpointError) {
        var hasher = Blake2b()
        for (_, tensor) in tensors { hasher.update(SafeTensors.bytes(of: tensor)) }
        var metadata = metadata
        metadata[digestKey] = Digest.hex(hasher.finalize())
        try FileWriter.writeAtomically(to: path) { (writer: inout FileWriter) throws(CheckpointError) in
            try SafeTensors.write(tensors: tensors, metadata: metadata, to: &writer)
        }
    }

    /// Reads and validates the safetensors file at `path`; with `verify`, also requires its
    /// `blake2b` metadata to match the data buffer (`digestMissing` / `digestMismatch`).
    public static func read(path: String, verify: Bool = true) throws(CheckpointError) -> SafeTensorsFile {
        let decoded = try SafeTensors.decode(contentsOfFile: path, digest: verify)
        guard verify else { return decoded.file }
        guard let expected = decoded.file.metadata[digestKey] else { throw .digestMissing(path: path) }
        guard decoded.digest == expected else {
            throw .digestMismatch(path: path, expected: expected, actual: decoded.digest!)
        }
        return decoded.file
    }
}
