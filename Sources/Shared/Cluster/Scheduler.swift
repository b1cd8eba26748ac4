/// The coordinator's scheduling logic as a value-type state machine without I/O: one mutating
/// method per event, each returning the actions the run loop must perform, in order.
///
/// A round has `configurationsPerRound` configurations, indices 0..<M. `startRound` assigns them
/// across the live workers; every configuration must receive exactly one accepted result, and
/// `roundComplete` hands the results over in configuration-index order, so the coordinator's sum
/// is the same whoever computed what — 1 worker, 3 workers, or a run where one died mid-round.
///
/// Assignment is balanced and deterministic: each configuration, in index order, goes to the
/// live worker with the fewest outstanding configurations, ties to the earliest joined. A
/// worker silent for longer than `heartbeatTimeout`, or gone (goodbye, rejoin), is dropped and
/// its outstanding configurations are assigned to the others the same way; with no live
/// worker they are parked, and handed out `parkedShare` at a time as workers join or finish
/// one. A result is accepted only from a worker the configuration is currently assigned to, for the round in progress, once; anything else is
/// discarded with a reason. Time is a monotonic `Duration` since any fixed origin.
///
/// **Speculative re-execution**: a configuration still outstanding `speculationFactor` times
/// the median time the round's accepted configurations took (and at least
/// `speculationMinimum`) is also given to an idle worker; the first result wins, the other is
/// discarded as a duplicate. Every computation of a configuration gives the same bits, so this
/// changes when a round ends, never what it computes: a worker that takes work and stalls costs
/// a few configuration times, not `progressTimeout`.
public struct Scheduler<WorkerID: Hashable & Sendable, Payload> {
    public enum Action {
        /// Send the parameters of `round` to these workers (before their work for it).
        case broadcastParameters(round: Int, to: [WorkerID])
        /// Send `work(round, configurations)`; these are added to the worker's queue.
        case sendWork(to: WorkerID, round: Int, configurations: [Int])
        case sendHeartbeat(to: [WorkerID])
        /// Forget this worker (its configurations have been reassigned by the same event).
        case dropWorker(WorkerID, name: String, reason: DropReason)
        /// A result that was not accepted; log it and drop it.
        case discardResult(from: WorkerID, round: Int, configuration: Int, reason: DiscardReason)
        /// Every configuration of `round` has its result: payloads in configuration-index order.
        case roundComplete(round: Int, results: [Payload])
        /// No result was accepted for `silentFor`; `waitingFor` names the workers holding
        /// outstanding configurations, `unassigned` counts those waiting for any worker at all.
        case stalled(round: Int, waitingFor: [String], unassigned: Int, silentFor: Duration)
    }

    public enum DropReason: Equatable, Sendable {
        case heartbeatTimeout(silentFor: Duration)
        /// It held configurations but returned no accepted result for this long (alive but
        /// stuck, or its work or result was lost on the way).
        case noProgress(for: Duration)
        /// The coordinator caught it misbehaving (malformed or non-finite result, unreachable).
        case failed(String)
        /// The worker said goodbye.
        case left
        /// The worker said hello again (it restarted, so its queue is gone).
        case rejoined
    }

    public enum DiscardReason: Equatable, Sendable {
        /// Not joined, or already dropped (a dropped worker that is still alive stops hearing
        /// heartbeats, times out on its side and says hello again).
        case unknownWorker
        /// Not the round in progress (nil: none is).
        case wrongRound(current: Int?)
        case configurationOutOfRange
        /// That configuration already has its result.
        case duplicate
        /// That configuration is assigned to another worker.
        case notAssigned
    }

    struct Worker {
        var name: String
        /// Join order, for deterministic tie-breaking.
        var sequence: Int
        var lastHeard: Duration
        /// Outstanding configurations of the round in progress.
        var assigned: Set<Int> = []
        /// When it last made progress: got work while idle, or had a result accepted.
        var progressSince: Duration
        /// Rounds in which a speculative twin finished one of its configurations first, with no
        /// result of its own accepted in between (the last such round in `overtakenRound`), and
        /// until when it gets no new work for it. Counted once per round: a worker holding
        /// several configurations when idle workers take them over is overtaken on several at once.
        var overtaken = 0
        var overtakenRound: Int?
        var benchedUntil: Duration = .zero
    }

