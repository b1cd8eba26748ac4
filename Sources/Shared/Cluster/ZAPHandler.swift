import Foundation

/// A ZeroMQ authentication (ZAP, RFC 27) handler: a REP socket on `inproc://zeromq.zap.01` in
/// the coordinator's context, served by its own thread, that libzmq consults for every CURVE
/// handshake on sockets of that context.
///
/// It admits a CURVE client iff its public key is allow-listed and not suspended (status 200,
/// and the user id — readable as the "User-Id" frame property — is the key's Z85 text); a
/// suspended key is refused with status 300 (try later), everything else with status 400 and reports the refusal, with the offending key, to `onRefusal`. NULL
/// and PLAIN requests are refused too (a CURVE server never produces them; this is defence in
/// depth should a socket ever be misconfigured with a ZAP domain but no CURVE).
///
/// Create it before binding the server socket: without a handler libzmq admits every CURVE
/// client.
public final class ZAPHandler: @unchecked Sendable {
    public static let endpoint = "inproc://zeromq.zap.01"
    public static let defaultDomain = "neumeta"
    /// How often the serving thread checks for `stop()`.
    static let pollInterval: Duration = .milliseconds(50)

    /// A refused handshake.
    public struct Refusal: Sendable, CustomStringConvertible {
        /// "CURVE", "NULL", "PLAIN", … as libzmq reports it.
        public let mechanism: String
        /// The peer's IP address.
        public let address: String
        /// The client's public key (Z85), for CURVE.
        public let publicKey: String?
        public let reason: String

        public var description: String {
            "refused \(mechanism) client \(address)\(publicKey.map { " with key \($0)" } ?? ""): \(reason)"
        }
    }

    /// Allow-listed keys refused until a time (`suspend`), and whether every key is (`atCapacity`).
    private let suspensions = Suspensions()
    private let stopRequested = LockedFlag()
    private let finished = DispatchSemaphore(value: 0)
    private let stopOnce = LockedFlag()
    /// False when `init` threw before starting the thread (then `deinit` must not wait for it).
    private var started = false

    /// Binds the ZAP endpoint in `context` (throws if another handler already holds it) and
    /// starts serving; `allowed` are the admitted client public keys.
    public init(context: ZMQ.Context, allowed: Set<CurveKey>, domain: String = ZAPHandler.defaultDomain,
                onRefusal: @escaping @Sendable (Refusal) -> Void) throws {
        let socket = try ZMQ.Socket(context, .rep)
        try socket.bind(Self.endpoint)
        let stop = stopRequested, done = finished, suspensions = suspensions
        Thread.detachNewThread {
            Self.serve(socket, allowed: allowed, suspended: suspensions.reason, domain: domain, onRefusal: onRefusal, stop: stop)
            socket.close()
            done.signal()
        }
        started = true
    }

    deinit { stop() }

    /// While set, every handshake is refused for now (status 300, `reason`): the coordinator is
    /// short of file descriptors, and a connection admitted now would take one it keeps for
    /// checkpoints. Workers retry with back-off; connections already open are not affected.
    public func refuseAll(_ reason: String?) { suspensions.refuseAll(reason) }

    /// Refuses `key`'s handshakes for `duration` although it is allow-listed, saying `reason`:
    /// for a peer that broke the protocol's size bounds, which libzmq cannot enforce on a whole
    /// message — refused at the handshake, it cannot make the coordinator buffer another one.
    /// Connections already open are not affected.
    public func suspend(_ key: CurveKey, for duration: Duration, reason: String) {
        suspensions.suspend(key, until: .now + duration, reason: reason)
    }

    /// Stops serving and waits (≤ `pollInterval`) for the thread to finish. Idempotent.
    public func stop() {
        guard started, !stopOnce.testAndSet() else { return }
        _ = stopRequested.testAndSet()
        finished.wait()
    }

