import Foundation

/// How an INR training run samples its work: everything that decides a round's configurations.
public struct RoundPlan: Sendable, Equatable, Codable {
    /// Trained width range (inclusive), e.g. 8…32.
    public var minWidth = 8, maxWidth = 32
    /// Width of the pretrained network (reconstruction target).
    public var pretrainedWidth = 32
    /// Configurations per round (their gradients are averaged into one optimizer step).
    public var configurationsPerRound = 1
    /// Configurations per reduction block: the round's configurations 0..<M are cut into
    /// consecutive blocks of this many (the last may be shorter). A block's gradients are summed
    /// in index order by whoever computes it, ((g₀ + g₁) + g₂)…, and the round's gradient is the
    /// block sums added in block order — the same Float operations in one process or on any
    /// number of workers, since a block is always computed whole by one of them. With 1 (or ≥ M)
    /// the sum is the plain left fold over the configurations.
    public var configurationsPerBlock = 1
    public var batchSize = 128
    /// Coordinate noise ε.
    public var noise: Float = 1
    /// λ_reg, and λ_rec at round 0 (it decays linearly to 0 at the last round).
    public var normRegularizer: Float = 1e-4
    public var reconstruction: Float = 1
    /// Every configuration of a round uses the round's one mini-batch, so a round of M widths
    /// is one step over one batch with the gradient averaged over M widths; epochs then count
    /// rounds. Off: each configuration draws its own batch.
    public var sharedBatch = false
    public var rounds = 1
    public var seed: UInt64 = 0
    /// Training-set size, for mini-batch indexing.
    public var datasetCount = 0

    public init() {}

    /// Blocks per round: ⌈M / configurationsPerBlock⌉.
    public var blocksPerRound: Int { (configurationsPerRound + blockSize - 1) / blockSize }
    /// `configurationsPerBlock`, at most M.
    var blockSize: Int { max(1, min(configurationsPerBlock, configurationsPerRound)) }
    /// The configuration indices of block `block`.
    public func configurations(ofBlock block: Int) -> Range<Int> {
        precondition((0..<blocksPerRound).contains(block), "block \(block) of \(blocksPerRound)")
        return (block * blockSize)..<min(configurationsPerRound, (block + 1) * blockSize)
    }

    /// One step of a block's gradient sum over `count` values: the block's first configuration
    /// starts it (`sum = g`), every later one adds to it (`sum += g`, in Float), so a block
    /// summed here in index order is ((g₀ + g₁) + g₂)… bit for bit wherever it is computed —
    /// `WorkerJob` and `LocalGradientSource` both sum blocks with this.
    public static func accumulateBlock(_ sum: UnsafeMutablePointer<Float>, _ gradient: UnsafePointer<Float>, count: Int, first: Bool) {
        if first {
            sum.update(from: gradient, count: count)
        } else {
            for i in 0..<count { sum[i] += gradient[i] }
        }
    }

    /// Mini-batches per epoch (the last partial batch is dropped).
    public var batchesPerEpoch: Int { max(1, datasetCount / batchSize) }
    /// Mini-batches a round consumes: 1 with `sharedBatch`, otherwise one per configuration.
    public var batchesPerRound: Int { sharedBatch ? 1 : configurationsPerRound }
    /// Epochs covered by `rounds` rounds (mini-batches consumed / batches per epoch).
    public var epochs: Double { Double(rounds * batchesPerRound) / Double(batchesPerEpoch) }
    /// Rounds that cover `epochs` epochs (at least 1).
    public func rounds(forEpochs epochs: Double) -> Int {
        max(1, Int((epochs * Double(batchesPerEpoch) / Double(batchesPerRound)).rounded()))
    }

    /// Global mini-batch number of configuration `index` of `round`: configurations take
    /// consecutive batches of the data order; with `sharedBatch` all of a round share one.
    func batchNumber(round: Int, index: Int) -> Int {
        sharedBatch ? round : round * batchesPerRound + index
    }

    /// λ_rec at `round`: linear decay from `reconstruction` to 0 over the run.
    public func reconstructionWeight(round: Int) -> Float {
        reconstruction * max(0, 1 - Float(round) / Float(max(rounds, 1)))
    }

    /// Configuration `index` of `round`: a pure function of (seed, round, index). The mini-batch
    /// is batch number g = `batchNumber(round:index:)` (round·M + index, or round with a shared
    /// batch) of the data order, where each epoch is a fresh permutation from (seed, epoch); the
    /// width is uniform in [minWidth, maxWidth].
    public func configuration(round: Int, index: Int) -> Configuration {
        var order: (epoch: Int, indices: [Int])?
        return configuration(round: round, index: index, reusing: &order)
    }

