/// Turns an INR into target networks of any width: per-width networks, coordinate layouts and
/// weight buffers are built once and reused.
public final class NetworkGenerator: @unchecked Sendable {
    public let inr: HyperNetwork
    public let family: String
    public let classCount: Int
    /// Side of the square RGB input of the generated networks (nil: the family's default input).
    public let imageSize: Int?

    struct WidthCache {
        let network: Network
        let weights: ParameterSet
        let layout: CoordinateLayout
        /// Indices of the generated (trainable) tensors; they precede any buffers.
        let trainable: [Int]
        /// Accumulator for K-sample averaging.
        let average: ParameterSet
    }

    private var caches: [Int: WidthCache] = [:]
    let activations: INRActivations

    public init(inr: HyperNetwork, family: String, classCount: Int, imageSize: Int? = nil) {
        self.inr = inr; self.family = family; self.classCount = classCount; self.imageSize = imageSize
        activations = INRActivations(config: inr.config)
    }

    func cache(width: Int) throws -> WidthCache {
        if let c = caches[width] { return c }
        let network = try NetworkFamily.make(family, widths: [width], classCount: classCount, imageSize: imageSize)
        let weights = network.makeParameters()
        let trainable = weights.specs.indices.filter { weights.specs[$0].role.trainable }
        precondition(trainable == Array(0..<trainable.count), "generated tensors must precede buffers in the state dict")
        let layout = CoordinateLayout(specs: trainable.map { weights.specs[$0] }, outputSize: inr.config.outputSize)
        let c = WidthCache(network: network, weights: weights, layout: layout, trainable: trainable, average: network.makeParameters())
        caches[width] = c
        return c
    }

    /// The width-`width` network generated with coordinate noise ε from `noiseSeed` (ε = 0:
    /// clean coordinates). The returned buffers are reused by the next call for this width.
    public func generate(width: Int, noise: Float, noiseSeed: UInt64) throws -> (Network, ParameterSet) {
        let c = try cache(width: width)
        var rng = SeededRandom(noiseSeed)
        inr.generate(c.layout, noise: noise, rng: &rng, activations: activations, into: c.weights)
        return (c.network, c.weights)
    }

    /// docs/algorithm.md §4: the average of K generated networks, the first with clean coordinates and
    /// the rest with noise ε (seeds derived from `seed`).
    public func sample(width: Int, samples k: Int, noise: Float, seed: UInt64) throws -> (Network, ParameterSet) {
        precondition(k >= 1, "need at least one sample")
        let c = try cache(width: width)
        if k == 1 { return try generate(width: width, noise: 0, noiseSeed: seed) }
        let sum = c.average.values.base, n = c.average.count
        sum.update(repeating: 0, count: n)
        var seeds = SeededRandom(seed, 0x5A)
        for s in 0..<k {
            let (_, w) = try generate(width: width, noise: s == 0 ? 0 : noise, noiseSeed: seeds.next())
            for i in 0..<n { sum[i] += w.values.base[i] }
        }
        let scale = 1 / Float(k)
        for i in 0..<n { sum[i] *= scale }
        return (c.network, c.average)
    }
}
