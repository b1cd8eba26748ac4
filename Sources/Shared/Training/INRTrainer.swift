import Foundation

/// Where a round's gradients come from: computed in this process (`LocalGradientSource`) or
/// by cluster workers (the coordinator's `ClusterServer`). The trainer owns everything else of
/// a round — the learning rate, the ordered sum, AdamW, the EMA, checkpoints — so both give
/// the same bits.
public protocol GradientSource: AnyObject {
    /// Computes every configuration of `round` (`RoundPlan.configuration(round:index:)`) from the
    /// trainer's current parameters and calls `step(range, gradients)` as soon as every
    /// configuration's gradient over `range` is final: `gradients` are the blocks' gradients
    /// (`RoundPlan.configurations(ofBlock:)`, each its configurations' gradients summed in index
    /// order) in block order, each a pointer to a whole gradient of which only `range` is
    /// read. The ranges of one round tile the parameters once. `step` updates the parameters in
    /// `range` in place, so the source must not read them there afterwards in this round.
    /// `idle` is the trainer's work that the gradients do not depend on (the EMA of the last
    /// step): run it once, ideally while waiting for others. `more`: round + 1 follows in this
    /// run (a cluster sends the stepped values ahead as its parameters).
    /// Returns the loss terms in configuration order and what the round cost.
    func computeRound(_ round: Int, more: Bool, idle: () -> Void,
                      step: (Range<Int>, UnsafeBufferPointer<UnsafePointer<Float>>) -> Void) throws -> (terms: [LossTerms], stats: RoundStats)

    /// Called between rounds and around checkpoints (a cluster answers heartbeats here).
    func keepAlive() throws
}

extension GradientSource {
    public func keepAlive() throws {}
}

/// What a round cost. The cluster fields stay at their zero values in one process.
public struct RoundStats: Sendable {
    /// Wall time of the gradient source's part of the round (the optimizer steps included,
    /// as a cluster interleaves them).
    public var seconds = 0.0
    /// The busiest worker's compute time: the part of the round that was gradient computation
    /// on its critical path (in one process: all of `seconds` but the steps).
    public var computeSeconds = 0.0
    public var workersAlive = 0
    public var stragglers: [String] = []
    public var bytesSent = 0, bytesReceived = 0
    /// Results discarded (late, duplicate, not assigned), messages dropped as malformed, and
    /// gradient heads rejected as implausible (far above the recent norms of their head).
    public var discarded = 0, malformed = 0, rejected = 0
    public init() {}
}

/// What one round did.
public struct RoundReport: Sendable {
    /// The round that ran (0-based); the trainer is now at round + 1.
    public let round: Int
    /// Loss terms summed over the round's configurations.
    public let terms: LossTerms
    public let configurations: Int
    public let learningRate: Float
    /// Wall time of the whole round, and the part of it spent in AdamW.
    public let seconds: Double, stepSeconds: Double
    public let stats: RoundStats

    /// Of the whole round, the share that is not the busiest worker computing gradients.
    public var overheadShare: Double { max(0, 1 - stats.computeSeconds / max(seconds, 1e-9)) }
}

/// What an INR is trained toward, recorded in its checkpoints: the permuted base network (the
/// reconstruction target), its family and morph plan, class count, input normalisation, and the
/// recipe name.
public struct TrainingTarget {
    public let base: ParameterSet
    public let family: String
    /// nil: every tensor generated, the one width scalar (LeNet), at the plan's pretrained width.
    public let morph: MorphPlan?
    public let classCount: Int
    public let mean: [Float], std: [Float]
    public let recipe: String
    public init(base: ParameterSet, family: String, morph: MorphPlan? = nil, classCount: Int, mean: [Float], std: [Float], recipe: String) {
        self.base = base; self.family = family; self.morph = morph; self.classCount = classCount; self.mean = mean; self.std = std
        self.recipe = recipe
    }
}

