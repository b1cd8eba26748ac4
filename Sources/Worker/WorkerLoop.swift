import Foundation
import Logging
import NeuMeta

/// The worker process: a socket thread that owns the ZeroMQ connection and follows
/// `WorkerState` (connect, hello, heartbeats, reconnect with back-off), and a compute thread that
/// turns queued blocks of configurations into gradients. Computing never blocks heartbeats; a finished
/// gradient wakes the socket thread at once through an in-process PAIR socket.
///
/// Every (re)connection starts a new *session*: work and results of an older session are
/// dropped, since the coordinator has already reassigned them.
final class WorkerLoop {
    enum Outcome: Equatable {
        case finished
        case refused(String)
        case failed(String)
    }

    let name: String, endpoint: String
    let keys: CurveKeyPair, server: CurveKey
    let fingerprint: DataFingerprint
    let verbose: Bool
    /// Stop when this process is no longer our parent (a local worker whose coordinator died).
    let parent: pid_t?
    private let context: ZMQ.Context
    private let shared: ComputeShared
    private let wakeEndpoint: String
    private let start = ContinuousClock.now
    private var socket: ZMQ.Socket?
    /// The connection events of `socket` (its monitor), for `WorkerState.transport`.
    private var monitor: ZMQ.Socket?
    private var connections = 0
    private var welcomed = false

    /// `makeCompute` builds what computes the configurations of a welcome's job.
    init(name: String, endpoint: String, keys: CurveKeyPair, server: CurveKey, fingerprint: DataFingerprint,
         makeCompute: @escaping MakeCompute, verbose: Bool, parent: pid_t?) throws {
        self.name = name; self.endpoint = endpoint; self.keys = keys; self.server = server
        self.fingerprint = fingerprint; self.verbose = verbose; self.parent = parent
        context = try ZMQ.Context()
        shared = ComputeShared(makeCompute: makeCompute)
        wakeEndpoint = "inproc://compute-done"
    }

    /// The worker's logger: `PlainLogHandler` (bootstrapped in `main`) prints `[name] text`.
    private static let logger = Logger(label: "neumeta-worker")

    /// Logs a line at `.info`, prefixed with this worker's name.
    func log(_ text: String) { Self.log(text, name: name) }

    /// Logs a line at `.info` for worker `name` (from any thread: swift-log's handler is).
    static func log(_ text: String, name: String) {
        logger.info("\(text)", metadata: ["name": "\(name)"])
    }

    private var now: Duration { ContinuousClock.now - start }

    /// Runs until the coordinator says goodbye, refuses this worker, or something local fails.
    func run() -> Outcome {
        let wake: ZMQ.Socket
        do {
            wake = try ZMQ.Socket(context, .pair)
            try wake.bind(wakeEndpoint)
        } catch { return .failed("cannot create the compute wake-up socket: \(error)") }
        let computeThread = Thread { [shared, context, wakeEndpoint, verbose, name] in
            ComputeShared.computeLoop(shared, context: context, wakeEndpoint: wakeEndpoint, verbose: verbose, name: name)
        }
        computeThread.stackSize = 8 << 20
        computeThread.start()
        defer {
            shared.stop()
            socket?.close()
            monitor?.close()
            wake.close()
        }

        var state = WorkerState(now: now)
        log("connecting to \(endpoint) (data \(fingerprint.dataset), protocol \(WireProtocol.version))")
        while true {
            if let parent, getppid() != parent { return .failed("the coordinator that started this worker is gone") }
            for action in state.tick(now: now) {
                if let outcome = perform(action, state: &state) { return outcome }
            }
            let sockets = [wake] + (socket.map { [$0] } ?? [])
            let ready: [Bool]
            do { ready = try ZMQ.poll(sockets, timeout: .milliseconds(100)) } catch { return .failed("poll: \(error)") }
            if ready[0] { while (try? wake.receive(timeout: .zero)) ?? nil != nil {} }
            if let failure = shared.failure { return .failed(failure) }
            sendResults(state: &state)  // every turn, so a missed wake-up costs at most one poll
            while let monitor, let event = try? monitor.receiveEvent(timeout: .zero) {
                for action in state.transport(event) {
                    if let outcome = perform(action, state: &state) { return outcome }
                }
            }
            if ready.count > 1, ready[1], let socket {
                while let frames = try? socket.receive(timeout: .zero) {
                    if let outcome = handle(frames, state: &state) { return outcome }
                    if self.socket !== socket { break }  // reconnected while handling
                }
            }
        }
    }

    // MARK: Events

