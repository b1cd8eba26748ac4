import Foundation

/// Settings of one base-network training run (one process).
public struct BaseTrainingConfig: Sendable {
    /// Adam(W) (LeNet's recipe) or SGD with momentum (the ResNet recipe).
    public enum Optimizer: Sendable, Equatable {
        case adam
        case sgd(momentum: Float)
    }

    public var epochs = 5
    public var batchSize = 128
    public var optimizer = Optimizer.adam
    public var learningRate: Float = 1e-3
    public var weightDecay: Float = 0
    /// Cosine decay of the learning rate to 0 over all steps (step k of K: lr·½(1 + cos πk/K)).
    public var cosine = false
    public var seed: UInt64 = 0
    public init() {}

    /// The learning rate of step `step` of `steps`.
    public func learningRate(step: Int, of steps: Int) -> Float {
        guard cosine, steps > 0 else { return learningRate }
        return learningRate * 0.5 * (1 + Foundation.cos(Float.pi * Float(step) / Float(steps)))
    }
}

/// What one epoch did.
public struct EpochReport: Sendable {
    public let epoch: Int, epochs: Int
    public let trainLoss: Double, trainAccuracy: Double, testAccuracy: Double
    public let seconds: Double, elapsed: Double
}

/// Progress inside an epoch, after every step.
public struct StepProgress: Sendable {
    public let epoch: Int, step: Int, steps: Int
    public let loss: Double
    public let elapsed: Double
    /// Training images per second over the epoch so far.
    public let imagesPerSecond: Double
}

/// Trains one network with softmax cross-entropy — Adam(W) or SGD with momentum, optionally
/// with a cosine schedule — on `TrainingImages` (in memory, or an image folder streamed from
/// disk and augmented: batch k of epoch e gets the augmentation seed of (seed, e, k)), inputs
/// standardised with the given per-channel mean and std.
///
/// Every buffer (batch, logits, their gradient, optimizer state, network activations) is
/// allocated before the first step; the step itself allocates nothing for in-memory data.
public final class BaseTrainer {
    public let network: Network
    public let parameters: ParameterSet
    public let config: BaseTrainingConfig
    public let mean: [Float], std: [Float]
    private let train: any TrainingImages, test: any TrainingImages
    private var adam: AdamW?
    private var sgd: SGD?
    private let batchImages: Tensor, batchLabels: UnsafeMutablePointer<Int32>, dLogits: Tensor

    public struct ShapeMismatch: Error, CustomStringConvertible {
        public let description: String
    }

    /// `mean`/`std`: the input normalisation (nil: the training set's own, which needs it in
    /// memory — `ImageDataset.channelMeanStd`).
    public init(network: Network, train: any TrainingImages, test: any TrainingImages, config: BaseTrainingConfig,
                mean: [Float]? = nil, std: [Float]? = nil) throws {
        for data in [train, test] {
            let s = data.batchImageShape
            guard [s.channels, s.height, s.width] == network.inputShape, data.classCount == network.classCount else {
                throw ShapeMismatch(description: "\(data.name) has \(s.channels)×\(s.height)×\(s.width) images in \(data.classCount) classes; "
                                    + "\(network.family) expects \(network.inputShape.map(String.init).joined(separator: "×")) in \(network.classCount)")
            }
        }
        self.network = network
        self.train = train
        self.test = test
        self.config = config
        parameters = network.makeParameters()
        var rng = SeededRandom(config.seed, 0x1D17)
        parameters.initializeDefault(rng: &rng)
        let trainable = AdamW.trainableRanges(of: parameters)
        switch config.optimizer {
        case .adam:
            adam = AdamW(parameterCount: parameters.count, trainable: trainable, learningRate: config.learningRate, weightDecay: config.weightDecay)
        case let .sgd(momentum):
            sgd = SGD(parameterCount: parameters.count, trainable: trainable, learningRate: config.learningRate, momentum: momentum,
                      weightDecay: config.weightDecay)
        }
        if let mean, let std {
            (self.mean, self.std) = (mean, std)
        } else if let data = train as? ImageDataset {
            (self.mean, self.std) = data.channelMeanStd()
        } else {
            throw ShapeMismatch(description: "\(train.name): streamed data needs its input mean and std given")
        }
        batchImages = Tensor(zeros: [config.batchSize] + network.inputShape)
        batchLabels = .allocate(capacity: max(config.batchSize, 1000))
        dLogits = Tensor(zeros: [config.batchSize, network.classCount])
    }

    deinit { batchLabels.deallocate() }

    /// The augmentation seed of batch `step` of `epoch`.
    func augmentation(epoch: Int, step: Int) -> UInt64 {
        var rng = SeededRandom(config.seed, 0xA0, UInt64(epoch), UInt64(step))
        return rng.next()
    }

