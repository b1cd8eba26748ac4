import Foundation

#if _endian(big)
#error("the wire format carries Float tensors as raw little-endian bytes; big-endian hosts need a byte-swapping path")
#endif

/// An immutable flat Float tensor that travels as one ZeroMQ frame of raw little-endian IEEE-754
/// bytes (4·count bytes, no header: the element count is declared in the message header).
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

        /// Allocates `count` floats and lets `fill` initialise all of them.
        init(count: Int, fill: (UnsafeMutableBufferPointer<Float>) -> Void) {
            let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
            base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
            base.initialize(repeating: 0, count: max(count, 1))
            self.count = count
            fill(UnsafeMutableBufferPointer(start: base, count: count))
        }

        deinit { UnsafeMutableRawPointer(base).deallocate() }
    }

    let storage: Storage

    /// Number of Float elements.
    public var count: Int { storage.count }
    /// Size of the tensor's frame in bytes.
    public var byteCount: Int { storage.count * 4 }

    /// A tensor holding a copy of `values`.
    public init(_ values: [Float]) {
        storage = Storage(count: values.count) { dst in
            values.withUnsafeBufferPointer { src in _ = dst.initialize(fromContentsOf: src) }
        }
    }

    /// A tensor holding a copy of `values`.
    public init(copying values: UnsafeBufferPointer<Float>) {
        storage = Storage(count: values.count) { dst in _ = dst.initialize(fromContentsOf: values) }
    }

    /// A snapshot of `storage` (e.g. the INR parameters before a broadcast).
    public init(copying storage: FloatStorage) {
        self.init(copying: UnsafeBufferPointer(storage.buffer))
    }

    /// A tensor from raw little-endian bytes; `bytes.count` must be a multiple of 4 (the
    /// decoder checks this before calling).
    init(littleEndianBytes bytes: UnsafeRawBufferPointer) {
        storage = Storage(count: bytes.count / 4) { dst in
            if let base = bytes.baseAddress, !dst.isEmpty {
                UnsafeMutableRawPointer(dst.baseAddress!).copyMemory(from: base, byteCount: dst.count * 4)
            }
        }
    }

    /// Calls `body` with the elements (valid only inside `body`).
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try withExtendedLifetime(storage) {
            try body(UnsafeBufferPointer(start: storage.base, count: storage.count))
        }
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
        guard a.count == b.count else { return false }
        if a.storage === b.storage || a.count == 0 { return true }
        return memcmp(a.storage.base, b.storage.base, a.byteCount) == 0
    }

    public var description: String { "WireTensor(\(count) floats)" }
}
