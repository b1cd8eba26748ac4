import Foundation

/// The coordinator's side of the protocol as a value-type state machine without I/O: admission,
/// scheduling (its `Scheduler`), which INR heads of each configuration's gradient are in, when a
/// head can be stepped, which parameter heads each worker holds, and the rule for non-finite
/// results. One mutating method per event, each returning the actions to perform, in order;
/// `ClusterServer` (in the coordinator executable) turns socket traffic into these events and
/// performs the actions.
///
/// A round's gradients arrive by INR head (`WireProtocol`, "Heads of a round"). As soon as
/// every configuration's gradient of head h is in, the machine says `stepHead(h)` and, when
/// another round follows, `broadcastHead` — the stepped values go to every live worker as
/// head h of the next round's parameters. At a round's start a worker that lacks some of that
/// round's parameter heads (it joined late, or missed a broadcast) is sent them.
///
/// Workers are told apart by the transport's connection id (never a name a peer chooses), named
/// by their hello (for logs), and keyed by their CURVE key: a hello naming a live worker with
/// the same key replaces that connection (the worker restarted); with another key it is refused.
public struct CoordinatorState<WorkerID: Hashable & Sendable>: Sendable {
    /// One configuration's result as a round hands it over (its gradient is in the round's
    /// buffers, and already stepped on, when the result is accepted).
    public struct Result: Sendable, Equatable {
        public let terms: LossTerms
        /// Seconds the worker spent computing it.
        public let seconds: Double
        public init(terms: LossTerms, seconds: Double) { self.terms = terms; self.seconds = seconds }
    }

    /// What a finished round reports besides its results.
    public struct Completion: Sendable, Equatable {
        /// Results in configuration-index order.
        public let results: [Result]
        /// The busiest worker's summed compute time for the round's accepted results.
        public let computeSeconds: Double
        /// Workers whose last result came more than 50 % later (from the round's start) than
        /// the median worker's.
        public let stragglers: [String]
    }

    public enum Action: Sendable, Equatable {
        /// Send the welcome (job spec, `round`, base weights) to a worker just admitted.
        case welcome(WorkerID, round: Int)
        case refuse(WorkerID, reason: String)
        /// Send these parameter heads of `round` (the values the round started with).
        case sendParameterHeads(round: Int, heads: [Int], to: WorkerID)
        case sendWork(to: WorkerID, round: Int, configurations: [Int])
        case sendHeartbeat(to: [WorkerID])
        /// Every configuration's gradient of head `head` is in: step the optimizer on it.
        case stepHead(Int)
        /// Send head `head` of the stepped parameters, as `round`'s, to these workers.
        case broadcastHead(round: Int, head: Int, to: [WorkerID])
        case roundComplete(round: Int, Completion)
        /// A log line.
        case log(String)
        /// A log line about a peer's misbehaviour, to be counted and rate-limited per kind (a
        /// hostile peer must not flood the log).
        case logLimited(Noise, String)
        /// The same configuration was non-finite on two workers: training diverged.
        case diverged(round: Int, configuration: Int, workers: [String])
    }

    /// Kinds of peer misbehaviour the coordinator counts and logs rate-limited.
    public enum Noise: String, Sendable {
        case refused, malformed, discarded, rejected
    }

    /// The plausibility bound of a gradient head: once `normWarmUp` norms of a head were
    /// accepted, a gradient head whose L2 norm exceeds `normFactor` × the median of the last
    /// `normHistory` is not summed. A single finite but absurd gradient (1e20) would otherwise
    /// wreck AdamW's moments for good. Such a head is recomputed on another worker; the same
    /// norm from an independent computation confirms it (a genuine spike) and it is taken.
    public static var normFactor: Double { 1000 }
    public static var normWarmUp: Int { 8 }
    public static var normHistory: Int { 32 }

