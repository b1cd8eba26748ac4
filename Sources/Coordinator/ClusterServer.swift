import ArgumentParser
import Foundation
import NeuMeta

/// The coordinator's network side: one CURVE ROUTER socket (workers admitted by the ZAP
/// allow-list) driven by the `Scheduler` state machine. This class only performs the
/// scheduler's actions and turns socket traffic into its events; every decision about who
/// computes what is the scheduler's.
///
/// Gradients arrive in pieces (one per INR head, `WireProtocol`'s "Pieces of a round"): the
/// server keeps one buffer per configuration, and as soon as every configuration's piece of a
/// head is in it has the caller step the optimizer on that head and sends the new values to
/// every worker as a piece of the next round's parameters.
///
/// A worker is known by the routing id the ROUTER gives its connection (never one the peer
/// chooses, so no peer can take over another's work), by the name it says in its hello (for
/// logs), and by its CURVE key (the ZAP "User-Id"): a hello naming a live worker with the same
/// key replaces that connection (the worker restarted); with another key it is refused.
final class ClusterServer {
    typealias WorkerID = [UInt8]

    /// One configuration's result as the round needs it (its gradient is in the round's
    /// buffers, and already stepped on, when the result is accepted).
    struct Result {
        let terms: LossTerms
        /// Seconds the worker spent computing it.
        let seconds: Double
    }

    /// Steps the optimizer on the parameters in `range` from every configuration's gradient of
    /// the round (in configuration order; each pointer is to a whole gradient, of which only
    /// `range` is read).
    typealias PieceStep = (_ range: Range<Int>, _ gradients: [UnsafePointer<Float>]) -> Void

    /// What a round cost, for the per-round log line and metrics.
    struct RoundStats {
        var seconds = 0.0
        var workersAlive = 0
        /// Workers whose last result came more than 50 % later (from the round's start) than the
        /// median worker's.
        var stragglers: [String] = []
        var bytesSent = 0, bytesReceived = 0
        var discarded = 0, malformed = 0
        /// The busiest worker's summed compute time for the round's accepted results: the part
        /// of the round that was gradient computation on its critical path.
        var computeSeconds = 0.0
    }

    enum Failure: Error, CustomStringConvertible {
        case diverged(round: Int, configuration: Int, workers: [String])
        case orphaned
        var description: String {
            switch self {
            case .orphaned: "the parent process is gone (--exit-with-parent); the last checkpoint is intact"
            case let .diverged(round, configuration, workers):
                "round \(round) configuration \(configuration) gave a non-finite gradient or loss on \(workers.joined(separator: " and ")): "
                    + "training diverged; resume from the last checkpoint (--resume) with a lower learning rate"
            }
        }
    }

    /// At most this many messages are handled before the scheduler's tick runs again, so a
    /// flooding peer cannot hold off heartbeats and timeouts.
    static let messagesPerTick = 256

    let endpoint: String
    private let context: ZMQ.Context
    private let zap: ZAPHandler
    private let socket: ZMQ.Socket
    private var scheduler: Scheduler<WorkerID, Result>
    private let jobSpec: [UInt8]
    private let spec: JobSpec
    private let base: WireTensor
    private let start = ContinuousClock.now
    /// The newest round's parameters (sent to workers that join, also between rounds).
    private var current: (round: Int, parameters: WireTensor?)?
    private var completed: [Result]?
    private var stats = RoundStats()
    private var lastResult: [WorkerID: Duration] = [:]
    private var computeByWorker: [WorkerID: Double] = [:]
    private var roundStart: Duration = .zero
    /// CURVE key (Z85) of each admitted connection.
    private var keys: [WorkerID: String] = [:]
    /// Configurations of the round in progress that one worker already returned non-finite.
    private var nonFinite: [Int: String] = [:]
    private var failure: Failure?
    private let limiter = LogLimiter()
    /// With `--exit-with-parent`: the process that started this one.
    private let parent: pid_t?

    // The round's gradient pieces.
    /// The pieces gradients and parameters travel in (the INR's heads), and their index by offset.
    private let pieceRanges: [Range<Int>]
    private let pieceIndex: [Int: Int]
    /// One whole gradient per configuration of a round, allocated once, and their addresses.
    private let gradients: [FloatStorage]
    private let gradientSources: [UnsafePointer<Float>]
    /// Which pieces of each configuration's gradient are in.
    private var piecesIn: [[Bool]]
    /// The live parameters the step writes (the new values of a stepped piece are sent from here).
    private var live: FloatStorage?
    private var stepPiece: PieceStep?
    /// Whether stepped pieces go out as the next round's parameters (not after the last round).
    private var broadcastNext = false
    /// Pieces of round `round` already sent to each worker: one that has them all needs no
    /// `parameters` message at that round's start.
    private var piecesSent: (round: Int, count: [WorkerID: Int]) = (-1, [:])

