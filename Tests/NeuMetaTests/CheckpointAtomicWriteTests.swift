import Foundation
import Testing
@testable import NeuMeta

@Suite struct CheckpointAtomicWriteTests {
    @Test func createsParentsAndLeavesNoTempFile() throws {
        let scratch = CheckpointScratch()
        let path = scratch.file("a/b/c.bin")
        try FileWriter.writeAtomically([1, 2, 3], to: path)
        #expect(scratch.bytes(of: "a/b/c.bin") == [1, 2, 3] as [UInt8])
        #expect(scratch.entries("a/b") == ["c.bin"])
    }

    @Test func replacesExistingContent() throws {
        let scratch = CheckpointScratch()
        let path = scratch.write(Array(repeating: 9, count: 100), to: "x.bin")
        try FileWriter.writeAtomically([4, 5], to: path)
        #expect(scratch.bytes(of: "x.bin") == [4, 5] as [UInt8])
        #expect(scratch.entries() == ["x.bin"])
    }

    @Test func failedWriteKeepsOldContentAndRemovesTemp() throws {
        let scratch = CheckpointScratch()
        let path = scratch.write([7, 7, 7], to: "x.bin")
        let failure = CheckpointError.io(path: path, operation: "simulated", errno: EIO)
        let error = #expect(throws: CheckpointError.self) {
            try FileWriter.writeAtomically(to: path) { (writer: inout FileWriter) throws(CheckpointError) in
                try [UInt8](repeating: 1, count: 1 << 16).withUnsafeBufferPointer { (buffer) throws(CheckpointError) in
                    try writer.write(UnsafeRawBufferPointer(buffer))
                }
                // The temp file exists, beside the target, while the body runs.
                #expect(writer.path == scratch.file(".x.bin.tmp-\(getpid())"))
                #expect(FileManager.default.fileExists(atPath: writer.path))
                throw failure
            }
        }
        #expect(error == failure)
        #expect(scratch.bytes(of: "x.bin") == [7, 7, 7] as [UInt8])
        #expect(scratch.entries() == ["x.bin"])
    }

    @Test func parentThatIsAFileFailsWithItsPath() {
        let scratch = CheckpointScratch()
        let blocker = scratch.write([0], to: "blocker")
        let error = #expect(throws: CheckpointError.self) {
            try FileWriter.writeAtomically([1], to: blocker + "/inner/x.bin")
        }
        #expect(error?.description.contains(blocker) == true)
        #expect(scratch.entries() == ["blocker"])
    }

    @Test func largeStreamedWriteIsComplete() throws {
        let scratch = CheckpointScratch()
        let tensor = Tensor(zeros: [1 << 20])
        for i in 0 ..< tensor.count { tensor[i] = Float(i) }
        let path = scratch.file("big.safetensors")
        try FileWriter.writeAtomically(to: path) { (writer: inout FileWriter) throws(CheckpointError) in
            try SafeTensors.write(tensors: [("t", tensor)], metadata: [:], to: &writer)
        }
        let read = try #require(try SafeTensors.read(path: path)["t"])
        #expect(read.toArray() == tensor.toArray())
    }
}