    /// The job every worker must match.
    public let dataFingerprint: DataFingerprint
    public let headCount: Int
    public let configurationsPerRound: Int
    public private(set) var scheduler: Scheduler<WorkerID, Result>
    /// The last round started (nil before the first); `inProgress` while it has not completed.
    public private(set) var round: Int?
    public private(set) var inProgress = false
    /// Whether another round follows the one in progress (its parameters are broadcast as
    /// they are stepped).
    var more = false
    /// headsIn[c][h]: configuration c's gradient of head h is in; headsInCount[h]: for how
    /// many configurations (so a head's completion is known without scanning them).
    var headsIn: [[Bool]]
    var headsInCount: [Int]
    var headsComplete = 0
    /// Parameter heads each worker holds, by round.
    var held: [WorkerID: (round: Int, heads: Set<Int>)] = [:]
    /// CURVE key (Z85) of each admitted connection.
    var keys: [WorkerID: String] = [:]
    /// Who a worker is for quarantine: its CURVE key and the name it gives.
    struct Identity: Hashable, Sendable { let key: String, name: String }
    /// Configurations of the round in progress that one worker already returned non-finite.
    var nonFinite: [Int: (first: Identity, count: Int)] = [:]
    /// Identities refused until a time, after a non-finite or implausible result, with their
    /// back-off (doubling from `quarantineInitial` to `quarantineMax` on every repeat).
    var quarantine: [Identity: (until: Duration, backoff: Duration)] = [:]
    public static var quarantineInitial: Duration { .seconds(30) }
    public static var quarantineMax: Duration { .seconds(600) }
    /// The latest time an event reported.
    var clock: Duration = .zero
    /// Recently accepted gradient-head norms, per head (oldest first).
    var recentNorms: [[Double]]
    /// Implausible heads already seen this round, by configuration and head: their norm and who sent them.
    var implausible: [Int: [Int: (norm: Double, from: Identity)]] = [:]
    var roundStart: Duration = .zero
    var computeByWorker: [WorkerID: Double] = [:]
    var lastResult: [WorkerID: Duration] = [:]

    public init(dataFingerprint: DataFingerprint, headCount: Int, configurationsPerRound: Int,
                heartbeatInterval: Duration = WireProtocol.heartbeatInterval, heartbeatTimeout: Duration = WireProtocol.heartbeatTimeout,
                stallReportInterval: Duration = WireProtocol.stallReportInterval, progressTimeout: Duration = WireProtocol.progressTimeout) {
        precondition(headCount >= 1, "parameters travel in at least one head")
        self.dataFingerprint = dataFingerprint
        self.headCount = headCount
        self.configurationsPerRound = configurationsPerRound
        scheduler = Scheduler(configurationsPerRound: configurationsPerRound, heartbeatInterval: heartbeatInterval,
                              heartbeatTimeout: heartbeatTimeout, stallReportInterval: stallReportInterval, progressTimeout: progressTimeout)
        headsIn = Array(repeating: Array(repeating: false, count: headCount), count: configurationsPerRound)
        headsInCount = Array(repeating: 0, count: headCount)
        recentNorms = Array(repeating: [], count: headCount)
    }

    /// Live workers in join order.
    public var liveWorkers: [WorkerID] { scheduler.liveWorkers }
    public func name(of id: WorkerID) -> String? { scheduler.name(of: id) }

    // MARK: Events

    /// Starts `round` (the previous one completed); `more`: another round follows in this run.
    public mutating func startRound(_ round: Int, more: Bool, now: Duration) -> [Action] {
        precondition(!inProgress, "round \(self.round ?? -1) is still in progress")
        self.round = round; inProgress = true; self.more = more
        for c in headsIn.indices { headsIn[c] = Array(repeating: false, count: headCount) }
        headsInCount = Array(repeating: 0, count: headCount)
        headsComplete = 0
        nonFinite = [:]; implausible = [:]; computeByWorker = [:]; lastResult = [:]
        roundStart = now
        clock = max(clock, now)
        return translate(scheduler.startRound(round, now: now))
    }

