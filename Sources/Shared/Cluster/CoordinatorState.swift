import Foundation

/// The coordinator's side of the protocol as a value-type state machine without I/O: admission,
/// scheduling (its `Scheduler`), which INR heads of each block's gradient are in, when a head can
/// be stepped, which parameter heads each worker holds, and the rules for non-finite and
/// implausible results. One mutating method per event, each returning the actions to perform, in
/// order; `ClusterServer` (in the coordinator executable) turns socket traffic into these events
/// and performs the actions.
///
/// The unit of work is a block of configurations (`RoundPlan.configurationsPerBlock`): the
/// scheduler's "configurations" are this machine's blocks. A round's gradients arrive by INR
/// head, each head in pieces (`WireProtocol`, "Blocks and heads of a round"). One worker at a
/// time fills a block's head — the first to send its first piece, then its pieces in order — so
/// a speculative twin's copy cannot interleave with it. As soon as every block's gradient of
/// head h is in, the machine says `stepHead(h)` and, when another round follows,
/// `broadcastHead` — the stepped values go to every live worker as head h of the next round's
/// parameters. At a round's start a worker that lacks some of that round's parameter heads (it
/// joined late, or missed a broadcast) is sent them.
///
/// Workers are told apart by the transport's connection id (never a name a peer chooses), named
/// by their hello (for logs), and keyed by their CURVE key: a hello naming a live worker with
/// the same key replaces that connection (the worker restarted); with another key it is refused.
public struct CoordinatorState<WorkerID: Hashable & Sendable>: Sendable {
    /// One block's result as a round hands it over (its gradient is in the round's buffers, and
    /// already stepped on, when the result is accepted).
    public struct Result: Sendable, Equatable {
        /// Loss terms of the block's configurations, in index order.
        public let terms: [LossTerms]
        /// Seconds the worker spent computing the block.
        public let seconds: Double
        public init(terms: [LossTerms], seconds: Double) { self.terms = terms; self.seconds = seconds }
    }

    /// What a finished round reports besides its results.
    public struct Completion: Sendable, Equatable {
        /// Results in block order.
        public let results: [Result]
        /// Every configuration's loss terms, in configuration-index order.
        public var terms: [LossTerms] { results.flatMap(\.terms) }
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
        case sendWork(to: WorkerID, round: Int, blocks: [Int])
        case sendHeartbeat(to: [WorkerID])
        /// Every block's gradient of head `head` is in: step the optimizer on it.
        case stepHead(Int)
        /// Send head `head` of the stepped parameters, as `round`'s, to these workers.
        case broadcastHead(round: Int, head: Int, to: [WorkerID])
        case roundComplete(round: Int, Completion)
        /// A log line.
        case log(String)
        /// A log line about a peer's misbehaviour, to be counted and rate-limited per kind (a
        /// hostile peer must not flood the log).
        case logLimited(Noise, String)
        /// Two identities returned `block` non-finite: compute it here, with the round's
        /// parameters, and report `verified` — the tiebreaker between a genuine divergence and
        /// faulty or hostile workers (who may share a key and invent names).
        case verifyHere(round: Int, block: Int)
        /// The block was non-finite on two workers and in the coordinator's own computation
        /// (or could not be checked there): training diverged.
        case diverged(round: Int, block: Int, workers: [String])
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
    /// The INR heads' sizes (parameters), in order.
    public let headSizes: [Int]
    public var headCount: Int { headSizes.count }
    /// Configurations in each block, in order (`RoundPlan.configurations(ofBlock:)`).
    public let blockSizes: [Int]
    public var blockCount: Int { blockSizes.count }
    public private(set) var scheduler: Scheduler<WorkerID, Result>
    /// The last round started (nil before the first); `inProgress` while it has not completed.
    public private(set) var round: Int?
    public private(set) var inProgress = false
    /// Whether another round follows the one in progress (its parameters are broadcast as
    /// they are stepped).
    var more = false
    /// headsIn[b][h]: block b's gradient of head h is in; headsInCount[h]: for how many blocks
    /// (so a head's completion is known without scanning them).
    var headsIn: [[Bool]]
    var headsInCount: [Int]
    var headsComplete = 0
    /// Heads being received, by block and head: the one worker whose pieces fill it, the values
    /// and the sum of squares received so far.
    var receiving: [Int: [Int: (owner: WorkerID, received: Int, squares: Double)]] = [:]
    /// Blocks of which a worker sent pieces that were not taken because another worker was
    /// filling that head: its result will lack them.
    var crossed: Set<Crossing> = []
    struct Crossing: Hashable, Sendable { let block: Int, worker: WorkerID }
    /// Parameter heads each worker holds, by round.
    var held: [WorkerID: (round: Int, heads: Set<Int>)] = [:]
    /// CURVE key (Z85) of each admitted connection.
    var keys: [WorkerID: String] = [:]
    /// Who a worker is for quarantine: its CURVE key and the name it gives.
    struct Identity: Hashable, Sendable { let key: String, name: String }
    /// Blocks of the round in progress that one worker already returned non-finite.
    var nonFinite: [Int: (first: Identity, count: Int)] = [:]
    /// Blocks of the round in progress the coordinator computed itself and found finite: a
    /// non-finite copy of them is the sender's fault, whoever sends it.
    var verifiedFinite: Set<Int> = []
    /// Identities refused until a time, after a non-finite or implausible result, with their
    /// back-off (doubling from `quarantineInitial` to `quarantineMax` on every repeat).
    var quarantine: [Identity: (until: Duration, backoff: Duration)] = [:]
    public static var quarantineInitial: Duration { .seconds(30) }
    public static var quarantineMax: Duration { .seconds(600) }
    /// The latest time an event reported.
    var clock: Duration = .zero
    /// Recently accepted gradient-head norms, per head (oldest first).
    var recentNorms: [[Double]]
    /// Implausible heads already seen this round, by block and head: their norm and who sent them.
    var implausible: [Int: [Int: (norm: Double, from: Identity)]] = [:]
    var roundStart: Duration = .zero
    var computeByWorker: [WorkerID: Double] = [:]
    var lastResult: [WorkerID: Duration] = [:]

