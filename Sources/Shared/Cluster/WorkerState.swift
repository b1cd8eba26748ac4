/// The worker's side of the connection as a value-type state machine without I/O.
///
///     connecting ──tick at retry time──▶ awaitingWelcome ──welcome──▶ working(round)
///         ▲                                   │ no welcome for             │ coordinator silent for
///         └──────── disconnect, back off ◀────┴─ heartbeatTimeout ◀────────┘ heartbeatTimeout
///     refuse or goodbye (any phase) ──▶ stopped
///
/// Reconnect delays start at `WireProtocol.reconnectInitialDelay` and double after every
/// failed attempt up to `reconnectMaxDelay`; a welcome resets them. Time is a monotonic
/// `Duration` since any fixed origin.
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
        /// Open a fresh socket to the coordinator and send hello.
        case connectAndSendHello
        /// Close the socket (a reconnect follows after the back-off).
        case disconnect(reason: String)
        case sendHeartbeat
        /// Exit with this reason.
        case stop(reason: String)
    }

    public private(set) var phase: Phase
    /// The delay before the next reconnect attempt.
    public private(set) var reconnectDelay = WireProtocol.reconnectInitialDelay
    let heartbeatInterval: Duration, heartbeatTimeout: Duration
    var lastHeard: Duration = .zero, lastSent: Duration = .zero

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
        case let .welcome(_, round, _, _):
            phase = .working(round: round)
            reconnectDelay = WireProtocol.reconnectInitialDelay
        case let .parameters(round, _), let .parameterPiece(round, _, _):
            if case .working = phase { phase = .working(round: round) }
        case let .refuse(reason):
            phase = .stopped(reason: "refused: \(reason)")
            return [.stop(reason: "refused: \(reason)")]
        case .goodbye:
            phase = .stopped(reason: "coordinator finished")
            return [.stop(reason: "coordinator finished")]
        case .hello, .work, .result, .gradientPiece, .heartbeat:
            break
        }
        return []
    }

    /// The worker sent something (a result counts as a heartbeat).
    public mutating func sent(now: Duration) { lastSent = now }

    private mutating func reconnect(_ reason: String, now: Duration) -> [Action] {
        phase = .connecting(retryAt: now + reconnectDelay)
        reconnectDelay = min(reconnectDelay * 2, WireProtocol.reconnectMaxDelay)
        return [.disconnect(reason: reason)]
    }
}
