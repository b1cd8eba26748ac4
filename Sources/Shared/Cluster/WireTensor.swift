import Foundation

#if _endian(big)
#error("the wire format carries Float tensors as raw little-endian bytes; big-endian hosts need a byte-swapping path")
#endif

/// An immutable flat Float tensor that travels as one ZeroMQ frame of raw little-endian bytes,
/// no header (the element count and encoding are declared in the message header): IEEE-754
/// binary32, 4·count bytes, or — for gradients when the run asks for it — bfloat16 (the upper
/// 16 bits of binary32, rounded to nearest even), 2·count bytes. Received tensors are always
/// binary32: a bfloat16 frame is widened on decode.
///
/// The storage is reference-counted and never mutated after construction, so one snapshot of
/// the INR parameters is shared by every broadcast and ZeroMQ can send straight from it (see
/// `ZMQ.Socket.send(_:to:)`): the only copy on the send path is the snapshot itself.
/// Values are carried bit-exactly, NaN and infinities included (see `isFinite`).
public struct WireTensor: Sendable, Equatable, CustomStringConvertible {
    /// The owned, 64-byte aligned buffer. Immutable after `init`, hence safe to share across threads.
    final class Storage: @unchecked Sendable {
        let base: UnsafeMutablePointer<Float>
        let count: Int

        /// Allocates `count` floats and lets `fill` initialise all of them (no zero-fill first:
        /// these buffers are megabytes, written once, on the round's critical path).
        init(count: Int, fill: (UnsafeMutableBufferPointer<Float>) -> Void) {
            let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
            base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
            if count == 0 { base.initialize(to: 0) } else { base[count - 1] = 0 }  // e.g. bfloat16's odd last half
            self.count = count
            fill(UnsafeMutableBufferPointer(start: base, count: count))
        }

        deinit { UnsafeMutableRawPointer(base).deallocate() }
    }

    /// How the elements are laid out in the frame.
    public enum Encoding: UInt8, Sendable, Codable {
        case float32 = 0, bfloat16 = 1
        /// Bytes per element on the wire.
        public var bytesPerElement: Int { self == .float32 ? 4 : 2 }
    }

    /// float32: `count` floats. bfloat16: ⌈count/2⌉ floats' worth of packed 16-bit values.
    let storage: Storage
    public let encoding: Encoding
    /// Number of elements.
    public let count: Int

    /// Size of the tensor's frame in bytes.
    public var byteCount: Int { count * encoding.bytesPerElement }

    private init(storage: Storage, encoding: Encoding, count: Int) {
        self.storage = storage; self.encoding = encoding; self.count = count
    }

    /// A tensor holding a copy of `values`.
    public init(_ values: [Float]) {
        self.init(storage: Storage(count: values.count) { dst in
            values.withUnsafeBufferPointer { src in _ = dst.initialize(fromContentsOf: src) }
        }, encoding: .float32, count: values.count)
    }

    /// A tensor holding a copy of `values`.
    public init(copying values: UnsafeBufferPointer<Float>) {
        self.init(storage: Storage(count: values.count) { dst in _ = dst.initialize(fromContentsOf: values) }, encoding: .float32,
                  count: values.count)
    }

    /// `values` rounded to bfloat16 for sending (round to nearest, ties to even; NaN stays NaN).
    /// Only its frame is meaningful: it cannot be read back as floats until decoded.
    public init(bfloat16Rounding values: UnsafeBufferPointer<Float>) {
        let n = values.count
        let storage = Storage(count: (n + 1) / 2) { dst in
            guard let base = dst.baseAddress else { return }
            let out = UnsafeMutableRawPointer(base).assumingMemoryBound(to: UInt16.self)
            for i in 0..<n { out[i] = Self.bfloat16(values[i]) }
        }
        self.init(storage: storage, encoding: .bfloat16, count: n)
    }

    /// binary32 → bfloat16 bits, round to nearest even; a NaN keeps its sign and stays a (quiet) NaN.
    static func bfloat16(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    /// A snapshot of `storage` (e.g. the INR parameters before a broadcast).
    public init(copying storage: FloatStorage) {
        self.init(copying: UnsafeBufferPointer(storage.buffer))
    }

    /// A binary32 tensor of `count` elements from consecutive frames of `encoding` whose sizes
    /// add up to count · element size, each a multiple of the element size (the decoder checks
    /// this before calling).
    init(littleEndianFrames frames: [UnsafeRawBufferPointer], count n: Int, encoding: Encoding = .float32) {
        self.init(storage: Storage(count: n) { dst in
            guard let out = dst.baseAddress, n > 0 else { return }
            Self.decode(frames, encoding, into: out)
        }, encoding: .float32, count: n)
    }

    /// Writes the elements of `frames` (as `init(littleEndianFrames:…)` takes them) to `out` as
    /// binary32, widening bfloat16: the one decoding loop, also used to decode a received
    /// gradient straight into the coordinator's buffer.
    static func decode(_ frames: [UnsafeRawBufferPointer], _ encoding: Encoding, into out: UnsafeMutablePointer<Float>) {
        var element = 0
        for bytes in frames {
            guard let base = bytes.baseAddress else { continue }
            let k = bytes.count / encoding.bytesPerElement
            switch encoding {
            case .float32:
                UnsafeMutableRawPointer(out + element).copyMemory(from: base, byteCount: k * 4)
            case .bfloat16:
                for i in 0..<k {
                    let half = UInt32(base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    out[element + i] = Float(bitPattern: half << 16)
                }
            }
            element += k
        }
    }

    /// The frames this tensor travels in (`WireProtocol.frameRanges`): byte ranges of its frame bytes.
    public var frameRanges: [Range<Int>] { WireProtocol.frameRanges(byteCount: byteCount) }

    /// Calls `body` with the elements (valid only inside `body`).
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        precondition(encoding == .float32, "a bfloat16 tensor is only sent, never read")
        return try withExtendedLifetime(storage) {
            try body(UnsafeBufferPointer(start: storage.base, count: storage.count))
        }
    }

    /// The frame's bytes, as they go on the wire (valid only inside `body`).
    public func withUnsafeFrameBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(storage) { try body(UnsafeRawBufferPointer(start: storage.base, count: byteCount)) }
    }

    /// The elements as an array (a copy).
    public var array: [Float] { withUnsafeBufferPointer { Array($0) } }

    /// Copies the elements into `destination`, which must have exactly `count` elements.
    public func copy(into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(destination.count == count, "copying \(count) floats into a buffer of \(destination.count)")
        withUnsafeBufferPointer { src in _ = destination.update(fromContentsOf: src) }
    }

    /// Whether every element is finite. The wire carries NaN/∞ unchanged: a diverged
    /// configuration is a training outcome for the coordinator to act on, not a malformed frame
    /// (rejecting it at decode time would leave the round waiting forever for a result that
    /// every worker computes identically).
    public var isFinite: Bool {
        withUnsafeBufferPointer { $0.allSatisfy(\.isFinite) }
    }

    /// Bitwise equality (NaN payloads included), as determinism checks need.
    public static func == (a: WireTensor, b: WireTensor) -> Bool {
        guard a.count == b.count, a.encoding == b.encoding else { return false }
        if a.storage === b.storage || a.count == 0 { return true }
        return memcmp(a.storage.base, b.storage.base, a.byteCount) == 0
    }

    public var description: String { "WireTensor(\(count) \(encoding == .float32 ? "floats" : "bfloat16s"))" }
}
