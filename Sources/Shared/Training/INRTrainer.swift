import Foundation

/// What one round did: mean loss terms over its configurations.
public struct RoundReport: Sendable {
    public let round: Int
    public let terms: LossTerms
    public let configurations: Int
    public let widths: [Int]
    public let learningRate: Float
    public let seconds: Double

    /// Mean of a summed term over the round's configurations.
    public func mean(_ value: Double) -> Double { value / Double(max(configurations, 1)) }
}

/// Single-process NeuMeta training: each round computes the gradient of every configuration of
/// the plan (in index order), averages them, clips, steps AdamW and updates the EMA.
/// The cluster coordinator runs the same round with gradients computed by workers.
public final class INRTrainer {
    public let plan: RoundPlan
    public let optimizerSettings: OptimizerSettings
    public let objective: ConfigurationGradient
    public var inr: HyperNetwork { objective.inr }
    public internal(set) var round = 0
    public internal(set) var optimizer: AdamW
    public let ema: EMA
    /// Sum of the round's configuration gradients (AdamW's pass divides it by their count into
    /// the INR's gradients; a one-configuration `runRound` leaves it unused).
    let accumulator: FloatStorage
    /// The data order of the epoch the last round drew from (shuffled once per epoch).
    private var epochOrder: (epoch: Int, indices: [Int])?

    public init(objective: ConfigurationGradient, plan: RoundPlan, optimizer settings: OptimizerSettings) {
        self.objective = objective
        self.plan = plan
        self.optimizerSettings = settings
        let p = objective.inr.parameters
        optimizer = AdamW(parameterCount: p.count, learningRate: settings.learningRate, weightDecay: settings.weightDecay)
        ema = EMA(of: p.values, decay: settings.emaDecay)
        accumulator = FloatStorage(count: p.count)
    }

    /// Runs round `round` and advances: every configuration's gradient computed here, in index
    /// order, then `finishRound`. Drawing the configurations and the update are `Profile` phases
    /// (`compute` marks its own).
    public func runRound() throws -> RoundReport {
        let start = Date()
        let configs = Profile.phase(.plan) { plan.configurations(round: round, reusing: &epochOrder) }
        Profile.phase(.update) { beginRound() }
        var terms = LossTerms()
        for config in configs {
            terms = terms + (try objective.compute(config))
            // A lone configuration's gradient is the sum: AdamW reads it where it was computed.
            if configs.count == 1 { accumulated = 1; sumInGradients = true; continue }
            Profile.phase(.update) { accumulate(UnsafeBufferPointer(inr.parameters.gradients.buffer)) }
        }
        let lr = Profile.phase(.update) { finishRound(configurations: configs.count) }
        return RoundReport(round: round - 1, terms: terms, configurations: configs.count, widths: configs.map(\.width),
                           learningRate: lr, seconds: Date().timeIntervalSince(start))
    }

    // MARK: The round, step by step (the cluster coordinator sums gradients that workers computed)

    /// Starts the round's gradient sum (empty).
    public func beginRound() {
        accumulated = 0; sumInGradients = false
    }

    /// Adds one configuration's gradient to the round's sum (the first is copied: the sum starts
    /// as it, with no zeroing pass). Call in configuration-index order: float addition is not
    /// associative, and that order is what makes every worker count give the same bits.
    public func accumulate(_ gradient: UnsafeBufferPointer<Float>) {
        precondition(gradient.count == accumulator.count, "gradient of \(gradient.count) values for \(accumulator.count) parameters")
        let acc = accumulator.base, g = gradient.baseAddress!
        if accumulated == 0 {
            Parallel.forRanges(accumulator.count, minimum: 1 << 16) { r in (acc + r.lowerBound).update(from: g + r.lowerBound, count: r.count) }
        } else {
            Parallel.forRanges(accumulator.count, minimum: 1 << 16) { r in for i in r { acc[i] += g[i] } }
        }
        accumulated += 1
    }

    /// Gradients summed since `beginRound`, and whether the sum is the INR's gradient buffer
    /// itself (a one-configuration round of `runRound`) rather than `accumulator`.
    private var accumulated = 0, sumInGradients = false
    /// Whether the EMA still has to take in the parameters of the last step (`finishRound(…,
    /// deferringEMA: true)`).
    public private(set) var emaPending = false

