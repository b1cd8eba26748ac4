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

    /// One update of `values` from `gradients` (same layout as the moments).
    public mutating func update(values: FloatStorage, gradients: FloatStorage) {
        step += 1
        let c1 = 1 / (1 - Foundation.pow(beta1, Float(step))), c2 = 1 / (1 - Foundation.pow(beta2, Float(step)))
        let (b1, b2, eps, lr, wd) = (beta1, beta2, epsilon, learningRate, weightDecay)
        let th = values.base, g = gradients.base, m = firstMoment.base, v = secondMoment.base
        for range in trainable {
            for i in range {
                let gi = g[i]
                m[i] = b1 * m[i] + (1 - b1) * gi
                v[i] = b2 * v[i] + (1 - b2) * gi * gi
                th[i] -= lr * ((m[i] * c1) / ((v[i] * c2).squareRoot() + eps) + wd * th[i])
            }
        }
    }
}