    /// Binds `endpoint` with `keys` as the CURVE server, admitting `allowed` worker keys.
    /// `pieceRanges` tile the parameters (`HyperNetwork.headRanges`).
    init(bind endpoint: String, keys: CurveKeyPair, allowed: Set<CurveKey>, spec: JobSpec, base: WireTensor, pieceRanges: [Range<Int>],
         parent: pid_t?) throws {
        precondition(pieceRanges.first?.lowerBound == 0 && pieceRanges.last?.upperBound == spec.parameterCount
                     && zip(pieceRanges, pieceRanges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound },
                     "pieces must tile the parameters")
        self.parent = parent
        self.pieceRanges = pieceRanges
        pieceIndex = Dictionary(uniqueKeysWithValues: pieceRanges.enumerated().map { ($1.lowerBound, $0) })
        let configurations = spec.plan.configurationsPerRound
        gradients = (0..<configurations).map { _ in FloatStorage(count: spec.parameterCount) }
        gradientSources = gradients.map { UnsafePointer($0.base) }
        piecesIn = Array(repeating: Array(repeating: false, count: pieceRanges.count), count: configurations)
        // One I/O thread per core (up to 4): each worker connection's CURVE work runs on one.
        context = try ZMQ.Context(ioThreads: min(4, max(1, ProcessInfo.processInfo.activeProcessorCount)))
        let limiter = self.limiter
        zap = try ZAPHandler(context: context, allowed: allowed) { refusal in limiter.note("security", "security: \(refusal)") }
        socket = try ZMQ.Socket(context, .router)
        try socket.makeCurveServer(keys: keys)
        try socket.setRouterMandatory(true)
        // The largest message a worker sends is one result: its gradient frame.
        try socket.setMaxMessageSize(max(1 << 20, 4 * spec.parameterCount + 4096))
        do { try socket.bind(endpoint) } catch {
            throw ValidationError("cannot listen on \(endpoint): \(error) (is another coordinator running, or the address not local?)")
        }
        self.endpoint = (try? socket.lastEndpoint()) ?? endpoint
        self.spec = spec
        jobSpec = spec.json
        self.base = base
        scheduler = Scheduler(configurationsPerRound: spec.plan.configurationsPerRound)
    }

    private var now: Duration { ContinuousClock.now - start }

    /// When `runRound`'s `whileWaiting` runs: after the broadcast (7 MB sealed per worker, ≈ 10 ms).
    static let whileWaitingDelay: Duration = .milliseconds(25)

    /// Runs `round` with `parameters` until every configuration has its result; returns them in
    /// configuration-index order with the round's statistics. Meanwhile `stepPiece` steps each
    /// piece of `parameters` (in place) as soon as all its gradients are in; with
    /// `broadcastNext` the new values go to the workers as the next round's. `whileWaiting` runs once during
    /// the round, `whileWaitingDelay` after the parameters and work went out (by then they are
    /// sealed and on their way, so it does not compete with CURVE for the cores), or at the
    /// end of a shorter round: the coordinator's own work that the results do not depend on,
    /// such as the deferred EMA update.
    func runRound(_ round: Int, parameters: FloatStorage, broadcastNext: Bool, whileWaiting: () -> Void = {},
                  stepPiece: PieceStep) throws -> (results: [Result], stats: RoundStats) {
        try withoutActuallyEscaping(stepPiece) { stepPiece in
            self.stepPiece = stepPiece
            defer { self.stepPiece = nil; live = nil }
            live = parameters
            self.broadcastNext = broadcastNext
            return try runRound(round, parameters: parameters, whileWaiting: whileWaiting)
        }
    }

