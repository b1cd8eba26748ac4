import Testing
@testable import NeuMeta

/// The one approximate-equality helper: |a − b| ≤ atol + rtol·|b| elementwise.
/// Records one failure naming the first offending index and the worst error.
func expectClose(_ a: [Float], _ b: [Float], atol: Float, rtol: Float, _ what: String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.count == b.count, "\(what): \(a.count) vs \(b.count) values", sourceLocation: sourceLocation)
    var worst: Float = 0, first = -1
    for i in 0..<min(a.count, b.count) {
        let err = abs(a[i] - b[i])
        if !(err <= atol + rtol * abs(b[i])) { if first < 0 { first = i }; worst = max(worst, err) }
    }
    #expect(first < 0, "\(what): index \(first) got \(first >= 0 ? a[first] : 0) want \(first >= 0 ? b[first] : 0), worst abs error \(worst)",
            sourceLocation: sourceLocation)
}

/// ‖a − b‖₂ ≤ tolerance · ‖b‖₂ + floor·√n: for gradient checks through ReLU networks, where a
/// finite-difference quotient that crosses a kink spoils single entries, not the vector; the
/// floor (default 1e-3 per entry) is the Float rounding noise of a quotient.
func expectRelativeL2(_ a: [Float], _ b: [Float], below tolerance: Double, floor: Double = 1e-3, _ what: String,
                      sourceLocation: SourceLocation = #_sourceLocation) {
    var err = 0.0, norm = 0.0
    for (x, y) in zip(a, b) { err += Double(x - y) * Double(x - y); norm += Double(y) * Double(y) }
    let relative = err.squareRoot() / max(norm.squareRoot(), 1e-12)
    #expect(a.count == b.count && err.squareRoot() <= tolerance * norm.squareRoot() + floor * Double(a.count).squareRoot(),
            "\(what): relative L2 error \(relative) over \(a.count) entries", sourceLocation: sourceLocation)
}

/// A tensor of N(0, scale²) values from a fixed seed.
func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var rng = SeededRandom(seed)
    let t = Tensor(zeros: shape)
    for i in 0..<t.count { t[i] = rng.normal() * scale }
    return t
}

/// Central finite differences of a scalar `loss` with respect to every element of `t`:
/// (L(t + h·e_i) − L(t − h·e_i)) / 2h. The loss is accumulated in Double by the caller.
func finiteDifference(_ t: Tensor, h: Float = 1e-2, _ loss: () -> Double) -> [Float] {
    finiteDifference(t, at: Array(0..<t.count), h: h, loss)
}

/// Central finite differences at the given flat indices only (for large tensors).
func finiteDifference(_ t: Tensor, at indices: [Int], h: Float = 1e-2, _ loss: () -> Double) -> [Float] {
    var g = [Float](repeating: 0, count: indices.count)
    for (k, i) in indices.enumerated() {
        let saved = t[i]
        t[i] = saved + h; let lp = loss()
        t[i] = saved - h; let lm = loss()
        t[i] = saved
        g[k] = Float((lp - lm) / (2 * Double(h)))
    }
    return g
}

/// Σ y·r in Double: a scalar probe whose gradient with respect to y is r.
/// The INR gradient `objective` computes for `configuration` against central differences
/// (h = 2e-3) of its total loss, on every `every`-th entry of each INR tensor (starting at the
/// tensor's index mod `every`), compared as one vector: relative L2 error under 3%. The target
/// network's ReLUs make a few entries' quotients cross kinks, hence the whole-vector measure.
func expectConfigurationGradientMatchesFiniteDifferences(_ objective: ConfigurationGradient, _ configuration: Configuration,
                                                          every: Int, _ what: String,
                                                          sourceLocation: SourceLocation = #_sourceLocation) throws {
    _ = try objective.compute(configuration)
    let p = objective.inr.parameters, analytic = Array(p.gradients.buffer)
    var a = [Float](), f = [Float]()
    for i in 0..<p.specs.count {
        let picks = Array(stride(from: i % every, to: p.specs[i].count, by: every))
        f += finiteDifference(p.value(i), at: picks, h: 2e-3) { (try? objective.compute(configuration).total) ?? .nan }
        a += picks.map { analytic[p.offsets[i] + $0] }
    }
    expectRelativeL2(a, f, below: 0.03, what, sourceLocation: sourceLocation)
}

func probe(_ y: Tensor, _ r: Tensor) -> Double {
    var s = 0.0
    for i in 0..<y.count { s += Double(y[i]) * Double(r[i]) }
    return s
}

/// A trainer of `objective`'s INR and the single-process source of its gradients. `base` is
/// the target recorded in checkpoints (default: the objective's pretrained network, or zeros
/// of the target family's width-`plan.pretrainedWidth` LeNet).
func makeTrainer(_ objective: ConfigurationGradient, plan: RoundPlan, settings: OptimizerSettings = OptimizerSettings(),
                 base: ParameterSet? = nil) -> (INRTrainer, LocalGradientSource) {
    let target = TrainingTarget(base: base ?? objective.pretrained ?? LeNet(width: plan.pretrainedWidth).makeParameters(),
                                family: objective.family, classCount: objective.dataset.classCount, mean: objective.mean,
                                std: objective.std, recipe: "test")
    return (INRTrainer(inr: objective.inr, plan: plan, optimizer: settings, target: target), LocalGradientSource(objective: objective, plan: plan))
}
