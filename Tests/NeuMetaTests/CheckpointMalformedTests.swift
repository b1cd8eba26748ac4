import Foundation
import Testing
@testable import NeuMeta

/// One malformed file and the problem the reader must report for it.
struct MalformedCase: Sendable, CustomTestStringConvertible {
    let label: String
    let bytes: [UInt8]
    let matches: @Sendable (CheckpointError.Problem) -> Bool

    init(_ label: String, _ bytes: [UInt8], _ expected: CheckpointError.Problem) {
        self.label = label
        self.bytes = bytes
        matches = { $0 == expected }
    }

    init(_ label: String, _ bytes: [UInt8], matching: @escaping @Sendable (CheckpointError.Problem) -> Bool) {
        self.label = label
        self.bytes = bytes
        self.matches = matching
    }

    var testDescription: String { label }
}

/// A header with one tensor `a` of `shape`/`offsets` (raw JSON text) and `data`.
private func single(dtype: String = "\"F32\"", shape: String = "[1]", offsets: String = "[0,4]",
                    data: Int = 4) -> [UInt8] {
    safetensorsBytes(header: "{\"a\":{\"dtype\":\(dtype),\"shape\":\(shape),\"data_offsets\":\(offsets)}}",
                     data: [UInt8](repeating: 0, count: data))
}

private func notJSON(_ problem: CheckpointError.Problem) -> Bool {
    if case .headerNotJSON = problem { return true }
    return false
}