/// Where and how often a run checkpoints: every `every` rounds and at the last round of an
/// invocation, into `store`, keeping the newest `keep`.
public struct CheckpointPolicy: Sendable {
    public let store: CheckpointStore
    public let every: Int, keep: Int
    public init(store: CheckpointStore, every: Int, keep: Int) {
        precondition(every >= 1 && keep >= 1, "checkpoint every \(every) rounds, keeping \(keep)")
        self.store = store; self.every = every; self.keep = keep
    }
}

/// NeuMeta training: the one round loop of this project, whoever computes the gradients.
///
/// A round: the plan names M configurations (width, mini-batch, noise seed: a pure function of
/// seed, round and index); the gradient source computes their gradients; each range of the
/// parameters is stepped once every configuration's gradient over it is final — AdamW's pass
/// sums the M gradients in configuration order, divides by M, clips, and updates (docs/algorithm.md §3
/// step 5) — then the EMA takes in the new parameters (deferred into the next round's idle
/// time: the same arithmetic off the critical path). Every `CheckpointPolicy.every` rounds the
/// state is checkpointed; `resume` continues from the newest good checkpoint with identical
/// results.
public final class INRTrainer {
    public let plan: RoundPlan
    public let optimizerSettings: OptimizerSettings
    public let inr: HyperNetwork
    public let target: TrainingTarget
    public private(set) var round = 0
    public private(set) var optimizer: AdamW
    public let ema: EMA
    /// Whether the EMA still has to take in the parameters of the last step.
    public private(set) var emaPending = false

    public init(inr: HyperNetwork, plan: RoundPlan, optimizer settings: OptimizerSettings, target: TrainingTarget) {
        self.inr = inr
        self.plan = plan
        self.optimizerSettings = settings
        self.target = target
        let p = inr.parameters
        optimizer = AdamW(parameterCount: p.count, learningRate: settings.learningRate, weightDecay: settings.weightDecay)
        ema = EMA(of: p.values, decay: settings.emaDecay)
    }

    /// Runs round `round` with gradients from `source` and advances. `more`: another round
    /// follows in this run.
    public func runRound(source: GradientSource, more: Bool = true) throws -> RoundReport {
        let start = Date()
        let lr = optimizerSettings.learningRate(round: round, rounds: plan.rounds)
        optimizer.learningRate = lr
        let count = plan.configurationsPerRound, n = inr.parameters.count
        let values = inr.parameters.values, gradients = inr.parameters.gradients, clip = optimizerSettings.gradientClip ?? .infinity
        var coefficients: AdamW.StepCoefficients?
        var stepped = 0, stepSeconds = 0.0
        let (terms, stats) = try source.computeRound(round, more: more, idle: { updatePendingEMA() }) { range, sources in
            let stepStart = Date()
            precondition(sources.count == plan.blocksPerRound, "\(sources.count) gradients for \(plan.blocksPerRound) blocks")
            if coefficients == nil {
                updatePendingEMA()  // before the parameters change
                coefficients = optimizer.beginStep()
            }
            Profile.phase(.update) {
                optimizer.apply(coefficients!, to: range, values: values, gradients: gradients, ema: nil, sources: sources,
                                scale: 1 / Float(count), clip: clip)
            }
            stepped += range.count
            stepSeconds += Date().timeIntervalSince(stepStart)
        }
        precondition(stepped == n && terms.count == count, "round \(round): \(stepped) of \(n) parameters stepped, \(terms.count) results")
        emaPending = true
        round += 1
        return RoundReport(round: round - 1, terms: terms.reduce(LossTerms(), +), configurations: count, learningRate: lr,
                           seconds: Date().timeIntervalSince(start), stepSeconds: stepSeconds, stats: stats)
    }

