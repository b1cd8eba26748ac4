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
    /// Sum of the round's configuration gradients (then their mean).
    let accumulator: FloatStorage

    public init(objective: ConfigurationGradient, plan: RoundPlan, optimizer settings: OptimizerSettings) {
        self.objective = objective
        self.plan = plan
        self.optimizerSettings = settings
        let p = objective.inr.parameters
        optimizer = AdamW(parameterCount: p.count, learningRate: settings.learningRate, weightDecay: settings.weightDecay)
        ema = EMA(of: p.values, decay: settings.emaDecay)
        accumulator = FloatStorage(count: p.count)
    }

    /// Runs round `round` and advances.
    public func runRound() throws -> RoundReport {
        let start = Date()
        let configs = plan.configurations(round: round)
        let n = accumulator.count, acc = accumulator.base, g = inr.parameters.gradients.base
        acc.update(repeating: 0, count: n)
        var terms = LossTerms()
        for config in configs {
            terms = terms + (try objective.compute(config))
            for i in 0..<n { acc[i] += g[i] }
        }
        let lr = try applyMeanGradient(of: configs.count)
        let report = RoundReport(round: round, terms: terms, configurations: configs.count, widths: configs.map(\.width),
                                 learningRate: lr, seconds: Date().timeIntervalSince(start))
        round += 1
        return report
    }

    /// Divides the accumulated gradient by `count`, clips it, steps AdamW and the EMA.
    /// Returns the learning rate used.
    func applyMeanGradient(of count: Int) throws -> Float {
        let n = accumulator.count, acc = accumulator.base, g = inr.parameters.gradients.base
        let scale = 1 / Float(count)
        if let clip = optimizerSettings.gradientClip {
            for i in 0..<n { g[i] = min(max(acc[i] * scale, -clip), clip) }
        } else {
            for i in 0..<n { g[i] = acc[i] * scale }
        }
        let lr = optimizerSettings.learningRate(round: round, rounds: plan.rounds)
        optimizer.learningRate = lr
        optimizer.update(values: inr.parameters.values, gradients: inr.parameters.gradients)
        ema.update(with: inr.parameters.values)
        return lr
    }
}
