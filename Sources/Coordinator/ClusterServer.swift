import ArgumentParser
import Foundation
import NeuMeta

/// The coordinator's network side, a `GradientSource`: one CURVE ROUTER socket (workers
/// admitted by the ZAP allow-list) driven by the `CoordinatorState` machine. This class only
/// turns socket traffic into the machine's events and performs its actions — sending, decoding
/// gradient pieces into the round's buffers, stepping a head when the machine says so. Every
/// decision (who computes what, when a head is complete, whom to admit, drop or refuse) is the
/// machine's.
final class ClusterServer: GradientSource {
    typealias WorkerID = [UInt8]
    typealias State = CoordinatorState<WorkerID>

    enum Failure: Error, CustomStringConvertible {
        case diverged(round: Int, block: Int, workers: [String])
        case orphaned
        var description: String {
            switch self {
            case .orphaned: "the parent process is gone (--exit-with-parent); the last checkpoint is intact"
            case let .diverged(round, block, workers):
                "round \(round) block \(block) gave a non-finite gradient or loss on \(workers.joined(separator: " and ")): "
                    + "training diverged; resume from the last checkpoint (--resume) with a lower learning rate"
            }
        }
    }

    /// At most this many messages are handled before the machine's tick runs again, so a
    /// flooding peer cannot hold off heartbeats and timeouts.
    static let messagesPerTick = 256
    /// When a round's `idle` work runs: after the round's work and parameters went out (sealed
    /// per worker in ≈ 10 ms), so it does not compete with CURVE for the cores.
    static let idleDelay: Duration = .milliseconds(25)
    /// Pending TCP connections the listening socket queues: a join storm of this many workers
    /// connecting at once is accepted without SYN retries (libzmq's default is 100).
    static let connectionBacklog = 1024

    let endpoint: String
    private let context: ZMQ.Context
    private let zap: ZAPHandler
    private let socket: ZMQ.Socket
    private var state: State
    private let jobSpec: [UInt8]
    private let base: WireTensor
    private let start = ContinuousClock.now
    private let limiter = LogLimiter()
    /// With `--exit-with-parent`: the process that started this one.
    private let parent: pid_t?
    /// The job, and this machine's training data for computing a block here (`verifyHere`).
    private let spec: JobSpec
    private let localData: () throws -> (dataset: any TrainingImages, fingerprint: DataFingerprint)

    /// The trainer's parameters (stepped in place) and the INR heads they travel in.
    private let parameters: FloatStorage
    private let heads: [Range<Int>]
    /// Peers may queue this many messages each (`ZMQ_RCVHWM`; a message is at most one
    /// `WireProtocol.frameBytes` piece), so a flooding peer holds at most this many MiB here.
    static let receiveHighWaterMark = 16

    /// One gradient buffer per block of a round, allocated once; gradient pieces are decoded
    /// straight into them. And their addresses, in block order (the order AdamW sums them).
    private let gradients: [FloatStorage]
    private let gradientSources: [UnsafePointer<Float>]
    /// The parameter heads of the round in progress (the values it started with: sent to
    /// workers that join or lack some), and the next round's, built as heads are stepped.
    private var roundHeads: (round: Int, tensors: [WireTensor])?
    private var nextHeads: (round: Int, tensors: [WireTensor?])?

    // The round in progress.
    private var step: ((Range<Int>, UnsafeBufferPointer<UnsafePointer<Float>>) -> Void)?
    private var completion: State.Completion?
    private var stats = RoundStats()
    private var failure: Failure?
    /// A message over the size bound arrived since the last `service`.
    private var oversizedReceived = false
    /// File descriptors kept free for checkpoints and the process itself: with fewer left, new
    /// connections are deferred (`ZAPHandler.refuseAll`) until open ones close.
    static let descriptorReserve = 64
    /// When open descriptors were last counted, and whether new connections are being deferred.
    private var descriptorsCheckedAt: Duration = .zero
    private var atConnectionCap = false

