#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension SafeTensors {
    /// Reads and fully validates the safetensors file at `path`, converting every tensor to
    /// `Float`.
    ///
    /// Rejects (as `CheckpointError.malformed`, naming `path`): files shorter than 8 bytes,
    /// header lengths beyond the file or `maxHeaderLength`, headers that are not UTF-8, not JSON
    /// or not an object, repeated keys, non-string metadata, entries with a missing or unknown
    /// dtype, bad shapes or offsets, sizes that disagree with shape and dtype, tensors outside
    /// the data buffer or overlapping, and data bytes that belong to no tensor.
    public static func read(path: String) throws(CheckpointError) -> SafeTensorsFile {
        try decode(contentsOfFile: path, digest: false).file
    }

    /// A validated file and, if asked for, the hex BLAKE2b of its data buffer.
    struct Decoded {
        let file: SafeTensorsFile
        let digest: String?
    }

    /// Reads the whole file at `path`, decodes it, and optionally hashes its data buffer.
    static func decode(contentsOfFile path: String, digest: Bool) throws(CheckpointError) -> Decoded {
        try contents(of: path).withUnsafeBufferPointer { (buffer) throws(CheckpointError) in
            let bytes = UnsafeRawBufferPointer(buffer)
            let (file, dataStart) = try decode(bytes, path: path)
            let hex = digest ? Digest.blake2bHex(UnsafeRawBufferPointer(rebasing: bytes[dataStart...])) : nil
            return Decoded(file: file, digest: hex)
        }
    }

    /// Every byte of the file at `path`.
    private static func contents(of path: String) throws(CheckpointError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw .io(path: path, operation: "stat", errno: errno) }
        var failure: Int32?
        let bytes = [UInt8](unsafeUninitializedCapacity: Int(status.st_size)) { buffer, count in
            while count < buffer.count {
                let n = pread(fd, buffer.baseAddress! + count, buffer.count - count, off_t(count))
                if n > 0 { count += n } else if n == 0 { break } else if errno != EINTR { failure = errno; break }
            }
        }
        if let failure { throw .io(path: path, operation: "read", errno: failure) }
        return bytes
    }

    /// One validated header entry.
    private struct Entry {
        let name: String
        let dtype: DType
        let shape: [Int]
        let count: Int
        let begin: Int
        let end: Int
    }

    /// Validates and decodes a whole file held in memory, returning it with the offset of its
    /// data buffer; `path` only labels errors.
    private static func decode(
        _ bytes: UnsafeRawBufferPointer, path: String
    ) throws(CheckpointError) -> (file: SafeTensorsFile, dataStart: Int) {
        func malformed(_ problem: CheckpointError.Problem) -> CheckpointError {
            .malformed(path: path, problem: problem)
        }
        guard bytes.count >= 8 else { throw malformed(.fileTooShort(size: bytes.count)) }
        let length = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard length <= UInt64(maxHeaderLength) else {
            throw malformed(.headerTooLarge(length: length, limit: maxHeaderLength))
        }
        guard length <= UInt64(bytes.count - 8) else {
            throw malformed(.headerExceedsFile(length: length, fileSize: bytes.count))
        }
        let dataStart = 8 + Int(length)
        let header = UnsafeRawBufferPointer(rebasing: bytes[8 ..< dataStart])
        guard isValidUTF8(header) else { throw malformed(.headerNotUTF8) }

        let json: JSONValue
        do throws(JSONValue.ParseError) {
            json = try JSONValue.parse(header)
        } catch {
            switch error {
            case .duplicateKey(let key): throw malformed(.duplicateKey(key))
            case .invalid(let why, let offset): throw malformed(.headerNotJSON("\(why) at header byte \(offset)"))
            }
        }
        guard case .object(let members) = json else { throw malformed(.headerNotObject) }

        let dataSize = bytes.count - dataStart
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for (key, value) in members {
            if key == metadataKey {
                guard case .object(let pairs) = value else { throw malformed(.metadataNotObject) }
                for (name, value) in pairs {
                    guard case .string(let text) = value else { throw malformed(.metadataValueNotString(key: name)) }
                    metadata[name] = text
                }
            } else {
                entries.append(try entry(key, value, dataSize: dataSize, path: path))
            }
        }

        entries.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var covered = 0
        for (index, entry) in entries.enumerated() {
            guard entry.begin >= covered else { throw malformed(.overlap(entries[index - 1].name, entry.name)) }
            guard entry.begin == covered else { throw malformed(.uncoveredData(begin: covered, end: entry.begin)) }
            covered = entry.end
        }
        guard covered == dataSize else { throw malformed(.uncoveredData(begin: covered, end: dataSize)) }

        let storage = FloatStorage(count: entries.reduce(0) { $0 + $1.count })
        var offset = 0
        let tensors = entries.map { entry in
            let tensor = Tensor(storage: storage, offset: offset, shape: entry.shape)
            offset += entry.count
            convert(UnsafeRawPointer(bytes.baseAddress! + dataStart + entry.begin), entry.dtype, into: tensor)
            return (name: entry.name, tensor: tensor)
        }
        return (SafeTensorsFile(tensors: tensors, metadata: metadata), dataStart)
    }

    /// Fills `tensor` from `tensor.count` little-endian elements of `dtype` at `source`.
    private static func convert(_ source: UnsafeRawPointer, _ dtype: DType, into tensor: Tensor) {
        let out = tensor.data
        switch dtype {
        case .f32:
            UnsafeMutableRawPointer(out).copyMemory(from: source, byteCount: tensor.count * 4)
        case .f64:
            for i in 0 ..< tensor.count {
                let bits = UInt64(littleEndian: source.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
                out[i] = Float(Double(bitPattern: bits))
            }
        case .f16:
            for i in 0 ..< tensor.count {
                out[i] = float(fromHalf: UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
        case .bf16:
            for i in 0 ..< tensor.count {
                let bits = UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                out[i] = Float(bitPattern: UInt32(bits) << 16)
            }
        }
    }

    /// Validates the header entry for tensor `name`.
    private static func entry(_ name: String, _ json: JSONValue, dataSize: Int, path: String) throws(CheckpointError) -> Entry {
        func malformed(_ problem: CheckpointError.Problem) -> CheckpointError {
            .malformed(path: path, problem: problem)
        }
        func nonNegativeIntegers(_ value: JSONValue?) -> [Int]? {
            guard case .array(let elements)? = value else { return nil }
            var result: [Int] = []
            for element in elements {
                guard case .integer(let n) = element, n >= 0 else { return nil }
                result.append(n)
            }
            return result
        }
        guard case .object(let fields) = json else { throw malformed(.entryNotObject(tensor: name)) }
        func field(_ key: String) -> JSONValue? { fields.first { $0.key == key }?.value }

        guard let dtypeField = field("dtype") else { throw malformed(.missingDType(tensor: name)) }
        guard case .string(let dtypeName) = dtypeField, let dtype = DType(rawValue: dtypeName) else {
            let written = if case .string(let text) = dtypeField { text } else { "(not a string)" }
            throw malformed(.unknownDType(tensor: name, dtype: written))
        }
        guard let shape = nonNegativeIntegers(field("shape")) else { throw malformed(.invalidShape(tensor: name)) }
        var count = 1
        for dimension in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw malformed(.invalidShape(tensor: name)) }
            count = product
        }
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow else { throw malformed(.invalidShape(tensor: name)) }
        guard let offsets = nonNegativeIntegers(field("data_offsets")), offsets.count == 2,
              offsets[0] <= offsets[1] else {
            throw malformed(.invalidOffsets(tensor: name))
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard end - begin == byteCount else {
            throw malformed(.sizeMismatch(tensor: name, expected: byteCount, actual: end - begin))
        }
        guard end <= dataSize else {
            throw malformed(.offsetsOutOfBounds(tensor: name, end: end, dataSize: dataSize))
        }
        return Entry(name: name, dtype: dtype, shape: shape, count: count, begin: begin, end: end)
    }

    /// IEEE 754 binary16 to `Float`, exactly (every half is representable).
    static func float(fromHalf bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = UInt32(bits >> 10 & 0x1F)
        let mantissa = UInt32(bits & 0x3FF)
        switch exponent {
        case 0:
            let magnitude = Float(mantissa) * 0x1p-24
            return sign == 0 ? magnitude : -magnitude
        case 0x1F:
            return Float(bitPattern: sign | 0x7F80_0000 | mantissa << 13)
        default:
            return Float(bitPattern: sign | (exponent + 112) << 23 | mantissa << 13)
        }
    }

    private static func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var decoder = UTF8()
        var iterator = bytes.makeIterator()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }
}
