/// The pretrained network resampled to another width: a reconstruction target for every width.
///
/// NeuMeta addresses a channel by its relative position (index/size) and divides generated
/// values by the fan-in, so the function it represents is a Riemann sum over channels. After
/// the SHP permutation neighbouring channels are similar, and the width-w network whose channel
/// j copies pretrained channel ⌊(j + ½)·W/w⌋ (nearest position) with weights scaled by
/// in_W/in_w approximates the same sums. For every tensor [O, I, …]:
///
///     target[o, i, …] = W*[σ_O(o), σ_I(i), …] · (I*/I),   σ_N(j) = min(⌊(j + ½)·N*/N⌋, N* − 1)
///
/// (biases: target[o] = b*[σ_O(o)]). Axes of equal size map to themselves.
public enum PretrainedResampling {
    public static func resample(_ source: ParameterSet, into target: ParameterSet) {
        precondition(source.specs.count == target.specs.count, "resampling between different families")
        for t in 0..<target.specs.count {
            let s = source.specs[t], d = target.specs[t]
            precondition(s.shape.count == d.shape.count && s.shape.dropFirst(2) == d.shape.dropFirst(2),
                         "cannot resample \(s.name) \(s.shape) to \(d.shape)")
            func position(_ j: Int, _ n: Int, _ full: Int) -> Int { min(Int((Double(j) + 0.5) * Double(full) / Double(n)), full - 1) }
            let src = source.value(t), dst = target.value(t)
            let (O, I) = (d.outSize, d.inSize), (sO, sI) = (s.outSize, s.inSize), area = d.kernelArea
            let scale = d.shape.count > 1 ? Float(sI) / Float(I) : 1
            for o in 0..<O {
                let so = position(o, O, sO)
                for i in 0..<I {
                    let si = d.shape.count > 1 ? position(i, I, sI) : 0
                    for k in 0..<area { dst[(o * I + i) * area + k] = src[(so * sI + si) * area + k] * scale }
                }
            }
        }
    }
}
