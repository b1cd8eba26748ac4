#if _endian(big)
#error("safetensors I/O copies little-endian data verbatim and needs a little-endian host")
#endif

/// The contents of a safetensors file: tensors in data-buffer order plus string metadata.
///
/// Tensors read from disk are views into one shared `FloatStorage` (they do not overlap), so a
/// checkpoint loads into a single flat buffer.
public struct SafeTensorsFile: Sendable {
    public var tensors: [(name: String, tensor: Tensor)]
    public var metadata: [String: String]

    public init(tensors: [(name: String, tensor: Tensor)], metadata: [String: String]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Tensor names in file order.
    public var names: [String] { tensors.map(\.name) }

    /// The tensor named `name`, if any.
    public subscript(name: String) -> Tensor? {
        tensors.first { $0.name == name }?.tensor
    }
}

/// The safetensors format (https://github.com/huggingface/safetensors):
///
///     [8 bytes: N, little-endian UInt64]
///     [N bytes: JSON header, space-padded; N is a multiple of 8 so the data is 8-byte aligned]
///     [data buffer: every tensor's bytes, back to back, little-endian, row-major]
///
/// The header maps each tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}`,
/// offsets relative to the start of the data buffer, plus an optional `"__metadata__"` object
/// of string values. Writing always uses F32; reading also accepts F64, F16 and BF16.
public enum SafeTensors {
    /// Element types the reader understands.
    public enum DType: String, Sendable, CaseIterable {
        case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"

        /// Bytes per element.
        public var size: Int {
            switch self {
            case .f64: return 8
            case .f32: return 4
            case .f16, .bf16: return 2
            }
        }
    }

    /// The header key reserved for metadata.
    public static let metadataKey = "__metadata__"
    /// The largest header accepted, as in the reference implementation.
    public static let maxHeaderLength = 100_000_000

    /// The complete file for `tensors` (F32, in the given order) and `metadata`.
    ///
    /// Names must be unique and must not be `__metadata__`.
    public static func encode(tensors: [(String, Tensor)], metadata: [String: String] = [:]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(8 + 64 * (tensors.count + metadata.count) + tensors.reduce(0) { $0 + 4 * $1.1.count })
        write(tensors: tensors, metadata: metadata, to: &bytes)
        return bytes
    }

    /// Streams the file for `tensors` and `metadata` into `sink`: header first, then each
    /// tensor's floats straight from its storage, with no intermediate copy of the data.
    public static func write<Sink: ByteSink>(
        tensors: [(String, Tensor)], metadata: [String: String], to sink: inout Sink
    ) throws(Sink.Failure) {
        let header = self.header(tensors: tensors, metadata: metadata)
        try header.withUnsafeBufferPointer { (buffer) throws(Sink.Failure) in
            try sink.write(UnsafeRawBufferPointer(buffer))
        }
        for (_, tensor) in tensors { try sink.write(bytes(of: tensor)) }
    }

    /// The 8-byte length prefix followed by the JSON header, space-padded to a multiple of 8.
    ///
    /// Metadata comes first with sorted keys, then the tensors in order, so equal inputs give
    /// byte-identical files.
    static func header(tensors: [(String, Tensor)], metadata: [String: String]) -> [UInt8] {
        var names = Set<String>()
        var members: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.sorted { $0.key < $1.key }
                .map { JSONValue.quoted($0.key) + ":" + JSONValue.quoted($0.value) }
            members.append(JSONValue.quoted(metadataKey) + ":{" + pairs.joined(separator: ",") + "}")
        }
        var offset = 0
        for (name, tensor) in tensors {
            precondition(name != metadataKey, "a tensor cannot be named \(metadataKey)")
            let isNew = names.insert(name).inserted  // not inside precondition: -Ounchecked skips its condition
            precondition(isNew, "duplicate tensor name \(name)")
            let end = offset + 4 * tensor.count
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            members.append(JSONValue.quoted(name)
                + ":{\"dtype\":\"F32\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var json = Array(("{" + members.joined(separator: ",") + "}").utf8)
        json.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - json.count % 8) % 8))
        return withUnsafeBytes(of: UInt64(json.count).littleEndian, Array.init) + json
    }

    /// A tensor's floats as raw bytes.
    static func bytes(of tensor: Tensor) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: tensor.data, count: tensor.count * MemoryLayout<Float>.size)
    }
}
