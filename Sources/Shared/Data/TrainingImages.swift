import Foundation

/// Labelled images as training reads them: a batch of normalised `Float` images by index.
///
/// Two kinds stand behind it: data held in memory (`ImageDataset`: IDX, CIFAR binaries) and an
/// image folder streamed from disk (`StreamingImageFolder`: decoded on its own threads, a
/// bounded number of batches ahead). A batch is a pure function of its indices and its
/// augmentation seed — the same bits whoever fills it, however far ahead it was decoded —
/// which is what lets any number of workers compute identical gradients.
public protocol TrainingImages: Sendable {
    /// A short human-readable name, e.g. `"fashion-mnist-train"`.
    var name: String { get }
    var count: Int { get }
    var classCount: Int { get }
    /// Channels, height and width of every image of a batch.
    var batchImageShape: (channels: Int, height: Int, width: Int) { get }

    /// Writes the images at `indices`, normalised to `(pixel / 255 − mean[c]) / std[c]`, into
    /// `images` (`[indices.count, channels, height, width]`) and their labels into `labels`.
    /// `augmentation` seeds the random augmentation of a source that has one (sample k draws
    /// from a generator seeded by the k-th value of `SeededRandom(augmentation)`); a source
    /// without augmentation ignores it.
    func fillBatch(indices: [Int], augmentation: UInt64, mean: [Float], std: [Float],
                   images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) throws

    /// How many batches `prefetch` decodes ahead (0: it does nothing, the data is in memory).
    var prefetchDepth: Int { get }

    /// Says which batches will be asked for next, in this order (a streaming source decodes
    /// the first `prefetchDepth` of them ahead and forgets batches ahead that are no longer
    /// listed; an in-memory one ignores it).
    func prefetch(_ batches: [(indices: [Int], augmentation: UInt64)])
}

extension TrainingImages {
    public var prefetchDepth: Int { 0 }
    public func prefetch(_ batches: [(indices: [Int], augmentation: UInt64)]) {}
}

extension ImageDataset: TrainingImages {
    public var batchImageShape: (channels: Int, height: Int, width: Int) { (channels, height, width) }

    public func fillBatch(indices: [Int], augmentation: UInt64, mean: [Float], std: [Float],
                          images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) throws {
        fillBatch(indices: indices, mean: mean, std: std, images: images, labels: labels)
    }
}

/// An image folder (`ImageFolderDataset`) streamed from disk for training: each batch is
/// decoded, transformed to `size × size` and normalised on background threads, up to `depth`
/// batches ahead of the one being computed, so decoding never runs inside the compute step
/// when the caller prefetches. Memory holds at most `depth` decoded batches (plus the one being
/// filled and one being decoded that is no longer wanted), whatever the size of the folder.
///
/// A batch not prefetched (or `depth` 0) is decoded on the spot, with the same result: the
/// output depends only on (indices, augmentation seed).
public final class StreamingImageFolder: TrainingImages, @unchecked Sendable {
    public let folder: ImageFolderDataset
    public let transform: ImageTransform
    public let size: Int
    /// The normalisation the prefetched batches were made with (fixed per source).
    public let mean: [Float], std: [Float]
    /// Batches decoded ahead at most.
    public let depth: Int
    public var prefetchDepth: Int { depth }

    public var name: String { folder.directory }
    public var count: Int { folder.count }
    public var classCount: Int { folder.classNames.count }
    public var batchImageShape: (channels: Int, height: Int, width: Int) { (3, size, size) }

    private struct Key: Hashable { let indices: [Int]; let augmentation: UInt64 }
    private final class Batch: @unchecked Sendable {
        var images: [Float] = [], labels: [Int32] = []
        var error: Error?
        var done = false
        /// No longer wanted: not decoded if not started, not handed out if done.
        var cancelled = false
    }

    private let condition = NSCondition()
    /// Batches asked for ahead, in order, with their decoding state.
    private var ahead: [(key: Key, batch: Batch)] = []
    private let queue = DispatchQueue(label: "neumeta.prefetch", qos: .userInitiated)

    public init(folder: ImageFolderDataset, transform: ImageTransform, size: Int, mean: [Float], std: [Float], depth: Int) {
        precondition(size >= 1 && depth >= 0 && mean.count == 3 && std.count == 3, "streaming folder of size \(size), depth \(depth)")
        self.folder = folder; self.transform = transform; self.size = size; self.mean = mean; self.std = std; self.depth = depth
    }