    public let configurationsPerRound: Int
    public let heartbeatInterval: Duration
    public let heartbeatTimeout: Duration
    public let stallReportInterval: Duration
    public let progressTimeout: Duration
    /// A configuration outstanding this many times the round's median configuration time is
    /// speculatively given to an idle worker too…
    public static var speculationFactor: Double { 3 }
    /// …but never before it has been outstanding this long.
    public static var speculationMinimum: Duration { .milliseconds(500) }
    /// A worker overtaken by speculative twins in this many rounds in a row gets no new work
    /// for `benchInitial`, doubling with every further such round up to `benchMax` (it stays
    /// connected; a result of its own resets the count).
    public static var benchAfter: Int { 2 }
    public static var benchInitial: Duration { .seconds(10) }
    public static var benchMax: Duration { .seconds(300) }
    /// Configurations parked because no worker was live (a round that started before any
    /// joined, or whose workers all left) go to workers as they join or return a result, at
    /// most this many outstanding per worker (one computing, one queued): the first worker to
    /// join does not take a whole round that the others, joining a moment later, then wait on.
    public static var parkedShare: Int { 2 }

    var workers: [WorkerID: Worker] = [:]
    /// Live workers in join order, and by name: kept beside `workers` so that no event sorts
    /// or scans all workers to find one.
    var order: [WorkerID] = []
    var byName: [String: WorkerID] = [:]
    var nextSequence = 0
    /// The round in progress, if any.
    public private(set) var round: Int?
    /// Configurations of the round in progress assigned to no one (no live worker).
    var unassigned: [Int] = []
    var results: [Int: Payload] = [:]
    /// When each outstanding configuration of the round was (last) assigned, and how long each
    /// accepted one took from its assignment.
    var assignedAt: [Int: Duration] = [:]
    var took: [Duration] = []
    /// Configurations of the round given to a second worker already, and to whom; and the
    /// worker each was last assigned to. A configuration is held by at most these two.
    var speculated: [Int: WorkerID] = [:]
    var assignee: [Int: WorkerID] = [:]
    /// When `tick` last scanned the workers for timeouts and late configurations: at most every
    /// `scanInterval`, however often it is called (once per batch of messages).
    var lastScan: Duration?
    public static var scanInterval: Duration { .milliseconds(20) }
    var lastProgress: Duration = .zero
    var lastStallReport: Duration?
    var lastHeartbeat: Duration?
    /// The latest time any event reported (events without a time use it).
    var clock: Duration = .zero

    public init(configurationsPerRound: Int,
                heartbeatInterval: Duration = WireProtocol.heartbeatInterval,
                heartbeatTimeout: Duration = WireProtocol.heartbeatTimeout,
                stallReportInterval: Duration = WireProtocol.stallReportInterval,
                progressTimeout: Duration = WireProtocol.progressTimeout) {
        precondition((1...WireProtocol.maxConfigurationsPerRound).contains(configurationsPerRound),
                     "configurations per round must be in 1…\(WireProtocol.maxConfigurationsPerRound)")
        self.configurationsPerRound = configurationsPerRound
        self.heartbeatInterval = heartbeatInterval
        self.heartbeatTimeout = heartbeatTimeout
        self.stallReportInterval = stallReportInterval
        self.progressTimeout = progressTimeout
    }

    /// Live workers in join order.
    public var liveWorkers: [WorkerID] { order }

    /// The name a worker joined with.
    public func name(of id: WorkerID) -> String? { workers[id]?.name }

    /// The live worker that joined with `name` last.
    public func worker(named name: String) -> WorkerID? { byName[name] }

    /// Outstanding configurations of a worker, ascending.
    public func outstanding(of id: WorkerID) -> [Int] { workers[id]?.assigned.sorted() ?? [] }

    /// Whether `configuration` is outstanding with worker `id`.
    public func holds(_ id: WorkerID, configuration: Int) -> Bool { workers[id]?.assigned.contains(configuration) ?? false }

    // MARK: Events

    /// Starts `round`: all its configurations are outstanding. Call after the previous round
    /// completed (or first).
    public mutating func startRound(_ round: Int, now: Duration) -> [Action] {
        clock = max(clock, now)
        precondition(self.round == nil, "round \(self.round ?? -1) is still in progress")
        self.round = round
        results = [:]; unassigned = []; assignedAt = [:]; took = []; speculated = [:]; assignee = [:]
        lastProgress = now; lastStallReport = nil
        for id in workers.keys { workers[id]?.assigned = [] }
        let live = liveWorkers
        var actions: [Action] = live.isEmpty ? [] : [.broadcastParameters(round: round, to: live)]
        actions += assign(Array(0..<configurationsPerRound))
        return actions
    }

    /// A worker was admitted (after its hello, once the coordinator has sent the welcome). A
    /// known id first loses its outstanding work, as its process restarted. It receives
    /// configurations that no one holds, otherwise work from the next assignment.
    public mutating func workerJoined(_ id: WorkerID, name: String, now: Duration) -> [Action] {
        clock = max(clock, now)
        var actions: [Action] = []
        if workers[id] != nil { actions += drop(id, reason: .rejoined) }
        workers[id] = Worker(name: name, sequence: nextSequence, lastHeard: now, progressSince: now)
        order.append(id)
        byName[name] = id
        nextSequence += 1
        return actions + handOutParked(to: id)
    }