    /// The same configuration, taking the data order from `order` when it is the right epoch's
    /// and drawing it into `order` otherwise, so that callers going through the configurations
    /// in sequence shuffle the data once per epoch (a 60k-element shuffle for Fashion-MNIST).
    func configuration(round: Int, index: Int, reusing order: inout (epoch: Int, indices: [Int])?) -> Configuration {
        let g = batchNumber(round: round, index: index)
        if order?.epoch != g / batchesPerEpoch { order = epochOrder(of: g) }
        return configuration(round: round, index: index, order: order!)
    }

    /// The data order of the epoch that holds global batch `g`.
    func epochOrder(of g: Int) -> (epoch: Int, indices: [Int]) {
        let epoch = g / batchesPerEpoch
        return (epoch, EpochOrder.indices(count: datasetCount, seed: seed, epoch: epoch))
    }

    func configuration(round: Int, index: Int, order: (epoch: Int, indices: [Int])) -> Configuration {
        precondition(datasetCount >= batchSize, "data set of \(datasetCount) is smaller than one batch of \(batchSize)")
        var rng = SeededRandom(seed, 0x5717, UInt64(round), UInt64(index))
        let width = minWidth + rng.index(below: maxWidth - minWidth + 1)
        let g = batchNumber(round: round, index: index)
        precondition(g / batchesPerEpoch == order.epoch, "data order of the wrong epoch")
        let start = (g % batchesPerEpoch) * batchSize
        // The augmentation seed comes from a generator of its own, so the width and noise seed
        // drawn above are those of plans made before it existed.
        var augmentation = SeededRandom(seed, 0xA06, UInt64(round), UInt64(index))
        return Configuration(width: width, batch: Array(order.indices[start..<(start + batchSize)]), noiseSeed: rng.next(), noise: noise,
                             lossWeights: lossWeights(round: round), augmentation: augmentation.next())
    }

    /// The loss weights of `round` (reconstruction weights decayed linearly).
    public func lossWeights(round: Int) -> LossWeights {
        LossWeights(normRegularizer: normRegularizer, reconstruction: reconstructionWeight(round: round))
    }

    /// All configurations of `round`, in index order.
    /// The epoch's data order (a 60k-element shuffle for Fashion-MNIST) is drawn once per epoch
    /// the round touches, not once per configuration.
    public func configurations(round: Int) -> [Configuration] {
        var order: (epoch: Int, indices: [Int])?
        return configurations(round: round, reusing: &order)
    }

    /// The same, with the data order carried in `order` from round to round (see
    /// `configuration(round:index:reusing:)`): a trainer draws it once per epoch.
    public func configurations(round: Int, reusing order: inout (epoch: Int, indices: [Int])?) -> [Configuration] {
        (0..<configurationsPerRound).map { configuration(round: round, index: $0, reusing: &order) }
    }
}

extension RoundPlan {
    /// Decodes a plan; one without `configurationsPerBlock` (written by a build that summed
    /// every configuration separately) has blocks of one configuration, which is the same sum.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init()
        minWidth = try c.decode(Int.self, forKey: .minWidth); maxWidth = try c.decode(Int.self, forKey: .maxWidth)
        pretrainedWidth = try c.decode(Int.self, forKey: .pretrainedWidth)
        configurationsPerRound = try c.decode(Int.self, forKey: .configurationsPerRound)
        configurationsPerBlock = try c.decodeIfPresent(Int.self, forKey: .configurationsPerBlock) ?? 1
        batchSize = try c.decode(Int.self, forKey: .batchSize); noise = try c.decode(Float.self, forKey: .noise)
        normRegularizer = try c.decode(Float.self, forKey: .normRegularizer)
        reconstruction = try c.decode(Float.self, forKey: .reconstruction)
        sharedBatch = try c.decode(Bool.self, forKey: .sharedBatch); rounds = try c.decode(Int.self, forKey: .rounds)
        seed = try c.decode(UInt64.self, forKey: .seed); datasetCount = try c.decode(Int.self, forKey: .datasetCount)
    }
}

/// Optimizer settings of INR training.
public struct OptimizerSettings: Sendable, Equatable, Codable {
    public var learningRate: Float = 1e-3
    public var weightDecay: Float = 0
    /// Clamp every averaged gradient value to [−clip, clip] (nil: no clipping).
    public var gradientClip: Float? = nil
    /// EMA decay of the INR parameters.
    public var emaDecay: Float = 0.995
    /// Cosine decay of the learning rate to `minLearningRateFraction`·lr over the run.
    public var cosineSchedule = false
    public var minLearningRateFraction: Float = 0.05
    public init() {}

    public func learningRate(round: Int, rounds: Int) -> Float {
        guard cosineSchedule, rounds > 1 else { return learningRate }
        let t = Float(round) / Float(rounds - 1)
        let floor = minLearningRateFraction * learningRate
        return floor + (learningRate - floor) * 0.5 * (1 + Foundation.cos(Float.pi * t))
    }
}
