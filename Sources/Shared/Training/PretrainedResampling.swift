/// The pretrained network resampled to another width: the `resampled` baseline of `evaluate`,
/// and the prior an INR with `WeightPrior.base` adds its output to.
///
/// NeuMeta addresses a channel by its relative position (index/size) and divides generated
/// values by the fan-in, so the function it represents is a Riemann sum over channels. After
/// the SHP permutation neighbouring channels are similar, so a width-N axis is the base's
/// width-N* axis in N equal intervals: target channel j covers base channels [j·N*/N, (j+1)·N*/N)
/// (fractions of a channel included). With A[j, s] the length of that interval's overlap with
/// base channel s (Σ_s A[j, s] = N*/N), for every tensor [O, I, …]:
///
///     target[o, i, …] = Σ_{s, t} (A_O[o, s] / (O*/O)) · A_I[i, t] · W*[s, t, …]
///
/// — output channels are the *mean* of the base channels they cover, input channels their
/// *sum* (the fan-in scaling: a merged input stands for all the channels it covers); biases and
/// other vectors take the mean over the output axis. Axes of equal size map to themselves, so
/// the base width gives the base network exactly; N < N* merges neighbouring channels (box
/// filter), N > N* splits them.
public enum PretrainedResampling {
    public static func resample(_ source: ParameterSet, into target: ParameterSet) {
        precondition(source.specs.count == target.specs.count, "resampling between different families")
        for t in 0..<target.specs.count {
            resample(source.value(t), source.specs[t], into: target.value(t), target.specs[t])
        }
    }

    /// One tensor: `src` (spec `s`) resampled into `dst` (spec `d`, the same kind of tensor).
    public static func resample(_ src: Tensor, _ s: ParameterSpec, into dst: Tensor, _ d: ParameterSpec) {
        precondition(s.shape.count == d.shape.count && s.shape.dropFirst(2) == d.shape.dropFirst(2),
                     "cannot resample \(s.name) \(s.shape) to \(d.shape)")
        let (O, I) = (d.outSize, d.inSize), (sO, sI) = (s.outSize, s.inSize), area = d.kernelArea
        let outWeights = overlaps(target: O, source: sO, mean: true)
        let inWeights = d.shape.count > 1 ? overlaps(target: I, source: sI, mean: false) : [[(0, 1)]]
        for o in 0..<O {
            for i in 0..<I {
                let out = dst.data + (o * I + i) * area
                for k in 0..<area { out[k] = 0 }
                for (so, wo) in outWeights[o] {
                    for (si, wi) in inWeights[i] {
                        let w = Float(wo * wi), from = src.data + (so * sI + si) * area
                        for k in 0..<area { out[k] += w * from[k] }
                    }
                }
            }
        }
    }

    /// Per target channel j of `target`, the base channels s its interval [j·S/T, (j+1)·S/T)
    /// overlaps and the overlap's length (divided by S/T when `mean`). Equal sizes: identity.
    static func overlaps(target T: Int, source S: Int, mean: Bool) -> [[(Int, Double)]] {
        if T == S { return (0..<T).map { [($0, 1)] } }
        let step = Double(S) / Double(T)
        return (0..<T).map { j in
            let lo = Double(j) * step, hi = Double(j + 1) * step
            var covered: [(Int, Double)] = []
            var s = Int(lo.rounded(.down))
            while s < S, Double(s) < hi {
                let length = min(hi, Double(s + 1)) - max(lo, Double(s))
                if length > 1e-12 { covered.append((s, mean ? length / step : length)) }
                s += 1
            }
            return covered
        }
    }
}
