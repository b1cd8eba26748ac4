import CSodium
import Dispatch

/// The cipher CURVE (RFC 26) seals every message with after the handshake: libsodium's
/// `crypto_box_afternm`, XSalsa20-Poly1305 under the precomputed session key. Timing it alone
/// gives the ceiling of a CURVE connection on this machine: libzmq seals each message on the
/// sender's I/O thread and opens it on the receiver's, one thread per connection.
public enum CurveCipher {
    /// Seconds per sealing of `bytes` bytes (best of `repeats`, after one warm-up), with the
    /// easy API (`crypto_box_easy_afternm`), i.e. without libzmq's extra copies.
    public static func sealSeconds(bytes: Int, repeats: Int) -> Double {
        _ = sodium_init()  // idempotent; picks the fastest implementations for this CPU
        var sessionKey = [UInt8](repeating: 7, count: Int(crypto_box_BEFORENMBYTES))
        let nonce = [UInt8](repeating: 1, count: Int(crypto_box_NONCEBYTES))
        let message = [UInt8](repeating: 0x5A, count: bytes)
        var sealed = [UInt8](repeating: 0, count: bytes + Int(crypto_box_MACBYTES))
        var best = Double.infinity
        for _ in 0...max(1, repeats) {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = crypto_box_easy_afternm(&sealed, message, UInt64(bytes), nonce, &sessionKey)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return best
    }
}
