import Testing
@testable import NeuMeta

/// Drives a `Scheduler` the way the coordinator's loop would, with workers simulated as queues
/// whose "gradient" for (round, configuration) is a seeded pure function, as on the cluster.
private struct Simulation {
    typealias S = Scheduler<String, [Float]>
    var scheduler: S
    var now: Duration = .zero
    /// Work each worker has received and not yet answered, in arrival order.
    var queues: [String: [(round: Int, config: Int)]] = [:]
    var completed: [(round: Int, results: [[Float]])] = []
    var actions: [S.Action] = []

    init(configurations: Int) { scheduler = S(configurationsPerRound: configurations) }

    static func gradient(round: Int, config: Int) -> [Float] {
        var rng = SeededRandom(42, UInt64(round), UInt64(config))
        return (0..<16).map { _ in rng.normal() }
    }

    mutating func apply(_ new: [S.Action]) {
        actions += new
        for action in new {
            switch action {
            case let .sendWork(id, round, configs): queues[id, default: []] += configs.map { (round, $0) }
            case let .dropWorker(id, _, _): queues[id] = nil
            case let .roundComplete(round, results): completed.append((round, results))
            default: break
            }
        }
    }

    mutating func join(_ ids: String...) { for id in ids { apply(scheduler.workerJoined(id, name: id, now: now)) } }
    mutating func start(_ round: Int) { apply(scheduler.startRound(round, now: now)) }
    mutating func tick() { apply(scheduler.tick(now: now)) }

    /// `id` answers up to `limit` queued items, last-assigned first (order must not matter).
    mutating func answer(_ id: String, limit: Int = .max) {
        var queue = queues[id] ?? []
        for _ in 0..<min(limit, queue.count) {
            let (round, config) = queue.removeLast()
            queues[id] = queue
            apply(scheduler.result(from: id, round: round, configuration: config,
                                   payload: Self.gradient(round: round, config: config), now: now))
        }
    }

    func work(of id: String) -> [Int] { queues[id, default: []].map(\.config) }

    /// Σ of the round's gradients in configuration order, as the coordinator sums them.
    static func sum(_ results: [[Float]]) -> [Float] {
        results.dropFirst().reduce(results[0]) { acc, g in zip(acc, g).map { $0 + $1 } }
    }
}

@Suite struct ClusterSchedulerTests {
    static func expected(round: Int, _ m: Int) -> [[Float]] { (0..<m).map { Simulation.gradient(round: round, config: $0) } }

    @Test func oneWorkerCompletesRoundsInConfigurationOrder() {
        var sim = Simulation(configurations: 5)
        sim.join("a")
        for round in 0..<3 {
            sim.start(round)
            #expect(sim.work(of: "a") == [0, 1, 2, 3, 4])
            sim.answer("a")
            #expect(sim.completed.last?.round == round)
            #expect(sim.completed.last?.results == Self.expected(round: round, 5))
        }
        #expect(sim.scheduler.round == nil)
    }

    @Test func threeWorkersShareTheRoundAndSumIdentically() {
        var sim = Simulation(configurations: 7)
        sim.join("a", "b", "c")
        sim.start(0)
        if case let .broadcastParameters(round, to) = sim.actions.first { #expect(round == 0 && to == ["a", "b", "c"]) } else {
            Issue.record("parameters are not broadcast before the work")
        }
        #expect(sim.work(of: "a") == [0, 3, 6] && sim.work(of: "b") == [1, 4] && sim.work(of: "c") == [2, 5])
        sim.answer("c"); sim.answer("a", limit: 1); sim.answer("b"); sim.answer("a")
        #expect(sim.completed.count == 1)
        let results = sim.completed[0].results
        #expect(results == Self.expected(round: 0, 7))
        var single = Simulation(configurations: 7)
        single.join("solo"); single.start(0); single.answer("solo")
        #expect(Simulation.sum(results).map(\.bitPattern) == Simulation.sum(single.completed[0].results).map(\.bitPattern))
    }

