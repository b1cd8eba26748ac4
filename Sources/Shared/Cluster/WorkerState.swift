/// The worker's side of the protocol as a value-type state machine without I/O: connection,
/// heartbeats, reconnect back-off, and the assembly of each round's parameters from its
/// parameter heads. `WorkerLoop` (in the worker executable) performs the actions.
///
///     connecting ──tick at retry time──▶ awaitingWelcome ──welcome──▶ working(round)
///         ▲                                   │ no welcome for             │ coordinator silent for
///         └──────── disconnect, back off ◀────┴─ heartbeatTimeout ◀────────┘ heartbeatTimeout
///     refuse or goodbye (any phase) ──▶ stopped
///
/// Reconnect delays start at `WireProtocol.reconnectInitialDelay` and double after every
/// failed attempt up to `reconnectMaxDelay`; a welcome resets them. Time is a monotonic
/// `Duration` since any fixed origin.
///
/// Parameter heads of a round are staged until they cover the job's parameters, then handed
/// over together (`useParameters`); heads of a newer round replace staged ones of an older
/// round, and a head that does not fit or overlaps one already staged is dropped and logged.
/// A new connection drops everything staged: its welcome starts over.
public struct WorkerState: Sendable {
    public enum Phase: Equatable, Sendable {
        /// Not connected; connect when `tick` reaches `retryAt`.
        case connecting(retryAt: Duration)
        /// Hello sent at `since`; waiting for the welcome.
        case awaitingWelcome(since: Duration)
        /// Admitted; `round` is the round whose parameters it holds.
        case working(round: Int)
        /// Refused, or training finished: the worker exits.
        case stopped(reason: String)
    }

    public enum Action: Equatable, Sendable {
        /// Open a fresh socket to the coordinator and send hello (a new session: work queued
        /// for the old connection is dropped).
        case connectAndSendHello
        /// Close the socket (a reconnect follows after the back-off).
        case disconnect(reason: String)
        case sendHeartbeat
        /// Set up the job of a welcome (decode and check its spec, build the INR); the round's
        /// parameters follow. Answer with `jobStarted` or `jobRefused`.
        case startJob(jobSpec: [UInt8], round: Int, baseWeights: WireTensor)
        /// These heads (offset, values) cover the parameters: use them for `round`.
        case useParameters(round: Int, heads: [ParameterHead])
        /// Compute these blocks of `round` (each block's configurations, summed).
        case compute(round: Int, blocks: [Int])
        /// Log this line.
        case log(String)
        /// Exit with this reason.
        case stop(reason: String)
        /// Exit with an error: the worker cannot work (e.g. its keys do not match the coordinator's).
        case fail(reason: String)
    }

    /// One head of a round's parameters: parameters[offset ..< offset + values.count].
    public struct ParameterHead: Equatable, Sendable {
        public let offset: Int
        public let values: WireTensor
        public init(offset: Int, values: WireTensor) { self.offset = offset; self.values = values }
    }

    public private(set) var phase: Phase
    /// The delay before the next reconnect attempt.
    public private(set) var reconnectDelay = WireProtocol.reconnectInitialDelay
    let heartbeatInterval: Duration, heartbeatTimeout: Duration
    var lastHeard: Duration = .zero, lastSent: Duration = .zero
    /// The parameter count of the job in hand (set by `jobStarted`; nil before its welcome).
    public private(set) var parameterCount: Int?
    /// Parameter heads of a round until they cover the parameters.
    var staging: (round: Int, heads: [ParameterHead], covered: Int)?
    /// Connections in a row whose security handshake failed (reset by a successful one), and
    /// whether the current connection is between its TCP connect and its handshake.
    public private(set) var handshakeFailures = 0
    var handshaking = false

    /// Starts disconnected, due to connect at `now`.
    public init(now: Duration, heartbeatInterval: Duration = WireProtocol.heartbeatInterval,
                heartbeatTimeout: Duration = WireProtocol.heartbeatTimeout) {
        phase = .connecting(retryAt: now)
        self.heartbeatInterval = heartbeatInterval
        self.heartbeatTimeout = heartbeatTimeout
    }

    /// Periodic: connects when due, gives up on a silent coordinator, sends heartbeats.
    public mutating func tick(now: Duration) -> [Action] {
        switch phase {
        case let .connecting(retryAt) where now >= retryAt:
            phase = .awaitingWelcome(since: now)
            lastHeard = now; lastSent = now
            parameterCount = nil; staging = nil; handshaking = false
            return [.connectAndSendHello]
        case let .awaitingWelcome(since) where now - since > heartbeatTimeout:
            return reconnect("no welcome within \(heartbeatTimeout)", now: now)
        case .working where now - lastHeard > heartbeatTimeout:
            return reconnect("coordinator silent for \(now - lastHeard)", now: now)
        case .working where now - lastSent >= heartbeatInterval:
            lastSent = now
            return [.sendHeartbeat]
        default:
            return []
        }
    }

