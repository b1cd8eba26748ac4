/// Exponential moving average of a parameter buffer: θ̄ ← d·θ̄ + (1 − d)·θ, one loop.
public struct EMA: Sendable {
    public let decay: Float
    public let average: FloatStorage

    /// Starts the average at the current parameters.
    public init(of values: FloatStorage, decay: Float) {
        self.decay = decay
        average = FloatStorage(count: values.count)
        average.base.update(from: values.base, count: values.count)
    }

    public func update(with values: FloatStorage) {
        let a = average.base, v = values.base
        Parallel.forRanges(average.count, minimum: 1 << 16) { r in for i in r { a[i] = blend(a[i], v[i]) } }
    }

    /// d·average + (1 − d)·value: the one formula, also used by `AdamW.update(…, ema:)`.
    @inline(__always) func blend(_ average: Float, _ value: Float) -> Float { decay * average + (1 - decay) * value }
}
