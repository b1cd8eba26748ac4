import ArgumentParser
import Foundation
import NeuMeta

/// The coordinator's network side: one CURVE ROUTER socket (workers admitted by the ZAP
/// allow-list) driven by the `Scheduler` state machine. This class only performs the
/// scheduler's actions and turns socket traffic into its events; every decision is the
/// scheduler's.
final class ClusterServer {
    typealias WorkerID = [UInt8]

    /// One configuration's result as the round needs it.
    struct Result {
        let terms: LossTerms
        let gradient: WireTensor
        /// Seconds the worker spent computing it.
        let seconds: Double
    }

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

    let endpoint: String
    private let context: ZMQ.Context
    private let zap: ZAPHandler
    private let socket: ZMQ.Socket
    private var scheduler: Scheduler<WorkerID, Result>
    private let jobSpec: [UInt8]
    private let spec: JobSpec
    private let base: WireTensor
    private let start = ContinuousClock.now
    /// The round in progress and the parameters it uses (sent to workers that join mid-round).
    private var current: (round: Int, parameters: WireTensor)?
    private var completed: [Result]?
    private var stats = RoundStats()
    private var lastResult: [WorkerID: Duration] = [:]
    private var computeByWorker: [WorkerID: Double] = [:]
    private var roundStart: Duration = .zero
    private var malformedTotal = 0

