import Testing
@testable import NeuMeta

/// The coordinator's protocol machine without sockets: admission, heads of a round (when a
/// head is stepped and broadcast, who is sent which parameter heads), the non-finite rule and
/// malformed results.
@Suite struct ClusterCoordinatorStateTests {
    typealias State = CoordinatorState<String>
    static let data = DataFingerprint(dataset: "synthetic", files: [.init(name: "images", size: 10, digest: "ab")])

    /// Values per head in these machines.
    static let headSize = 4

    static func machine(configurations: Int = 2, heads: Int = 3) -> State {
        State(dataFingerprint: data, headSizes: Array(repeating: headSize, count: heads), blockSizes: Array(repeating: 1, count: configurations))
    }

    /// Whether the machine takes a whole head of block `block` sent as one piece.
    static func takes(_ m: inout State, _ id: String, round: Int, block: Int, head: Int) -> Bool {
        m.gradientPieceArrived(from: id, round: round, block: block, head: head, at: 0, count: headSize)
    }

    /// Stores a whole head of block `block` with L2 norm `norm` (NaN: non-finite) as one piece.
    static func store(_ m: inout State, _ id: String, block: Int, head: Int, norm: Double) -> [State.Action] {
        m.storedGradientPiece(from: id, block: block, head: head, count: headSize, squares: norm * norm)
    }

    static func terms(_ total: Double = 1) -> LossTerms {
        var t = LossTerms(); t.total = total; t.samples = 4
        return t
    }

    /// Admits `name` (connection id = name) and returns the actions.
    static func hello(_ m: inout State, _ name: String, key: String = "K", version: UInt16 = WireProtocol.version,
                      fingerprint: String = data.text) -> [State.Action] {
        m.hello(from: name, name: name, key: key, version: version, fingerprint: fingerprint, now: .zero)
    }

    static func work(_ actions: [State.Action]) -> [String: [Int]] {
        var work: [String: [Int]] = [:]
        for case let .sendWork(id, _, configurations) in actions { work[id, default: []] += configurations }
        return work
    }

