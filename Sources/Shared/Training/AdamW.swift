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
    /// range (element-wise, so the ranges give the bits of one whole update).
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
        // The one source on the stack: a trainer's step allocates nothing.
        withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: 1) { source in
            source[0] = UnsafePointer((rawGradients ?? gradients).base)
            apply(k, to: 0..<values.count, values: values, gradients: gradients, ema: ema, sources: UnsafeBufferPointer(source),
                  scale: scale, clip: clip)
        }
    }

    /// The update `k` on the trainable parameters within `range`, with raw gradient
    /// Σ sources (added in order: ((s₀ + s₁) + s₂)…, the sum a trainer accumulates; with more
    /// than one source the sum is formed in `gradients` first), then as `update`. Eight
    /// elements at a time (`SIMD8`; the same IEEE operations in the same order as
    /// `referenceApply`, so the same bits), split over the compute threads.
    public func apply(_ k: StepCoefficients, to range: Range<Int>, values: FloatStorage, gradients: FloatStorage, ema: EMA? = nil,
                      sources: [UnsafePointer<Float>], scale: Float = 1, clip: Float = .infinity) {
        sources.withUnsafeBufferPointer {
            apply(k, to: range, values: values, gradients: gradients, ema: ema, sources: $0, scale: scale, clip: clip)
        }
    }

    func apply(_ k: StepCoefficients, to range: Range<Int>, values: FloatStorage, gradients: FloatStorage, ema: EMA?,
               sources: UnsafeBufferPointer<UnsafePointer<Float>>, scale: Float, clip: Float) {
        precondition(!sources.isEmpty, "an update needs a gradient")
        let th = values.base, g = gradients.base, m = firstMoment.base, v = secondMoment.base
        let raw = sources.count == 1 ? sources[0] : UnsafePointer(g)
        let average = ema?.average.base, decay = ema?.decay ?? 0
        for trainable in trainable {
            let part = trainable.clamped(to: range)
            guard !part.isEmpty else { continue }
            Parallel.forRanges(part.count, minimum: 1 << 14) { task in
                let lo = part.lowerBound + task.lowerBound, hi = part.lowerBound + task.upperBound
                if sources.count > 1 { Self.sum(sources, into: g, lo, hi) }
                Self.step(k, lo, hi, raw: raw, scale: scale, clip: clip, g: g, m: m, v: v, th: th, average: average, decay: decay)
            }
        }
    }

    typealias Vector = SIMD8<Float>

    @inline(__always) static func load(_ p: UnsafePointer<Float>, _ i: Int) -> Vector {
        UnsafeRawPointer(p + i).loadUnaligned(as: Vector.self)
    }

    @inline(__always) static func store(_ x: Vector, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
        UnsafeMutableRawPointer(p + i).storeBytes(of: x, as: Vector.self)
    }

    /// g[lo..<hi] = ((s₀ + s₁) + s₂)…
    static func sum(_ sources: UnsafeBufferPointer<UnsafePointer<Float>>, into g: UnsafeMutablePointer<Float>, _ lo: Int, _ hi: Int) {
        let s0 = sources[0], s1 = sources[1]
        var i = lo
        while i + 8 <= hi { store(load(s0, i) + load(s1, i), g, i); i += 8 }
        while i < hi { g[i] = s0[i] + s1[i]; i += 1 }
        for s in sources.dropFirst(2) {
            i = lo
            while i + 8 <= hi { store(load(g, i) + load(s, i), g, i); i += 8 }
            while i < hi { g[i] += s[i]; i += 1 }
        }
    }

    /// The element-wise update of [lo, hi) (see the type's formula), EMA blended in when
    /// `average` is given.
    static func step(_ k: StepCoefficients, _ lo: Int, _ hi: Int, raw: UnsafePointer<Float>, scale: Float, clip: Float,
                     g: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
                     th: UnsafeMutablePointer<Float>, average: UnsafeMutablePointer<Float>?, decay: Float) {
        let (b1, b2, eps, lr, wd, c1, c2) = (k.beta1, k.beta2, k.epsilon, k.learningRate, k.weightDecay, k.c1, k.c2)
        var i = lo
        let vb1 = Vector(repeating: b1), vb2 = Vector(repeating: b2), va1 = Vector(repeating: 1 - b1), va2 = Vector(repeating: 1 - b2)
        let vlo = Vector(repeating: -clip), vhi = Vector(repeating: clip), vs = Vector(repeating: scale)
        let vc1 = Vector(repeating: c1), vc2 = Vector(repeating: c2), veps = Vector(repeating: eps)
        let vlr = Vector(repeating: lr), vwd = Vector(repeating: wd), vd = Vector(repeating: decay), vd1 = Vector(repeating: 1 - decay)
        while i + 8 <= hi {
            let gi = pointwiseMin(pointwiseMax(load(raw, i) * vs, vlo), vhi)
            store(gi, g, i)
            let mi = vb1 * load(m, i) + va1 * gi, vi = vb2 * load(v, i) + va2 * gi * gi
            store(mi, m, i); store(vi, v, i)
            let theta = load(th, i)
            let t = theta - vlr * ((mi * vc1) / ((vi * vc2).squareRoot() + veps) + vwd * theta)
            store(t, th, i)
            if let average { store(vd * load(average, i) + vd1 * t, average, i) }
            i += 8
        }
        while i < hi {
            let gi = min(max(raw[i] * scale, -clip), clip)
            g[i] = gi
            let mi = b1 * m[i] + (1 - b1) * gi, vi = b2 * v[i] + (1 - b2) * gi * gi
            m[i] = mi; v[i] = vi
            let t = th[i] - lr * ((mi * c1) / ((vi * c2).squareRoot() + eps) + wd * th[i])
            th[i] = t
            if let average { average[i] = decay * average[i] + (1 - decay) * t }
            i += 1
        }
    }

    /// `apply` one element at a time on one thread: the oracle of the vector kernel.
    public func referenceApply(_ k: StepCoefficients, to range: Range<Int>, values: FloatStorage, gradients: FloatStorage, ema: EMA? = nil,
                               sources: [UnsafePointer<Float>], scale: Float = 1, clip: Float = .infinity) {
        let (b1, b2, eps, lr, wd, c1, c2) = (k.beta1, k.beta2, k.epsilon, k.learningRate, k.weightDecay, k.c1, k.c2)
        let th = values.base, g = gradients.base, m = firstMoment.base, v = secondMoment.base
        for trainable in trainable {
            for i in trainable.clamped(to: range) {
                var raw = sources[0][i]
                for s in sources.dropFirst() { raw += s[i] }
                let gi = min(max(raw * scale, -clip), clip)
                g[i] = gi
                let mi = b1 * m[i] + (1 - b1) * gi, vi = b2 * v[i] + (1 - b2) * gi * gi
                m[i] = mi; v[i] = vi
                let t = th[i] - lr * ((mi * c1) / ((vi * c2).squareRoot() + eps) + wd * th[i])
                th[i] = t
                if let ema { ema.average.base[i] = ema.blend(ema.average.base[i], t) }
            }
        }
    }
}
