/// Recomputes the running statistics of a network's batch-norm layers from training data — what
/// a sampled network needs before inference when its widths were never trained as such.
///
/// Over B mini-batches of the training set (a permutation drawn from `seed`, training-mode
/// forward passes), each layer's running mean becomes the average of its B batch means and its
/// running variance the average of its B unbiased batch variances: PyTorch's cumulative average
/// (`momentum=None`) after `reset_running_stats()`. A training-mode forward updates
/// r ← (1 − m)·r + m·s for the batch statistic s; starting every batch from r = 0 leaves m·s,
/// so s = r/m (to float rounding).
public enum BatchNormRecalibration {
    /// Batches `train` and `evaluate` recalibrate on unless told otherwise.
    public static let defaultBatches = 20

    /// Rewrites every running mean and variance of `parameters` (nothing when the network has no
    /// batch norm). Returns the number of batches used.
    @discardableResult
    public static func recalibrate(network: Network, parameters: ParameterSet, data: any TrainingImages, mean: [Float], std: [Float],
                                   batches: Int, batchSize: Int, seed: UInt64) throws -> Int {
        let statistics = parameters.specs.indices.filter { [.runningMean, .runningVar].contains(parameters.specs[$0].role) }
        guard !statistics.isEmpty, batches >= 1 else { return 0 }
        let n = min(batchSize, data.count), order = EpochOrder.indices(count: data.count, seed: seed, epoch: 0)
        let used = min(batches, max(1, data.count / n))
        let images = Tensor(zeros: [n] + network.inputShape)
        let labels = UnsafeMutablePointer<Int32>.allocate(capacity: n)
        defer { labels.deallocate() }
        let momentum = Double(BatchNorm2d(channels: 1).momentum)
        var sums = statistics.map { [Double](repeating: 0, count: parameters.specs[$0].count) }
        for b in 0..<used {
            for t in statistics { parameters.value(t).fill(0) }
            try data.fillBatch(indices: Array(order[(b * n)..<((b + 1) * n)]), augmentation: 0, mean: mean, std: std,
                               images: images.data, labels: labels)
            _ = network.forward(parameters, input: images, mode: .training)
            for (k, t) in statistics.enumerated() {
                let v = parameters.value(t)
                for i in 0..<v.count { sums[k][i] += Double(v.data[i]) / momentum }
            }
        }
        for (k, t) in statistics.enumerated() {
            let v = parameters.value(t)
            for i in 0..<v.count { v.data[i] = Float(sums[k][i] / Double(used)) }
        }
        return used
    }
}