    @Test func silentWorkerIsDroppedAndItsWorkReassigned() {
        var sim = Simulation(configurations: 9)
        sim.join("a", "b", "c")
        sim.start(0)
        sim.answer("b", limit: 1)  // b answers configuration 7, then freezes holding 1 and 4
        for second in 1...4 {
            sim.now = .seconds(second)
            _ = sim.scheduler.heard(from: "a", now: sim.now)
            _ = sim.scheduler.heard(from: "c", now: sim.now)
            sim.tick()
        }
        let drops = sim.actions.compactMap { if case let .dropWorker(id, _, reason) = $0 { (id, reason) } else { nil } }
        #expect(drops.count == 1 && drops.first?.0 == "b" && drops.first?.1 == .heartbeatTimeout(silentFor: .seconds(4)))
        #expect(sim.scheduler.liveWorkers == ["a", "c"])
        // a held 0,3,6 and c 2,5,8: 1 goes to a (tie, earlier), 4 to c.
        #expect(sim.work(of: "a") == [0, 3, 6, 1] && sim.work(of: "c") == [2, 5, 8, 4])
        // b thaws and answers late: discarded, it is no longer a worker.
        sim.apply(sim.scheduler.result(from: "b", round: 0, configuration: 1, payload: [], now: sim.now))
        #expect(sim.actions.last.map { if case .discardResult(_, _, _, .unknownWorker) = $0 { true } else { false } } == true)
        sim.answer("a"); sim.answer("c")
        #expect(sim.completed.count == 1 && sim.completed[0].results == Self.expected(round: 0, 9))
    }

    /// A worker that keeps sending heartbeats but never returns its work (lost message, stuck
    /// thread, hostile peer) is dropped after `progressTimeout`; one that misbehaves is dropped
    /// at once; their configurations go to the others and the round completes as usual.
    @Test func stuckAndFailedWorkersAreDroppedAndTheirWorkReassigned() {
        var sim = Simulation(configurations: 6)
        sim.scheduler = Simulation.S(configurationsPerRound: 6, progressTimeout: .seconds(20))
        sim.join("a", "b", "c")
        sim.start(0)
        sim.answer("a")
        for second in stride(from: 2, through: 22, by: 2) {
            sim.now = .seconds(second)
            for id in ["a", "b", "c"] { _ = sim.scheduler.heard(from: id, now: sim.now) }
            sim.tick()
            if second == 10 { sim.answer("c", limit: 1) }  // c makes progress, b never does
        }
        let drops = sim.actions.compactMap { if case let .dropWorker(id, _, reason) = $0 { (id, reason) } else { nil } }
        #expect(drops.count == 1 && drops.first?.0 == "b" && drops.first?.1 == .noProgress(for: .seconds(22)))
        #expect(sim.scheduler.liveWorkers == ["a", "c"])
        sim.apply(sim.scheduler.workerFailed("c", reason: "malformed result"))
        #expect(sim.actions.contains { if case .dropWorker("c", _, .failed("malformed result")) = $0 { true } else { false } })
        #expect(sim.scheduler.liveWorkers == ["a"] && sim.work(of: "a").sorted() == [1, 2, 4])
        sim.answer("a")
        #expect(sim.completed.count == 1 && sim.completed[0].results == Self.expected(round: 0, 6))
    }

    @Test func duplicateLateAndForeignResultsAreDiscarded() {
        typealias S = Scheduler<String, Int>
        var s = S(configurationsPerRound: 2)
        _ = s.workerJoined("a", name: "a", now: .zero)
        _ = s.workerJoined("b", name: "b", now: .zero)
        _ = s.startRound(4, now: .zero)  // a: 0, b: 1
        func reason(_ actions: [S.Action]) -> S.DiscardReason? {
            if case let .discardResult(_, _, _, reason)? = actions.first { reason } else { nil }
        }
        #expect(s.result(from: "a", round: 4, configuration: 0, payload: 10, now: .zero).isEmpty)
        #expect(reason(s.result(from: "a", round: 4, configuration: 0, payload: 11, now: .zero)) == .duplicate)
        #expect(reason(s.result(from: "a", round: 4, configuration: 1, payload: 12, now: .zero)) == .notAssigned)
        #expect(reason(s.result(from: "a", round: 3, configuration: 1, payload: 13, now: .zero)) == .wrongRound(current: 4))
        #expect(reason(s.result(from: "a", round: 4, configuration: 2, payload: 14, now: .zero)) == .configurationOutOfRange)
        #expect(reason(s.result(from: "zed", round: 4, configuration: 1, payload: 15, now: .zero)) == .unknownWorker)
        #expect(s.result(from: "b", round: 4, configuration: 1, payload: 20, now: .zero) == [.roundComplete(round: 4, results: [10, 20])])
        #expect(reason(s.result(from: "b", round: 4, configuration: 1, payload: 21, now: .zero)) == .wrongRound(current: nil))
    }