    /// A machine for a job whose parameters travel in heads of `headSizes` values and whose
    /// rounds have blocks of `blockSizes` configurations.
    public init(dataFingerprint: DataFingerprint, headSizes: [Int], blockSizes: [Int],
                heartbeatInterval: Duration = WireProtocol.heartbeatInterval, heartbeatTimeout: Duration = WireProtocol.heartbeatTimeout,
                stallReportInterval: Duration = WireProtocol.stallReportInterval, progressTimeout: Duration = WireProtocol.progressTimeout) {
        precondition(!headSizes.isEmpty, "parameters travel in at least one head")
        precondition(!blockSizes.isEmpty && blockSizes.allSatisfy { (1...WireProtocol.maxConfigurationsPerBlock).contains($0) },
                     "a round has blocks of 1…\(WireProtocol.maxConfigurationsPerBlock) configurations")
        self.dataFingerprint = dataFingerprint
        self.headSizes = headSizes
        self.blockSizes = blockSizes
        scheduler = Scheduler(configurationsPerRound: blockSizes.count, heartbeatInterval: heartbeatInterval,
                              heartbeatTimeout: heartbeatTimeout, stallReportInterval: stallReportInterval, progressTimeout: progressTimeout)
        headsIn = Array(repeating: Array(repeating: false, count: headSizes.count), count: blockSizes.count)
        headsInCount = Array(repeating: 0, count: headSizes.count)
        recentNorms = Array(repeating: [], count: headSizes.count)
    }