    /// Any message from a worker (heartbeat included) proves it alive. Returns false for an
    /// unknown id; the coordinator drops such messages.
    @discardableResult
    public mutating func heard(from id: WorkerID, now: Duration) -> Bool {
        clock = max(clock, now)
        guard workers[id] != nil else { return false }
        workers[id]?.lastHeard = now
        return true
    }

    /// A worker left (goodbye): drop it and reassign its configurations.
    public mutating func workerLeft(_ id: WorkerID) -> [Action] {
        workers[id] == nil ? [] : drop(id, reason: .left)
    }

    /// The coordinator caught a worker misbehaving: drop it and reassign its configurations.
    public mutating func workerFailed(_ id: WorkerID, reason: String) -> [Action] {
        workers[id] == nil ? [] : drop(id, reason: .failed(reason))
    }

    /// A result for configuration `configuration` of `round`.
    public mutating func result(from id: WorkerID, round: Int, configuration: Int, payload: Payload, now: Duration) -> [Action] {
        clock = max(clock, now)
        func discard(_ reason: DiscardReason) -> [Action] {
            [.discardResult(from: id, round: round, configuration: configuration, reason: reason)]
        }
        guard heard(from: id, now: now) else { return discard(.unknownWorker) }
        guard let current = self.round, round == current else { return discard(.wrongRound(current: self.round)) }
        guard (0..<configurationsPerRound).contains(configuration) else { return discard(.configurationOutOfRange) }
        guard results[configuration] == nil else { return discard(.duplicate) }
        guard workers[id]?.assigned.remove(configuration) != nil else { return discard(.notAssigned) }
        workers[id]?.progressSince = now
        results[configuration] = payload
        workers[id]?.overtaken = 0
        // A speculative twin of this configuration need not finish it any more; a twin that had
        // it first was overtaken (repeat offenders are benched).
        for other in Set([assignee[configuration], speculated[configuration]].compactMap { $0 }) where other != id {
            guard workers[other]?.assigned.remove(configuration) != nil, speculated[configuration] == id,
                  let worker = workers[other], worker.overtakenRound != current else { continue }
            let strikes = worker.overtaken + 1
            workers[other]?.overtaken = strikes
            workers[other]?.overtakenRound = current
            if strikes >= Self.benchAfter {
                let doublings = min(strikes - Self.benchAfter, 5)
                workers[other]?.benchedUntil = now + min(Self.benchInitial * (1 << doublings), Self.benchMax)
            }
        }
        if let since = assignedAt.removeValue(forKey: configuration) { took.append(now - since) }
        lastProgress = now; lastStallReport = nil
        guard results.count == configurationsPerRound else { return handOutParked(to: id) }
        let ordered = (0..<configurationsPerRound).compactMap { results[$0] }
        self.round = nil
        results = [:]
        return [.roundComplete(round: current, results: ordered)]
    }

    /// Periodic housekeeping: drops workers silent for longer than `heartbeatTimeout`
    /// (reassigning their configurations), sends heartbeats every `heartbeatInterval`, and
    /// reports a stall every `stallReportInterval` without progress.
    public mutating func tick(now: Duration) -> [Action] {
        clock = max(clock, now)
        var actions: [Action] = []
        if lastScan.map({ now - $0 >= Self.scanInterval }) ?? true {
            lastScan = now
            actions += scan(now: now)
        }
        let live = liveWorkers
        if !live.isEmpty, lastHeartbeat.map({ now - $0 >= heartbeatInterval }) ?? true {
            actions.append(.sendHeartbeat(to: live))
            lastHeartbeat = now
        }
        if let round, now - lastProgress >= stallReportInterval,
           lastStallReport.map({ now - $0 >= stallReportInterval }) ?? true {
            let waiting = live.compactMap { id in workers[id].flatMap { $0.assigned.isEmpty ? nil : $0.name } }
            actions.append(.stalled(round: round, waitingFor: waiting, unassigned: unassigned.count, silentFor: now - lastProgress))
            lastStallReport = now
        }
        return actions
    }

    // MARK: Internals

    /// Drops workers silent past the heartbeat timeout or without progress (reassigning their
    /// configurations) and speculates late configurations: O(workers + configurations).
    private mutating func scan(now: Duration) -> [Action] {
        // Remove every silent worker before reassigning, so nothing goes to one about to be dropped.
        var actions: [Action] = [], orphaned: [Int] = []
        for id in liveWorkers {
            guard let worker = workers[id] else { continue }
            let reason: DropReason
            if now - worker.lastHeard > heartbeatTimeout {
                reason = .heartbeatTimeout(silentFor: now - worker.lastHeard)
            } else if !worker.assigned.isEmpty, now - worker.progressSince > progressTimeout {
                reason = .noProgress(for: now - worker.progressSince)
            } else {
                continue
            }
            remove(id)
            actions.append(.dropWorker(id, name: worker.name, reason: reason))
            orphaned += worker.assigned
        }
        // A configuration a dropped worker shared with a speculative twin is still in hand.
        actions += assign(orphaned.filter { !isHeld($0) }.sorted())
        actions += speculate(now: now)
        return actions
    }