    private func runRound(_ round: Int, parameters: FloatStorage, whileWaiting: () -> Void) throws -> (results: [Result], stats: RoundStats) {
        current = (round, nil)
        for c in piecesIn.indices { piecesIn[c] = Array(repeating: false, count: pieceRanges.count) }
        completed = nil
        stats = RoundStats()
        lastResult = [:]; computeByWorker = [:]; nonFinite = [:]
        roundStart = now
        perform(scheduler.startRound(round, now: now))
        var waited = false
        while completed == nil {
            let sinceStart = now - roundStart
            if !waited && sinceStart >= Self.whileWaitingDelay { whileWaiting(); waited = true }
            try service(wait: waited ? .milliseconds(50) : min(.milliseconds(50), Self.whileWaitingDelay - sinceStart))
            if let failure { throw failure }
        }
        if !waited { whileWaiting() }
        stats.seconds = seconds(now - roundStart)
        stats.workersAlive = scheduler.liveWorkers.count
        stats.computeSeconds = computeByWorker.values.max() ?? 0
        let finishTimes = lastResult.mapValues { $0 - roundStart }
        if finishTimes.count >= 2 {
            let median = finishTimes.values.sorted()[finishTimes.count / 2]
            stats.stragglers = finishTimes.filter { $0.value > median * 1.5 }.keys.compactMap { scheduler.name(of: $0) }.sorted()
        }
        return (completed ?? [], stats)
    }

    /// Handles what arrived (waiting up to `wait` for the first message), then runs the
    /// scheduler's housekeeping. Called in rounds and between them (so heartbeats continue
    /// while the coordinator steps the optimizer or writes a checkpoint).
    func service(wait: Duration = .zero) throws {
        if let parent, getppid() != parent { throw Failure.orphaned }
        if let frames = try socket.receive(timeout: wait) {
            handle(frames)
            for _ in 1..<Self.messagesPerTick {
                guard completed == nil, let more = try socket.receive(timeout: .zero) else { break }
                handle(more)
            }
        }
        perform(scheduler.tick(now: now))
    }

    /// Tells every worker that training is finished; for `flush`, answers any late message
    /// (a worker that was reconnecting) with goodbye too, then closes.
    func finish(flush: Duration = .seconds(1)) {
        for id in scheduler.liveWorkers { try? socket.send(.goodbye, to: id) }
        let deadline = now + flush
        while now < deadline {
            guard let frames = try? socket.receive(timeout: .milliseconds(50)), let id = frames.first?.array else { continue }
            try? socket.send(.goodbye, to: id)
        }
        try? socket.setLinger(flush)
        socket.close()
        zap.stop()
    }

    // MARK: Socket events

    private func handle(_ frames: [ZMQ.Frame]) {
        guard frames.count >= 2 else { return }
        let id = frames[0].array
        stats.bytesReceived += frames.dropFirst().reduce(0) { $0 + $1.bytes.count }
        let message: Message
        do { message = try Message.decode(Array(frames.dropFirst())) } catch {
            return dropMalformed(from: id, "\(error)")
        }
        switch message {
        case let .hello(name, version, fingerprint):
            admit(id, name: name, key: frames[1].property("User-Id") ?? "", version: version, fingerprint: fingerprint)
        case let .result(round, configuration, terms, seconds):
            receive(from: id, round: round, configuration: configuration, result: Result(terms: terms, seconds: seconds))
        case let .gradientPiece(round, configuration, offset, values):
            receivePiece(from: id, round: round, configuration: configuration, offset: offset, values: values)
        case .heartbeat:
            scheduler.heard(from: id, now: now)
        case .goodbye:
            perform(scheduler.workerLeft(id))
        case .welcome, .refuse, .work, .parameters, .parameterPiece:
            dropMalformed(from: id, "a \(message.kind) message, which only the coordinator sends")
        }
    }

    /// A result: its gradient came ahead in pieces, which must all be in.
    private func receive(from id: WorkerID, round: Int, configuration: Int, result: Result) {
        let assigned = round == current?.round && scheduler.outstanding(of: id).contains(configuration)
        if assigned {
            let missing = piecesIn[configuration].filter { !$0 }.count
            guard missing == 0 else {
                return dropMalformed(from: id, "the result of configuration \(configuration) came before \(missing) of its "
                                     + "\(pieceRanges.count) gradient pieces")
            }
            let t = result.terms
            guard t.total.isFinite && t.crossEntropy.isFinite && t.reconstruction.isFinite && t.normRegularizer.isFinite else {
                return nonFiniteResult(from: id, round: round, configuration: configuration)
            }
        }
        perform(scheduler.result(from: id, round: round, configuration: configuration, payload: result, now: now))
        if assigned {
            lastResult[id] = now
            computeByWorker[id, default: 0] += result.seconds
        }
    }

