import Foundation
import Testing
@testable import NeuMeta

@Suite struct CheckpointDigestTests {
    @Test func blake2bKnownVectors() {
        let abc = Array("abc".utf8).withUnsafeBytes { Digest.blake2bHex($0) }
        #expect(abc == "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319")
        let empty = [UInt8]().withUnsafeBytes { Digest.blake2bHex($0) }
        #expect(empty == "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8")
    }

    @Test func streamingMatchesOneShot() {
        var random = SeededRandom(7)
        let bytes = (0 ..< 10_000).map { _ in UInt8.random(in: 0 ... 255, using: &random) }
        var hasher = Blake2b()
        var start = 0
        for size in [0, 1, 127, 128, 129, 4096, 5519] {
            bytes[start ..< start + size].withUnsafeBytes { hasher.update($0) }
            start += size
        }
        #expect(start == bytes.count)
        #expect(Digest.hex(hasher.finalize()) == bytes.withUnsafeBytes { Digest.blake2bHex($0) })
    }
}

@Suite struct CheckpointStoreTests {
    static func tensors(_ seed: Float) -> [(String, Tensor)] {
        [("w", Tensor(shape: [2, 2], values: [seed, seed + 1, seed + 2, seed + 3])),
         ("b", Tensor(shape: [2], values: [-seed, 0.5]))]
    }

    /// Flips one bit of the last byte of the file (inside the data buffer).
    static func corrupt(_ path: String) {
        var bytes = [UInt8](FileManager.default.contents(atPath: path)!)
        bytes[bytes.count - 1] ^= 0x01
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }

    @Test func savedDigestCoversTheTensorBytes() throws {
        let scratch = CheckpointScratch()
        let store = CheckpointStore(directory: scratch.path, prefix: "hyper")
        let path = try store.save(Self.tensors(1), metadata: ["round": "3"], step: 12)
        #expect(path == scratch.file("hyper-00000012.safetensors"))

        let file = try CheckpointStore.read(path: path)
        let floats = Self.tensors(1).flatMap { $0.1.toArray() }
        #expect(file.metadata == ["round": "3",
                                  "blake2b": floats.withUnsafeBytes { Digest.blake2bHex($0) }])
        #expect(file.names == ["w", "b"])
        #expect(file["w"]?.toArray() == [1, 2, 3, 4])
    }

    @Test func flippedDataByteFailsVerification() throws {
        let scratch = CheckpointScratch()
        let path = scratch.file("c.safetensors")
        try CheckpointStore.save(Self.tensors(1), to: path)
        let recorded = try #require(try SafeTensors.read(path: path).metadata["blake2b"])
        Self.corrupt(path)

        let error = #expect(throws: CheckpointError.self) { try CheckpointStore.read(path: path) }
        guard case .digestMismatch(let errorPath, let expected, let actual)? = error else {
            Issue.record("expected digestMismatch, got \(String(describing: error))")
            return
        }
        #expect(errorPath == path)
        #expect(expected == recorded)
        #expect(actual != recorded && actual.count == 64)
        #expect(error!.description.contains(path))
        // Structurally the file is still fine.
        // Structurally the file is still fine: the last byte is the top byte of 0.5 (0x3F000000).
        #expect(try CheckpointStore.read(path: path, verify: false)["b"]?.toArray() == [-1, 0.125])
    }

    @Test func verificationRequiresADigest() throws {
        let scratch = CheckpointScratch()
        let path = scratch.file("plain.safetensors")
        try FileWriter.writeAtomically(SafeTensors.encode(tensors: Self.tensors(1)), to: path)
        #expect(throws: CheckpointError.digestMissing(path: path)) { try CheckpointStore.read(path: path) }
        #expect(try CheckpointStore.read(path: path, verify: false).names == ["w", "b"])
    }

    @Test func latestGoodFallsBackPastCorruptFiles() throws {
        let scratch = CheckpointScratch()
        let store = CheckpointStore(directory: scratch.path, prefix: "run")
        let paths = try (1 ... 3).map { step throws(CheckpointError) in try store.save(Self.tensors(Float(step)), step: step) }

        Self.corrupt(paths[2])
        var skipped: [(String, CheckpointError)] = []
        let good = try #require(try store.latestGood { skipped.append(($0, $1)) })
        #expect(good.path == paths[1])
        #expect(good.file["w"]?.toArray() == [2, 3, 4, 5])
        #expect(skipped.map(\.0) == [paths[2]])
        if case .digestMismatch = skipped.first?.1 {} else { Issue.record("expected digestMismatch, got \(skipped)") }

        // A truncated file is skipped too, for a structural reason.
        let truncated = [UInt8](FileManager.default.contents(atPath: paths[1])!).prefix(20)
        _ = FileManager.default.createFile(atPath: paths[1], contents: Data(truncated))
        skipped = []
        let older = try #require(try CheckpointStore.latestGood(in: scratch.path, prefix: "run") { skipped.append(($0, $1)) })
        #expect(older.path == paths[0])
        #expect(skipped.map(\.0) == [paths[2], paths[1]])
        if case .malformed = skipped.last?.1 {} else { Issue.record("expected malformed, got \(skipped)") }

        Self.corrupt(paths[0])
        #expect(try store.latestGood() == nil)
    }

    @Test func listingSortsNumericallyAndIgnoresOtherFiles() throws {
        let scratch = CheckpointScratch()
        for name in ["p-9.safetensors", "p-10.safetensors", "p-x.safetensors", "q-11.safetensors",
                     "p-12.safetensors.bak", ".p-13.safetensors.tmp-5", "p-.safetensors", "p-1-2.safetensors"] {
            try CheckpointStore.save(Self.tensors(1), to: scratch.file(name))
        }
        let store = CheckpointStore(directory: scratch.path, prefix: "p")
        #expect(try store.checkpoints().map(\.step) == [10, 9])
        #expect(try store.latestGood()?.path == scratch.file("p-10.safetensors"))
    }

    @Test func missingDirectoryHasNoCheckpoints() throws {
        let store = CheckpointStore(directory: CheckpointScratch().file("nowhere"), prefix: "p")
        #expect(try store.checkpoints().isEmpty)
        #expect(try store.latestGood() == nil)
    }

    @Test func pruneKeepsTheNewest() throws {
        let scratch = CheckpointScratch()
        let store = CheckpointStore(directory: scratch.path, prefix: "p")
        let paths = try [5, 20, 100, 7].map { step throws(CheckpointError) in try store.save(Self.tensors(1), step: step) }
        scratch.write([1], to: "unrelated.txt")

        let removed = try store.prune(keep: 2)
        #expect(Set(removed) == [paths[0], paths[3]])
        #expect(try store.checkpoints().map(\.step) == [100, 20])
        #expect(scratch.entries() == ["p-00000020.safetensors", "p-00000100.safetensors", "unrelated.txt"])
        #expect(try store.prune(keep: 2).isEmpty)
    }
}
