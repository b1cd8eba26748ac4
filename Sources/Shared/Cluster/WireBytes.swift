/// Little-endian field writing and bounds-checked reading for the wire header frame.
///
/// Every read checks the remaining length first and throws `WireError.truncated` naming the
/// field, so hostile input can never read past a frame.
struct WireWriter {
    private(set) var bytes: [UInt8] = []

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func f64(_ v: Double) { u64(v.bitPattern) }
    mutating func raw(_ v: [UInt8]) { bytes.append(contentsOf: v) }

    /// Overwrites the u32 at `offset` (used to patch the body length once it is known).
    mutating func patchU32(at offset: Int, _ v: UInt32) {
        withUnsafeBytes(of: v.littleEndian) { for (i, b) in $0.enumerated() { bytes[offset + i] = b } }
    }
}

struct WireReader {
    let buffer: UnsafeRawBufferPointer
    private(set) var offset = 0

    init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    var remaining: Int { buffer.count - offset }

    private mutating func take<T: FixedWidthInteger>(_: T.Type, _ field: String) throws(WireError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw .truncated(field: field) }
        let v = buffer.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += size
        return T(littleEndian: v)
    }

    mutating func u8(_ field: String) throws(WireError) -> UInt8 { try take(UInt8.self, field) }
    mutating func u16(_ field: String) throws(WireError) -> UInt16 { try take(UInt16.self, field) }
    mutating func u32(_ field: String) throws(WireError) -> UInt32 { try take(UInt32.self, field) }
    mutating func u64(_ field: String) throws(WireError) -> UInt64 { try take(UInt64.self, field) }
    mutating func f64(_ field: String) throws(WireError) -> Double { Double(bitPattern: try take(UInt64.self, field)) }

    /// `count` raw bytes.
    mutating func bytes(_ count: Int, _ field: String) throws(WireError) -> [UInt8] {
        guard count >= 0, remaining >= count else { throw .truncated(field: field) }
        defer { offset += count }
        return Array(buffer[offset..<(offset + count)])
    }

    /// A u16-length-prefixed UTF-8 string of at most `limit` bytes, without control characters.
    mutating func string(_ field: String, limit: Int) throws(WireError) -> String {
        let n = Int(try u16(field))
        guard n <= limit else { throw .tooLarge(field: field, size: n, limit: limit) }
        let raw = try bytes(n, field)
        let s = String(decoding: raw, as: UTF8.self)
        // Invalid sequences decode to U+FFFD, so a round trip detects them. Control characters
        // are refused too: these strings end up in log lines.
        guard Array(s.utf8) == raw else { throw .invalidUTF8(field: field) }
        guard !raw.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { throw .controlCharacter(field: field) }
        return s
    }

    /// Throws unless every byte has been consumed.
    func finish() throws(WireError) {
        guard remaining == 0 else { throw .trailingBytes(remaining) }
    }
}
