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

    /// Eight elements at a time (the same operations as `blend`, so the same bits).
    public func update(with values: FloatStorage) {
        let a = average.base, v = values.base
        let d = SIMD8<Float>(repeating: decay), d1 = SIMD8<Float>(repeating: 1 - decay)
        Parallel.forRanges(average.count, minimum: 1 << 14) { r in
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                AdamW.store(d * AdamW.load(a, i) + d1 * AdamW.load(v, i), a, i)
                i += 8
            }
            while i < r.upperBound { a[i] = blend(a[i], v[i]); i += 1 }
        }
    }

    /// d·average + (1 − d)·value: the one formula, also used by `AdamW.update(…, ema:)`.
    @inline(__always) func blend(_ average: Float, _ value: Float) -> Float { decay * average + (1 - decay) * value }
}
