import Foundation

/// AdamW (decoupled weight decay) over flat buffers, one loop per update:
///   m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,
///   θ ← θ − lr·( m̂/(√v̂ + ε) + λθ ),  m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ).
/// With `weightDecay = 0` it is Adam. Only the `trainable` ranges are touched (running
/// statistics of batch norm live in the same buffer but are not parameters).
public struct AdamW: Sendable {
    public var learningRate: Float
    public var beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8
    public var weightDecay: Float
    /// Updates taken so far (bias-correction exponent); restored on resume.
    public var step = 0
    public let firstMoment: FloatStorage
    public let secondMoment: FloatStorage
    public let trainable: [Range<Int>]

    public init(parameterCount: Int, trainable: [Range<Int>]? = nil, learningRate: Float = 1e-3, weightDecay: Float = 0) {
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        self.firstMoment = FloatStorage(count: parameterCount)
        self.secondMoment = FloatStorage(count: parameterCount)
        self.trainable = trainable ?? [0..<parameterCount]
    }

    /// The trainable ranges of a parameter set (every spec whose role is trainable).
    public static func trainableRanges(of p: ParameterSet) -> [Range<Int>] {
        p.specs.indices.filter { p.specs[$0].role.trainable }.map { p.offsets[$0]..<(p.offsets[$0] + p.specs[$0].count) }
    }

    /// What one update uses for every element: the step's bias corrections and rates.
    public struct StepCoefficients: Sendable {
        let c1: Float, c2: Float, beta1: Float, beta2: Float, epsilon: Float, learningRate: Float, weightDecay: Float
    }

    /// Starts update number `step + 1`; `apply` it to the parameters, all at once or range by
    /// range (element-wise, so the pieces give the bits of one whole update).
    public mutating func beginStep() -> StepCoefficients {
        step += 1
        return StepCoefficients(c1: 1 / (1 - Foundation.pow(beta1, Float(step))), c2: 1 / (1 - Foundation.pow(beta2, Float(step))),
                                beta1: beta1, beta2: beta2, epsilon: epsilon, learningRate: learningRate, weightDecay: weightDecay)
    }

    /// One update of `values` from `gradients` (same layout as the moments), and of `ema` (the
    /// average of `values` after the update: θ̄ ← d·θ̄ + (1 − d)·θ) in the same pass when given.
    /// Element-wise, so it is split over the compute threads with identical results.
    ///
    /// `rawGradients` (default: `gradients` itself): the gradient used is
    /// g = clamp(scale · raw, −clip, clip), and it is written to `gradients` in the same pass —
    /// a trainer's round mean and clipping need no pass of their own.
    public mutating func update(values: FloatStorage, gradients: FloatStorage, ema: EMA? = nil,
                                rawGradients: FloatStorage? = nil, scale: Float = 1, clip: Float = .infinity) {
        let k = beginStep()
        apply(k, to: 0..<values.count, values: values, gradients: gradients, ema: ema,
              sources: [UnsafePointer((rawGradients ?? gradients).base)], scale: scale, clip: clip)
    }

    /// The update `k` on the trainable parameters within `range`, with raw gradient
    /// Σ sources (added in order: ((s₀ + s₁) + s₂)…, the sum a trainer accumulates; with more
    /// than one source the sum is formed in `gradients` first), then as `update`.
    public func apply(_ k: StepCoefficients, to range: Range<Int>, values: FloatStorage, gradients: FloatStorage, ema: EMA? = nil,
                      sources: [UnsafePointer<Float>], scale: Float = 1, clip: Float = .infinity) {
        precondition(!sources.isEmpty, "an update needs a gradient")
        let (b1, b2, eps, lr, wd, c1, c2) = (k.beta1, k.beta2, k.epsilon, k.learningRate, k.weightDecay, k.c1, k.c2)
        let th = values.base, g = gradients.base, m = firstMoment.base, v = secondMoment.base
        let raw = sources.count == 1 ? sources[0] : UnsafePointer(g)
        let average = ema?.average.base
        for trainable in trainable {
            let part = trainable.clamped(to: range)
            guard !part.isEmpty else { continue }
            Parallel.forRanges(part.count, minimum: 1 << 14) { piece in
                let elements = (part.lowerBound + piece.lowerBound)..<(part.lowerBound + piece.upperBound)
                if sources.count > 1 {
                    let s0 = sources[0], s1 = sources[1]
                    for i in elements { g[i] = s0[i] + s1[i] }
                    for s in sources.dropFirst(2) { for i in elements { g[i] += s[i] } }
                }
                for i in elements {
                    let gi = min(max(raw[i] * scale, -clip), clip)
                    g[i] = gi
                    let mi = b1 * m[i] + (1 - b1) * gi, vi = b2 * v[i] + (1 - b2) * gi * gi
                    m[i] = mi; v[i] = vi
                    let t = th[i] - lr * ((mi * c1) / ((vi * c2).squareRoot() + eps) + wd * th[i])
                    th[i] = t
                    if let ema, let average { average[i] = ema.blend(average[i], t) }
                }
            }
        }
    }
}