    private func handle(_ frames: [ZMQ.Frame], state: inout WorkerState) -> Outcome? {
        let message: Message
        do { message = try Message.decode(frames) } catch {
            log("dropped a malformed message from the coordinator: \(error)")
            return nil
        }
        for action in state.received(message, now: now) {
            if let outcome = perform(action, state: &state) { return outcome }
        }
        return nil
    }

    private func perform(_ action: WorkerState.Action, state: inout WorkerState) -> Outcome? {
        switch action {
        case .connectAndSendHello:
            socket?.close()
            monitor?.close()
            shared.newSession()
            connections += 1
            if connections > 1 { log("reconnecting to \(endpoint) (attempt \(connections))") }
            do {
                let s = try ZMQ.Socket(context, .dealer)
                try s.makeCurveClient(server: server, keys: keys)
                // libzmq applies this per frame as it travels (CURVE adds its framing): the
                // coordinator's largest frame is a welcome's header.
                try s.setMaxMessageSize(max(WireProtocol.maxHeaderBytes, WireProtocol.frameBytes) + 4096)
                monitor = try s.monitor()
                try s.connect(endpoint)
                socket = s
                try s.send(.hello(workerName: name, protocolVersion: WireProtocol.version, dataFingerprint: fingerprint.text))
                state.sent(now: now)
            } catch let error as ZMQ.Error where error.isTimeout {
                log("hello not sent within \(ZMQ.Socket.defaultSendTimeout) (coordinator unreachable, or it refused this key)")
            } catch {
                return finish(.failed("cannot connect to \(endpoint): \(error)"))
            }
        case let .disconnect(reason):
            if case let .connecting(retryAt) = state.phase { log("\(reason); reconnecting in \(retryAt - now)") }
            socket?.close()
            socket = nil
            monitor?.close()
            monitor = nil
            shared.newSession()
        case .sendHeartbeat:
            send(.heartbeat, state: &state)
        case let .startJob(specBytes, round, base):
            let spec: JobSpec
            do { spec = try JobSpec.decode(specBytes) } catch {
                _ = state.jobRefused("\(error)")
                return finish(.failed("\(error)"))
            }
            let differences = spec.data.differences(from: fingerprint)
            guard differences.isEmpty else {
                let reason = "this worker's data differs from the coordinator's: " + differences.joined(separator: "; ")
                _ = state.jobRefused(reason)
                return finish(.failed(reason))
            }
            shared.welcome(spec: spec, base: base)
            state.jobStarted(parameterCount: spec.parameterCount)
            log("\(welcomed ? "rejoined" : "joined") at round \(round): \(spec.family) widths \(spec.plan.minWidth)…\(spec.plan.maxWidth), "
                + "\(spec.parameterCount) INR parameters")
            welcomed = true
        case let .useParameters(round, heads):
            shared.setParameters(heads, round: round)
        case let .compute(round, blocks):
            shared.enqueue(round: round, blocks: blocks)
        case let .log(line):
            log(line)
        case let .fail(reason):
            return finish(.failed(reason))
        case let .stop(reason):
            if reason.hasPrefix("refused: ") { return finish(.refused(String(reason.dropFirst("refused: ".count)))) }
            return finish(.finished)
        }
        return nil
    }

    /// Sends what the compute thread finished, in order: gradient pieces, then their result.
    private func sendResults(state: inout WorkerState) {
        for message in shared.takeOutgoing() {
            send(message, state: &state)
        }
    }

    private func send(_ message: Message, state: inout WorkerState) {
        guard let socket else { return }
        do {
            try socket.send(message)
            state.sent(now: now)
        } catch {
            log("could not send \(message.kind): \(error)")
        }
    }

    /// Says goodbye where that is polite (not after a refusal), then ends the loop.
    private func finish(_ outcome: Outcome) -> Outcome {
        if case .failed = outcome, let socket { try? socket.send(.goodbye) }
        return outcome
    }
}

/// State shared by the socket thread and the compute thread, every field under `condition`.
final class ComputeShared: @unchecked Sendable {
    struct Item { let session: Int; let round: Int; let block: Int }
    typealias Heads = [WorkerState.ParameterHead]

    private let condition = NSCondition()
    private let makeCompute: MakeCompute
    private var session = 0
    /// The job of the current session: spec and pretrained weights from its welcome.
    private var setup: (session: Int, spec: JobSpec, base: WireTensor)?
    /// Newest parameters (heads covering them); `version` grows with every delivery.
    private var parameters: (version: Int, round: Int, heads: Heads)?
    private var parameterVersion = 0
    private var pending: [Item] = []
    /// Messages for the socket thread to send, in order (gradient pieces, then their result).
    private var outgoing: [(session: Int, message: Message)] = []
    private var stopping = false
    private var failureText: String?

