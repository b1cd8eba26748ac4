import Foundation

/// Settings of one base-network training run (one process).
public struct BaseTrainingConfig: Sendable {
    public var epochs = 5
    public var batchSize = 128
    public var learningRate: Float = 1e-3
    public var weightDecay: Float = 0
    public var seed: UInt64 = 0
    public init() {}
}

/// What one epoch did.
public struct EpochReport: Sendable {
    public let epoch: Int, epochs: Int
    public let trainLoss: Double, trainAccuracy: Double, testAccuracy: Double
    public let seconds: Double, elapsed: Double
}

/// Progress inside an epoch, reported a few times a second at most.
public struct StepProgress: Sendable {
    public let epoch: Int, step: Int, steps: Int
    public let loss: Double
    public let elapsed: Double
}

/// Trains one network with Adam(W) and softmax cross-entropy on an in-memory image dataset,
/// inputs standardised with the training set's per-channel mean and std.
///
/// Every buffer (batch, logits, their gradient, optimizer moments, network activations) is
/// allocated before the first step; the step itself allocates nothing.
public final class BaseTrainer {
    public let network: Network
    public let parameters: ParameterSet
    public let config: BaseTrainingConfig
    public let mean: [Float], std: [Float]
    private let train: ImageDataset, test: ImageDataset
    private var optimizer: AdamW
    private let batchImages: Tensor, batchLabels: UnsafeMutablePointer<Int32>, dLogits: Tensor

    public struct ShapeMismatch: Error, CustomStringConvertible {
        public let description: String
    }

    public init(network: Network, train: ImageDataset, test: ImageDataset, config: BaseTrainingConfig) throws {
        for data in [train, test] where [data.channels, data.height, data.width] != network.inputShape || data.classCount != network.classCount {
            throw ShapeMismatch(description: "\(data.name) has \(data.channels)×\(data.height)×\(data.width) images in \(data.classCount) classes; "
                                + "\(network.family) expects \(network.inputShape.map(String.init).joined(separator: "×")) in \(network.classCount)")
        }
        self.network = network
        self.train = train
        self.test = test
        self.config = config
        parameters = network.makeParameters()
        var rng = SeededRandom(config.seed, 0x1D17)
        parameters.initializeDefault(rng: &rng)
        optimizer = AdamW(parameterCount: parameters.count, trainable: AdamW.trainableRanges(of: parameters),
                          learningRate: config.learningRate, weightDecay: config.weightDecay)
        (mean, std) = train.channelMeanStd()
        batchImages = Tensor(zeros: [config.batchSize] + network.inputShape)
        batchLabels = .allocate(capacity: max(config.batchSize, 1000))
        dLogits = Tensor(zeros: [config.batchSize, network.classCount])
    }

    deinit { batchLabels.deallocate() }

    /// Runs all epochs; `onEpoch` after each, `onStep` during each (throttled by the caller).
    public func run(onStep: (StepProgress) -> Void = { _ in }, onEpoch: (EpochReport) -> Void = { _ in }) -> EpochReport? {
        let start = Date()
        var last: EpochReport?
        for epoch in 0..<config.epochs {
            let epochStart = Date()
            let order = EpochOrder.indices(count: train.count, seed: config.seed, epoch: epoch)
            let batches = EpochOrder.batches(order, size: config.batchSize, dropLast: false)
            var lossSum = 0.0, correct = 0, seen = 0
            for (step, batch) in batches.enumerated() {
                let (loss, right) = trainStep(batch)
                lossSum += loss * Double(batch.count); correct += right; seen += batch.count
                onStep(StepProgress(epoch: epoch + 1, step: step + 1, steps: batches.count, loss: lossSum / Double(seen),
                                    elapsed: Date().timeIntervalSince(start)))
            }
            let report = EpochReport(epoch: epoch + 1, epochs: config.epochs, trainLoss: lossSum / Double(seen),
                                     trainAccuracy: Double(correct) / Double(seen), testAccuracy: evaluate(test),
                                     seconds: Date().timeIntervalSince(epochStart), elapsed: Date().timeIntervalSince(start))
            onEpoch(report)
            last = report
        }
        return last
    }

    /// One optimizer step on the given sample indices; returns (mean loss, correct predictions).
    public func trainStep(_ indices: ArraySlice<Int>) -> (Double, Int) {
        let n = indices.count
        let x = batchImages.slice(from: 0, shape: [n] + network.inputShape)
        train.fillBatch(indices: indices, mean: mean, std: std, images: x.data, labels: batchLabels)
        parameters.zeroGradients()
        let logits = network.forward(parameters, input: x, mode: .training)
        let dz = dLogits.slice(from: 0, shape: [n, network.classCount])
        let (loss, correct) = SoftmaxCrossEntropy.forwardBackward(logits: logits, labels: batchLabels, dLogits: dz)
        network.backward(parameters, input: x, dLogits: dz)
        optimizer.update(values: parameters.values, gradients: parameters.gradients)
        return (loss, correct)
    }

    /// Top-1 accuracy on a dataset, inference mode, in batches of the training batch size.
    public func evaluate(_ data: ImageDataset) -> Double {
        Self.accuracy(network: network, parameters: parameters, data: data, mean: mean, std: std,
                      batchImages: batchImages, labels: batchLabels)
    }

    /// Top-1 accuracy of `network` with `parameters` on `data` (shared by evaluation tools).
    public static func accuracy(network: Network, parameters: ParameterSet, data: ImageDataset, mean: [Float], std: [Float],
                                batchImages: Tensor? = nil, labels: UnsafeMutablePointer<Int32>? = nil) -> Double {
        let batch = batchImages?.shape[0] ?? 256
        let images = batchImages ?? Tensor(zeros: [batch] + network.inputShape)
        let labelBuffer = labels ?? .allocate(capacity: batch)
        defer { if labels == nil { labelBuffer.deallocate() } }
        var correct = 0
        for start in stride(from: 0, to: data.count, by: batch) {
            let n = min(batch, data.count - start)
            let x = images.slice(from: 0, shape: [n] + network.inputShape)
            data.fillBatch(indices: start..<(start + n), mean: mean, std: std, images: x.data, labels: labelBuffer)
            let logits = network.forward(parameters, input: x, mode: .inference)
            correct += SoftmaxCrossEntropy.forwardBackward(logits: logits, labels: labelBuffer, dLogits: nil).correct
        }
        return Double(correct) / Double(max(data.count, 1))
    }
}