    /// A message from the coordinator arrived.
    public mutating func received(_ message: Message, now: Duration) -> [Action] {
        if case .stopped = phase { return [] }
        if case .connecting = phase { return [] }  // from a socket already given up on
        lastHeard = now
        switch message {
        case let .welcome(spec, round, base):
            phase = .working(round: round)
            reconnectDelay = WireProtocol.reconnectInitialDelay
            parameterCount = nil; staging = nil
            return [.startJob(jobSpec: spec, round: round, baseWeights: base)]
        case let .parameterHead(round, offset, values):
            return stage(round: round, head: ParameterHead(offset: offset, values: values))
        case let .work(round, blocks):
            guard parameterCount != nil else { return [] }
            return [.compute(round: round, blocks: blocks)]
        case let .refuse(reason):
            phase = .stopped(reason: "refused: \(reason)")
            return [.stop(reason: "refused: \(reason)")]
        case .goodbye:
            phase = .stopped(reason: "coordinator finished")
            return [.stop(reason: "coordinator finished")]
        case .hello, .result, .gradientPiece:
            return [.log("ignored an unexpected \(message.kind) message")]
        case .heartbeat:
            return []
        }
    }

    /// The welcome's job is set up: parameter heads of `parameterCount` values are expected.
    public mutating func jobStarted(parameterCount: Int) {
        self.parameterCount = parameterCount
    }

    /// The welcome's job cannot run here (`reason` says why): the worker stops.
    public mutating func jobRefused(_ reason: String) -> [Action] {
        phase = .stopped(reason: reason)
        return [.stop(reason: reason)]
    }

    /// Adds a parameter head for `round`; hands the round's parameters over once the heads
    /// cover them.
    private mutating func stage(round: Int, head: ParameterHead) -> [Action] {
        guard case .working = phase, let parameterCount else { return [] }
        if staging == nil || staging!.round < round { staging = (round, [], 0) }
        guard staging!.round == round else { return [] }  // a head of a round already superseded
        let range = head.offset..<(head.offset + head.values.count)
        guard range.upperBound <= parameterCount, !range.isEmpty,
              !staging!.heads.contains(where: { range.overlaps($0.offset..<($0.offset + $0.values.count)) }) else {
            return [.log("dropped a parameter head \(range) of round \(round) that does not fit the \(parameterCount) parameters")]
        }
        staging!.heads.append(head)
        staging!.covered += head.values.count
        guard staging!.covered == parameterCount else { return [] }
        let heads = staging!.heads
        staging = nil
        phase = .working(round: round)
        return [.useParameters(round: round, heads: heads)]
    }

    /// A connection event of the socket (its monitor). A handshake that fails, or a connection
    /// closed before its handshake completed, counts; after `WireProtocol.maxHandshakeFailures`
    /// in a row the worker fails: the coordinator is there but will not talk to it — its key is
    /// not allow-listed, or its `coordinator.pub` is not the coordinator's key. (A coordinator
    /// that is not up yet refuses the TCP connection and does not count: workers may start first;
    /// nor does a handshake the coordinator defers — a key it suspends for a while.)
    public mutating func transport(_ event: ZMQ.Socket.Event) -> [Action] {
        if case .stopped = phase { return [] }
        var failure: String?
        switch event {
        case .connected:
            handshaking = true
        case .handshakeSucceeded:
            handshaking = false; handshakeFailures = 0
        case let .handshakeFailed(reason):
            handshaking = false; failure = reason
        case .handshakeDeferred:
            handshaking = false
        case .disconnected:
            if handshaking { handshaking = false; failure = "the coordinator closed the connection during the handshake" }
        }
        guard let failure else { return [] }
        handshakeFailures += 1
        guard handshakeFailures >= WireProtocol.maxHandshakeFailures else { return [] }
        let reason = "\(handshakeFailures) CURVE handshakes with the coordinator failed in a row (last: \(failure)): check that this "
            + "worker's public key is in the coordinator's authorized_workers and that coordinator.pub holds the coordinator's public key"
        phase = .stopped(reason: reason)
        return [.fail(reason: reason)]
    }

    /// The worker sent something (a result counts as a heartbeat).
    public mutating func sent(now: Duration) { lastSent = now }

    private mutating func reconnect(_ reason: String, now: Duration) -> [Action] {
        phase = .connecting(retryAt: now + reconnectDelay)
        parameterCount = nil; staging = nil
        reconnectDelay = min(reconnectDelay * 2, WireProtocol.reconnectMaxDelay)
        return [.disconnect(reason: reason)]
    }
}