    /// The parameters of the round in progress (or the last one) as workers get them whole: a
    /// copy taken when first needed — a welcome, a worker without all of the round's pieces,
    /// or just before the round's first piece is stepped in place — so a round whose workers
    /// have every piece already makes no copy on its critical path. Nil only before any round.
    private func roundParameters() -> WireTensor? {
        if let parameters = current?.parameters { return parameters }
        guard current != nil, let live else { return nil }
        let parameters = WireTensor(copying: live)
        current!.parameters = parameters
        return parameters
    }

    /// A gradient piece of a configuration this worker holds in the current round (anything else
    /// is late — the round is over or the work went elsewhere — and ignored, as its result will
    /// be). A piece already in (a recomputation elsewhere: the same bits) is ignored too.
    private func receivePiece(from id: WorkerID, round: Int, configuration: Int, offset: Int, values: WireTensor) {
        guard let p = pieceIndex[offset], pieceRanges[p].count == values.count else {
            return dropMalformed(from: id, "a gradient piece at \(offset) of \(values.count) values, which is not one of the "
                                 + "\(pieceRanges.count) pieces of the \(spec.parameterCount) parameters")
        }
        guard round == current?.round, scheduler.outstanding(of: id).contains(configuration), !piecesIn[configuration][p] else { return }
        guard values.isFinite else { return nonFiniteResult(from: id, round: round, configuration: configuration) }
        values.withUnsafeBufferPointer { store(configuration, piece: p, $0) }
    }

    /// Puts configuration `c`'s gradient piece `p` in its buffer; once every configuration has
    /// piece p, steps it and sends the new values to every worker for the next round.
    private func store(_ c: Int, piece p: Int, _ values: UnsafeBufferPointer<Float>) {
        let range = pieceRanges[p]
        (gradients[c].base + range.lowerBound).update(from: values.baseAddress!, count: range.count)
        piecesIn[c][p] = true
        guard piecesIn.allSatisfy({ $0[p] }), let stepPiece, let live, let current else { return }
        _ = roundParameters()  // the round's parameters change from here on
        stepPiece(range, gradientSources)
        guard broadcastNext else { return }
        let next = current.round + 1
        if piecesSent.round != next { piecesSent = (next, [:]) }
        let values = WireTensor(copying: UnsafeBufferPointer(start: live.base + range.lowerBound, count: range.count))
        for id in scheduler.liveWorkers {
            send(.parameterPiece(round: next, offset: range.lowerBound, values: values), to: id)
            piecesSent.count[id, default: 0] += 1
        }
    }

    /// A non-finite gradient (piece) or loss. A genuine divergence repeats on any worker (the
    /// computation is deterministic); a faulty worker does not. So: drop this one, let another
    /// recompute, stop on the second.
    private func nonFiniteResult(from id: WorkerID, round: Int, configuration: Int) {
        let name = scheduler.name(of: id) ?? "?"
        if let first = nonFinite[configuration] {
            failure = .diverged(round: round, configuration: configuration, workers: [first, name])
            return
        }
        nonFinite[configuration] = name
        log("worker \(name) returned a non-finite result for round \(round) configuration \(configuration); "
            + "dropping it and recomputing elsewhere")
        perform(scheduler.workerFailed(id, reason: "non-finite result"))
    }

    /// A hello: refuse on a protocol, data or name mismatch, else welcome and schedule.
    private func admit(_ id: WorkerID, name: String, key: String, version: UInt16, fingerprint: String) {
        guard version == WireProtocol.version else {
            return refuse(id, name: name, "protocol version \(version); this coordinator speaks \(WireProtocol.version)")
        }
        guard let theirs = DataFingerprint(text: fingerprint) else { return refuse(id, name: name, "malformed data fingerprint") }
        let differences = spec.data.differences(from: theirs)
        guard differences.isEmpty else {
            return refuse(id, name: name, "the worker's data differs from the coordinator's: " + differences.joined(separator: "; "))
        }
        if let existing = scheduler.liveWorkers.first(where: { $0 != id && scheduler.name(of: $0) == name }) {
            guard keys[existing] == key else {
                return refuse(id, name: name, "the name \(name) is in use by a worker with another key")
            }
            perform(scheduler.workerFailed(existing, reason: "it connected again"))
        }
        guard let current, let parameters = roundParameters() else { return }
        keys[id] = key
        send(.welcome(jobSpec: jobSpec, round: current.round, parameters: parameters, baseWeights: base), to: id)
        perform(scheduler.workerJoined(id, name: name, now: now))
        log("worker \(name) joined at round \(current.round) (\(scheduler.liveWorkers.count) connected)")
    }