    /// Runs rounds until `lastRound` (at most `plan.rounds`), calling `afterRound` with each
    /// report and checkpointing by `checkpoints`. A checkpoint that fails for a reason that may
    /// pass (`isTransient`: no file descriptors or disk space, I/O errors) is reported to
    /// `checkpointFailed` and training goes on — the next checkpoint retries; at the last round
    /// it is retried with back-off (1, 2, 4 … 60 s, an hour in all) before the error ends the run.
    public func train(until lastRound: Int, source: GradientSource, checkpoints: CheckpointPolicy? = nil,
                      checkpointFailed: (Error) -> Void = { _ in }, afterRound: (RoundReport) throws -> Void = { _ in }) throws {
        let last = min(lastRound, plan.rounds)
        while round < last {
            let report = try runRound(source: source, more: round + 1 < last)
            try source.keepAlive()
            try afterRound(report)
            guard let checkpoints, round % checkpoints.every == 0 || round == last else { continue }
            var delay = 1.0, waited = 0.0
            while true {
                do {
                    try saveCheckpoint(checkpoints)
                    break
                } catch where Self.isTransient(error) {
                    checkpointFailed(error)
                    guard round == last else { break }
                    guard waited < 3600 else { throw error }
                    let until = Date().addingTimeInterval(delay)
                    while Date() < until { try source.keepAlive(); Thread.sleep(forTimeInterval: 0.05) }
                    waited += delay; delay = min(delay * 2, 60)
                }
            }
            try source.keepAlive()
        }
    }

    /// Whether a checkpoint error may pass by itself: out of file descriptors (EMFILE, ENFILE),
    /// of space or quota (ENOSPC, EDQUOT), an I/O error, or a call to try again.
    public static func isTransient(_ error: Error) -> Bool {
        guard case let .io(_, _, code)? = error as? CheckpointError else { return false }
        return [EMFILE, ENFILE, ENOSPC, EDQUOT, EIO, EAGAIN, EINTR].contains(code)
    }

    /// Brings the EMA up to the current parameters if the last step left it pending (before a
    /// checkpoint, the final save, or the next step).
    public func updatePendingEMA() {
        guard emaPending else { return }
        ema.update(with: inr.parameters.values)
        emaPending = false
    }

    // MARK: Checkpoints

    /// The checkpoint of the current state (the EMA brought up to date first).
    public func checkpoint() -> INRCheckpoint {
        updatePendingEMA()
        return INRCheckpoint(trainer: self)
    }

    /// Writes the current state to `policy.store` under the round number and prunes old ones.
    /// Returns the path written. A state that is not finite is never written (a diverged run
    /// must not replace its last good checkpoint): `Refusal.nonFiniteState`.
    @discardableResult
    public func saveCheckpoint(_ policy: CheckpointPolicy) throws -> String {
        let state = checkpoint()
        if let part = state.nonFinitePart { throw Refusal.nonFiniteState(round: round, part: part) }
        try FileManager.default.createDirectory(atPath: policy.store.directory, withIntermediateDirectories: true)
        let path = policy.store.path(step: round)
        try state.save(to: path)
        try policy.store.prune(keep: policy.keep)
        return path
    }

    /// What `resume` did: the checkpoint it continued from (nil: the store holds none, round
    /// 0), and the newer ones it set aside as unusable (renamed to `.corrupt`, so that they no
    /// longer count).
    public struct Resumption {
        public var path: String?
        public var skipped: [(path: String, problem: String)] = []
    }

    /// Why a run cannot resume or checkpoint.
    public enum Refusal: Error, CustomStringConvertible {
        /// The store holds checkpoints but none is usable (unreadable, or non-finite values).
        case noUsableCheckpoint(directory: String, problems: [(path: String, problem: String)])
        /// The state to be checkpointed is not finite: training diverged.
        case nonFiniteState(round: Int, part: String)

        public var description: String {
            switch self {
            case let .noUsableCheckpoint(directory, problems):
                "no checkpoint in \(directory) can be resumed: " + problems.map { "\($0.path): \($0.problem)" }.joined(separator: "; ")
                    + " — restore one, or start again from round 0 with --fresh (the unusable files are set aside, not deleted)"
            case let .nonFiniteState(round, part):
                "round \(round): the \(part) are not finite — training diverged; it was not checkpointed, so the last checkpoint is intact"
            }
        }
    }