    init(makeCompute: @escaping MakeCompute) {
        self.makeCompute = makeCompute
    }

    private func locked<T>(_ body: () -> T) -> T {
        condition.lock(); defer { condition.unlock() }
        return body()
    }

    var failure: String? { locked { failureText } }

    /// A new connection: everything queued or finished for the old one is dropped.
    func newSession() {
        locked { session += 1; pending = []; outgoing = []; setup = nil; parameters = nil }
    }

    /// The job of a welcome; its parameters follow (`setParameters`).
    func welcome(spec: JobSpec, base: WireTensor) {
        locked { setup = (session, spec, base); parameters = nil }
    }

    func setParameters(_ heads: Heads, round: Int) {
        locked {
            parameterVersion += 1
            parameters = (parameterVersion, round, heads)
            pending.removeAll { $0.round < round }  // superseded work of an earlier round
        }
    }

    func enqueue(round: Int, blocks: [Int]) {
        locked {
            pending += blocks.map { Item(session: session, round: round, block: $0) }
            condition.signal()
        }
    }

    /// The messages of the current session that are ready to send.
    func takeOutgoing() -> [Message] {
        locked {
            let current = outgoing.filter { $0.session == session }.map(\.message)
            outgoing = []
            return current
        }
    }

    func stop() {
        locked { stopping = true; condition.signal() }
    }

    /// The compute thread: takes queued blocks in order, brings the job and its parameters up
    /// to date, computes — handing each finished gradient piece and then the result to the
    /// socket thread, pinging `wakeEndpoint` each time.
    static func computeLoop(_ shared: ComputeShared, context: ZMQ.Context, wakeEndpoint: String, verbose: Bool, name: String) {
        let wake: ZMQ.Socket
        do {
            wake = try ZMQ.Socket(context, .pair)
            try wake.connect(wakeEndpoint)
        } catch {
            shared.locked { shared.failureText = "compute thread cannot reach the socket thread: \(error)" }
            return
        }
        defer { wake.close() }
        // Heads may be finished on any of the job's compute threads: the wake-up socket is
        // used under this lock (a ZeroMQ socket must not be used by two threads at once).
        let wakeLock = NSLock()
        func hand(_ message: Message, session: Int) {
            shared.locked { shared.outgoing.append((session, message)) }
            wakeLock.withLock { _ = try? wake.send(frames: [[1]]) }
        }
        var job: (any ConfigurationCompute)?
        var jobBase: WireTensor?, jobVersion = -1
        while true {
            shared.condition.lock()
            while shared.pending.isEmpty && !shared.stopping { shared.condition.wait() }
            if shared.stopping { shared.condition.unlock(); return }
            let item = shared.pending.removeFirst()
            let queued = shared.pending.filter { $0.session == item.session }.map { (round: $0.round, block: $0.block) }
            let setup = shared.setup, parameters = shared.parameters
            shared.condition.unlock()

            guard let setup, setup.session == item.session, let parameters, parameters.round == item.round else {
                if verbose {
                    WorkerLoop.log("skipped round \(item.round) block \(item.block): superseded", name: name)
                }
                continue
            }
            do {
                if job == nil || job!.spec != setup.spec || jobBase != setup.base {
                    job = try shared.makeCompute(setup.spec, parameters.heads, setup.base, parameters.round)
                    jobBase = setup.base
                } else if jobVersion != parameters.version {
                    try job!.setParameters(parameters.heads, round: parameters.round)
                }
                jobVersion = parameters.version
                job!.prefetch(blocks: [(item.round, item.block)] + queued)
                let started = ContinuousClock.now
                let terms = try job!.gradient(round: item.round, block: item.block) { offset, values in
                    hand(.gradientPiece(round: item.round, block: item.block, offset: offset, values: values), session: item.session)
                }
                let elapsed = ContinuousClock.now - started
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                if verbose {
                    WorkerLoop.log("round \(item.round) block \(item.block): loss \(terms.map(\.total)) in \(elapsed)", name: name)
                }
                hand(.result(round: item.round, block: item.block, terms: terms,
                             seconds: min(max(seconds, 0), WireProtocol.maxComputeSeconds)),
                     session: item.session)
            } catch {
                shared.locked { shared.failureText = "\(error)" }
                wakeLock.withLock { _ = try? wake.send(frames: [[1]]) }
            }
        }
    }
}
