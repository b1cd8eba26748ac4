import Foundation
import Testing
@testable import NeuMeta

/// The coordinator's machines with hundreds of workers: a join storm admitted whole, rounds of
/// one configuration per worker, per-message work that does not grow with the worker count,
/// and the stand-in gradients of load-generating workers.
@Suite struct ClusterScaleTests {
    typealias State = CoordinatorState<Int>
    static let data = SyntheticGradients.fingerprint

    static func terms() -> LossTerms { var t = LossTerms(); t.total = 1; t.samples = 1; return t }

    /// `workers` admitted within one second (hello i at i/workers s) into round 0 of a machine
    /// with one configuration per worker; returns the machine and every action.
    static func joinStorm(workers: Int, heads: Int) -> (State, [State.Action]) {
        var m = State(dataFingerprint: data, headSizes: Array(repeating: 1, count: heads), blockSizes: Array(repeating: 1, count: workers))
        var actions = m.startRound(0, more: true, now: .zero)
        for i in 0..<workers {
            let now = Duration.milliseconds(1000 * i / workers)
            m.heartbeat(from: i, now: now)  // as the server does for every message, before the hello
            actions += m.hello(from: i, name: "w\(i)", key: "K\(i)", version: WireProtocol.version, fingerprint: data.text, now: now)
        }
        return (m, actions)
    }

    /// Finishes the round in progress: every worker, the last joined first, sends each head of
    /// each configuration it holds, then the results, all at `now`. Returns the actions.
    static func finishRound(_ m: inout State, round: Int, heads: Int, now: Duration) -> [State.Action] {
        var actions: [State.Action] = []
        let holders = m.liveWorkers.reversed().map { ($0, m.scheduler.outstanding(of: $0)) }
        for h in 0..<heads {
            for (id, configurations) in holders {
                for c in configurations where m.gradientPieceArrived(from: id, round: round, block: c, head: h, at: 0, count: 1) {
                    m.heartbeat(from: id, now: now)
                    actions += m.storedGradientPiece(from: id, block: c, head: h, count: 1, squares: 1)
                    actions += m.tick(now: now)
                }
            }
        }
        for (id, configurations) in holders {
            for c in configurations {
                actions += m.result(from: id, round: round, block: c, result: .init(terms: [terms()], seconds: 1), now: now)
            }
        }
        return actions
    }

    /// 256 workers saying hello within one second into a round that started before any of
    /// them are all welcomed and kept: none refused or dropped, heartbeats reach all of them.
    /// The round's parked configurations go out two per worker as they join (the first does
    /// not take the whole round). The next round gives each worker one configuration; each
    /// head is stepped once, when the last configuration's gradient of it is in, and broadcast
    /// to all 256.
    @Test func aJoinStormOf256WorkersIsAdmittedAndScheduled() {
        let n = 256, heads = 8
        var (m, actions) = Self.joinStorm(workers: n, heads: heads)
        let welcomed = actions.compactMap { if case let .welcome(id, _) = $0 { id } else { nil } }
        #expect(welcomed == Array(0..<n), "every hello welcomed, once, in order")
        #expect(!actions.contains { if case .refuse = $0 { true } else { false } })
        #expect(m.liveWorkers == Array(0..<n))
        #expect(Self.joinStormLogLines(actions) == n, "one log line per joining worker")
        #expect((0..<(n / 2)).allSatisfy { m.scheduler.outstanding(of: $0) == [2 * $0, 2 * $0 + 1] })
        #expect(((n / 2)..<n).allSatisfy { m.scheduler.outstanding(of: $0).isEmpty })

        for id in m.liveWorkers { m.heartbeat(from: id, now: .seconds(2)) }
        let ticked = m.tick(now: .seconds(2))
        #expect(ticked.contains(.sendHeartbeat(to: Array(0..<n))))
        #expect(!ticked.contains { if case .log(let line) = $0 { line.contains("dropped") } else { false } })
        _ = Self.finishRound(&m, round: 0, heads: heads, now: .seconds(3))
        #expect(!m.inProgress)

        let started = m.startRound(1, more: true, now: .seconds(4))
        var work: [Int: [Int]] = [:]
        for case let .sendWork(id, _, configurations) in started { work[id, default: []] += configurations }
        #expect(work.count == n && (0..<n).allSatisfy { work[$0] == [$0] }, "one configuration each")
        for id in m.liveWorkers { m.heartbeat(from: id, now: .seconds(5)) }
        let round1 = Self.finishRound(&m, round: 1, heads: heads, now: .seconds(5))
        let stepped = round1.compactMap { if case let .stepHead(h) = $0 { h } else { nil } }
        #expect(stepped == Array(0..<heads))
        let broadcasts = round1.compactMap { if case let .broadcastHead(_, h, to) = $0 { (h, to.count) } else { nil } }
        #expect(broadcasts.map(\.0) == Array(0..<heads) && broadcasts.allSatisfy { $0.1 == n })
        guard case let .roundComplete(1, completion)? = round1.last else { Issue.record("round 1 did not complete"); return }
        #expect(completion.results.count == n)
    }

