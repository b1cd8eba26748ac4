import Foundation

/// Stochastic gradient descent with momentum and L2 weight decay over flat buffers, as
/// PyTorch's `torch.optim.SGD` (dampening 0, not Nesterov), one loop per update:
///   g ← g + λθ,   v ← μv + g,   θ ← θ − lr·v
/// (v starts at 0, so the first step's v is g, as PyTorch's first step copies it). Only the
/// `trainable` ranges are touched (batch-norm running statistics share the buffer).
public struct SGD: Sendable {
    public var learningRate: Float
    public var momentum: Float
    public var weightDecay: Float
    public let velocity: FloatStorage
    public let trainable: [Range<Int>]

    public init(parameterCount: Int, trainable: [Range<Int>]? = nil, learningRate: Float, momentum: Float = 0.9, weightDecay: Float = 0) {
        self.learningRate = learningRate; self.momentum = momentum; self.weightDecay = weightDecay
        velocity = FloatStorage(count: parameterCount)
        self.trainable = trainable ?? [0..<parameterCount]
    }

    /// One update of `values` from `gradients`, split over the compute threads (element-wise:
    /// the same bits for any thread count).
    public func update(values: FloatStorage, gradients: FloatStorage) {
        let th = values.base, g = gradients.base, v = velocity.base
        let (lr, mu, wd) = (learningRate, momentum, weightDecay)
        for range in trainable {
            Parallel.forRanges(range.count, minimum: 1 << 14) { task in
                for i in (range.lowerBound + task.lowerBound)..<(range.lowerBound + task.upperBound) {
                    let gi = g[i] + wd * th[i]
                    let vi = mu * v[i] + gi
                    v[i] = vi
                    th[i] -= lr * vi
                }
            }
        }
    }
}