    /// Removes `id` and reassigns its outstanding configurations (those no other worker holds).
    private mutating func drop(_ id: WorkerID, reason: DropReason) -> [Action] {
        guard let worker = remove(id) else { return [] }
        return [.dropWorker(id, name: worker.name, reason: reason)] + assign(worker.assigned.filter { !isHeld($0) }.sorted())
    }

    /// Forgets worker `id` (O(workers), on a drop only).
    @discardableResult
    private mutating func remove(_ id: WorkerID) -> Worker? {
        guard let worker = workers.removeValue(forKey: id) else { return nil }
        order.removeAll { $0 == id }
        if byName[worker.name] == id { byName[worker.name] = nil }
        return worker
    }

    /// Whether a live worker holds `configuration` (its assignee or its speculative twin).
    private func isHeld(_ configuration: Int) -> Bool {
        [assignee[configuration], speculated[configuration]].contains { $0.map { holds($0, configuration: configuration) } ?? false }
    }

    /// Gives idle workers a second copy of configurations outstanding for longer than
    /// `speculationFactor` × the median time of the round's accepted ones (oldest first; one
    /// extra copy per configuration).
    private mutating func speculate(now: Duration) -> [Action] {
        guard let round, !took.isEmpty else { return [] }
        let median = took.sorted()[took.count / 2]
        let patience = max(median * Self.speculationFactor, Self.speculationMinimum)
        let late = assignedAt.filter { results[$0.key] == nil && speculated[$0.key] == nil && now - $0.value > patience }
            .sorted { ($0.value, $0.key) < ($1.value, $1.key) }.map(\.key)
        var actions: [Action] = []
        for configuration in late {
            guard let idle = liveWorkers.first(where: { workers[$0]?.assigned.isEmpty == true && (workers[$0]?.benchedUntil ?? .zero) <= now })
            else { break }
            speculated[configuration] = idle
            workers[idle]?.assigned.insert(configuration)
            workers[idle]?.progressSince = now
            actions.append(.sendWork(to: idle, round: round, configurations: [configuration]))
        }
        return actions
    }

    /// Gives worker `id` parked configurations (ascending) until it holds `parkedShare`.
    private mutating func handOutParked(to id: WorkerID) -> [Action] {
        guard let round, !unassigned.isEmpty, let worker = workers[id], worker.assigned.count < Self.parkedShare else { return [] }
        let given = Array(unassigned.prefix(Self.parkedShare - worker.assigned.count))
        unassigned.removeFirst(given.count)
        if worker.assigned.isEmpty { workers[id]?.progressSince = clock }
        for c in given {
            workers[id]?.assigned.insert(c)
            assignee[c] = id
            assignedAt[c] = clock
        }
        return [.sendWork(to: id, round: round, configurations: given)]
    }

    /// Assigns `configs` (ascending) balanced across live workers; with none, parks them.
    private mutating func assign(_ configs: [Int]) -> [Action] {
        guard let round, !configs.isEmpty else { return [] }
        let live = liveWorkers
        guard !live.isEmpty else {
            unassigned = (unassigned + configs).sorted()
            return []
        }
        // Benched workers get work only when every live worker is benched.
        let rested = live.filter { (workers[$0]?.benchedUntil ?? .zero) <= clock }
        let candidates = rested.isEmpty ? live : rested
        var given: [WorkerID: [Int]] = [:]
        for c in configs {
            let target = candidates.min { a, b in
                let (x, y) = (workers[a]?.assigned.count ?? 0, workers[b]?.assigned.count ?? 0)
                return x != y ? x < y : (workers[a]?.sequence ?? 0) < (workers[b]?.sequence ?? 0)
            }
            guard let target else { continue }
            if workers[target]?.assigned.isEmpty == true { workers[target]?.progressSince = clock }
            workers[target]?.assigned.insert(c)
            assignee[c] = target
            assignedAt[c] = clock
            given[target, default: []].append(c)
        }
        return live.compactMap { id in given[id].map { .sendWork(to: id, round: round, configurations: $0) } }
    }
}

extension Scheduler.Action: Equatable where Payload: Equatable {}
extension Scheduler.Action: Sendable where Payload: Sendable {}
extension Scheduler: Sendable where Payload: Sendable {}
