import Foundation

/// Weights of NeuMeta's loss terms (docs/algorithm.md §3).
public struct LossWeights: Sendable, Equatable, Codable {
    /// λ_reg: weight of Σ_tensors ‖W‖₂.
    public var normRegularizer: Float = 1e-4
    /// λ_rec: weight of the reconstruction term (used only at the pretrained width).
    public var reconstruction: Float = 1
    public init() {}
    public init(normRegularizer: Float, reconstruction: Float) {
        self.normRegularizer = normRegularizer; self.reconstruction = reconstruction
    }
}

/// One sampled network configuration: the unit of work of a round.
public struct Configuration: Sendable, Equatable {
    public var width: Int
    /// Dataset indices of the mini-batch.
    public var batch: [Int]
    /// Seed of the coordinate noise.
    public var noiseSeed: UInt64
    /// ε of the coordinate noise (U(0,1) − 0.5)·ε.
    public var noise: Float
    public var lossWeights: LossWeights
    /// Seed of the batch's data augmentation (used by sources that augment).
    public var augmentation: UInt64

    public init(width: Int, batch: [Int], noiseSeed: UInt64, noise: Float, lossWeights: LossWeights, augmentation: UInt64 = 0) {
        self.width = width; self.batch = batch; self.noiseSeed = noiseSeed; self.noise = noise; self.lossWeights = lossWeights
        self.augmentation = augmentation
    }
}

/// The loss terms of one configuration (unweighted), and its accuracy on the batch.
public struct LossTerms: Sendable, Equatable {
    public var crossEntropy = 0.0, normRegularizer = 0.0, reconstruction = 0.0, total = 0.0
    public var correct = 0, samples = 0
    public init() {}

    /// Sums terms of several configurations (the round's mean divides by the count).
    public static func + (a: LossTerms, b: LossTerms) -> LossTerms {
        var s = LossTerms()
        s.crossEntropy = a.crossEntropy + b.crossEntropy; s.normRegularizer = a.normRegularizer + b.normRegularizer
        s.reconstruction = a.reconstruction + b.reconstruction; s.total = a.total + b.total
        s.correct = a.correct + b.correct; s.samples = a.samples + b.samples
        return s
    }
}

/// The gradient of one configuration — a pure function of (INR parameters, width, mini-batch,
/// noise seed, loss weights) — used alike by the single-process trainer and cluster workers.
///
/// loss = CE(f_W(x), y) + λ_reg Σ_t ‖W_t‖₂ + [w = w*] · λ_rec · (1/T) Σ_t mean((W_t − W*_t)² ⊙ a_t),
/// a_t = (|W*_t| + 1e-6) / max(|W*_t| + 1e-6), where W = INR(coordinates + noise) and W* are the
/// permuted pretrained weights. Per-width networks, layouts and all buffers are cached, so after
/// each width has been seen once a call allocates nothing of its own (the parallel loops of the
/// kernels allocate a few bytes of closure and libdispatch bookkeeping each, freed at once).
public final class ConfigurationGradient: @unchecked Sendable {
    public let inr: HyperNetwork
    /// The target family, its widths and which tensors are generated.
    public let morph: MorphPlan
    public let dataset: any TrainingImages
    public let mean: [Float], std: [Float]
    /// The permuted pretrained network (reconstruction target) and its width.
    public let pretrained: ParameterSet?
    public let pretrainedWidth: Int?

    public let generator: NetworkGenerator
    private var images = Tensor(zeros: [0]), labels = UnsafeMutablePointer<Int32>.allocate(capacity: 1), labelCapacity = 1
    private var dLogits = Tensor(zeros: [0])
    /// Views of the last batch size's images [n, C, H, W] and logit gradients [n, classes].
    private var batchViews: (n: Int, x: Tensor, dz: Tensor)?

    /// `pretrained`: the permuted base network, at `morph.baseWidth` (the reconstruction
    /// target, and the source of the tensors that are not generated).
    public init(inr: HyperNetwork, morph: MorphPlan, dataset: any TrainingImages, mean: [Float], std: [Float],
                pretrained: ParameterSet?) {
        self.inr = inr; self.morph = morph; self.dataset = dataset; self.mean = mean; self.std = std
        self.pretrained = pretrained; self.pretrainedWidth = pretrained == nil ? nil : morph.baseWidth
        generator = NetworkGenerator(inr: inr, morph: morph, classCount: dataset.classCount, base: pretrained)
    }

    /// For a family whose one width is the scalar width and whose every tensor is generated
    /// (LeNet), on the data's images (RGB ones of an image folder at their size).
    public convenience init(inr: HyperNetwork, family: String, dataset: any TrainingImages, mean: [Float], std: [Float],
                            pretrained: ParameterSet?, pretrainedWidth: Int?) {
        let shape = dataset.batchImageShape
        self.init(inr: inr, morph: MorphPlan(family: family, baseWidths: [pretrainedWidth ?? 1], imageSize: shape.channels == 3 ? shape.height : nil),
                  dataset: dataset, mean: mean, std: std, pretrained: pretrained)
    }

    public var family: String { morph.family }

    deinit { labels.deallocate() }