    /// Binds `endpoint` with `keys` as the CURVE server, admitting `allowed` worker keys, for a
    /// job whose parameters are `parameters` (the trainer's) in `heads` (`HyperNetwork.headRanges`).
    init(bind endpoint: String, keys: CurveKeyPair, allowed: Set<CurveKey>, spec: JobSpec, base: WireTensor, parameters: FloatStorage,
         heads: [Range<Int>], parent: pid_t?,
         localData: @escaping () throws -> (dataset: any TrainingImages, fingerprint: DataFingerprint)) throws {
        self.spec = spec
        self.localData = localData
        Self.raiseDescriptorLimit()
        precondition(heads.first?.lowerBound == 0 && heads.last?.upperBound == spec.parameterCount && parameters.count == spec.parameterCount
                     && zip(heads, heads.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound }, "heads must tile the parameters")
        self.parent = parent
        self.parameters = parameters
        self.heads = heads
        let blockSizes = State.blockSizes(of: spec.plan)
        gradients = blockSizes.map { _ in FloatStorage(count: spec.parameterCount) }
        gradientSources = gradients.map { UnsafePointer($0.base) }
        // One I/O thread per core (up to 4): each worker connection's CURVE work runs on one.
        context = try ZMQ.Context(ioThreads: min(4, max(1, ProcessInfo.processInfo.activeProcessorCount)))
        let limiter = self.limiter
        zap = try ZAPHandler(context: context, allowed: allowed) { refusal in limiter.note("security", "security: \(refusal)") }
        socket = try ZMQ.Socket(context, .router)
        try socket.makeCurveServer(keys: keys)
        try socket.setRouterMandatory(true)
        // A connection that has not finished its CURVE handshake within this is closed, so idle
        // connections cannot pile up (libzmq's default is 30 s).
        try socket.setHandshakeTimeout(WireProtocol.handshakeTimeout)
        // Hundreds of workers may connect within a second (a batch job starting them all).
        try socket.setBacklog(Self.connectionBacklog)
        // Every frame a worker sends is at most one gradient piece (libzmq applies the limit per
        // frame; a message of more frames is refused in `handle`).
        try socket.setMaxMessageSize(WireProtocol.maxInboundWireFrameBytes)
        try socket.setReceiveHighWaterMark(Self.receiveHighWaterMark)
        do { try socket.bind(endpoint) } catch {
            throw ValidationError("cannot listen on \(endpoint): \(error) (is another coordinator running, or the address not local?)")
        }
        self.endpoint = (try? socket.lastEndpoint()) ?? endpoint
        jobSpec = spec.json
        self.base = base
        state = State(dataFingerprint: spec.data, headSizes: heads.map(\.count), blockSizes: blockSizes)
    }

    private var now: Duration { ContinuousClock.now - start }

