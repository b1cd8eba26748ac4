/// Total variation, the smoothness measure of docs/algorithm.md §5.
///
/// - A 1-d tensor x of length n: TV(x) = Σ_{i<n−1} |x[i+1] − x[i]|.
/// - A tensor of rank ≥ 2 is viewed as W[o, i, k] (out × in × k, k the product of the remaining
///   dimensions, 1 for a matrix) and its variation is taken along both channel axes:
///
///       TV(W) = Σ_{o<O−1, i, k} |W[o+1, i, k] − W[o, i, k]| + Σ_{o, i<I−1, k} |W[o, i+1, k] − W[o, i, k]|
///
/// - A scalar (rank 0) has no variation.
///
/// Differences and sums are taken in Double, so the result is exact up to Double rounding.
public enum TotalVariation {
    /// TV of one tensor.
    public static func of(_ t: Tensor) -> Double {
        guard t.rank >= 1 else { return 0 }
        let x = t.data
        if t.rank == 1 {
            var sum = 0.0
            for i in 0..<max(t.count - 1, 0) { sum += abs(Double(x[i + 1]) - Double(x[i])) }
            return sum
        }
        let outSize = t.shape[0], inSize = t.shape[1], k = t.shape[2...].reduce(1, *)
        let row = inSize * k
        var sum = 0.0
        // Along the out axis: element e of row o+1 against element e of row o.
        for o in 0..<max(outSize - 1, 0) {
            let a = x + o * row, b = a + row
            for e in 0..<row { sum += abs(Double(b[e]) - Double(a[e])) }
        }
        // Along the in axis: (o, i+1, kk) against (o, i, kk).
        for o in 0..<outSize {
            for i in 0..<max(inSize - 1, 0) {
                let a = x + o * row + i * k, b = a + k
                for kk in 0..<k { sum += abs(Double(b[kk]) - Double(a[kk])) }
            }
        }
        return sum
    }

    /// Σ TV over the value tensors of the specs at `tensors`.
    public static func of(_ p: ParameterSet, tensors: [Int]) -> Double {
        tensors.reduce(0) { $0 + of(p.value($1)) }
    }
}