@Suite struct CheckpointMalformedTests {
    static let cases: [MalformedCase] = [
        MalformedCase("empty file", [], .fileTooShort(size: 0)),
        MalformedCase("7-byte file", [1, 2, 3, 4, 5, 6, 7], .fileTooShort(size: 7)),
        MalformedCase("header over 100 MB", littleEndianBytes([UInt64(100_000_001)]) + Array("{}      ".utf8),
                      .headerTooLarge(length: 100_000_001, limit: 100_000_000)),
        MalformedCase("header past end of file", littleEndianBytes([UInt64(64)]) + Array("{}      ".utf8),
                      .headerExceedsFile(length: 64, fileSize: 16)),
        MalformedCase("header length near UInt64.max", littleEndianBytes([UInt64.max]) + Array("{}      ".utf8),
                      .headerTooLarge(length: .max, limit: 100_000_000)),
        MalformedCase("invalid UTF-8", littleEndianBytes([UInt64(8)]) + [0x7B, 0xFF, 0x7D, 32, 32, 32, 32, 32],
                      .headerNotUTF8),
        MalformedCase("truncated JSON", safetensorsBytes(header: "{\"a\": "), matching: notJSON),
        MalformedCase("garbage after JSON", safetensorsBytes(header: "{} x"), matching: notJSON),
        MalformedCase("leading zero", single(shape: "[01]"), matching: notJSON),
        MalformedCase("unpaired surrogate", safetensorsBytes(header: #"{"__metadata__":{"k":"\ud83d"}}"#), matching: notJSON),
        MalformedCase("raw newline in string", safetensorsBytes(header: "{\"__metadata__\":{\"k\":\"a\nb\"}}"), matching: notJSON),
        MalformedCase("NUL padding", safetensorsBytes(header: "{}\0\0\0\0\0\0", pad: false), matching: notJSON),
        MalformedCase("runaway nesting", safetensorsBytes(
            header: "{\"__metadata__\":" + String(repeating: "[", count: 200) + String(repeating: "]", count: 200) + "}"),
            matching: notJSON),
        MalformedCase("header is a list", safetensorsBytes(header: "[1,2]"), .headerNotObject),
        MalformedCase("header is a string", safetensorsBytes(header: "\"{}\""), .headerNotObject),
        MalformedCase("duplicate tensor name", safetensorsBytes(
            header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            data: [UInt8](repeating: 0, count: 8)), .duplicateKey("a")),
        MalformedCase("duplicate field", safetensorsBytes(
            header: #"{"a":{"dtype":"F32","shape":[1],"shape":[1],"data_offsets":[0,4]}}"#,
            data: [0, 0, 0, 0]), .duplicateKey("shape")),
        MalformedCase("metadata not an object", safetensorsBytes(header: #"{"__metadata__":"x"}"#), .metadataNotObject),
        MalformedCase("metadata value a number", safetensorsBytes(header: #"{"__metadata__":{"ok":"1","k":1}}"#),
                      .metadataValueNotString(key: "k")),
        MalformedCase("entry not an object", safetensorsBytes(header: #"{"a":[1]}"#), .entryNotObject(tensor: "a")),
        MalformedCase("missing dtype", safetensorsBytes(header: #"{"a":{"shape":[1],"data_offsets":[0,4]}}"#,
                                                        data: [0, 0, 0, 0]), .missingDType(tensor: "a")),
        MalformedCase("unknown dtype", single(dtype: "\"Q4\""), .unknownDType(tensor: "a", dtype: "Q4")),
        MalformedCase("dtype not a string", single(dtype: "4"), .unknownDType(tensor: "a", dtype: "(not a string)")),
        MalformedCase("negative dimension", single(shape: "[-1]"), .invalidShape(tensor: "a")),
        MalformedCase("fractional dimension", single(shape: "[1.0]"), .invalidShape(tensor: "a")),
        MalformedCase("boolean dimension", single(shape: "[true]"), .invalidShape(tensor: "a")),
        MalformedCase("shape not a list", single(shape: "1"), .invalidShape(tensor: "a")),
        MalformedCase("shape overflows", single(shape: "[4294967296,4294967296]"), .invalidShape(tensor: "a")),
        MalformedCase("one offset", single(offsets: "[4]"), .invalidOffsets(tensor: "a")),
        MalformedCase("three offsets", single(offsets: "[0,4,4]"), .invalidOffsets(tensor: "a")),
        MalformedCase("reversed offsets", single(offsets: "[4,0]"), .invalidOffsets(tensor: "a")),
        MalformedCase("string offset", single(offsets: "[0,\"4\"]"), .invalidOffsets(tensor: "a")),
        MalformedCase("missing offsets", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[1]}}"#, data: [0, 0, 0, 0]),
                      .invalidOffsets(tensor: "a")),
        MalformedCase("size disagrees with shape", single(shape: "[2]", offsets: "[0,4]"),
                      .sizeMismatch(tensor: "a", expected: 8, actual: 4)),
        MalformedCase("size disagrees with dtype", single(dtype: "\"F16\"", shape: "[1]", offsets: "[0,4]"),
                      .sizeMismatch(tensor: "a", expected: 2, actual: 4)),
        MalformedCase("past the data buffer", single(shape: "[2]", offsets: "[0,8]", data: 4),
                      .offsetsOutOfBounds(tensor: "a", end: 8, dataSize: 4)),
        MalformedCase("overlapping tensors", safetensorsBytes(
            header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            data: [UInt8](repeating: 0, count: 12)), .overlap("a", "b")),
        MalformedCase("gap between tensors", safetensorsBytes(
            header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            data: [UInt8](repeating: 0, count: 12)), .uncoveredData(begin: 4, end: 8)),
        MalformedCase("trailing bytes after the last tensor", single(data: 8), .uncoveredData(begin: 4, end: 8)),
    ]

    @Test(arguments: cases)
    func rejectsWithPathInError(_ testCase: MalformedCase) throws {
        let scratch = CheckpointScratch()
        let path = scratch.write(testCase.bytes, to: "bad.safetensors")
        let error = #expect(throws: CheckpointError.self) { try SafeTensors.read(path: path) }
        guard case .malformed(let errorPath, let problem)? = error else {
            Issue.record("expected .malformed, got \(String(describing: error))")
            return
        }
        #expect(errorPath == path)
        #expect(testCase.matches(problem), "got \(problem)")
        #expect(error!.description.contains(path))
        #expect(error!.description.contains(problem.description))
    }

    @Test func missingFileIsAnIOError() {
        let path = CheckpointScratch().file("absent.safetensors")
        let error = #expect(throws: CheckpointError.self) { try SafeTensors.read(path: path) }
        #expect(error == .io(path: path, operation: "open", errno: ENOENT))
        #expect(error?.description.contains(path) == true)
    }

    /// Valid JSON spelled unusually (whitespace, escapes, key order) is still accepted.
    @Test func acceptsAnyValidJSONSpelling() throws {
        let scratch = CheckpointScratch()
        let header = """
            {
              "__metadata__" : { "k\\u00e9y" : "v\\ud83d\\ude80\\/" , "n": "" },
              "t\\"x" : { "data_offsets" : [ 0 , 8 ] , "extra": {"ignored": [1e3, null, false]}, "shape" : [ 2 ], "dtype" : "F32" }
            }\t\r\n
            """
        let path = scratch.write(safetensorsBytes(header: header, data: littleEndianBytes([(1 as Float).bitPattern, (2 as Float).bitPattern])),
                                 to: "spelled.safetensors")
        let file = try SafeTensors.read(path: path)
        #expect(file.names == ["t\"x"])
        #expect(file["t\"x"]?.toArray() == [1, 2])
        #expect(file.metadata == ["kéy": "v🚀/", "n": ""])
    }
}