    /// Raises this process's soft limit on open files to its hard limit: every worker
    /// connection is a descriptor, and so is every checkpoint written. Logs the limit in force.
    static func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        log("open-file limit \(limit.rlim_cur) (hard \(limit.rlim_max)): about that many worker connections and checkpoint files at once")
    }

    // MARK: GradientSource

    func computeRound(_ round: Int, more: Bool, idle: () -> Void,
                      step: (Range<Int>, UnsafeBufferPointer<UnsafePointer<Float>>) -> Void) throws -> (terms: [LossTerms], stats: RoundStats) {
        try withoutActuallyEscaping(step) { step in
            self.step = step
            defer { self.step = nil }
            return try run(round, more: more, idle: idle)
        }
    }

    func keepAlive() throws { try service() }

    private func run(_ round: Int, more: Bool, idle: () -> Void) throws -> (terms: [LossTerms], stats: RoundStats) {
        // The round starts from the heads stepped last round; the first round of this process
        // takes them from the parameters.
        if let next = nextHeads, next.round == round, next.tensors.allSatisfy({ $0 != nil }) {
            roundHeads = (round, next.tensors.map { $0! })
        } else {
            roundHeads = (round, heads.map { WireTensor(copying: UnsafeBufferPointer(start: parameters.base + $0.lowerBound, count: $0.count)) })
        }
        nextHeads = more ? (round + 1, Array(repeating: nil, count: heads.count)) : nil
        completion = nil
        stats = RoundStats()
        let roundStart = now
        perform(state.startRound(round, more: more, now: roundStart))
        var idled = false
        while completion == nil {
            let elapsed = now - roundStart
            if !idled && elapsed >= Self.idleDelay { idle(); idled = true }
            try service(wait: idled ? .milliseconds(50) : min(.milliseconds(50), Self.idleDelay - elapsed))
            if let failure { throw failure }
        }
        if !idled { idle() }
        guard let completion else { preconditionFailure("round ended without completion") }
        stats.seconds = Self.seconds(now - roundStart)
        stats.workersAlive = state.liveWorkers.count
        stats.computeSeconds = completion.computeSeconds
        stats.stragglers = completion.stragglers
        return (completion.terms, stats)
    }

    /// Handles what arrived (waiting up to `wait` for the first message), then runs the
    /// machine's housekeeping. Called in rounds and between them (so heartbeats continue while
    /// the coordinator writes a checkpoint).
    func service(wait: Duration = .zero) throws {
        if let parent, getppid() != parent { throw Failure.orphaned }
        if let frames = try socket.receive(timeout: wait) {
            handle(frames)
            for _ in 1..<Self.messagesPerTick {
                guard completion == nil, let more = try socket.receive(timeout: .zero) else { break }
                handle(more)
            }
        }
        if now - descriptorsCheckedAt >= .seconds(1) { checkDescriptors() }
        if oversizedReceived {
            // Give the memory an oversized message took back to the system, not just to malloc.
            oversizedReceived = false
            ProcessMemory.returnFreeMemory()
        }
        perform(state.tick(now: now))
    }

    /// The connection cap: counts this process's open file descriptors and, within
    /// `descriptorReserve` of the limit, has the ZAP handler defer every new handshake (status
    /// 300; workers retry) until twice the reserve is free again. Connections that never finish
    /// their handshake are closed after `WireProtocol.handshakeTimeout` whatever happens.
    private func checkDescriptors() {
        descriptorsCheckedAt = now
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        let cap = Int(limit.rlim_cur) - Self.descriptorReserve
        // Listing /proc/self/fd takes a descriptor itself: failing to, we are at the limit.
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? Int(limit.rlim_cur)
        if !atConnectionCap && open >= cap {
            atConnectionCap = true
            let reason = "the coordinator has \(open) of its \(limit.rlim_cur) file descriptors open; try again later"
            zap.refuseAll(reason)
            log("connection cap: \(open) of \(limit.rlim_cur) file descriptors open — new workers are deferred until connections close "
                + "(\(Self.descriptorReserve) are kept for checkpoints; connections that never finish their handshake close after "
                + "\(WireProtocol.handshakeTimeout))")
        } else if atConnectionCap && open < cap - Self.descriptorReserve {
            atConnectionCap = false
            zap.refuseAll(nil)
            log("connection cap lifted: \(open) of \(limit.rlim_cur) file descriptors open")
        }
    }

    /// Tells every worker that training is finished; for `flush`, answers any late message
    /// (a worker that was reconnecting) with goodbye too, then closes.
    func finish(flush: Duration = .seconds(1)) {
        for id in state.liveWorkers { try? socket.send(.goodbye, to: id) }
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
        let bytes = frames.dropFirst().reduce(0) { $0 + $1.bytes.count }
        stats.bytesReceived += bytes
        guard frames.count - 1 <= WireProtocol.maxInboundFrames else { return oversized(frames, bytes: bytes) }
        let inbound: Inbound
        do { inbound = try Message.decodeInbound(Array(frames.dropFirst())) } catch {
            return perform(state.malformed(from: id, "\(error)"))
        }
        state.heartbeat(from: id, now: now)  // any message proves a worker alive
        switch inbound {
        case let .gradientPiece(received):
            receive(received, from: id)
        case let .message(.hello(name, version, fingerprint)):
            perform(state.hello(from: id, name: name, key: frames[1].property("User-Id") ?? "", version: version, fingerprint: fingerprint,
                                now: now))
        case let .message(.result(round, block, terms, seconds)):
            perform(state.result(from: id, round: round, block: block, result: .init(terms: terms, seconds: seconds), now: now))
        case .message(.heartbeat):
            break
        case .message(.goodbye):
            perform(state.goodbye(from: id))
        case let .message(message):
            perform(state.malformed(from: id, "a \(message.kind) message, which only the coordinator sends"))
        }
    }

    /// A gradient piece: decoded straight into its block's buffer if the machine takes it.
    private func receive(_ piece: ReceivedGradientPiece, from id: WorkerID) {
        let h = head(containing: piece.offset)
        guard h < heads.count, piece.offset + piece.count <= heads[h].upperBound, piece.block < gradients.count else {
            return perform(state.malformed(from: id, "a gradient piece of block \(piece.block) at \(piece.offset) of \(piece.count) values, "
                                           + "which is not within one of the \(heads.count) heads of the \(parameters.count) parameters "
                                           + "of one of the \(gradients.count) blocks"))
        }
        guard state.gradientPieceArrived(from: id, round: piece.round, block: piece.block, head: h, at: piece.offset - heads[h].lowerBound,
                                       count: piece.count) else { return }
        let destination = UnsafeMutableBufferPointer(start: gradients[piece.block].base + piece.offset, count: piece.count)
        let squares = piece.decode(into: destination)
        perform(state.storedGradientPiece(from: id, block: piece.block, head: h, count: piece.count, squares: squares))
    }

    /// Computes `block` of `round` in this process, from the round's parameters, as a worker
    /// would (`WorkerJob`, on this machine's copy of the data); returns whether its gradient and
    /// loss are finite. Rare (the non-finite rule's tiebreaker), so the job is built each time.
    private func computeHere(round: Int, block: Int) throws -> Bool {
        guard let current = roundHeads, current.round == round else { return true }  // the round is over: nothing to decide
        let data = try localData()
        let job = try WorkerJob(spec: spec, dataset: data.dataset, localData: data.fingerprint,
                                parameters: zip(heads, current.tensors).map { .init(offset: $0.lowerBound, values: $1) },
                                base: base, round: round)
        final class Count: @unchecked Sendable { let lock = NSLock(); var nonFinite = 0 }
        let pieces = Count()  // pieces may be reported from several compute threads
        let terms = try job.gradient(round: round, block: block) { _, values in
            if !values.isFinite { pieces.lock.withLock { pieces.nonFinite += 1 } }
        }
        let finite = pieces.nonFinite == 0
            && terms.allSatisfy { $0.total.isFinite && $0.crossEntropy.isFinite && $0.reconstruction.isFinite && $0.normRegularizer.isFinite }
        log("computed round \(round) block \(block) here: \(finite ? "finite" : "non-finite")")
        return finite
    }

    /// The index of the head holding parameter `offset` (`heads.count` if none): binary search.
    private func head(containing offset: Int) -> Int {
        var lo = 0, hi = heads.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if heads[mid].upperBound > offset { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    /// A message of more frames than any a worker sends. libzmq delivers a message only once
    /// all of it is in, so it has been buffered whole: the sender is dropped and quarantined and
    /// its key refused at the handshake for the quarantine time, so it cannot send another.
    private func oversized(_ frames: [ZMQ.Frame], bytes: Int) {
        oversizedReceived = true
        let problem = "a message of \(frames.count - 1) frames (\(bytes) bytes); a worker sends at most \(WireProtocol.maxInboundFrames) "
            + "frames of at most \(WireProtocol.maxInboundFrameBytes) bytes"
        if let key = frames[1].property("User-Id").flatMap({ CurveKey(z85: $0) }) {
            zap.suspend(key, for: State.quarantineInitial, reason: "it sent \(problem)")
        }
        perform(state.oversized(from: frames[0].array, problem))
    }

    // MARK: Actions

    private func perform(_ actions: [State.Action]) {
        for action in actions {
            switch action {
            case let .welcome(id, round):
                send(.welcome(jobSpec: jobSpec, round: round, baseWeights: base), to: id)
            case let .refuse(id, reason):
                send(.refuse(reason: reason), to: id)
            case let .sendParameterHeads(round, list, id):
                guard let current = roundHeads, current.round == round else {
                    preconditionFailure("parameter heads of round \(round) asked for, holding \(roundHeads?.round ?? -1)")
                }
                for h in list { send(.parameterHead(round: round, offset: heads[h].lowerBound, values: current.tensors[h]), to: id) }
            case let .sendWork(id, round, blocks):
                send(.work(round: round, blocks: blocks), to: id)
            case let .sendHeartbeat(workers):
                for id in workers { send(.heartbeat, to: id) }
            case let .stepHead(h):
                gradientSources.withUnsafeBufferPointer { step?(heads[h], $0) }
            case let .broadcastHead(round, h, workers):
                let range = heads[h]
                let values = WireTensor(copying: UnsafeBufferPointer(start: parameters.base + range.lowerBound, count: range.count))
                nextHeads?.tensors[h] = values
                for id in workers { send(.parameterHead(round: round, offset: range.lowerBound, values: values), to: id) }
            case let .roundComplete(_, completion):
                self.completion = completion
            case let .log(line):
                log(line)
            case let .logLimited(noise, line):
                if noise == .malformed { stats.malformed += 1 }
                if noise == .discarded { stats.discarded += 1 }
                if noise == .rejected { stats.rejected += 1 }
                limiter.note(noise.rawValue, line)
            case let .diverged(round, block, workers):
                failure = .diverged(round: round, block: block, workers: workers)
            case let .verifyHere(round, block):
                do { perform(state.verified(block: block, finite: try computeHere(round: round, block: block))) } catch {
                    perform(state.verified(block: block, finite: nil, problem: "\(error)"))
                }
            }
        }
    }

    /// Sends to one worker; a worker whose connection is gone (the ROUTER is mandatory, so it
    /// says so instead of dropping the message) is dropped and its work reassigned.
    private func send(_ message: Message, to id: WorkerID) {
        do {
            try socket.send(message, to: id)
            switch message {
            case let .parameterHead(_, _, values): stats.bytesSent += values.byteCount
            case let .welcome(spec, _, base): stats.bytesSent += spec.count + base.byteCount
            default: break
            }
        } catch let error as ZMQ.Error where error.code == EHOSTUNREACH {
            if state.name(of: id) != nil { perform(state.unreachable(id)) }
        } catch {
            log("could not send \(message.kind) to \(state.name(of: id) ?? "an unadmitted peer"): \(error)")
        }
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
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