    /// The blocks of `plan`'s rounds.
    public static func blockSizes(of plan: RoundPlan) -> [Int] {
        (0..<plan.blocksPerRound).map { plan.configurations(ofBlock: $0).count }
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
        receiving = [:]; crossed = []
        nonFinite = [:]; verifiedFinite = []; implausible = [:]; computeByWorker = [:]; lastResult = [:]
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

    /// A gradient piece arrived; returns whether to take it (decode it into the block's buffer
    /// and report `storedGradientPiece`): values [`at`, `at` + `count`) of head
    /// `head` of `block`'s gradient, for the round in progress, from a worker holding that block,
    /// for a head not in yet, and either the head's first piece (nobody is filling it) or the
    /// next piece of the worker filling it. Anything else is late (the round is over or the
    /// work went elsewhere), a recomputation of what is in (the same bits), or a speculative
    /// twin's copy of a head another worker is filling, and is ignored, as its result will be.
    /// The caller has checked that the piece lies within the head.
    public mutating func gradientPieceArrived(from id: WorkerID, round: Int, block: Int, head: Int, at offset: Int, count: Int) -> Bool {
        guard inProgress, round == self.round, (0..<blockCount).contains(block), (0..<headCount).contains(head),
              scheduler.holds(id, configuration: block), !headsIn[block][head] else { return false }
        precondition(offset >= 0 && offset + count <= headSizes[head], "a piece outside its head")
        switch receiving[block]?[head] {
        case nil where offset == 0:
            return true
        case let entry? where entry.owner == id && entry.received == offset:
            return true
        case let entry? where entry.owner != id:
            crossed.insert(Crossing(block: block, worker: id))
            return false
        default:
            return false
        }
    }

    /// The largest plausible norm of head `head`'s gradient now (nil during the warm-up).
    public func normBound(head: Int) -> Double? {
        let recent = recentNorms[head]
        guard recent.count >= Self.normWarmUp else { return nil }
        return recent.sorted()[recent.count / 2] * Self.normFactor
    }

    /// A taken gradient piece of `count` values is in the round's buffer; `squares` is the sum
    /// of their squares (NaN or infinite when a value is not finite, which follows the
    /// non-finite rule at once). When the head is complete its L2 norm is checked: an
    /// implausible one (`normBound`) is rejected and recomputed elsewhere unless an independent
    /// computation gave the same norm. Once every block has head h, it is stepped and, if a
    /// round follows, broadcast.
    public mutating func storedGradientPiece(from id: WorkerID, block: Int, head: Int, count: Int, squares: Double) -> [Action] {
        guard squares.isFinite else {
            receiving[block]?[head] = nil
            return nonFiniteResult(from: id, block: block)
        }
        let entry = receiving[block]?[head]
        let received = (entry?.received ?? 0) + count, total = (entry?.squares ?? 0) + squares
        guard received == headSizes[head] else {
            receiving[block, default: [:]][head] = (id, received, total)
            return []
        }
        receiving[block]?[head] = nil
        return storedGradientHead(from: id, block: block, head: head, norm: total.squareRoot())
    }

    /// Block `block`'s head `head` is in, with L2 norm `norm`.
    private mutating func storedGradientHead(from id: WorkerID, block: Int, head: Int, norm: Double) -> [Action] {
        guard let round else { return [] }
        if let bound = normBound(head: head), norm > bound, let earlier = implausible[block]?[head], earlier.norm == norm {
            // Confirmed by an independent computation: a genuine spike, and its first sender honest.
            quarantine[earlier.from] = nil
        } else if let bound = normBound(head: head), norm > bound {
            implausible[block, default: [:]][head] = (norm, Identity(key: keys[id] ?? "", name: name(of: id) ?? "?"))
            let name = name(of: id) ?? "?"
            forgetUnsteppedHeads(of: block)
            quarantine(id)
            return [.logLimited(.rejected, "rejected a gradient of worker \(name) for round \(round) block \(block) head "
                                + "\(head): norm \(Self.scientific(norm)) exceeds \(Self.scientific(bound)) (\(Int(Self.normFactor))× the recent "
                                + "median); recomputing elsewhere")]
                + translate(scheduler.workerFailed(id, reason: "implausible gradient"))
        }
        recentNorms[head].append(norm)
        if recentNorms[head].count > Self.normHistory { recentNorms[head].removeFirst() }
        headsIn[block][head] = true
        headsInCount[head] += 1
        guard headsInCount[head] == blockCount else { return [] }
        headsComplete += 1
        guard more else { return [.stepHead(head)] }
        let live = liveWorkers
        for worker in live {
            if held[worker]?.round != round + 1 { held[worker] = (round + 1, []) }
            held[worker]!.heads.insert(head)
        }
        return [.stepHead(head), .broadcastHead(round: round + 1, head: head, to: live)]
    }

    /// A result (the loss terms of a block's configurations), after all its gradient pieces.
    public mutating func result(from id: WorkerID, round: Int, block: Int, result: Result, now: Duration) -> [Action] {
        clock = max(clock, now)
        let assigned = inProgress && round == self.round && scheduler.holds(id, configuration: block)
        if assigned {
            guard result.terms.count == blockSizes[block] else {
                return malformed(from: id, "the result of block \(block) has \(result.terms.count) loss terms for its "
                                 + "\(blockSizes[block]) configurations")
            }
            let missing = headsIn[block].filter { !$0 }.count
            if missing > 0 && crossed.contains(Crossing(block: block, worker: id)) {
                // Its pieces met another worker's filling the same heads, which then failed: its
                // copy is incomplete through no fault of its own. It rejoins; the block is recomputed.
                return [.log("worker \(name(of: id) ?? "?")'s gradient of round \(round) block \(block) overlapped another worker's; "
                             + "recomputing the block")]
                    + translate(scheduler.workerFailed(id, reason: "its gradient overlapped another worker's"))
            }
            guard missing == 0 else {
                return malformed(from: id, "the result of block \(block) came before \(missing) of its \(headCount) gradient heads")
            }
            guard result.terms.allSatisfy({ $0.total.isFinite && $0.crossEntropy.isFinite && $0.reconstruction.isFinite
                                                && $0.normRegularizer.isFinite }) else {
                return nonFiniteResult(from: id, block: block)
            }
            lastResult[id] = now
            computeByWorker[id, default: 0] += result.seconds
        }
        return translate(scheduler.result(from: id, round: round, configuration: block, payload: result, now: now))
    }

    /// A heartbeat (any message proves a worker alive; the others record it themselves).
    public mutating func heartbeat(from id: WorkerID, now: Duration) {
        scheduler.heard(from: id, now: now)
    }

    /// A goodbye: the worker leaves; its blocks go to the others.
    public mutating func goodbye(from id: WorkerID) -> [Action] {
        translate(scheduler.workerLeft(id))
    }

    /// A message that could not be decoded, or that a worker must not send. It is counted and
    /// logged (rate-limited); an admitted worker holding work is also dropped, since its
    /// blocks would otherwise wait for a result that is not coming.
    public mutating func malformed(from id: WorkerID, _ problem: String) -> [Action] {
        var actions: [Action] = [.logLimited(.malformed, "dropped malformed message from \(describe(id)): \(problem)")]
        if name(of: id) != nil, !scheduler.outstanding(of: id).isEmpty {
            actions += translate(scheduler.workerFailed(id, reason: "malformed message: \(problem)"))
        }
        return actions
    }

    /// A message over the protocol's size bounds (`WireProtocol.maxInboundFrames`): malformed,
    /// and its sender, when admitted, quarantined — an honest worker never sends one.
    public mutating func oversized(from id: WorkerID, _ problem: String) -> [Action] {
        if name(of: id) != nil { quarantine(id) }
        var actions: [Action] = [.logLimited(.malformed, "dropped oversized message from \(describe(id)): \(problem)")]
        if name(of: id) != nil { actions += translate(scheduler.workerFailed(id, reason: "oversized message")) }
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

    /// A non-finite gradient or loss. A genuine divergence repeats on any worker (the
    /// computation is deterministic); a faulty worker does not. So: drop this one, quarantine
    /// it and let another recompute. The second strike for the same block — from another
    /// identity (key and name), or the third in all (a one-worker run must still find a genuine
    /// divergence) — has the coordinator compute the block itself (`verifyHere`): workers
    /// sharing a key can invent names, so only that computation may end the run.
    private mutating func nonFiniteResult(from id: WorkerID, block: Int) -> [Action] {
        let name = name(of: id) ?? "?"
        guard let round else { return [] }
        let identity = Identity(key: keys[id] ?? "", name: name)
        var actions: [Action] = []
        if verifiedFinite.contains(block) {
            actions.append(.log("worker \(name) returned a non-finite result for round \(round) block \(block), which the coordinator "
                                + "computed finite; dropping it and recomputing elsewhere"))
        } else if let earlier = nonFinite[block], earlier.first != identity || earlier.count >= 2 {
            nonFinite[block]!.count += 1
            actions.append(.log("worker \(name) returned a non-finite result for round \(round) block \(block) as \(earlier.first.name) "
                                + "did; the coordinator computes it to tell a divergence from faulty workers"))
            actions.append(.verifyHere(round: round, block: block))
        } else {
            nonFinite[block] = (nonFinite[block]?.first ?? identity, (nonFinite[block]?.count ?? 0) + 1)
            actions.append(.log("worker \(name) returned a non-finite result for round \(round) block \(block); "
                                + "dropping it and recomputing elsewhere"))
        }
        quarantine(id)
        forgetUnsteppedHeads(of: block)
        return actions + translate(scheduler.workerFailed(id, reason: "non-finite result"))
    }

    /// The coordinator's own computation of `block` (`verifyHere`) was finite, or not (nil: it
    /// could not compute it — then the workers' word stands). Non-finite: training diverged.
    /// Finite: every identity that returned it non-finite is faulty (quarantined) and the block
    /// is recomputed by the workers as usual.
    public mutating func verified(block: Int, finite: Bool?, problem: String? = nil) -> [Action] {
        guard let round, let strikes = nonFinite[block] else { return [] }
        guard finite == true else {
            let why = finite == nil ? "it could not be checked here (\(problem ?? "?"))" : "the coordinator's own computation is non-finite too"
            return [.log("round \(round) block \(block): \(why)"),
                    .diverged(round: round, block: block, workers: [strikes.first.name, "another worker"])]
        }
        verifiedFinite.insert(block)
        quarantine(strikes.first)
        return [.log("round \(round) block \(block) is finite as the coordinator computes it: the workers that returned it non-finite "
                     + "are faulty or hostile (quarantined); recomputing elsewhere")]
    }

    /// Forgets the heads of `block` that are in or being received but not yet stepped: they
    /// came from a worker now known to be faulty and are taken again from the recomputation.
    private mutating func forgetUnsteppedHeads(of block: Int) {
        receiving[block] = nil
        for h in 0..<headCount where headsIn[block][h] && headsInCount[h] < blockCount {
            headsIn[block][h] = false
            headsInCount[h] -= 1
        }
    }

    /// Refuses `id`'s identity for a back-off that doubles on every repeat.
    private mutating func quarantine(_ id: WorkerID) {
        guard let name = name(of: id) else { return }
        quarantine(Identity(key: keys[id] ?? "", name: name))
    }

    private mutating func quarantine(_ identity: Identity) {
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
            case let .sendWork(id, round, blocks):
                out.append(.sendWork(to: id, round: round, blocks: blocks))
            case let .sendHeartbeat(workers):
                out.append(.sendHeartbeat(to: workers))
            case let .dropWorker(id, name, reason):
                keys[id] = nil; held[id] = nil
                // Heads it was filling start over with whoever computes its blocks next.
                for (block, heads) in receiving {
                    for (head, entry) in heads where entry.owner == id { receiving[block]?[head] = nil }
                }
                let why = switch reason {
                case .heartbeatTimeout(let silent): "silent for \(Self.format(silent, digits: 1)) s"
                case .noProgress(let stuck): "no result for \(Self.format(stuck, digits: 0)) s"
                case .failed(let what): what
                case .left: "it said goodbye"
                case .rejoined: "it connected again"
                }
                out.append(.log("dropped worker \(name) (\(why)); its blocks go to the others"))
            case let .discardResult(id, round, block, reason):
                out.append(.logLimited(.discarded, "discarded result of round \(round) block \(block) "
                                       + "from \(describe(id)): \(reason)"))
            case let .roundComplete(round, results):
                inProgress = false
                out.append(.roundComplete(round: round, Completion(results: results, computeSeconds: computeByWorker.values.max() ?? 0,
                                                                   stragglers: stragglers())))
            case let .stalled(round, waitingFor, unassigned, silentFor):
                let waiting = waitingFor.isEmpty ? "no worker holds work" : "waiting for " + waitingFor.abbreviated()
                out.append(.log("round \(round) stalled for \(Self.format(silentFor, digits: 0)) s: \(waiting)"
                                + (unassigned > 0 ? "; \(unassigned) blocks wait for a worker" : "")))
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