    /// Divides the sum by `count`, clips it, steps AdamW and the EMA, and advances to the next
    /// round. Returns the learning rate used. `deferringEMA`: the EMA is left for
    /// `updatePendingEMA` — the cluster coordinator broadcasts the new parameters first and
    /// updates the EMA while the workers compute (the same arithmetic, off the round's
    /// critical path).
    @discardableResult
    public func finishRound(configurations count: Int, deferringEMA: Bool = false) -> Float {
        precondition(accumulated == count && count > 0, "finishing a round of \(count) configurations with \(accumulated) gradients summed")
        updatePendingEMA()
        let lr = optimizerSettings.learningRate(round: round, rounds: plan.rounds)
        optimizer.learningRate = lr
        // The mean and the clipping happen in AdamW's pass (written to the INR's gradients).
        optimizer.update(values: inr.parameters.values, gradients: inr.parameters.gradients, ema: deferringEMA ? nil : ema,
                         rawGradients: sumInGradients ? inr.parameters.gradients : accumulator, scale: 1 / Float(count), clip: optimizerSettings.gradientClip ?? .infinity)
        emaPending = deferringEMA
        round += 1
        return lr
    }

    // MARK: The pipelined round (the cluster coordinator steps piece by piece)

    /// The update of the round in progress, once `stepPiece` began it, and its learning rate.
    private var pipelinedStep: (coefficients: AdamW.StepCoefficients, learningRate: Float)?

    /// Steps the parameters in `range` (any union of the pieces the caller uses must tile the
    /// parameters once per round), from `gradients`: every configuration's gradient of the
    /// round, in configuration order. The first call of a round brings the EMA up to date and
    /// begins the update. The same arithmetic as `accumulate` in order + `finishRound` —
    /// `finishPipelinedRound` completes it.
    public func stepPiece(_ range: Range<Int>, gradients: [UnsafePointer<Float>]) {
        if pipelinedStep == nil {
            updatePendingEMA()
            let lr = optimizerSettings.learningRate(round: round, rounds: plan.rounds)
            optimizer.learningRate = lr
            pipelinedStep = (optimizer.beginStep(), lr)
        }
        optimizer.apply(pipelinedStep!.coefficients, to: range, values: inr.parameters.values, gradients: inr.parameters.gradients,
                        sources: gradients, scale: 1 / Float(gradients.count), clip: optimizerSettings.gradientClip ?? .infinity)
    }

    /// Ends a round stepped with `stepPiece` (every piece stepped) and advances to the next; the
    /// EMA is left pending, as `finishRound(…, deferringEMA: true)` leaves it. Returns the
    /// learning rate used.
    public func finishPipelinedRound() -> Float {
        guard let step = pipelinedStep else { preconditionFailure("finishPipelinedRound without stepPiece") }
        pipelinedStep = nil
        emaPending = true
        round += 1
        return step.learningRate
    }

    /// Brings the EMA up to the current parameters if the last `finishRound` deferred it
    /// (before a checkpoint, the final save, or the next step).
    public func updatePendingEMA() {
        guard emaPending else { return }
        ema.update(with: inr.parameters.values)
        emaPending = false
    }

    // MARK: Resume

    /// Continues from a checkpoint of the same run: raw parameters, EMA, AdamW moments and step,
    /// and the round reached. Throws if the checkpoint belongs to another INR or plan.
    public func restore(from checkpoint: INRCheckpoint) throws {
        let n = inr.parameters.count
        guard checkpoint.config == inr.config, checkpoint.plan == plan, checkpoint.raw.count == n else {
            throw INRCheckpoint.Failure.invalid(path: "checkpoint", problem: "it holds another INR or round plan than this run")
        }
        guard checkpoint.optimizer == optimizerSettings else {
            throw INRCheckpoint.Failure.invalid(path: "checkpoint", problem: "it was trained with other optimizer settings")
        }
        if let target = objective.pretrained {
            let same = checkpoint.base.count == target.count
                && memcmp(checkpoint.base.values.base, target.values.base, 4 * target.count) == 0
            guard same else {
                throw INRCheckpoint.Failure.invalid(path: "checkpoint", problem: "it was trained toward another (permuted) base network")
            }
        }
        inr.parameters.values.base.update(from: checkpoint.raw.base, count: n)
        ema.average.base.update(from: checkpoint.ema.base, count: n)
        optimizer.firstMoment.base.update(from: checkpoint.adamM.base, count: n)
        optimizer.secondMoment.base.update(from: checkpoint.adamV.base, count: n)
        optimizer.step = checkpoint.adamStep
        round = checkpoint.round
    }
}