    /// Continues from the newest checkpoint in `store` that loads and holds finite values;
    /// newer unusable ones are renamed aside. A checkpoint of another run (other INR, plan,
    /// optimizer or base network) is an error, never skipped. When the store holds checkpoints
    /// and none is usable it throws `Refusal.noUsableCheckpoint` and changes nothing — a
    /// supervisor that always passes --resume must not silently start over.
    public func resume(from store: CheckpointStore) throws -> Resumption {
        var resumption = Resumption()
        for (_, path) in try store.checkpoints() {
            let checkpoint: INRCheckpoint
            do { checkpoint = try INRCheckpoint.load(path: path) } catch {
                resumption.skipped.append((path, "\(error)"))
                continue
            }
            if let part = checkpoint.nonFinitePart {
                resumption.skipped.append((path, "its \(part) are not finite"))
                continue
            }
            try restore(from: checkpoint, path: path)
            resumption.path = path
            break
        }
        if resumption.path == nil && !resumption.skipped.isEmpty {
            throw Refusal.noUsableCheckpoint(directory: store.directory, problems: resumption.skipped)
        }
        for (i, skipped) in resumption.skipped.enumerated() {
            let aside = skipped.path + ".corrupt"
            if (try? FileManager.default.moveItem(atPath: skipped.path, toPath: aside)) != nil {
                resumption.skipped[i].problem += " (renamed to \(aside))"
            }
        }
        return resumption
    }

    /// Moves every checkpoint of `store` into a new subdirectory `previous-<time>` (nothing is
    /// deleted), so that a run starts again from round 0. Returns that directory, or nil when
    /// the store holds none.
    @discardableResult
    public static func setAside(_ store: CheckpointStore) throws -> String? {
        let existing = try store.checkpoints()
        guard !existing.isEmpty else { return nil }
        let stamp = Int(Date().timeIntervalSince1970)
        let aside = (store.directory as NSString).appendingPathComponent("previous-\(stamp)")
        try FileManager.default.createDirectory(atPath: aside, withIntermediateDirectories: true)
        for (_, path) in existing {
            try FileManager.default.moveItem(atPath: path, toPath: (aside as NSString).appendingPathComponent((path as NSString).lastPathComponent))
        }
        return aside
    }

    /// Continues from a checkpoint of the same run: raw parameters, EMA, AdamW moments and step,
    /// and the round reached. Throws if the checkpoint belongs to another INR, plan, optimizer
    /// or base network.
    public func restore(from checkpoint: INRCheckpoint, path: String = "checkpoint") throws {
        let n = inr.parameters.count
        func mismatch(_ problem: String) -> INRCheckpoint.Failure { .invalid(path: path, problem: "it belongs to another run: \(problem)") }
        guard checkpoint.config == inr.config, checkpoint.raw.count == n else { throw mismatch("another INR") }
        guard checkpoint.plan == plan else { throw mismatch("another round plan (widths, batches, rounds, seed or data size)") }
        guard checkpoint.optimizer == optimizerSettings else { throw mismatch("other optimizer settings") }
        guard checkpoint.morph == (target.morph ?? MorphPlan(family: target.family, baseWidths: [plan.pretrainedWidth])) else {
            throw mismatch("another morph plan (family, widths, generated tensors or input image size)")
        }
        let base = target.base
        guard checkpoint.base.count == base.count, memcmp(checkpoint.base.values.base, base.values.base, 4 * base.count) == 0 else {
            throw mismatch("another (permuted) base network")
        }
        inr.parameters.values.base.update(from: checkpoint.raw.base, count: n)
        ema.average.base.update(from: checkpoint.ema.base, count: n)
        optimizer.firstMoment.base.update(from: checkpoint.adamM.base, count: n)
        optimizer.secondMoment.base.update(from: checkpoint.adamV.base, count: n)
        optimizer.step = checkpoint.adamStep
        round = checkpoint.round
        emaPending = false
    }
}
