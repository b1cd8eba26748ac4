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
    var g = [Float](repeating: 0, count: t.count)
    for i in 0..<t.count {
        let saved = t[i]
        t[i] = saved + h; let lp = loss()
        t[i] = saved - h; let lm = loss()
        t[i] = saved
        g[i] = Float((lp - lm) / (2 * Double(h)))
    }
    return g
}

/// Σ y·r in Double: a scalar probe whose gradient with respect to y is r.
func probe(_ y: Tensor, _ r: Tensor) -> Double {
    var s = 0.0
    for i in 0..<y.count { s += Double(y[i]) * Double(r[i]) }
    return s
}