    private func refuse(_ id: WorkerID, name: String, _ reason: String) {
        limiter.note("refuse", "refused worker \(name): \(reason)")
        send(.refuse(reason: reason), to: id)
    }

    /// Counts and logs (rate-limited, so a hostile peer cannot flood the log) a message that is
    /// dropped. A malformed result from an admitted worker also drops the worker: its
    /// configuration would otherwise wait for a result that is not coming.
    private func dropMalformed(from id: WorkerID, _ problem: String) {
        stats.malformed += 1
        limiter.note("malformed", "dropped malformed message from \(describe(id)): \(problem)")
        if scheduler.name(of: id) != nil, !scheduler.outstanding(of: id).isEmpty {
            perform(scheduler.workerFailed(id, reason: "malformed message: \(problem)"))
        }
    }

    // MARK: Scheduler actions

    private func perform(_ actions: [Scheduler<WorkerID, Result>.Action]) {
        for action in actions {
            switch action {
            case let .broadcastParameters(round, workers):
                guard let current, current.round == round else { continue }
                let sent = piecesSent.round == round ? piecesSent.count : [:]
                for id in workers where sent[id, default: 0] < pieceRanges.count {
                    guard let parameters = roundParameters() else { break }
                    send(.parameters(round: round, values: parameters), to: id)
                }
            case let .sendWork(id, round, configurations):
                send(.work(round: round, configurations: configurations), to: id)
            case let .sendHeartbeat(workers):
                for id in workers { send(.heartbeat, to: id) }
            case let .dropWorker(id, name, reason):
                keys[id] = nil
                let why = switch reason {
                case .heartbeatTimeout(let silent): "silent for \(String(format: "%.1f", seconds(silent))) s"
                case .noProgress(let stuck): "no result for \(String(format: "%.0f", seconds(stuck))) s"
                case .failed(let what): what
                case .left: "it said goodbye"
                case .rejoined: "it connected again"
                }
                log("dropped worker \(name) (\(why)); its configurations go to the others")
            case let .discardResult(id, round, configuration, reason):
                stats.discarded += 1
                limiter.note("discard", "discarded result of round \(round) configuration \(configuration) from \(describe(id)): \(reason)")
            case let .roundComplete(_, results):
                completed = results
            case let .stalled(round, waitingFor, unassigned, silentFor):
                let waiting = waitingFor.isEmpty ? "no worker holds work" : "waiting for " + waitingFor.joined(separator: ", ")
                log("round \(round) stalled for \(formatDuration(seconds(silentFor))): \(waiting)"
                    + (unassigned > 0 ? "; \(unassigned) configurations wait for a worker to connect" : ""))
            }
        }
    }

    /// Sends to one worker; a worker whose connection is gone (the ROUTER is mandatory, so it
    /// says so instead of dropping the message) is dropped and its work reassigned.
    private func send(_ message: Message, to id: WorkerID) {
        do {
            try socket.send(message, to: id)
            if case let .parameters(_, values) = message { stats.bytesSent += values.byteCount }
            if case let .parameterPiece(_, _, values) = message { stats.bytesSent += values.byteCount }
            if case let .welcome(spec, _, parameters, base) = message { stats.bytesSent += spec.count + parameters.byteCount + base.byteCount }
        } catch let error as ZMQ.Error where error.code == EHOSTUNREACH {
            if scheduler.name(of: id) != nil { perform(scheduler.workerFailed(id, reason: "its connection is gone")) }
        } catch {
            log("could not send \(message.kind) to \(describe(id)): \(error)")
        }
    }

    private func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    private func describe(_ id: WorkerID) -> String {
        scheduler.name(of: id) ?? "an unadmitted peer"
    }
}

/// Rate-limits repetitive log lines per category: the first 20, then every 1000th (with the
/// count), so a hostile or broken peer cannot flood the log. Thread-safe (the ZAP handler logs
/// from its own thread).
final class LogLimiter: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [String: Int] = [:]

    func note(_ category: String, _ text: @autoclosure () -> String) {
        lock.lock()
        counts[category, default: 0] += 1
        let n = counts[category]!
        lock.unlock()
        if n <= 20 { log(text()) } else if n % 1000 == 0 { log("\(text()) [\(n) such messages so far]") }
    }
}