    /// Runs all epochs; `onEpoch` after each, `onStep` after every step (throttled by the
    /// caller). A streaming source is asked for its batches ahead of the step that needs them.
    public func run(onStep: (StepProgress) -> Void = { _ in }, onEpoch: (EpochReport) -> Void = { _ in }) throws -> EpochReport? {
        let start = Date()
        var last: EpochReport?
        var order: (epoch: Int, batches: [[Int]])?
        func batches(_ epoch: Int) -> [[Int]] {
            if order?.epoch != epoch {
                let indices = EpochOrder.indices(count: train.count, seed: config.seed, epoch: epoch)
                order = (epoch, EpochOrder.batches(indices, size: config.batchSize, dropLast: false).map(Array.init))
            }
            return order!.batches
        }
        let stepsPerEpoch = batches(0).count, totalSteps = stepsPerEpoch * config.epochs
        for epoch in 0..<config.epochs {
            let epochStart = Date()
            let epochBatches = batches(epoch)
            var lossSum = 0.0, correct = 0, seen = 0
            for (step, batch) in epochBatches.enumerated() {
                if train.prefetchDepth > 0, step % train.prefetchDepth == 0 {
                    let upcoming = (step..<min(step + train.prefetchDepth, epochBatches.count)).map { (epochBatches[$0], augmentation(epoch: epoch, step: $0)) }
                    train.prefetch(upcoming)
                }
                let lr = config.learningRate(step: epoch * stepsPerEpoch + step, of: totalSteps)
                let (loss, right) = try trainStep(batch, augmentation: augmentation(epoch: epoch, step: step), learningRate: lr)
                lossSum += loss * Double(batch.count); correct += right; seen += batch.count
                let elapsed = Date().timeIntervalSince(epochStart)
                onStep(StepProgress(epoch: epoch + 1, step: step + 1, steps: epochBatches.count, loss: lossSum / Double(seen),
                                    elapsed: Date().timeIntervalSince(start), imagesPerSecond: Double(seen) / max(elapsed, 1e-9)))
            }
            let report = EpochReport(epoch: epoch + 1, epochs: config.epochs, trainLoss: lossSum / Double(seen),
                                     trainAccuracy: Double(correct) / Double(seen), testAccuracy: try evaluate(test),
                                     seconds: Date().timeIntervalSince(epochStart), elapsed: Date().timeIntervalSince(start))
            onEpoch(report)
            last = report
        }
        return last
    }

    /// One optimizer step on the given sample indices; returns (mean loss, correct predictions).
    public func trainStep(_ indices: [Int], augmentation: UInt64 = 0, learningRate: Float? = nil) throws -> (Double, Int) {
        let n = indices.count
        let x = batchImages.slice(from: 0, shape: [n] + network.inputShape)
        try train.fillBatch(indices: indices, augmentation: augmentation, mean: mean, std: std, images: x.data, labels: batchLabels)
        parameters.zeroGradients()
        let logits = network.forward(parameters, input: x, mode: .training)
        let dz = dLogits.slice(from: 0, shape: [n, network.classCount])
        let (loss, correct) = SoftmaxCrossEntropy.forwardBackward(logits: logits, labels: batchLabels, dLogits: dz)
        network.backward(parameters, input: x, dLogits: dz)
        if adam != nil {
            adam!.learningRate = learningRate ?? config.learningRate
            adam!.update(values: parameters.values, gradients: parameters.gradients)
        } else {
            sgd!.learningRate = learningRate ?? config.learningRate
            sgd!.update(values: parameters.values, gradients: parameters.gradients)
        }
        return (loss, correct)
    }

    /// Top-1 accuracy on a dataset, inference mode, in batches of the training batch size.
    public func evaluate(_ data: any TrainingImages) throws -> Double {
        try Self.accuracy(network: network, parameters: parameters, data: data, mean: mean, std: std,
                          batchImages: batchImages, labels: batchLabels)
    }

    /// Top-1 accuracy of `network` with `parameters` on `data` (shared by evaluation tools;
    /// a streamed folder is read with its own, evaluation, transform).
    public static func accuracy(network: Network, parameters: ParameterSet, data: any TrainingImages, mean: [Float], std: [Float],
                                batchImages: Tensor? = nil, labels: UnsafeMutablePointer<Int32>? = nil) throws -> Double {
        let batch = batchImages?.shape[0] ?? 256
        let images = batchImages ?? Tensor(zeros: [batch] + network.inputShape)
        let labelBuffer = labels ?? .allocate(capacity: batch)
        defer { if labels == nil { labelBuffer.deallocate() } }
        var correct = 0
        for start in stride(from: 0, to: data.count, by: batch) {
            let n = min(batch, data.count - start)
            let x = images.slice(from: 0, shape: [n] + network.inputShape)
            try data.fillBatch(indices: Array(start..<(start + n)), augmentation: 0, mean: mean, std: std, images: x.data, labels: labelBuffer)
            let logits = network.forward(parameters, input: x, mode: .inference)
            correct += SoftmaxCrossEntropy.forwardBackward(logits: logits, labels: labelBuffer, dLogits: nil).correct
        }
        return Double(correct) / Double(max(data.count, 1))
    }
}