    /// Binds `endpoint` with `keys` as the CURVE server, admitting `allowed` worker keys.
    init(bind endpoint: String, keys: CurveKeyPair, allowed: Set<CurveKey>, spec: JobSpec, base: WireTensor) throws {
        context = try ZMQ.Context()
        zap = try ZAPHandler(context: context, allowed: allowed) { refusal in log("security: \(refusal)") }
        socket = try ZMQ.Socket(context, .router)
        try socket.makeCurveServer(keys: keys)
        try socket.setRouterHandover(true)
        try socket.setMaxMessageSize(WireProtocol.maxHeaderBytes + 4 * WireProtocol.maxTensorElements)
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

    var liveWorkerNames: [String] { scheduler.liveWorkers.compactMap { scheduler.name(of: $0) } }

    /// Runs `round` with `parameters` until every configuration has its result; returns them in
    /// configuration-index order with the round's statistics.
    func runRound(_ round: Int, parameters: FloatStorage) throws -> (results: [Result], stats: RoundStats) {
        current = (round, WireTensor(copying: parameters))
        completed = nil
        stats = RoundStats()
        lastResult = [:]
        computeByWorker = [:]
        roundStart = now
        perform(scheduler.startRound(round, now: now))
        while completed == nil {
            if let frames = try socket.receive(timeout: .milliseconds(50)) {
                handle(frames)
                while completed == nil, let more = try socket.receive(timeout: .zero) { handle(more) }
            }
            perform(scheduler.tick(now: now))
        }
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

    /// Waits (serving hellos and heartbeats) until at least `count` workers are connected or
    /// `timeout` passes; returns the number connected.
    func waitForWorkers(_ count: Int, timeout: Duration) throws -> Int {
        let deadline = now + timeout
        while scheduler.liveWorkers.count < count && now < deadline {
            if let frames = try socket.receive(timeout: .milliseconds(50)) { handle(frames) }
            perform(scheduler.tick(now: now))
        }
        return scheduler.liveWorkers.count
    }

    /// Tells every worker that training is finished and flushes for at most `flush`.
    func finish(flush: Duration = .seconds(2)) {
        for id in scheduler.liveWorkers { try? socket.send(.goodbye, to: id) }
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
            admit(id, name: name, version: version, fingerprint: fingerprint)
        case let .result(round, configuration, terms, seconds, gradient):
            guard gradient.count == spec.parameterCount else {
                return dropMalformed(from: id, "a result with \(gradient.count) gradient values (expected \(spec.parameterCount))")
            }
            let accepted = scheduler.outstanding(of: id).contains(configuration) && round == current?.round
            perform(scheduler.result(from: id, round: round, configuration: configuration,
                                     payload: Result(terms: terms, gradient: gradient, seconds: seconds), now: now))
            if accepted {
                lastResult[id] = now
                computeByWorker[id, default: 0] += seconds
            }
        case .heartbeat:
            scheduler.heard(from: id, now: now)
        case .goodbye:
            perform(scheduler.workerLeft(id))
        case .welcome, .refuse, .work, .parameters:
            dropMalformed(from: id, "a \(message.kind) message, which only the coordinator sends")
        }
    }

    /// Counts and logs (the first 20, then every 1000th, so a hostile peer cannot flood the
    /// log) a message that is dropped.
    private func dropMalformed(from id: WorkerID, _ problem: String) {
        stats.malformed += 1
        malformedTotal += 1
        if malformedTotal <= 20 || malformedTotal % 1000 == 0 {
            log("dropped malformed message #\(malformedTotal) from \(describe(id)): \(problem)")
        }
    }

    /// A hello: refuse on a protocol or data mismatch, else welcome and schedule.
    private func admit(_ id: WorkerID, name: String, version: UInt16, fingerprint: String) {
        guard version == WireProtocol.version else {
            return refuse(id, name: name, "protocol version \(version); this coordinator speaks \(WireProtocol.version)")
        }
        guard let theirs = DataFingerprint(text: fingerprint) else { return refuse(id, name: name, "malformed data fingerprint") }
        let differences = spec.data.differences(from: theirs)
        guard differences.isEmpty else {
            return refuse(id, name: name, "the worker's data differs from the coordinator's: " + differences.joined(separator: "; "))
        }
        guard let current else { return }
        send(.welcome(jobSpec: jobSpec, round: current.round, parameters: current.parameters, baseWeights: base), to: id)
        log("worker \(name) joined at round \(current.round) (\(scheduler.liveWorkers.count + 1) connected)")
        perform(scheduler.workerJoined(id, name: name, now: now))
    }

    private func refuse(_ id: WorkerID, name: String, _ reason: String) {
        log("refused worker \(name): \(reason)")
        send(.refuse(reason: reason), to: id)
    }

    // MARK: Scheduler actions

    private func perform(_ actions: [Scheduler<WorkerID, Result>.Action]) {
        for action in actions {
            switch action {
            case let .broadcastParameters(round, workers):
                guard let current, current.round == round else { continue }
                for id in workers { send(.parameters(round: round, values: current.parameters), to: id) }
            case let .sendWork(id, round, configurations):
                send(.work(round: round, configurations: configurations), to: id)
            case let .sendHeartbeat(workers):
                for id in workers { send(.heartbeat, to: id) }
            case let .dropWorker(_, name, reason):
                let why = switch reason {
                case .heartbeatTimeout(let silent): "silent for \(String(format: "%.1f", seconds(silent))) s"
                case .left: "it said goodbye"
                case .rejoined: "it connected again"
                }
                log("dropped worker \(name) (\(why)); its configurations go to the others")
            case let .discardResult(id, round, configuration, reason):
                stats.discarded += 1
                log("discarded result of round \(round) configuration \(configuration) from \(describe(id)): \(reason)")
            case let .roundComplete(_, results):
                completed = results
            case let .stalled(round, waitingFor, unassigned, silentFor):
                let waiting = waitingFor.isEmpty ? "no worker holds work" : "waiting for " + waitingFor.joined(separator: ", ")
                log("round \(round) stalled for \(formatDuration(seconds(silentFor))): \(waiting)"
                    + (unassigned > 0 ? "; \(unassigned) configurations wait for a worker to connect" : ""))
            }
        }
    }

    private func send(_ message: Message, to id: WorkerID) {
        do {
            try socket.send(message, to: id)
            if case let .parameters(_, values) = message { stats.bytesSent += values.byteCount }
            if case let .welcome(spec, _, parameters, base) = message { stats.bytesSent += spec.count + parameters.byteCount + base.byteCount }
        } catch {
            log("could not send \(message.kind) to \(describe(id)): \(error)")
        }
    }

    private func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    private func describe(_ id: WorkerID) -> String {
        scheduler.name(of: id) ?? "unknown peer \(String(decoding: id.prefix(32), as: UTF8.self).debugDescription)"
    }
}