    public func prefetch(_ batches: [(indices: [Int], augmentation: UInt64)]) {
        guard depth > 0 else { return }
        var wanted: [Key] = []
        for (indices, augmentation) in batches where wanted.count < depth {
            let key = Key(indices: indices, augmentation: augmentation)
            if !wanted.contains(key) { wanted.append(key) }
        }
        condition.lock()
        ahead.removeAll { entry in
            guard !wanted.contains(entry.key) else { return false }
            entry.batch.cancelled = true
            return true
        }
        var started: [(Key, Batch)] = []
        for key in wanted {
            guard !ahead.contains(where: { $0.key == key }) else { continue }
            let batch = Batch()
            ahead.append((key, batch))
            started.append((key, batch))
        }
        condition.unlock()
        for (key, batch) in started {
            queue.async { [self] in
                condition.lock()
                let skip = batch.cancelled
                if skip { batch.done = true; condition.broadcast() }
                condition.unlock()
                if skip { return }
                var images = [Float](repeating: 0, count: key.indices.count * 3 * size * size)
                var labels = [Int32](repeating: 0, count: key.indices.count)
                var failure: Error?
                do {
                    try images.withUnsafeMutableBufferPointer { x in
                        try labels.withUnsafeMutableBufferPointer { y in
                            try decode(key, images: x.baseAddress!, labels: y.baseAddress!)
                        }
                    }
                } catch { failure = error }
                condition.lock()
                batch.images = images; batch.labels = labels; batch.error = failure; batch.done = true
                condition.broadcast()
                condition.unlock()
            }
        }
    }

    public func fillBatch(indices: [Int], augmentation: UInt64, mean: [Float], std: [Float],
                          images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) throws {
        precondition(mean == self.mean && std == self.std, "a streaming folder normalises with the statistics it was made with")
        let key = Key(indices: indices, augmentation: augmentation)
        condition.lock()
        guard let slot = ahead.firstIndex(where: { $0.key == key }) else {
            condition.unlock()
            return try decode(key, images: images, labels: labels)
        }
        let batch = ahead[slot].batch
        while !batch.done { condition.wait() }
        ahead.removeAll { $0.batch === batch }
        let cancelled = batch.cancelled
        condition.unlock()
        // Forgotten by a `prefetch` on another thread while this one waited: decode it here.
        if cancelled { return try decode(key, images: images, labels: labels) }
        if let error = batch.error { throw error }
        batch.images.withUnsafeBufferPointer { images.update(from: $0.baseAddress!, count: $0.count) }
        batch.labels.withUnsafeBufferPointer { labels.update(from: $0.baseAddress!, count: $0.count) }
    }

    /// Decodes one batch (its images in parallel, each from its own seed).
    private func decode(_ key: Key, images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) throws {
        var rng = SeededRandom(key.augmentation)
        try folder.fillBatch(indices: key.indices, transform: transform, size: size, rng: &rng, mean: mean, std: std,
                             images: images, labels: labels)
    }

    /// Per-channel mean and standard deviation of `pixel / 255` over `sample` images of the
    /// folder (evenly spaced through the listing, evaluation transform at `size`), for input
    /// normalisation: the statistics of a large folder without reading all of it.
    public static func channelMeanStd(of folder: ImageFolderDataset, size: Int, sample: Int = 500) throws -> (mean: [Float], std: [Float]) {
        let n = min(sample, folder.count), step = Double(folder.count) / Double(max(n, 1))
        let indices = (0..<n).map { Int(Double($0) * step) }
        var images = [Float](repeating: 0, count: 3 * size * size * n), labels = [Int32](repeating: 0, count: n)
        try images.withUnsafeMutableBufferPointer { x in
            try labels.withUnsafeMutableBufferPointer { y in
                var rng = SeededRandom(0)
                try folder.fillBatch(indices: indices, transform: .eval, size: size, rng: &rng, mean: [0, 0, 0], std: [1, 1, 1],
                                     images: x.baseAddress!, labels: y.baseAddress!)
            }
        }
        var mean = [Float](repeating: 0, count: 3), std = [Float](repeating: 0, count: 3)
        let plane = size * size
        for c in 0..<3 {
            var sum = 0.0, squares = 0.0
            for i in 0..<n {
                let base = (i * 3 + c) * plane
                for p in 0..<plane { let v = Double(images[base + p]); sum += v; squares += v * v }
            }
            let count = Double(n * plane), m = sum / count
            mean[c] = Float(m)
            std[c] = Float(max(squares / count - m * m, 1e-12).squareRoot())
        }
        return (mean, std)
    }

    /// Batches decoded or being decoded ahead right now (for tests and progress figures).
    public var prefetched: Int {
        condition.lock(); defer { condition.unlock() }
        return ahead.count
    }
}