    /// A hello: refused on a protocol, data or name conflict, otherwise welcomed and scheduled.
    /// Before the first round there is nothing to join yet: the hello is ignored (the worker
    /// says hello again when no welcome comes).
    public mutating func hello(from id: WorkerID, name: String, key: String, version: UInt16, fingerprint: String, now: Duration) -> [Action] {
        func refuse(_ reason: String) -> [Action] {
            [.logLimited(.refused, "refused worker \(Self.printable(name)): \(reason)"), .refuse(id, reason: reason)]
        }
        guard KeyStore.isValidWorkerName(name) else {
            return refuse("the worker name must be 1–64 of A–Z a–z 0–9 - _ . (not starting with a dot)")
        }
        clock = max(clock, now)
        // A quarantined worker is not refused (a refused worker exits) but not admitted either:
        // its hello goes unanswered and it says hello again later.
        if let q = quarantine[Identity(key: key, name: name)], now < q.until {
            return [.logLimited(.refused, "not admitting worker \(name) for another \(Self.format(q.until - now, digits: 0)) s: quarantined "
                                + "after a non-finite or implausible result (the back-off doubles on every repeat)")]
        }
        guard version == WireProtocol.version else {
            return refuse("protocol version \(version); this coordinator speaks \(WireProtocol.version)")
        }
        guard let theirs = DataFingerprint(text: fingerprint) else { return refuse("malformed data fingerprint") }
        let differences = dataFingerprint.differences(from: theirs)
        guard differences.isEmpty else {
            return refuse("the worker's data differs from the coordinator's: " + differences.joined(separator: "; "))
        }
        var actions: [Action] = []
        if let existing = scheduler.worker(named: name), existing != id {
            guard keys[existing] == key else { return refuse("the name \(name) is in use by a worker with another key") }
            actions += translate(scheduler.workerFailed(existing, reason: "it connected again"))
        }
        guard let round else { return actions }
        keys[id] = key
        held[id] = (round, Set(0..<headCount))
        actions += [.welcome(id, round: round), .sendParameterHeads(round: round, heads: Array(0..<headCount), to: id)]
        actions += translate(scheduler.workerJoined(id, name: name, now: now))
        actions.append(.log("worker \(name) joined at round \(round) (\(liveWorkers.count) connected)"))
        return actions
    }

    /// Whether a gradient head just received is wanted: of the round in progress, of a
    /// configuration this worker holds, and not in yet. Anything else is late (the round is
    /// over or the work went elsewhere) or a recomputation of what is in (the same bits), and
    /// is ignored, as its result will be.
    public func wantsGradientHead(from id: WorkerID, round: Int, configuration: Int, head: Int) -> Bool {
        inProgress && round == self.round && (0..<headCount).contains(head)
            && scheduler.holds(id, configuration: configuration) && !headsIn[configuration][head]
    }

    /// The largest plausible norm of head `head`'s gradient now (nil during the warm-up).
    public func normBound(head: Int) -> Double? {
        let recent = recentNorms[head]
        guard recent.count >= Self.normWarmUp else { return nil }
        return recent.sorted()[recent.count / 2] * Self.normFactor
    }

    /// A wanted gradient head is in the round's buffer, with L2 norm `norm` (NaN or infinite
    /// when a value is not finite). A non-finite head follows the non-finite rule; an implausible
    /// one (`normBound`) is rejected and recomputed elsewhere unless an independent computation
    /// gave the same norm. Once every configuration has head h, it is stepped and, if a round
    /// follows, broadcast.
    public mutating func storedGradientHead(from id: WorkerID, configuration: Int, head: Int, norm: Double) -> [Action] {
        guard let round else { return [] }
        guard norm.isFinite else { return nonFiniteResult(from: id, configuration: configuration) }
        if let bound = normBound(head: head), norm > bound, let earlier = implausible[configuration]?[head], earlier.norm == norm {
            // Confirmed by an independent computation: a genuine spike, and its first sender honest.
            quarantine[earlier.from] = nil
        } else if let bound = normBound(head: head), norm > bound {
            implausible[configuration, default: [:]][head] = (norm, Identity(key: keys[id] ?? "", name: name(of: id) ?? "?"))
            let name = name(of: id) ?? "?"
            forgetUnsteppedHeads(of: configuration)
            quarantine(id)
            return [.logLimited(.rejected, "rejected a gradient of worker \(name) for round \(round) configuration \(configuration) head "
                                + "\(head): norm \(Self.scientific(norm)) exceeds \(Self.scientific(bound)) (\(Int(Self.normFactor))× the recent "
                                + "median); recomputing elsewhere")]
                + translate(scheduler.workerFailed(id, reason: "implausible gradient"))
        }
        recentNorms[head].append(norm)
        if recentNorms[head].count > Self.normHistory { recentNorms[head].removeFirst() }
        headsIn[configuration][head] = true
        headsInCount[head] += 1
        guard headsInCount[head] == configurationsPerRound else { return [] }
        headsComplete += 1
        guard more else { return [.stepHead(head)] }
        let live = liveWorkers
        for worker in live {
            if held[worker]?.round != round + 1 { held[worker] = (round + 1, []) }
            held[worker]!.heads.insert(head)
        }
        return [.stepHead(head), .broadcastHead(round: round + 1, head: head, to: live)]
    }