    @Test func workersJoinAtAnyRound() {
        var sim = Simulation(configurations: 4)
        sim.start(0)  // nobody there: the configurations wait
        #expect(sim.actions.isEmpty)
        sim.join("a")
        #expect(sim.work(of: "a") == [0, 1], "parked configurations go out two at a time, while others may still join")
        sim.answer("a", limit: 1)
        #expect(sim.work(of: "a") == [0, 2], "topped up as it finishes one")
        sim.join("b")  // mid-round: takes the parked rest
        #expect(sim.work(of: "b") == [3])
        sim.answer("a"); sim.answer("b")
        #expect(sim.completed.map(\.round) == [0])
        sim.join("c")  // nothing parked: c waits for the next round
        #expect(sim.work(of: "c").isEmpty)
        sim.apply(sim.scheduler.workerLeft("c"))
        sim.start(1)
        #expect(sim.work(of: "a") == [0, 2] && sim.work(of: "b") == [1, 3])
        sim.answer("b"); sim.answer("a")
        #expect(sim.completed.map(\.round) == [0, 1] && sim.completed[1].results == Self.expected(round: 1, 4))
    }

    @Test func rejoinAndGoodbyeReleaseOutstandingWork() {
        var sim = Simulation(configurations: 4)
        sim.join("a", "b")
        sim.start(0)  // a: 0,2  b: 1,3
        sim.join("b")  // b restarted: its queue is gone, the work is reassigned (to a, the least loaded)
        #expect(sim.actions.contains { if case .dropWorker("b", _, .rejoined) = $0 { true } else { false } })
        #expect(sim.work(of: "a") == [0, 2, 1, 3] && sim.work(of: "b").isEmpty)
        sim.apply(sim.scheduler.workerLeft("a"))
        #expect(sim.work(of: "b") == [0, 1, 2, 3])
        sim.answer("b")
        #expect(sim.completed.first?.results == Self.expected(round: 0, 4))
    }

