import Foundation
import Testing
@testable import NeuMeta

/// A fresh directory under the system temp directory, removed when released.
final class CheckpointScratch {
    let path: String

    init() {
        path = (NSTemporaryDirectory() as NSString).appendingPathComponent("neumeta-ckpt-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// Writes `bytes` (non-atomically) to `name` and returns its path.
    @discardableResult
    func write(_ bytes: [UInt8], to name: String) -> String {
        let target = file(name)
        _ = FileManager.default.createFile(atPath: target, contents: Data(bytes))
        return target
    }

    func bytes(of name: String) -> [UInt8] { [UInt8](FileManager.default.contents(atPath: file(name))!) }

    /// Directory entries, sorted, including hidden ones.
    func entries(_ subdirectory: String = "") -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: file(subdirectory)).sorted()) ?? []
    }
}

/// A safetensors file with a hand-written header: length prefix, header padded with spaces to a
/// multiple of 8 (when `pad`), then `data`.
func safetensorsBytes(header: String, data: [UInt8] = [], pad: Bool = true) -> [UInt8] {
    var json = Array(header.utf8)
    if pad { json += [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8) }
    return withUnsafeBytes(of: UInt64(json.count).littleEndian, Array.init) + json + data
}

/// Little-endian bytes of `values`.
func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) }
}

@Suite struct CheckpointSafeTensorsTests {
    static let special: [Float] = [1.5, -0.0, .infinity, -.infinity,
                                   Float(bitPattern: 0x7FC0_1234), .leastNonzeroMagnitude]
    static let metadata = ["step": "12",
                           "note": "quote \" backslash \\ newline \n tab \t ctrl \u{01} rocket 🚀"]

    static func sampleTensors() -> [(String, Tensor)] {
        [("weights", Tensor(shape: [2, 3], values: special)),
         ("bias", Tensor(shape: [3], values: [0.1, -0.2, 0.3])),
         ("scalar", Tensor(shape: [], values: [42])),
         ("empty", Tensor(zeros: [0, 4])),
         ("ünïcode \"name\"\n", Tensor(shape: [1], values: [-7]))]
    }

    @Test func roundTripIsBitExact() throws {
        let scratch = CheckpointScratch()
        let tensors = Self.sampleTensors()
        let path = scratch.file("round.safetensors")
        try FileWriter.writeAtomically(SafeTensors.encode(tensors: tensors, metadata: Self.metadata), to: path)

        let file = try SafeTensors.read(path: path)
        #expect(file.names == tensors.map(\.0))
        #expect(file.metadata == Self.metadata)
        for ((name, original), (readName, read)) in zip(tensors, file.tensors) {
            #expect(readName == name)
            #expect(read.shape == original.shape)
            #expect(read.toArray().map(\.bitPattern) == original.toArray().map(\.bitPattern))
        }
        #expect(file["scalar"]?.toArray() == [42])
        #expect(file["missing"] == nil)
        #expect(file.tensors.allSatisfy { $0.tensor.storage === file.tensors[0].tensor.storage })
    }

    @Test func streamingWriteMatchesEncode() throws {
        let scratch = CheckpointScratch()
        let tensors = Self.sampleTensors()
        try FileWriter.writeAtomically(to: scratch.file("streamed.safetensors")) { (writer: inout FileWriter) throws(CheckpointError) in
            try SafeTensors.write(tensors: tensors, metadata: Self.metadata, to: &writer)
        }
        #expect(scratch.bytes(of: "streamed.safetensors") == SafeTensors.encode(tensors: tensors, metadata: Self.metadata))
    }