    /// A worker that holds many configurations when idle workers take them over (speculation)
    /// is overtaken on each, but that counts once for the round: it is not benched and gets
    /// work in the next round.
    @Test func overtakingOnManyConfigurationsInOneRoundIsOneStrike() {
        typealias S = Scheduler<String, Int>
        var s = S(configurationsPerRound: 4)
        _ = s.workerJoined("a", name: "a", now: .zero)
        _ = s.startRound(0, now: .zero)  // all four to a
        for id in ["b", "c", "d"] { _ = s.workerJoined(id, name: id, now: .zero) }
        _ = s.result(from: "a", round: 0, configuration: 0, payload: 0, now: .seconds(1))
        for id in ["a", "b", "c", "d"] { s.heard(from: id, now: .seconds(7)) }
        let twins = s.tick(now: .seconds(7)).compactMap { if case let .sendWork(id, _, c) = $0 { "\(id)\(c)" } else { nil } }
        #expect(twins == ["b[1]", "c[2]", "d[3]"])
        for (id, c) in [("b", 1), ("c", 2), ("d", 3)] { _ = s.result(from: id, round: 0, configuration: c, payload: c, now: .seconds(8)) }
        #expect(s.round == nil, "round 0 complete")
        let next = s.startRound(1, now: .seconds(9)).compactMap { if case let .sendWork(id, _, c) = $0 { "\(id)\(c)" } else { nil } }
        #expect(next == ["a[0]", "b[1]", "c[2]", "d[3]"], "a is not benched")
    }

    static func joinStormLogLines(_ actions: [State.Action]) -> Int {
        actions.filter { if case .log(let line) = $0 { line.contains("joined at round") } else { false } }.count
    }

    /// The machine's work per gradient head (want, store, heartbeat, tick) at 256 workers is
    /// within a small factor of that at 32: nothing scans all workers or configurations per
    /// message (which would make it about 8×). Best of three, one configuration per worker.
    @Test func perMessageWorkDoesNotGrowWithTheWorkerCount() {
        func secondsPerHead(workers: Int) -> Double {
            var best = Double.infinity
            for _ in 0..<3 {
                var (m, _) = Self.joinStorm(workers: workers, heads: 4)
                for id in m.liveWorkers { m.heartbeat(from: id, now: .seconds(2)) }
                _ = Self.finishRound(&m, round: 0, heads: 4, now: .seconds(2))  // round 0: all on the first joiner
                _ = m.startRound(1, more: true, now: .seconds(3))
                let start = ContinuousClock.now
                _ = Self.finishRound(&m, round: 1, heads: 4, now: .seconds(3))
                best = min(best, Self.seconds(ContinuousClock.now - start) / Double(workers * 4))
            }
            return best
        }
        let small = secondsPerHead(workers: 32), large = secondsPerHead(workers: 256)
        #expect(large < 4 * small, "per-head work \(large * 1e6) µs at 256 workers vs \(small * 1e6) µs at 32")
    }

    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    /// Stand-in gradients are a pure function of (seed, round, configuration, head), finite,
    /// of the heads' sizes and of plausible, similar norms; bfloat16 halves the bytes.
    @Test func syntheticGradientsAreDeterministicFiniteAndPlausible() {
        let sizes = [1000, 300, 5000]
        let g = SyntheticGradients(headSizes: sizes, seed: 3, encoding: .float32)
        #expect(g.heads == [0..<1000, 1000..<1300, 1300..<6300] && g.parameterCount == 6300)
        let a = g.gradientHead(2, round: 4, configuration: 7), b = g.gradientHead(2, round: 4, configuration: 7)
        #expect(a == b && a.count == 5000 && a.byteCount == 20_000)
        let others = (0..<8).map { g.gradientHead(2, round: 4, configuration: $0) }
        #expect(Set(others.map { $0.array }).count > 1, "configurations differ")
        let norms = others.map { t in sqrt(t.array.reduce(0.0) { $0 + Double($1) * Double($1) }) }
        #expect(others.allSatisfy { $0.array.allSatisfy(\.isFinite) })
        #expect(norms.max()! < 2 * norms.min()! && norms.min()! > 0, "norms \(norms)")
        #expect(g.lossTerms(round: 1, configuration: 2) == g.lossTerms(round: 1, configuration: 2))
        #expect(g.lossTerms(round: 1, configuration: 2).total.isFinite)
        let half = SyntheticGradients(headSizes: sizes, seed: 3, encoding: .bfloat16).gradientHead(2, round: 4, configuration: 7)
        #expect(half.encoding == .bfloat16 && half.byteCount == 10_000)
    }
}

/// Lists of worker names in log lines stay short however many workers there are.
@Suite struct ClusterLogLineTests {
    @Test func longNameListsAreAbbreviated() {
        let names = (0..<256).map { "w\($0)" }
        #expect(Array(names.prefix(3)).abbreviated() == "w0, w1, w2")
        #expect(names.abbreviated(limit: 3, separator: ",") == "w0,w1,w2 … and 253 more")
        // A stall report with 256 workers holding work names 8 and counts the rest.
        var m = CoordinatorState<Int>(dataFingerprint: SyntheticGradients.fingerprint, headSizes: [1], blockSizes: Array(repeating: 1, count: 256))
        _ = m.startRound(0, more: false, now: .zero)
        for i in 0..<256 {
            _ = m.hello(from: i, name: "w\(i)", key: "K", version: WireProtocol.version, fingerprint: SyntheticGradients.fingerprint.text, now: .zero)
        }
        // Round 0 is finished; round 1 gives each worker one configuration, which none returns.
        _ = ClusterScaleTests.finishRound(&m, round: 0, heads: 1, now: .zero)
        _ = m.startRound(1, more: false, now: .zero)
        var report: String?
        for t in 1...11 {
            for i in 0..<256 { m.heartbeat(from: i, now: .seconds(t)) }
            for case let .log(line) in m.tick(now: .seconds(t)) where line.contains("stalled") { report = line }
        }
        #expect(report.map { $0.contains("waiting for w0, w1, w2, w3, w4, w5, w6, w7 … and 248 more") } == true, "\(report ?? "no report")")
    }
}