    @Test func stallsAreReportedWithTheAwaitedWorkers() {
        typealias S = Scheduler<String, Int>
        var s = S(configurationsPerRound: 3)
        for id in ["alpha", "beta", "gamma"] { _ = s.workerJoined(id, name: "node-\(id)", now: .zero) }
        _ = s.startRound(0, now: .zero)  // alpha 0, beta 1, gamma 2
        _ = s.result(from: "beta", round: 0, configuration: 1, payload: 1, now: .seconds(1))
        func stalls(at seconds: Int) -> [S.Action] {
            for id in ["alpha", "beta", "gamma"] { s.heard(from: id, now: .seconds(seconds)) }
            return s.tick(now: .seconds(seconds)).filter { if case .stalled = $0 { true } else { false } }
        }
        #expect(stalls(at: 10).isEmpty)
        // beta, idle since its result, holds a speculative copy of alpha's configuration 0 by now.
        #expect(stalls(at: 11) == [.stalled(round: 0, waitingFor: ["node-alpha", "node-beta", "node-gamma"], unassigned: 0,
                                            silentFor: .seconds(10))])
        #expect(stalls(at: 15).isEmpty)
        #expect(stalls(at: 21).count == 1)

        var empty = S(configurationsPerRound: 2)
        _ = empty.startRound(0, now: .zero)
        #expect(empty.tick(now: .seconds(10)) == [.stalled(round: 0, waitingFor: [], unassigned: 2, silentFor: .seconds(10))])
    }

    @Test func heartbeatsGoOutEveryInterval() {
        var s = Scheduler<String, Int>(configurationsPerRound: 1)
        #expect(s.tick(now: .zero).isEmpty)
        _ = s.workerJoined("a", name: "a", now: .zero)
        #expect(s.tick(now: .milliseconds(100)) == [.sendHeartbeat(to: ["a"])])
        #expect(s.tick(now: .milliseconds(900)).isEmpty)
        s.heard(from: "a", now: .milliseconds(1000))
        #expect(s.tick(now: .milliseconds(1100)) == [.sendHeartbeat(to: ["a"])])
    }

    @Test func workerReconnectsWithCappedBackoff() {
        var w = WorkerState(now: .zero)
        #expect(w.tick(now: .zero) == [.connectAndSendHello])
        #expect(w.phase == .awaitingWelcome(since: .zero))
        var delays: [Duration] = []
        var now = Duration.zero
        for _ in 0..<8 {  // the coordinator never answers
            now += .milliseconds(3001)
            #expect(w.tick(now: now).first.map { if case .disconnect = $0 { true } else { false } } == true)
            guard case let .connecting(retryAt) = w.phase else { Issue.record("not reconnecting"); return }
            delays.append(retryAt - now)
            #expect(w.tick(now: retryAt - .milliseconds(1)).isEmpty)
            now = retryAt
            #expect(w.tick(now: now) == [.connectAndSendHello])
        }
        #expect(delays == [100, 200, 400, 800, 1600, 3200, 5000, 5000].map { Duration.milliseconds($0) })

        let welcome = Message.welcome(jobSpec: [7], round: 5, baseWeights: WireTensor([1]))
        #expect(w.received(welcome, now: now) == [.startJob(jobSpec: [7], round: 5, baseWeights: WireTensor([1]))])
        w.jobStarted(parameterCount: 2)
        #expect(w.phase == .working(round: 5) && w.reconnectDelay == .milliseconds(100))
        #expect(w.tick(now: now + .seconds(1)) == [.sendHeartbeat])
        _ = w.received(.parameterHead(round: 6, offset: 0, values: WireTensor([3, 4])), now: now + .seconds(2))
        #expect(w.phase == .working(round: 6))
        #expect(w.tick(now: now + .seconds(5)) == [.sendHeartbeat])  // silent for exactly the timeout: still alive
        #expect(w.tick(now: now + .milliseconds(5500)).first.map { if case .disconnect = $0 { true } else { false } } == true)
        #expect(w.tick(now: now + .milliseconds(5600)) == [.connectAndSendHello])
        #expect(w.received(.refuse(reason: "wrong data"), now: now + .seconds(6)) == [.stop(reason: "refused: wrong data")])
        #expect(w.tick(now: now + .seconds(60)).isEmpty)
    }

    /// A round's parameter heads are staged until they cover the parameters, in any order; a
    /// newer round replaces staged heads of an older one; heads that overlap or do not fit are
    /// dropped and logged; work before the welcome's job is set up is ignored; a reconnect
    /// drops whatever was staged.
    @Test func workerStagesParameterHeads() {
        var w = WorkerState(now: .zero)
        #expect(w.tick(now: .zero) == [.connectAndSendHello])
        _ = w.received(.welcome(jobSpec: [], round: 3, baseWeights: WireTensor([])), now: .zero)
        #expect(w.received(.work(round: 3, blocks: [0]), now: .zero).isEmpty, "no job yet")
        w.jobStarted(parameterCount: 5)
        func head(_ round: Int, _ offset: Int, _ values: [Float]) -> [WorkerState.Action] {
            w.received(.parameterHead(round: round, offset: offset, values: WireTensor(values)), now: .zero)
        }
        #expect(head(3, 2, [3, 4, 5]).isEmpty)
        #expect(head(3, 1, [9, 9]).first.map { if case .log = $0 { true } else { false } } == true, "overlaps the staged head")
        #expect(head(3, 4, [1, 2]).first.map { if case .log = $0 { true } else { false } } == true, "ends past the parameters")
        #expect(head(3, 0, [1, 2]) == [.useParameters(round: 3, heads: [.init(offset: 2, values: WireTensor([3, 4, 5])),
                                                                         .init(offset: 0, values: WireTensor([1, 2]))])])
        #expect(w.received(.work(round: 3, blocks: [0, 1]), now: .zero) == [.compute(round: 3, blocks: [0, 1])])
        // Round 4 begins, round 5 overtakes it: round 4's staged head is dropped.
        #expect(head(4, 0, [1, 2]).isEmpty)
        #expect(head(5, 2, [3, 4, 5]).isEmpty)
        #expect(head(4, 2, [3, 4, 5]).isEmpty, "a head of a superseded round")
        #expect(head(5, 0, [6, 7]) == [.useParameters(round: 5, heads: [.init(offset: 2, values: WireTensor([3, 4, 5])),
                                                                         .init(offset: 0, values: WireTensor([6, 7]))])])
        // Silent coordinator: reconnect, and a half-staged round is gone with the old session.
        #expect(head(6, 0, [1, 2]).isEmpty)
        _ = w.tick(now: .seconds(4))
        _ = w.tick(now: .seconds(5))
        #expect(w.parameterCount == nil)
        _ = w.received(.welcome(jobSpec: [], round: 6, baseWeights: WireTensor([])), now: .seconds(5))
        w.jobStarted(parameterCount: 5)
        #expect(head(6, 2, [3, 4, 5]).isEmpty, "the head staged before the reconnect does not count")
    }

    /// Failed CURVE handshakes in a row stop the worker with the likely cause; a successful one
    /// resets the count; a coordinator that is not up (no TCP connection) never counts.
    @Test func workerStopsAfterRepeatedHandshakeFailures() {
        var w = WorkerState(now: .zero)
        _ = w.tick(now: .zero)
        for _ in 0..<20 { #expect(w.transport(.disconnected).isEmpty) }  // refused TCP: not a handshake
        #expect(w.handshakeFailures == 0)
        for _ in 0..<(WireProtocol.maxHandshakeFailures - 1) {
            _ = w.transport(.connected)
            #expect(w.transport(.disconnected).isEmpty)
        }
        _ = w.transport(.connected)
        #expect(w.transport(.handshakeSucceeded).isEmpty)
        #expect(w.handshakeFailures == 0, "a successful handshake resets the count")
        for _ in 0..<(2 * WireProtocol.maxHandshakeFailures) {
            _ = w.transport(.connected)
            #expect(w.transport(.handshakeDeferred).isEmpty, "a deferred handshake (a suspended key) does not count")
        }
        #expect(w.handshakeFailures == 0)
        var last: [WorkerState.Action] = []
        for _ in 0..<WireProtocol.maxHandshakeFailures {
            _ = w.transport(.connected)
            last = w.transport(.handshakeFailed(reason: "authentication refused (status 400)"))
        }
        guard case let .fail(reason)? = last.first else { Issue.record("no failure after \(WireProtocol.maxHandshakeFailures) handshakes"); return }
        #expect(reason.contains("status 400") && reason.contains("authorized_workers") && reason.contains("coordinator.pub"))
        #expect(w.tick(now: .seconds(100)).isEmpty, "stopped")
    }

    /// A configuration outstanding 3× the round's median configuration time goes to an idle
    /// worker too; the first result wins, the other is a duplicate; the round's results are in
    /// configuration order as ever, and a dropped worker's speculated configuration stays with
    /// its twin instead of being assigned a third time.
    @Test func lateConfigurationsAreSpeculatedOnIdleWorkers() {
        typealias S = Scheduler<String, Int>
        var s = S(configurationsPerRound: 3)
        for id in ["a", "b", "c"] { _ = s.workerJoined(id, name: id, now: .zero) }
        _ = s.startRound(0, now: .zero)  // a 0, b 1, c 2
        _ = s.result(from: "b", round: 0, configuration: 1, payload: 10, now: .seconds(1))
        _ = s.result(from: "c", round: 0, configuration: 2, payload: 20, now: .seconds(2))  // median 2 s → patience 6 s
        func heardAll(_ t: Duration) { for id in ["a", "b", "c"] { s.heard(from: id, now: t) } }
        heardAll(.seconds(5))
        #expect(!s.tick(now: .seconds(5)).contains { if case .sendWork = $0 { true } else { false } }, "not late yet")
        heardAll(.milliseconds(6500))
        let speculation = s.tick(now: .milliseconds(6500)).filter { if case .sendWork = $0 { true } else { false } }
        #expect(speculation == [.sendWork(to: "b", round: 0, configurations: [0])], "the first idle worker in join order")
        #expect(s.outstanding(of: "a") == [0] && s.outstanding(of: "b") == [0])
        heardAll(.seconds(7))
        #expect(!s.tick(now: .seconds(7)).contains { if case .sendWork = $0 { true } else { false } }, "one extra copy only")
        let done = s.result(from: "b", round: 0, configuration: 0, payload: 0, now: .seconds(8))
        #expect(done == [.roundComplete(round: 0, results: [0, 10, 20])])
        #expect(s.outstanding(of: "a").isEmpty, "the slow twin need not finish")
        #expect(s.result(from: "a", round: 0, configuration: 0, payload: 0, now: .seconds(9))
                == [.discardResult(from: "a", round: 0, configuration: 0, reason: .wrongRound(current: nil))])

        // Round 1: a stalls again; its configuration is speculated on b; then a is dropped —
        // configuration 0 stays with b alone.
        _ = s.startRound(1, now: .seconds(10))  // a 0, b 1, c 2
        _ = s.result(from: "b", round: 1, configuration: 1, payload: 11, now: .seconds(11))
        _ = s.result(from: "c", round: 1, configuration: 2, payload: 21, now: .seconds(11))
        for id in ["a", "b", "c"] { s.heard(from: id, now: .seconds(15)) }
        #expect(s.tick(now: .seconds(15)).contains(.sendWork(to: "b", round: 1, configurations: [0])))
        let dropped = s.workerFailed("a", reason: "test")
        #expect(!dropped.contains { if case .sendWork = $0 { true } else { false } })
        #expect(s.outstanding(of: "b") == [0] && s.outstanding(of: "c").isEmpty)
    }

    /// A worker overtaken by speculative twins twice in a row is benched: no new work for 10 s
    /// (doubling on repeats), while it stays connected; then it gets work again.
    @Test func repeatedlyOvertakenWorkersAreBenched() {
        typealias S = Scheduler<String, Int>
        var s = S(configurationsPerRound: 3)
        for id in ["a", "b", "c"] { _ = s.workerJoined(id, name: id, now: .zero) }
        var t = Duration.zero
        func heardAll() { for id in ["a", "b", "c"] { s.heard(from: id, now: t) } }
        func workOf(_ actions: [S.Action]) -> [String: [Int]] {
            var work: [String: [Int]] = [:]
            for case let .sendWork(id, _, configurations) in actions { work[id, default: []] += configurations }
            return work
        }
        for round in 0..<2 {  // a holds configuration 0 and never answers; b takes it over and wins
            #expect(workOf(s.startRound(round, now: t)) == ["a": [0], "b": [1], "c": [2]])
            _ = s.result(from: "b", round: round, configuration: 1, payload: 1, now: t + .seconds(1))
            _ = s.result(from: "c", round: round, configuration: 2, payload: 2, now: t + .seconds(1))
            t += .seconds(5); heardAll()
            #expect(workOf(s.tick(now: t)) == ["b": [0]])
            _ = s.result(from: "b", round: round, configuration: 0, payload: 0, now: t + .seconds(1))
            t += .seconds(2); heardAll()
        }
        // Benched until 10 s after its second overtaking: round 2 goes to b and c.
        #expect(workOf(s.startRound(2, now: t)) == ["b": [0, 2], "c": [1]])
        for c in [0, 2] { _ = s.result(from: "b", round: 2, configuration: c, payload: c, now: t) }
        _ = s.result(from: "c", round: 2, configuration: 1, payload: 1, now: t)
        t += .seconds(10); heardAll()
        #expect(workOf(s.startRound(3, now: t)) == ["a": [0], "b": [1], "c": [2]], "back after the bench")
        #expect(s.liveWorkers == ["a", "b", "c"], "benched, never dropped")
    }
}