    @Test func admissionChecksVersionDataAndNames() {
        var m = Self.machine()
        #expect(Self.hello(&m, "early").isEmpty, "nothing to join before the first round")
        _ = m.startRound(0, more: true, now: .zero)
        #expect(Self.hello(&m, "old", version: WireProtocol.version - 1).contains(.refuse("old", reason:
            "protocol version \(WireProtocol.version - 1); this coordinator speaks \(WireProtocol.version)")))
        var otherData = Self.data
        otherData.files[0].size = 11
        let refused = Self.hello(&m, "other", fingerprint: otherData.text)
        #expect(refused.contains { if case let .refuse(_, reason) = $0 { reason.contains("images has 11 bytes, expected 10") } else { false } })
        #expect(Self.hello(&m, "garbled", fingerprint: "x;a b").contains(.refuse("garbled", reason: "malformed data fingerprint")))
        // Names are restricted to a safe alphabet; a refused one reaches the log escaped.
        let bidi = "w\u{202E}1\n"
        let named = Self.hello(&m, bidi)
        #expect(named.contains(.refuse(bidi, reason: "the worker name must be 1–64 of A–Z a–z 0–9 - _ . (not starting with a dot)")))
        #expect(named.contains { if case let .logLimited(.refused, line) = $0 { line.contains("w\\u{202e}1\\u{a}") } else { false } })
        #expect(m.liveWorkers.isEmpty)

        let welcomed = Self.hello(&m, "w1", key: "A")
        #expect(welcomed.prefix(2) == [.welcome("w1", round: 0), .sendParameterHeads(round: 0, heads: [0, 1, 2], to: "w1")])
        #expect(Self.work(welcomed) == ["w1": [0, 1]])
        // The same name from another connection: with the same key it replaces the old one (a
        // restart: its work moves to the new connection); with another key it is refused.
        var impostor = m
        let stolen = impostor.hello(from: "c2", name: "w1", key: "B", version: WireProtocol.version, fingerprint: Self.data.text, now: .zero)
        #expect(stolen.contains(.refuse("c2", reason: "the name w1 is in use by a worker with another key")))
        let restarted = m.hello(from: "c2", name: "w1", key: "A", version: WireProtocol.version, fingerprint: Self.data.text, now: .zero)
        #expect(m.liveWorkers == ["c2"] && Self.work(restarted) == ["c2": [0, 1]])
    }

    /// A head is stepped once every configuration's gradient of it is in, and broadcast as the
    /// next round's head when a round follows; at the next round's start only a worker lacking
    /// heads is sent them.
    @Test func headsAreSteppedWhenCompleteAndBroadcast() {
        var m = Self.machine()
        _ = m.startRound(0, more: true, now: .zero)
        _ = Self.hello(&m, "w1"); _ = Self.hello(&m, "w2")
        #expect(m.scheduler.outstanding(of: "w1") == [0, 1])  // joined first, took all
        #expect(Self.takes(&m, "w1", round: 0, block: 0, head: 2))
        #expect(!Self.takes(&m, "w2", round: 0, block: 0, head: 2), "not its configuration")
        #expect(!Self.takes(&m, "w1", round: 1, block: 0, head: 2), "another round")
        #expect(!Self.takes(&m, "w1", round: 0, block: 0, head: 3), "no such head")
        #expect(Self.store(&m, "w1", block: 0, head: 2, norm: 1).isEmpty)
        #expect(!Self.takes(&m, "w1", round: 0, block: 0, head: 2), "already in")
        #expect(Self.store(&m, "w1", block: 1, head: 2, norm: 1)
                == [.stepHead(2), .broadcastHead(round: 1, head: 2, to: ["w1", "w2"])])
        // A result before all its heads is malformed: the worker is dropped, its work reassigned.
        let early = m.result(from: "w1", round: 0, block: 0, result: .init(terms: [Self.terms()], seconds: 0.1), now: .zero)
        #expect(early.contains { if case .logLimited(.malformed, _) = $0 { true } else { false } })
        #expect(m.liveWorkers == ["w2"] && m.scheduler.outstanding(of: "w2") == [0, 1])
        for h in 0..<3 {
            for c in 0..<2 where Self.takes(&m, "w2", round: 0, block: c, head: h) {
                _ = Self.store(&m, "w2", block: c, head: h, norm: 1)
            }
        }
        _ = m.result(from: "w2", round: 0, block: 1, result: .init(terms: [Self.terms(2)], seconds: 0.3), now: .seconds(1))
        let done = m.result(from: "w2", round: 0, block: 0, result: .init(terms: [Self.terms(1)], seconds: 0.2), now: .seconds(1))
        guard case let .roundComplete(0, completion)? = done.last else { Issue.record("round 0 did not complete: \(done)"); return }
        #expect(completion.terms.map(\.total) == [1, 2] && abs(completion.computeSeconds - 0.5) < 1e-12)
        // w2 holds every head of round 1 (broadcast as stepped); w3 joins between rounds and
        // holds round 0's: it is sent all of round 1's at the start.
        _ = Self.hello(&m, "w3")
        let start = m.startRound(1, more: false, now: .seconds(2))
        #expect(start.contains(.sendParameterHeads(round: 1, heads: [0, 1, 2], to: "w3")))
        #expect(!start.contains { if case .sendParameterHeads(_, _, "w2") = $0 { true } else { false } })
        #expect(Self.work(start) == ["w2": [0], "w3": [1]])
        // The last round of a run steps without broadcasting.
        #expect(Self.store(&m, "w2", block: 0, head: 0, norm: 1).isEmpty)
        #expect(Self.store(&m, "w3", block: 1, head: 0, norm: 1) == [.stepHead(0)])
    }

    /// A head arrives in pieces, in order, from one worker: the first to send its first piece
    /// fills it; another worker's copy (a speculative twin) is not mixed in. A twin whose copy
    /// was shut out and whose filler then failed is sent away without blame: the block is recomputed.
    @Test func piecesFillAHeadInOrderFromOneWorker() {
        var m = Self.machine(configurations: 2, heads: 2)
        func piece(_ id: String, block: Int, head: Int, at offset: Int, _ count: Int) -> (taken: Bool, actions: [State.Action]) {
            guard m.gradientPieceArrived(from: id, round: 1, block: block, head: head, at: offset, count: count) else { return (false, []) }
            return (true, m.storedGradientPiece(from: id, block: block, head: head, count: count, squares: Double(count)))
        }
        // Round 0: "a" joined first and takes both blocks.
        _ = m.startRound(0, more: true, now: .zero)
        _ = Self.hello(&m, "a"); _ = Self.hello(&m, "b")
        for block in 0..<2 {
            for head in 0..<2 { _ = Self.store(&m, "a", block: block, head: head, norm: 1) }
            _ = m.result(from: "a", round: 0, block: block, result: .init(terms: [Self.terms()], seconds: 0.1), now: .seconds(1))
        }
        #expect(Self.work(m.startRound(1, more: true, now: .seconds(2))) == ["a": [0], "b": [1]])
        #expect(piece("a", block: 0, head: 0, at: 0, 2) == (true, []), "the first piece: a fills head 0 of block 0")
        #expect(!piece("a", block: 0, head: 0, at: 0, 2).taken, "not the next piece")
        #expect(!piece("b", block: 0, head: 0, at: 0, 2).taken, "not b's block")
        // b finishes block 1 after 1 s; block 0 is then overdue (3 × the median) and also goes to b.
        for head in 0..<2 { #expect(piece("b", block: 1, head: head, at: 0, Self.headSize).taken) }
        _ = m.result(from: "b", round: 1, block: 1, result: .init(terms: [Self.terms()], seconds: 1), now: .seconds(3))
        m.heartbeat(from: "a", now: .seconds(6)); m.heartbeat(from: "b", now: .seconds(6))
        #expect(Self.work(m.tick(now: .seconds(6.5)))["b"] == [0])
        #expect(!piece("b", block: 0, head: 0, at: 0, 2).taken, "a is filling head 0 of block 0")
        #expect(piece("b", block: 0, head: 1, at: 0, Self.headSize).taken, "nobody fills head 1: b may")
        // a leaves half-way: its head starts over; b's copy of it was shut out, so b's result lacks it.
        _ = m.goodbye(from: "a")
        #expect(!piece("b", block: 0, head: 0, at: 2, 2).taken)
        let late = m.result(from: "b", round: 1, block: 0, result: .init(terms: [Self.terms()], seconds: 1), now: .seconds(7))
        #expect(late.contains { if case let .log(line) = $0 { line.contains("overlapped another worker's") } else { false } })
        #expect(!late.contains { if case .logLimited(.malformed, _) = $0 { true } else { false } })
        // Its blocks are recomputed from the start by whoever holds them next.
        _ = Self.hello(&m, "c")
        #expect(m.scheduler.outstanding(of: "c") == [0])
        #expect(piece("c", block: 0, head: 0, at: 0, 2).taken && piece("c", block: 0, head: 0, at: 2, 2).taken)
    }

    /// A non-finite head or loss drops that worker and its configuration is recomputed
    /// elsewhere; the same configuration non-finite a second time stops the run.
    @Test func nonFiniteResultsAreRecomputedThenStop() {
        var m = Self.machine(configurations: 1, heads: 1)
        _ = m.startRound(0, more: true, now: .zero)
        _ = Self.hello(&m, "w1"); _ = Self.hello(&m, "w2")
        let first = Self.store(&m, "w1", block: 0, head: 0, norm: .nan)
        #expect(first.contains { if case let .log(line) = $0 { line.contains("worker w1 returned a non-finite result") } else { false } })
        #expect(m.liveWorkers == ["w2"] && m.scheduler.outstanding(of: "w2") == [0])
        _ = Self.store(&m, "w2", block: 0, head: 0, norm: 1)
        var nan = Self.terms(); nan.total = .nan
        // A second identity: the coordinator computes the block itself, and only its own
        // non-finite result ends the run.
        var healthy = m
        let second = m.result(from: "w2", round: 0, block: 0, result: .init(terms: [nan], seconds: 0.1), now: .zero)
        #expect(second.contains(.verifyHere(round: 0, block: 0)) && !second.contains { if case .diverged = $0 { true } else { false } })
        #expect(m.verified(block: 0, finite: false).last == .diverged(round: 0, block: 0, workers: ["w1", "another worker"]))
        #expect(m.verified(block: 0, finite: nil, problem: "no data").last == .diverged(round: 0, block: 0, workers: ["w1", "another worker"]))
        // Finite here: both workers were at fault; the block is recomputed, and a further
        // non-finite copy only drops its sender.
        _ = healthy.result(from: "w2", round: 0, block: 0, result: .init(terms: [nan], seconds: 0.1), now: .zero)
        let cleared = healthy.verified(block: 0, finite: true)
        #expect(cleared.contains { if case let .log(line) = $0 { line.contains("faulty or hostile") } else { false } })
        #expect(!healthy.hello(from: "w1-again", name: "w1", key: "K", version: WireProtocol.version, fingerprint: Self.data.text, now: .seconds(1))
            .contains { if case .welcome = $0 { true } else { false } }, "quarantined")
        _ = Self.hello(&healthy, "w3")
        let third = Self.store(&healthy, "w3", block: 0, head: 0, norm: .nan)
        #expect(!third.contains { if case .diverged = $0 { true } else { false } } && !third.contains(.verifyHere(round: 0, block: 0)))
        _ = Self.hello(&healthy, "w4")
        #expect(healthy.scheduler.outstanding(of: "w4") == [0], "the block is recomputed")
    }

    @Test func messagesAWorkerMustNotSendAreMalformed() {
        var m = Self.machine()
        _ = m.startRound(0, more: true, now: .zero)
        _ = Self.hello(&m, "w1")
        let actions = m.malformed(from: "w1", "a work message, which only the coordinator sends")
        #expect(actions.first == .logLimited(.malformed, "dropped malformed message from w1: a work message, which only the coordinator sends"))
        #expect(m.liveWorkers.isEmpty, "it held work: dropped")
        #expect(m.malformed(from: "stranger", "bad magic") == [.logLimited(.malformed, "dropped malformed message from an unadmitted peer: bad magic")])
    }

    /// After a warm-up, a gradient head far above its recent norms is not summed: the worker
    /// is dropped and the configuration recomputed; an honest recomputation is taken, and so is
    /// the same norm from an independent computation (a genuine spike).
    @Test func implausibleGradientsAreRecomputedElsewhere() {
        var m = Self.machine(configurations: 1, heads: 1)
        var round = 0
        func completeRound(_ worker: String, norm: Double) -> [State.Action] {
            let stored = Self.store(&m, worker, block: 0, head: 0, norm: norm)
            return stored + m.result(from: worker, round: round, block: 0, result: .init(terms: [Self.terms()], seconds: 0.1), now: .zero)
        }
        _ = m.startRound(0, more: true, now: .zero)
        _ = Self.hello(&m, "w1"); _ = Self.hello(&m, "w2")
        for r in 0..<State.normWarmUp {
            round = r
            if r > 0 { _ = m.startRound(r, more: true, now: .zero) }
            #expect(m.normBound(head: 0) == nil, "no bound during the warm-up")
            let owner = m.scheduler.outstanding(of: "w1").isEmpty ? "w2" : "w1"
            #expect(completeRound(owner, norm: 1 + Double(r) / 100).contains { if case .roundComplete = $0 { true } else { false } })
        }
        round = State.normWarmUp
        _ = m.startRound(round, more: true, now: .zero)
        let bound = try! #require(m.normBound(head: 0))
        #expect(abs(bound - 1.04 * State.normFactor) < 1e-9)
        let owner = m.scheduler.outstanding(of: "w1").isEmpty ? "w2" : "w1", other = owner == "w1" ? "w2" : "w1"
        let rejected = Self.store(&m, owner, block: 0, head: 0, norm: 1e20)
        #expect(rejected.contains { if case let .logLimited(.rejected, line) = $0 { line.contains("norm 1e+20 exceeds 1.04e+03") } else { false } })
        #expect(!rejected.contains(.stepHead(0)) && m.liveWorkers == [other] && m.scheduler.outstanding(of: other) == [0])
        #expect(Self.store(&m, other, block: 0, head: 0, norm: 1.5) == [.stepHead(0), .broadcastHead(round: round + 1, head: 0, to: [other])])

        // A genuine spike: rejected once, then confirmed by the same norm from another worker.
        _ = m.result(from: other, round: round, block: 0, result: .init(terms: [Self.terms()], seconds: 0.1), now: .zero)
        round += 1
        _ = Self.hello(&m, owner)
        _ = m.startRound(round, more: false, now: .zero)
        let first = m.scheduler.outstanding(of: other).isEmpty ? owner : other, second = first == owner ? other : owner
        #expect(Self.store(&m, first, block: 0, head: 0, norm: 5000).contains { if case .logLimited(.rejected, _) = $0 { true } else { false } })
        #expect(Self.store(&m, second, block: 0, head: 0, norm: 5000) == [.stepHead(0)])
    }

    /// A worker that returned a non-finite result is quarantined by key and name (its hello
    /// goes unanswered for a doubling back-off), and cannot end the run alone by coming back:
    /// only another identity's non-finite result, or a third in all, is divergence.
    @Test func nonFiniteWorkersAreQuarantinedAndCannotEndTheRunAlone() {
        var m = Self.machine(configurations: 1, heads: 1)
        _ = m.startRound(0, more: true, now: .zero)
        _ = Self.hello(&m, "w1")
        _ = Self.store(&m, "w1", block: 0, head: 0, norm: .nan)
        #expect(m.liveWorkers.isEmpty)
        // The same worker on a new connection: not admitted while quarantined.
        let early = m.hello(from: "w1-again", name: "w1", key: "K", version: WireProtocol.version, fingerprint: Self.data.text, now: .seconds(10))
        #expect(early.count == 1 && !early.contains { if case .welcome = $0 { true } else { false } })
        #expect(early.contains { if case let .logLimited(.refused, line) = $0 { line.contains("quarantined") && line.contains("another 20 s") } else { false } })
        // Another key with that name is another identity: admitted.
        #expect(m.hello(from: "w1-other-key", name: "w1", key: "K2", version: WireProtocol.version, fingerprint: Self.data.text, now: .seconds(11))
            .contains(.welcome("w1-other-key", round: 0)))
        _ = m.goodbye(from: "w1-other-key")
        // After the back-off, w1 comes back; a second non-finite result from it is not divergence…
        #expect(m.hello(from: "w1-late", name: "w1", key: "K", version: WireProtocol.version, fingerprint: Self.data.text, now: .seconds(31))
            .contains(.welcome("w1-late", round: 0)))
        let second = Self.store(&m, "w1-late", block: 0, head: 0, norm: .nan)
        #expect(!second.contains { if case .diverged = $0 { true } else { false } })
        // …the back-off doubled (60 s)…
        #expect(!m.hello(from: "w1-x", name: "w1", key: "K", version: WireProtocol.version, fingerprint: Self.data.text, now: .seconds(80))
            .contains { if case .welcome = $0 { true } else { false } })
        #expect(m.hello(from: "w1-y", name: "w1", key: "K", version: WireProtocol.version, fingerprint: Self.data.text, now: .seconds(92))
            .contains(.welcome("w1-y", round: 0)))
        // …and a third non-finite result for the block has the coordinator compute it.
        #expect(Self.store(&m, "w1-y", block: 0, head: 0, norm: .nan).contains(.verifyHere(round: 0, block: 0)))
    }
}
