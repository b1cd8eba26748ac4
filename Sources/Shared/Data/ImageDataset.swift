/// A labelled image data set held in memory as raw bytes (MNIST, Fashion-MNIST, CIFAR).
///
/// `pixels` is laid out `[count, channels, height, width]` (one byte per sample, 0...255) and
/// `labels` is `[count]`, each in `0 ..< classCount`. Batches are produced as normalised
/// `Float` tensors in the same `[n, channels, height, width]` order.
public struct ImageDataset: Sendable {
    /// A short human-readable name, e.g. `"fashion-mnist-train"`.
    public let name: String
    public let count: Int
    public let channels: Int
    public let height: Int
    public let width: Int
    public let classCount: Int
    /// `[count, channels, height, width]` bytes.
    public let pixels: [UInt8]
    /// `[count]` labels in `0 ..< classCount`.
    public let labels: [Int32]

    /// A data set over `pixels` (`[labels.count, channels, height, width]`) and `labels`.
    /// Loaders validate their input before calling this; inconsistent arguments here are a
    /// programming error and trap.
    public init(name: String, channels: Int, height: Int, width: Int, classCount: Int,
                pixels: [UInt8], labels: [Int32]) {
        precondition(channels > 0 && height > 0 && width > 0 && classCount > 0, "empty image shape or no classes")
        precondition(pixels.count == labels.count * channels * height * width,
                     "\(pixels.count) pixels do not hold \(labels.count) images of \(channels)×\(height)×\(width)")
        precondition(labels.allSatisfy { $0 >= 0 && Int($0) < classCount }, "label outside 0..<\(classCount)")
        self.name = name
        self.count = labels.count
        self.channels = channels
        self.height = height
        self.width = width
        self.classCount = classCount
        self.pixels = pixels
        self.labels = labels
    }

    /// Bytes per image: `channels * height * width`.
    public var imageSize: Int { channels * height * width }

    /// How many images carry each label: `[classCount]`.
    public func classCounts() -> [Int] {
        var counts = [Int](repeating: 0, count: classCount)
        for label in labels { counts[Int(label)] += 1 }
        return counts
    }

    /// Per-channel mean and population standard deviation of `pixel / 255` over the whole
    /// set: two `[channels]` arrays. Each channel's values are counted into a histogram and the
    /// moments taken from it in `Double`, so the result does not depend on the order of the data.
    public func channelMeanStd() -> (mean: [Float], std: [Float]) {
        var histogram = [Int](repeating: 0, count: channels * 256)
        let plane = height * width
        histogram.withUnsafeMutableBufferPointer { bins in
            pixels.withUnsafeBufferPointer { source in
                for image in 0 ..< count {
                    for channel in 0 ..< channels {
                        let values = source.baseAddress! + (image * channels + channel) * plane
                        let channelBins = bins.baseAddress! + channel * 256
                        for p in 0 ..< plane { channelBins[Int(values[p])] += 1 }
                    }
                }
            }
        }
        let samples = Double(count * plane)
        var mean = [Float](repeating: 0, count: channels)
        var std = [Float](repeating: 0, count: channels)
        for channel in 0 ..< channels where samples > 0 {
            var sum = 0.0, squares = 0.0
            for value in 0 ..< 256 {
                let occurrences = Double(histogram[channel * 256 + value]), x = Double(value) / 255
                sum += occurrences * x
                squares += occurrences * x * x
            }
            let m = sum / samples
            mean[channel] = Float(m)
            std[channel] = Float(max(0, squares / samples - m * m).squareRoot())
        }
        return (mean, std)
    }

    /// Writes the images at `indices`, normalised to `(pixel / 255 - mean[c]) / std[c]`, into
    /// `images` (`[indices.count, channels, height, width]`) and their labels into `labels`
    /// (`[indices.count]`). Allocates nothing; both buffers must be large enough.
    public func fillBatch(indices: some Collection<Int>, mean: [Float], std: [Float],
                          images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) {
        precondition(mean.count == channels && std.count == channels,
                     "normalisation needs \(channels) means and standard deviations")
        let plane = height * width
        let size = imageSize
        pixels.withUnsafeBufferPointer { source in
            var output = images
            for (slot, index) in indices.enumerated() {
                precondition(index >= 0 && index < count, "image index \(index) outside 0..<\(count) in \(name)")
                labels[slot] = self.labels[index]
                var input = source.baseAddress! + index * size
                for channel in 0 ..< channels {
                    let shift = mean[channel]
                    let scale = 1 / std[channel]
                    for p in 0 ..< plane { output[p] = (Float(input[p]) / 255 - shift) * scale }
                    output += plane
                    input += plane
                }
            }
        }
    }
}