    /// A result (loss terms), after all its gradient heads.
    public mutating func result(from id: WorkerID, round: Int, configuration: Int, result: Result, now: Duration) -> [Action] {
        clock = max(clock, now)
        let assigned = inProgress && round == self.round && scheduler.holds(id, configuration: configuration)
        if assigned {
            let missing = headsIn[configuration].filter { !$0 }.count
            guard missing == 0 else {
                return malformed(from: id, "the result of configuration \(configuration) came before \(missing) of its "
                                 + "\(headCount) gradient heads")
            }
            let t = result.terms
            guard t.total.isFinite && t.crossEntropy.isFinite && t.reconstruction.isFinite && t.normRegularizer.isFinite else {
                return nonFiniteResult(from: id, configuration: configuration)
            }
            lastResult[id] = now
            computeByWorker[id, default: 0] += result.seconds
        }
        return translate(scheduler.result(from: id, round: round, configuration: configuration, payload: result, now: now))
    }

    /// A heartbeat (any message proves a worker alive; the others record it themselves).
    public mutating func heartbeat(from id: WorkerID, now: Duration) {
        scheduler.heard(from: id, now: now)
    }

    /// A goodbye: the worker leaves; its configurations go to the others.
    public mutating func goodbye(from id: WorkerID) -> [Action] {
        translate(scheduler.workerLeft(id))
    }

    /// A message that could not be decoded, or that a worker must not send. It is counted and
    /// logged (rate-limited); an admitted worker holding work is also dropped, since its
    /// configurations would otherwise wait for a result that is not coming.
    public mutating func malformed(from id: WorkerID, _ problem: String) -> [Action] {
        var actions: [Action] = [.logLimited(.malformed, "dropped malformed message from \(describe(id)): \(problem)")]
        if name(of: id) != nil, !scheduler.outstanding(of: id).isEmpty {
            actions += translate(scheduler.workerFailed(id, reason: "malformed message: \(problem)"))
        }
        return actions
    }

    /// A worker's connection is gone (a send found no route to it).
    public mutating func unreachable(_ id: WorkerID) -> [Action] {
        translate(scheduler.workerFailed(id, reason: "its connection is gone"))
    }

    /// Periodic: liveness, heartbeats, stall reports (the `Scheduler`'s housekeeping).
    public mutating func tick(now: Duration) -> [Action] {
        clock = max(clock, now)
        return translate(scheduler.tick(now: now))
    }

    // MARK: Internals

    /// A non-finite gradient head or loss. A genuine divergence repeats on any worker (the
    /// computation is deterministic); a faulty worker does not. So: drop this one and let
    /// another recompute; the second time the same configuration is non-finite, stop.
    /// The second strike must come from another identity (key and name) — one connection that
    /// says hello again cannot end the run — or be the third in all (a one-worker run must still
    /// stop on a genuine divergence). The identity is quarantined either way.
    private mutating func nonFiniteResult(from id: WorkerID, configuration: Int) -> [Action] {
        let name = name(of: id) ?? "?"
        guard let round else { return [] }
        let identity = Identity(key: keys[id] ?? "", name: name)
        if let earlier = nonFinite[configuration], earlier.first != identity || earlier.count >= 2 {
            return [.diverged(round: round, configuration: configuration, workers: [earlier.first.name, name])]
        }
        nonFinite[configuration] = (nonFinite[configuration]?.first ?? identity, (nonFinite[configuration]?.count ?? 0) + 1)
        quarantine(id)
        forgetUnsteppedHeads(of: configuration)
        return [.log("worker \(name) returned a non-finite result for round \(round) configuration \(configuration); "
                     + "dropping it and recomputing elsewhere")]
            + translate(scheduler.workerFailed(id, reason: "non-finite result"))
    }

