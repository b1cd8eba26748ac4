import Foundation
import Testing
@testable import NeuMeta

/// Collects ZAP refusals from the handler thread.
private final class RefusalLog: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [ZAPHandler.Refusal] = []
    func append(_ r: ZAPHandler.Refusal) { lock.withLock { entries.append(r) } }
    var all: [ZAPHandler.Refusal] { lock.withLock { entries } }
}

/// A CURVE ROUTER "coordinator" with a ZAP handler admitting one worker key, on an ephemeral
/// tcp://127.0.0.1 port; clients use their own context, as separate processes would.
private struct Server {
    let context: ZMQ.Context
    let zap: ZAPHandler
    let router: ZMQ.Socket
    let endpoint: String
    let keys: CurveKeyPair
    let worker: CurveKeyPair
    let refusals = RefusalLog()

    init() throws {
        context = try ZMQ.Context()
        keys = try CurveKeyPair.generate()
        worker = try CurveKeyPair.generate()
        let log = refusals
        zap = try ZAPHandler(context: context, allowed: [worker.public]) { log.append($0) }
        router = try ZMQ.Socket(context, .router)
        try router.makeCurveServer(keys: keys)
        try router.setMaxMessageSize(WireProtocol.maxTensorElements * 4)
        try router.bind("tcp://127.0.0.1:*")
        endpoint = try router.lastEndpoint()
    }

    func client(keys: CurveKeyPair?) throws -> ZMQ.Socket {
        let socket = try ZMQ.Socket(try ZMQ.Context(), .dealer)
        try socket.setSendTimeout(.milliseconds(500))
        if let keys { try socket.makeCurveClient(server: self.keys.public, keys: keys) }
        try socket.connect(endpoint)
        return socket
    }
}

/// The time limits catch a hang, not slowness: the limit runs from when a test is started,
/// and the suite's process tests can hold the runner's threads (waiting on child processes) for
/// over a minute on a 2-core machine before these run, so each allows 3 minutes.
@Suite struct ClusterSocketTests {
    static let hello = Message.hello(workerName: "w", protocolVersion: WireProtocol.version, dataFingerprint: "f")

    /// A refused client's send is queued or times out (once libzmq has dropped the failed
    /// connection the DEALER has no peer); either way nothing reaches the server.
    static func sendRefusable(_ client: ZMQ.Socket) {
        do { try client.send(hello) } catch let error as ZMQ.Error { #expect(error.isTimeout, "\(error)") } catch {
            Issue.record("\(error)")
        }
    }

    @Test(.timeLimit(.minutes(3))) func allowListedWorkerExchangesMessages() throws {
        #expect(ZMQ.has("curve"))
        let server = try Server()
        defer { server.zap.stop() }
        let client = try server.client(keys: server.worker)
        try client.send(Self.hello)
        let frames = try #require(try server.router.receive(timeout: .seconds(2)))
        #expect(try Message.decode(Array(frames.dropFirst())) == Self.hello)
        #expect(frames[1].property("User-Id") == server.worker.public.z85)

        // Hostile-but-authenticated garbage is rejected by the decoder; the socket keeps serving.
        try client.send(frames: [Array("NMC1".utf8) + [1, 0, 5, 0, 255, 255, 255, 255]])
        let garbage = try #require(try server.router.receive(timeout: .seconds(2)))
        #expect(throws: WireError.self) { try Message.decode(Array(garbage.dropFirst())) }

        let base = WireTensor((0..<100_000).map { Float($0) / 7 })
        let welcome = Message.welcome(jobSpec: Array("{}".utf8), round: 3, baseWeights: base)
        try server.router.send(welcome, to: frames[0].array)
        let reply = try #require(try client.receive(timeout: .seconds(2)))
        #expect(try Message.decode(reply) == welcome)
        #expect(server.refusals.all.isEmpty)
    }

    @Test(.timeLimit(.minutes(3))) func secondHandlerInOneContextFailsWithoutHanging() throws {
        let context = try ZMQ.Context()
        let first = try ZAPHandler(context: context, allowed: []) { _ in }
        defer { first.stop() }
        #expect(throws: ZMQ.Error.self) { try ZAPHandler(context: context, allowed: []) { _ in } }
    }

    @Test(.timeLimit(.minutes(3))) func unknownKeyGetsNothingAndIsLogged() throws {
        let server = try Server()
        defer { server.zap.stop() }
        let stranger = try CurveKeyPair.generate()
        let client = try server.client(keys: stranger)
        Self.sendRefusable(client)
        #expect(try server.router.receive(timeout: .milliseconds(1500)) == nil)
        #expect(try client.receive(timeout: .milliseconds(200)) == nil)
        let refusals = server.refusals.all
        #expect(refusals.contains { $0.publicKey == stranger.public.z85 && $0.mechanism == "CURVE" }, "\(refusals)")
    }

    @Test(.timeLimit(.minutes(3))) func plaintextClientGetsNothing() throws {
        let server = try Server()
        defer { server.zap.stop() }
        let client = try server.client(keys: nil)
        Self.sendRefusable(client)
        #expect(try server.router.receive(timeout: .milliseconds(1500)) == nil)
        #expect(try client.receive(timeout: .milliseconds(200)) == nil)
    }

    @Test func zapRefusesOtherMechanismsAndMalformedRequests() {
        let key = CurveKey(bytes: Array(repeating: 7, count: 32))!
        let log = RefusalLog()
        func request(_ mechanism: String, _ credentials: [[UInt8]] = [], domain: String = ZAPHandler.defaultDomain) -> [[UInt8]] {
            ["1.0", "42", domain, "10.0.0.9", "", mechanism].map { Array($0.utf8) } + credentials
        }
        func status(_ reply: [[UInt8]]) -> String { String(decoding: reply[2], as: UTF8.self) }
        let decide = { (frames: [[UInt8]]) in ZAPHandler.decide(frames, allowed: [key], domain: ZAPHandler.defaultDomain) { log.append($0) } }
        let ok = decide(request("CURVE", [key.bytes]))
        #expect(status(ok) == "200" && ok[1] == Array("42".utf8) && ok[4] == Array(key.z85.utf8) && ok.count == 6)
        #expect(status(decide(request("NULL"))) == "400")
        #expect(status(decide(request("PLAIN", [Array("user".utf8), Array("pw".utf8)]))) == "400")
        #expect(status(decide(request("CURVE", [[1, 2]]))) == "400")
        #expect(status(decide(request("CURVE", [key.bytes], domain: "other"))) == "400")
        #expect(status(decide([Array("2.0".utf8)])) == "500")
        #expect(log.all.count == 5 && log.all.allSatisfy { $0.publicKey == nil })
        // A suspended key: status 300 (try later) with the reason, until the suspension ends.
        let suspensions = Suspensions()
        suspensions.suspend(key, until: .now + .seconds(60), reason: "it sent a message of 257 frames")
        let deferred = ZAPHandler.decide(request("CURVE", [key.bytes]), allowed: [key], suspended: suspensions.reason,
                                         domain: ZAPHandler.defaultDomain) { log.append($0) }
        #expect(status(deferred) == "300" && String(decoding: deferred[3], as: UTF8.self).contains("257 frames"))
        #expect(log.all.last?.publicKey == key.z85)
        suspensions.suspend(CurveKey(bytes: Array(repeating: 8, count: 32))!, until: .now - .seconds(1), reason: "over")
        #expect(suspensions.reason(CurveKey(bytes: Array(repeating: 8, count: 32))!) == nil, "a suspension that has ended")
    }
}