    private static func serve(_ socket: ZMQ.Socket, allowed: Set<CurveKey>, suspended: (CurveKey) -> String?, domain: String,
                              onRefusal: @Sendable (Refusal) -> Void, stop: LockedFlag) {
        while !stop.isSet {
            let request: [ZMQ.Frame]?
            do { request = try socket.receive(timeout: pollInterval) } catch {
                // Keep the endpoint bound whatever happens: without a handler libzmq admits
                // every CURVE client. Back off instead of spinning on a persistent error.
                Thread.sleep(forTimeInterval: 0.05)
                continue
            }
            guard let request else { continue }
            let reply = decide(request.map(\.array), allowed: allowed, suspended: suspended, domain: domain, onRefusal: onRefusal)
            // A REP socket must answer every request; a failure here means the context is going away.
            try? socket.send(frames: reply)
        }
    }

    /// The reply frames for one request (RFC 27: version, request id, status code, status text,
    /// user id, metadata).
    static func decide(_ frames: [[UInt8]], allowed: Set<CurveKey>, suspended: (CurveKey) -> String? = { _ in nil }, domain: String,
                       onRefusal: @Sendable (Refusal) -> Void) -> [[UInt8]] {
        func text(_ i: Int) -> String { i < frames.count ? String(decoding: frames[i], as: UTF8.self) : "" }
        func reply(_ code: String, _ status: String, user: String = "") -> [[UInt8]] {
            [Array("1.0".utf8), frames.count > 1 ? frames[1] : [], Array(code.utf8), Array(status.utf8), Array(user.utf8), []]
        }
        // Request: version, request id, domain, address, routing id, mechanism, credentials…
        guard frames.count >= 6, text(0) == "1.0" else {
            onRefusal(Refusal(mechanism: "?", address: "?", publicKey: nil, reason: "malformed ZAP request"))
            return reply("500", "malformed ZAP request")
        }
        let address = text(3), mechanism = text(5)
        func refuse(_ reason: String, key: String? = nil) -> [[UInt8]] {
            onRefusal(Refusal(mechanism: mechanism, address: address, publicKey: key, reason: reason))
            return reply("400", reason)
        }
        guard text(2) == domain else { return refuse("unknown ZAP domain \"\(text(2))\"") }
        guard mechanism == "CURVE" else { return refuse("only CURVE clients are admitted") }
        guard frames.count == 7, let key = CurveKey(bytes: frames[6]) else { return refuse("malformed CURVE credentials") }
        guard allowed.contains(key) else { return refuse("public key is not in the allow-list", key: key.z85) }
        if let reason = suspended(key) {
            // 300, a temporary error: a worker sharing the key waits instead of giving up.
            onRefusal(Refusal(mechanism: mechanism, address: address, publicKey: key.z85, reason: reason))
            return reply("300", reason)
        }
        return reply("200", "OK", user: key.z85)
    }
}

/// Keys refused until a time, with the reason; thread-safe (set by the coordinator's loop, read
/// by the ZAP thread).
final class Suspensions: @unchecked Sendable {
    private let lock = NSLock()
    private var until: [CurveKey: (ContinuousClock.Instant, String)] = [:]
    private var everyKey: String?

    func refuseAll(_ reason: String?) { lock.withLock { everyKey = reason } }

    func suspend(_ key: CurveKey, until end: ContinuousClock.Instant, reason: String) {
        lock.withLock { until[key] = (max(end, until[key]?.0 ?? end), reason) }
    }

    /// Why `key` is refused now (nil: it is not).
    func reason(_ key: CurveKey) -> String? {
        lock.withLock {
            if let everyKey { return everyKey }
            guard let (end, reason) = until[key] else { return nil }
            let now = ContinuousClock.now
            guard now < end else { until[key] = nil; return nil }
            let seconds = Int(((end - now) / .seconds(1)).rounded(.up))
            return "key suspended for another \(seconds) s: \(reason)"
        }
    }
}

/// A Bool behind a lock (portable to macOS 13, unlike `Synchronization.Atomic`).
final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false

    var isSet: Bool { lock.withLock { value } }

    /// Sets the flag; returns whether it was already set.
    func testAndSet() -> Bool { lock.withLock { defer { value = true }; return value } }
}
