/// Turns an INR into target networks of any width: per-width networks, coordinate layouts and
/// weight buffers are built once and reused.
///
/// The generated tensors (`MorphPlan.generated`) come from the INR (plus the resampled base
/// with `WeightPrior.base`); every other tensor is the permuted base network's (`base`), copied
/// once when a width is first used. Running
/// statistics of morphed batch-norm layers start at PyTorch's defaults (mean 0, variance 1)
/// until `BatchNormRecalibration` recomputes them.
public final class NetworkGenerator: @unchecked Sendable {
    public let inr: HyperNetwork
    public let morph: MorphPlan
    public let classCount: Int
    /// The permuted base network (copied tensors, and the prior); nil only when every tensor is
    /// generated and there is no prior.
    public let base: ParameterSet?

    struct WidthCache {
        let network: Network
        let weights: ParameterSet
        let layout: CoordinateLayout
        /// Indices of the generated tensors in `weights`, in head order.
        let generated: [Int]
        /// Accumulator for K-sample averaging.
        let average: ParameterSet
        /// With `WeightPrior.base`: the base network's generated tensors resampled to this
        /// width, in head order (added to the INR's output); empty otherwise.
        let prior: [Tensor]
    }

    public enum Failure: Error, CustomStringConvertible {
        case priorWithoutBase
        public var description: String { "an INR with the base-network prior needs the base network, and none was given" }
    }

    private var caches: [Int: WidthCache] = [:]
    /// Cached widths, least recently used first.
    private var recency: [Int] = []
    /// A residual network holds hundreds of MB of activations at a batch of 128 (ResNet-20 at
    /// 32×32: ≈ 300 MB), so only this many of its widths stay cached; LeNet's take kilobytes
    /// and all stay.
    static let residualWidthsCached = 2
    /// The widths cached now, least recently used first.
    var cachedWidths: [Int] { recency }
    let activations: INRActivations

    public init(inr: HyperNetwork, morph: MorphPlan, classCount: Int, base: ParameterSet?) {
        self.inr = inr; self.morph = morph; self.classCount = classCount; self.base = base
        activations = INRActivations(config: inr.config)
    }

    /// A generator for a family whose every tensor is generated and whose one width is the
    /// scalar width (LeNet).
    public convenience init(inr: HyperNetwork, family: String, classCount: Int) {
        self.init(inr: inr, morph: MorphPlan(family: family, baseWidths: [1]), classCount: classCount, base: nil)
    }

    public var family: String { morph.family }

    func cache(width: Int) throws -> WidthCache {
        if let c = caches[width] {
            if recency.last != width { recency.removeAll { $0 == width }; recency.append(width) }
            return c
        }
        let network = try morph.network(width: width, classCount: classCount)
        if network is any ResidualNetwork {
            while caches.count >= Self.residualWidthsCached { caches[recency.removeFirst()] = nil }
        }
        let weights = network.makeParameters(), average = network.makeParameters()
        let generated = morph.generated(weights.specs)
        precondition(generated.count == inr.targetSpecs.count, "\(generated.count) generated tensors for an INR of \(inr.targetSpecs.count) heads")
        let isGenerated = Set(generated)
        for i in weights.specs.indices where !isGenerated.contains(i) {
            if let base, let j = base.index(of: weights.specs[i].name), base.specs[j].shape == weights.specs[i].shape {
                weights.value(i).copy(from: base.value(j))
                average.value(i).copy(from: base.value(j))
            } else {
                // Only the running statistics of a morphed width have no base counterpart.
                precondition(!weights.specs[i].role.trainable || base == nil, "copied tensor \(weights.specs[i].name) does not fit the base")
                let fill: Float = weights.specs[i].role == .runningVar ? 1 : 0
                weights.value(i).fill(fill); average.value(i).fill(fill)
            }
        }
        let layout = CoordinateLayout(specs: generated.map { weights.specs[$0] }, outputSize: inr.config.outputSize, parameters: generated)
        var prior = [Tensor]()
        if inr.config.prior == .base {
            guard let base else { throw Failure.priorWithoutBase }
            for t in generated {
                let spec = weights.specs[t]
                guard let j = base.index(of: spec.name) else { preconditionFailure("generated tensor \(spec.name) is not in the base") }
                let p = Tensor(zeros: spec.shape)
                PretrainedResampling.resample(base.value(j), base.specs[j], into: p, spec)
                prior.append(p)
            }
        }
        let c = WidthCache(network: network, weights: weights, layout: layout, generated: generated, average: average, prior: prior)
        caches[width] = c
        recency.append(width)
        return c
    }

    /// The width-`width` network generated with coordinate noise ε from `noiseSeed` (ε = 0:
    /// clean coordinates). The returned buffers are reused by the next call for this width.
    public func generate(width: Int, noise: Float, noiseSeed: UInt64) throws -> (Network, ParameterSet) {
        let c = try cache(width: width)
        var rng = SeededRandom(noiseSeed)
        inr.generate(c.layout, noise: noise, rng: &rng, activations: activations, into: c.weights)
        for (p, t) in zip(c.prior, c.generated) {
            let w = c.weights.value(t)
            for i in 0..<w.count { w.data[i] += p.data[i] }
        }
        return (c.network, c.weights)
    }

    /// docs/algorithm.md §4: the average of K generated networks, the first with clean coordinates and
    /// the rest with noise ε (seeds derived from `seed`). Copied tensors are the base's.
    public func sample(width: Int, samples k: Int, noise: Float, seed: UInt64) throws -> (Network, ParameterSet) {
        precondition(k >= 1, "need at least one sample")
        let c = try cache(width: width)
        if k == 1 { return try generate(width: width, noise: 0, noiseSeed: seed) }
        let sums = c.generated.map { c.average.value($0) }
        for s in sums { s.fill(0) }
        var seeds = SeededRandom(seed, 0x5A)
        for s in 0..<k {
            let (_, w) = try generate(width: width, noise: s == 0 ? 0 : noise, noiseSeed: seeds.next())
            for (sum, t) in zip(sums, c.generated) {
                let v = w.value(t)
                for i in 0..<sum.count { sum.data[i] += v.data[i] }
            }
        }
        let scale = 1 / Float(k)
        for sum in sums { for i in 0..<sum.count { sum.data[i] *= scale } }
        return (c.network, c.average)
    }
}