    /// Forgets the heads of `configuration` that are in but not yet stepped: they came from a
    /// worker now known to be faulty and are taken again from the recomputation.
    private mutating func forgetUnsteppedHeads(of configuration: Int) {
        for h in 0..<headCount where headsIn[configuration][h] && headsInCount[h] < configurationsPerRound {
            headsIn[configuration][h] = false
            headsInCount[h] -= 1
        }
    }

    /// Refuses `id`'s identity for a back-off that doubles on every repeat.
    private mutating func quarantine(_ id: WorkerID) {
        guard let name = name(of: id) else { return }
        let identity = Identity(key: keys[id] ?? "", name: name)
        let backoff = quarantine[identity].map { min($0.backoff * 2, Self.quarantineMax) } ?? Self.quarantineInitial
        quarantine[identity] = (clock + backoff, backoff)
    }

    private func describe(_ id: WorkerID) -> String { name(of: id) ?? "an unadmitted peer" }

    /// `text` for a log line: printable ASCII kept, everything else as \u{…} escapes, at most
    /// 80 characters — a refused peer's name must not carry control or bidirectional
    /// characters into the log.
    static func printable(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars.prefix(80) {
            out += (0x20..<0x7F).contains(scalar.value) ? String(scalar) : "\\u{\(String(scalar.value, radix: 16))}"
        }
        return out
    }

    /// The scheduler's actions in protocol terms.
    private mutating func translate(_ actions: [Scheduler<WorkerID, Result>.Action]) -> [Action] {
        var out: [Action] = []
        for action in actions {
            switch action {
            case let .broadcastParameters(round, workers):
                for id in workers {
                    let have = held[id]?.round == round ? held[id]!.heads : []
                    let missing = (0..<headCount).filter { !have.contains($0) }
                    held[id] = (round, Set(0..<headCount))
                    if !missing.isEmpty { out.append(.sendParameterHeads(round: round, heads: missing, to: id)) }
                }
            case let .sendWork(id, round, configurations):
                out.append(.sendWork(to: id, round: round, configurations: configurations))
            case let .sendHeartbeat(workers):
                out.append(.sendHeartbeat(to: workers))
            case let .dropWorker(id, name, reason):
                keys[id] = nil; held[id] = nil
                let why = switch reason {
                case .heartbeatTimeout(let silent): "silent for \(Self.format(silent, digits: 1)) s"
                case .noProgress(let stuck): "no result for \(Self.format(stuck, digits: 0)) s"
                case .failed(let what): what
                case .left: "it said goodbye"
                case .rejoined: "it connected again"
                }
                out.append(.log("dropped worker \(name) (\(why)); its configurations go to the others"))
            case let .discardResult(id, round, configuration, reason):
                out.append(.logLimited(.discarded, "discarded result of round \(round) configuration \(configuration) "
                                       + "from \(describe(id)): \(reason)"))
            case let .roundComplete(round, results):
                inProgress = false
                out.append(.roundComplete(round: round, Completion(results: results, computeSeconds: computeByWorker.values.max() ?? 0,
                                                                   stragglers: stragglers())))
            case let .stalled(round, waitingFor, unassigned, silentFor):
                let waiting = waitingFor.isEmpty ? "no worker holds work" : "waiting for " + waitingFor.abbreviated()
                out.append(.log("round \(round) stalled for \(Self.format(silentFor, digits: 0)) s: \(waiting)"
                                + (unassigned > 0 ? "; \(unassigned) configurations wait for a worker" : "")))
            }
        }
        return out
    }

    private func stragglers() -> [String] {
        let finish = lastResult.mapValues { $0 - roundStart }
        guard finish.count >= 2 else { return [] }
        let median = finish.values.sorted()[finish.count / 2]
        return finish.filter { $0.value > median * 1.5 }.keys.compactMap { name(of: $0) }.sorted()
    }

    static func scientific(_ x: Double) -> String { String(format: "%.3g", x) }

    static func format(_ d: Duration, digits: Int) -> String {
        let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        return String(format: "%.\(digits)f", seconds)
    }
}