    /// Parses the written bytes with Foundation, independently of the reader under test.
    @Test func headerLayoutFollowsTheFormat() throws {
        let tensors = Self.sampleTensors()
        let bytes = SafeTensors.encode(tensors: tensors, metadata: ["k": "v"])
        let length = bytes[0 ..< 8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(length % 8 == 0)
        let headerBytes = Array(bytes[8 ..< 8 + length])
        let text = String(decoding: headerBytes, as: UTF8.self)
        let jsonEnd = text.lastIndex(of: "}")!
        #expect(text[text.index(after: jsonEnd)...].allSatisfy { $0 == " " })
        #expect(text[text.index(after: jsonEnd)...].count < 8)

        let header = try #require(try JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any])
        #expect(header["__metadata__"] as? [String: String] == ["k": "v"])
        #expect(Set(header.keys) == Set(tensors.map(\.0) + ["__metadata__"]))

        // Metadata first, then tensors in the order given.
        let positions = (["__metadata__", "weights", "bias", "scalar", "empty"]).map { text.range(of: "\"\($0)\"")!.lowerBound }
        #expect(positions == positions.sorted())

        var offset = 0
        let dataStart = 8 + length
        for (name, tensor) in tensors {
            let entry = try #require(header[name] as? [String: Any])
            #expect(entry["dtype"] as? String == "F32")
            #expect(entry["shape"] as? [Int] == tensor.shape)
            #expect(entry["data_offsets"] as? [Int] == [offset, offset + 4 * tensor.count])
            let stored = Array(bytes[dataStart + offset ..< dataStart + offset + 4 * tensor.count])
            #expect(stored == littleEndianBytes(tensor.toArray().map(\.bitPattern)))
            offset += 4 * tensor.count
        }
        #expect(bytes.count == dataStart + offset)
    }

    @Test func decodesHalfBFloatAndDoubleInFileOrder() throws {
        let scratch = CheckpointScratch()
        let half: [UInt16] = [0x3C00, 0xC000, 0x3555, 0x7BFF, 0x0001, 0x8000, 0xFC00, 0x7E00]
        let bfloat: [UInt16] = [0x3F80, 0xC000, 0x4049, 0x0001]
        let double: [UInt64] = [(0.1 as Double).bitPattern, (1e300 as Double).bitPattern]
        // JSON order differs from data order; the reader must follow the offsets.
        let header = """
            {"d":{"dtype":"F64","shape":[2],"data_offsets":[24,40]},\
            "h":{"shape":[8],"dtype":"F16","data_offsets":[0,16]},\
            "b":{"dtype":"BF16","shape":[2,2],"data_offsets":[16,24]}}
            """
        let path = scratch.write(safetensorsBytes(header: header, data: littleEndianBytes(half)
                                     + littleEndianBytes(bfloat) + littleEndianBytes(double)),
                                 to: "dtypes.safetensors")
        let file = try SafeTensors.read(path: path)
        #expect(file.names == ["h", "b", "d"])
        #expect(file.metadata.isEmpty)

        let h = try #require(file["h"]).toArray()
        let finite: [Float] = [1, -2, 0.333251953125, 65504, 0x1p-24, -0.0]
        #expect(Array(h[0 ..< 6]) == finite)
        #expect(h[5].sign == .minus)
        #expect(h[6] == -.infinity)
        #expect(h[7].isNaN)
        #expect(try #require(file["b"]).shape == [2, 2])
        #expect(try #require(file["b"]).toArray() == [1, -2, 3.140625, Float(bitPattern: 0x0001_0000)])
        #expect(try #require(file["d"]).toArray() == [Float(0.1 as Double), .infinity])
    }

    @Test func halfConversionIsExactForEveryNormalValue() {
        let wrong = (UInt16(0x0400) ..< 0x7C00).filter { bits in
            let exponent = Int(bits >> 10) - 15
            let expected = Float(sign: .plus, exponent: exponent, significand: 1 + Float(bits & 0x3FF) / 1024)
            return SafeTensors.float(fromHalf: bits) != expected || SafeTensors.float(fromHalf: bits | 0x8000) != -expected
        }
        #expect(wrong.isEmpty)
    }

    /// Writes a checkpoint for `scripts/check_safetensors.py` when
    /// `NEUMETA_SAFETENSORS_EXPORT=/some/path.safetensors` is set.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["NEUMETA_SAFETENSORS_EXPORT"] != nil))
    func exportForPythonCheck() throws {
        let path = ProcessInfo.processInfo.environment["NEUMETA_SAFETENSORS_EXPORT"]!
        try CheckpointStore.save(Self.sampleTensors(), metadata: Self.metadata, to: path)
        print("wrote \(path)")
    }
}
