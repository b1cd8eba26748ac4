import ArgumentParser
import Dispatch
import Foundation
import NeuMeta

/// The `wire` part of `bench`: how fast a gradient crosses a loopback connection.
extension Bench {
    /// Gradients per measurement (after one warm-up message).
    static let wireMessages = 24

    func wirePart(_ out: inout Figures) throws {
        let (config, plan, _) = Self.paperSetup()
        let defaultConfig: INRConfig = {
            var c = config, p = plan, o = OptimizerSettings()
            Recipe.default.apply(to: &p, &o, &c)
            return c
        }()
        let count = HyperNetwork.specs(config: defaultConfig, tensorCount: LeNet(width: 1).trainableSpecs.count).reduce(0) { $0 + $1.count }
        var rng = SeededRandom(seed, 0x31)
        let gradient = (0..<count).map { _ in rng.normal() * 1e-3 }
        let messages = quick ? 4 : Self.wireMessages
        for (curve, encoding) in [(true, WireTensor.Encoding.float32), (true, .bfloat16), (false, .float32)] {
            let pieces = Self.pieces(gradient, encoding)
            let seconds = try Self.loopbackSeconds(pieces: pieces, messages: messages, curve: curve)
            let bytes = Double(pieces.reduce(0) { $0 + $1.byteCount }), perMessage = seconds / Double(messages)
            let name = (curve ? "curve" : "plain") + "_" + (encoding == .float32 ? "f32" : "bf16")
            out.add("wire_\(name)_gbytes_per_s", bytes / perMessage / 1e9,
                    "gradient message, \(curve ? "CURVE" : "plaintext (NULL)"), \(encoding == .float32 ? "float32" : "bfloat16") gradient",
                    String(format: "%.2f GB/s (%.1f MB in %.1f ms, decoded)", bytes / perMessage / 1e9, bytes / 1e6, perMessage * 1000),
                    section: curve && encoding == .float32 ? "wire (loopback TCP, \(count) INR parameters of the default recipe)" : nil)
            out.record("wire_\(name)_ms", perMessage * 1000)
        }
        let seal = CurveCipher.sealSeconds(bytes: 4 * count, repeats: quick ? 2 : 5)
        out.add("wire_cipher_gbytes_per_s", Double(4 * count) / seal / 1e9, "XSalsa20-Poly1305 alone (CURVE's cipher), one thread",
                String(format: "%.2f GB/s (%.1f ms per gradient)", Double(4 * count) / seal / 1e9, seal * 1000))
        // Two workers into one coordinator with two I/O threads (as `run` sets up).
        let pieces = Self.pieces(gradient, .float32)
        let seconds = try Self.loopbackSeconds(pieces: pieces, messages: messages, curve: true, senders: 2, receiverIOThreads: 2)
        let rate = 2 * Double(messages * pieces.reduce(0) { $0 + $1.byteCount }) / seconds / 1e9
        out.add("wire_curve_f32_two_senders_gbytes_per_s", rate, "2 senders → 1 receiver (2 I/O threads), CURVE, float32",
                String(format: "%.2f GB/s in all", rate))
    }

    /// `gradient` in wire pieces of at most `WireProtocol.frameBytes`, as a worker sends it.
    static func pieces(_ gradient: [Float], _ encoding: WireTensor.Encoding) -> [WireTensor] {
        let perPiece = WireProtocol.frameBytes / encoding.bytesPerElement
        return gradient.withUnsafeBufferPointer { all in
            stride(from: 0, to: all.count, by: perPiece).map { start in
                let part = UnsafeBufferPointer(rebasing: all[start..<min(all.count, start + perPiece)])
                return encoding == .float32 ? WireTensor(copying: part) : WireTensor(bfloat16Rounding: part)
            }
        }
    }

    /// Seconds to send `messages` gradients, each as the gradient-piece messages carrying
    /// `pieces`, from each of `senders` worker-like DEALERs to one coordinator-like DEALER over
    /// TCP on 127.0.0.1 and decode them there. Every end has its own ZeroMQ context, so
    /// encryption and decryption run on separate I/O threads, as between processes; the
    /// receiver has `receiverIOThreads` of them.
    static func loopbackSeconds(pieces: [WireTensor], messages: Int, curve: Bool, senders: Int = 1,
                                receiverIOThreads: Int = 1) throws -> Double {
        let serverContext = try ZMQ.Context(ioThreads: receiverIOThreads)
        let server = try ZMQ.Socket(serverContext, .dealer)
        let serverKeys = try CurveKeyPair.generate()
        if curve { try server.makeCurveServer(keys: serverKeys) }
        try server.bind("tcp://127.0.0.1:*")
        let endpoint = try server.lastEndpoint()
        var clients: [ZMQ.Socket] = []
        defer { for c in clients { c.close() }; server.close() }
        for _ in 0..<senders {
            let client = try ZMQ.Socket(try ZMQ.Context(), .dealer)
            if curve { try client.makeCurveClient(server: serverKeys.public, keys: try CurveKeyPair.generate()) }
            try client.connect(endpoint)
            clients.append(client)
        }
        var offset = 0
        let gradient = pieces.map { piece in
            defer { offset += piece.count }
            return Message.gradientPiece(round: 0, block: 0, offset: offset, values: piece)
        }
        func receiveOne() throws {
            for piece in pieces {
                guard let frames = try server.receive(timeout: .seconds(30)) else { throw ValidationError("wire bench: no message within 30 s") }
                guard case .gradientPiece(_, _, _, let g) = try Message.decode(frames), g.count == piece.count else {
                    throw ValidationError("wire bench: received another message")
                }
            }
        }
        @Sendable func sendOne(_ client: ZMQ.Socket) throws { for message in gradient { try client.send(message) } }
        for client in clients { try sendOne(client); try receiveOne() }  // warm-up: handshakes and first buffers
        let failure = UncheckedBox<Error?>(nil), lock = NSLock()
        let start = DispatchTime.now().uptimeNanoseconds
        for client in clients {
            let sender = UncheckedBox(client)
            Thread {
                do { for _ in 0..<messages { try sendOne(sender.value) } } catch { lock.withLock { failure.value = error } }
            }.start()
        }
        for _ in 0..<(messages * senders) { try receiveOne() }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        if let error = lock.withLock({ failure.value }) { throw error }
        return seconds
    }
}

/// A reference the caller hands to one other thread and does not touch meanwhile.
final class UncheckedBox<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}
