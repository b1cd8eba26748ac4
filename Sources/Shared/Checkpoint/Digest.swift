import CSodium

/// Content digests via libsodium.
public enum Digest {
    /// Runs `sodium_init()` exactly once, on first use (a static `let` is initialised atomically).
    static let sodiumReady: Void = {
        // Calls stay outside `precondition`: under -Ounchecked (our release builds) its
        // condition is not evaluated at all.
        let status = sodium_init()
        precondition(status >= 0, "libsodium failed to initialise")
    }()

    /// Lower-case hex of the 32-byte BLAKE2b of `bytes`.
    public static func blake2bHex(_ bytes: UnsafeRawBufferPointer) -> String {
        var hasher = Blake2b()
        hasher.update(bytes)
        return hex(hasher.finalize())
    }

    /// Lower-case hex of `bytes`.
    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(2 * bytes.count)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Streaming, unkeyed BLAKE2b with a 32-byte output (libsodium's `crypto_generichash`).
///
/// Noncopyable because it owns its state: libsodium's state type is 64-byte aligned, so Swift
/// imports it as opaque and it lives in its own aligned allocation.
public struct Blake2b: ~Copyable {
    /// Digest length in bytes.
    public static let outputBytes = 32
    private let memory: UnsafeMutableRawPointer
    private var state: OpaquePointer { OpaquePointer(memory) }

    public init() {
        _ = Digest.sodiumReady
        memory = UnsafeMutableRawPointer.allocate(byteCount: crypto_generichash_statebytes(), alignment: 64)
        let status = crypto_generichash_init(state, nil, 0, Blake2b.outputBytes)
        precondition(status == 0)
    }

    deinit { memory.deallocate() }

    /// Absorbs `bytes`.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress else { return }
        let status = crypto_generichash_update(state, base.assumingMemoryBound(to: UInt8.self), UInt64(bytes.count))
        precondition(status == 0)
    }

    /// The 32-byte digest of everything absorbed.
    public consuming func finalize() -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Blake2b.outputBytes)
        let status = crypto_generichash_final(state, &digest, Blake2b.outputBytes)
        precondition(status == 0)
        return digest
    }
}