    /// Overwrites `inr.parameters.gradients` with the gradient of configuration `config` and
    /// returns its loss terms. Its three parts are `Profile` phases. `headFinished(t)`: head t's
    /// part of the gradient (`inr.headRanges[t]`) is final (see `HyperNetwork.backward`).
    public func compute(_ config: Configuration, headFinished: ((Int) -> Void)? = nil) throws -> LossTerms {
        let c = try generator.cache(width: config.width)
        let (network, weights) = try Profile.phase(.inrForward) {
            try generator.generate(width: config.width, noise: config.noise, noiseSeed: config.noiseSeed)
        }
        let terms = try Profile.phase(.targetNetwork) { try targetLoss(config, c, network, weights) }
        Profile.phase(.inrBackward) {
            inr.backward(c.layout, activations: generator.activations, targetGradients: weights, headFinished: headFinished)
        }
        return terms
    }

    /// The loss terms of the generated network `weights` on the configuration's batch, with
    /// their gradients with respect to the generated tensors in `weights.gradients`.
    private func targetLoss(_ config: Configuration, _ c: NetworkGenerator.WidthCache, _ network: Network,
                            _ weights: ParameterSet) throws -> LossTerms {
        let n = config.batch.count
        let (x, dz) = batchBuffers(n, network)
        try dataset.fillBatch(indices: config.batch, augmentation: config.augmentation, mean: mean, std: std, images: x.data, labels: labels)
        weights.zeroGradients()
        let logits = network.forward(weights, input: x, mode: .training)
        let (ce, correct) = SoftmaxCrossEntropy.forwardBackward(logits: logits, labels: labels, dLogits: dz)
        // Only the generated tensors' gradients are used: a ResNet morphed in its last block
        // back-propagates no further than that block.
        network.backward(weights, input: x, dLogits: dz, from: c.generated.first ?? 0)

        var terms = LossTerms()
        terms.crossEntropy = ce; terms.correct = correct; terms.samples = n
        terms.normRegularizer = Self.addNormRegularizer(weights, tensors: c.generated, weight: config.lossWeights.normRegularizer)
        var recWeight: Float = 0
        if let pretrained, config.width == pretrainedWidth, config.lossWeights.reconstruction > 0 {
            recWeight = config.lossWeights.reconstruction
            terms.reconstruction = Self.addReconstruction(weights, target: pretrained, tensors: c.generated, weight: recWeight)
        }
        terms.total = ce + Double(config.lossWeights.normRegularizer) * terms.normRegularizer + Double(recWeight) * terms.reconstruction
        return terms
    }

    /// The image and logit-gradient views for a batch of `n` (made when `n` changes; the
    /// buffers behind them grow to the largest batch seen).
    private func batchBuffers(_ n: Int, _ network: Network) -> (x: Tensor, dz: Tensor) {
        if let v = batchViews, v.n == n { return (v.x, v.dz) }
        let need = n * network.inputShape.reduce(1, *)
        if images.count < need { images = Tensor(zeros: [need]) }
        if dLogits.count < n * network.classCount { dLogits = Tensor(zeros: [n * network.classCount]) }
        if labelCapacity < n { labels.deallocate(); labels = .allocate(capacity: n); labelCapacity = n }
        let v = (n: n, x: images.slice(from: 0, shape: [n] + network.inputShape), dz: dLogits.slice(from: 0, shape: [n, network.classCount]))
        batchViews = v
        return (v.x, v.dz)
    }

    /// Σ_t ‖W_t‖₂, adding λ·W_t/‖W_t‖ to each tensor's gradient. Returns the unweighted sum.
    static func addNormRegularizer(_ p: ParameterSet, tensors: [Int], weight: Float) -> Double {
        var total = 0.0
        for t in tensors {
            let w = p.value(t), g = p.gradient(t)
            var ss = 0.0
            for i in 0..<w.count { ss += Double(w[i]) * Double(w[i]) }
            let norm = ss.squareRoot()
            total += norm
            guard weight != 0, norm > 0 else { continue }
            let k = weight / Float(norm)
            for i in 0..<w.count { g.data[i] += k * w.data[i] }
        }
        return total
    }

    /// (1/T) Σ_t mean((W_t − W*_t)² ⊙ a_t), adding λ·(1/T)·2(W − W*)⊙a/n_t to the gradients.
    static func addReconstruction(_ p: ParameterSet, target: ParameterSet, tensors: [Int], weight: Float) -> Double {
        var total = 0.0
        let T = Double(tensors.count)
        for t in tensors {
            let w = p.value(t), g = p.gradient(t), ref = target.value(t)
            precondition(w.count == ref.count, "reconstruction target \(target.specs[t].name) has another shape")
            var maxAbs: Float = 0
            for i in 0..<ref.count { maxAbs = max(maxAbs, abs(ref[i]) + 1e-6) }
            let denominator = Double(w.count)
            var sum = 0.0
            let k = weight * Float(2 / (T * denominator))
            for i in 0..<w.count {
                let a = (abs(ref.data[i]) + 1e-6) / maxAbs, d = w.data[i] - ref.data[i]
                sum += Double(d * d * a)
                g.data[i] += k * d * a
            }
            total += sum / denominator
        }
        return total / T
    }
}
