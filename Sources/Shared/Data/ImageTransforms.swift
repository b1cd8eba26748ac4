import Foundation

/// A rectangle of an image in pixels; it may reach outside the image (see `RGBImage.cropped`).
public struct CropRegion: Sendable, Equatable {
    public var x: Int
    public var y: Int
    public var width: Int
    public var height: Int

    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }
}

/// The augmentation and evaluation pipelines of ImageNet-style training, following
/// torchvision's semantics. Randomness comes only from the `SeededRandom` passed in, so a
/// transformed image is a pure function of the image, the size and the generator state.
public enum ImageTransform: Sendable {
    /// `RandomResizedCrop(size)` (scale 0.08…1, ratio 3/4…4/3) then `RandomHorizontalFlip(0.5)`.
    case train
    /// `Resize(round(size / 0.875))` (shorter side; 256 for 224) then `CenterCrop(size)`.
    case eval

    /// `image` transformed to `size × size`.
    public func apply(to image: RGBImage, size: Int, rng: inout SeededRandom) -> RGBImage {
        switch self {
        case .train:
            let region = RandomResizedCrop().region(width: image.width, height: image.height, rng: &rng)
            let crop = image.resampled(region, width: size, height: size)
            return rng.uniform() < 0.5 ? crop.flippedHorizontally() : crop
        case .eval:
            let shorter = Int((Double(size) / 0.875).rounded())
            return image.resized(shorterSide: shorter).centerCropped(width: size, height: size)
        }
    }
}

/// torchvision's `RandomResizedCrop` parameters: a region covering a random fraction `scale`
/// of the area with a log-uniform aspect ratio in `ratio`; after 10 failed attempts to fit
/// one, the largest centred region whose ratio is clamped into `ratio`.
public struct RandomResizedCrop: Sendable {
    public var scale: ClosedRange<Double>
    public var ratio: ClosedRange<Double>

    public init(scale: ClosedRange<Double> = 0.08 ... 1, ratio: ClosedRange<Double> = 0.75 ... 4.0 / 3.0) {
        self.scale = scale
        self.ratio = ratio
    }

    /// The crop for an image of `width × height`, drawing from `rng`.
    public func region(width: Int, height: Int, rng: inout SeededRandom) -> CropRegion {
        let area = Double(width * height)
        let logRatio = (log(ratio.lowerBound), log(ratio.upperBound))
        for _ in 0 ..< 10 {
            let targetArea = area * (scale.lowerBound + (scale.upperBound - scale.lowerBound) * Double(rng.uniform()))
            let aspect = exp(logRatio.0 + (logRatio.1 - logRatio.0) * Double(rng.uniform()))
            let w = Int((targetArea * aspect).squareRoot().rounded(.toNearestOrEven))
            let h = Int((targetArea / aspect).squareRoot().rounded(.toNearestOrEven))
            if w > 0, w <= width, h > 0, h <= height {
                let y = rng.index(below: height - h + 1)
                let x = rng.index(below: width - w + 1)
                return CropRegion(x: x, y: y, width: w, height: h)
            }
        }
        let inputRatio = Double(width) / Double(height)
        var w = width, h = height
        if inputRatio < ratio.lowerBound {
            h = Int((Double(w) / ratio.lowerBound).rounded(.toNearestOrEven))
        } else if inputRatio > ratio.upperBound {
            w = Int((Double(h) * ratio.upperBound).rounded(.toNearestOrEven))
        }
        return CropRegion(x: (width - w) / 2, y: (height - h) / 2, width: w, height: h)
    }
}

extension RGBImage {
    /// Resized (see `resampled`) so that the shorter side is `size` and the longer
    /// `Int(size · long / short)`, as torchvision's `Resize(size)`.
    public func resized(shorterSide size: Int) -> RGBImage {
        let short = min(width, height), long = max(width, height)
        let newLong = Int(Double(size) * Double(long) / Double(short))
        return width <= height
            ? resampled(CropRegion(x: 0, y: 0, width: width, height: height), width: size, height: newLong)
            : resampled(CropRegion(x: 0, y: 0, width: width, height: height), width: newLong, height: size)
    }

    /// The whole image resampled (see `resampled`) to `width × height`, ignoring the aspect
    /// ratio, like PIL's `Image.resize((width, height), BILINEAR)`.
    public func resized(width newWidth: Int, height newHeight: Int) -> RGBImage {
        resampled(CropRegion(x: 0, y: 0, width: width, height: height), width: newWidth, height: newHeight)
    }

    /// The `width × height` centre of the image, placed as torchvision's `CenterCrop`
    /// (offsets rounded half to even; zero padding where the image is smaller).
    public func centerCropped(width cropWidth: Int, height cropHeight: Int) -> RGBImage {
        func start(_ size: Int, _ crop: Int) -> Int {
            crop > size ? -((crop - size) / 2) : Int((Double(size - crop) / 2).rounded(.toNearestOrEven))
        }
        return cropped(CropRegion(x: start(width, cropWidth), y: start(height, cropHeight),
                                  width: cropWidth, height: cropHeight))
    }

    /// The pixels of `region`; parts of it outside the image are black.
    public func cropped(_ region: CropRegion) -> RGBImage {
        var output = [UInt8](repeating: 0, count: region.width * region.height * 3)
        let columns = max(0, region.x) ..< min(width, region.x + region.width)
        if !columns.isEmpty {
            for row in max(0, region.y) ..< min(height, region.y + region.height) {
                let source = (row * width + columns.lowerBound) * 3
                let target = ((row - region.y) * region.width + columns.lowerBound - region.x) * 3
                output[target ..< target + columns.count * 3] = pixels[source ..< source + columns.count * 3]
            }
        }
        return RGBImage(width: region.width, height: region.height, pixels: output)
    }

    /// The mirror image (columns reversed).
    public func flippedHorizontally() -> RGBImage {
        var output = pixels
        for row in 0 ..< height {
            for column in 0 ..< width {
                let source = (row * width + column) * 3, target = (row * width + width - 1 - column) * 3
                output[target] = pixels[source]
                output[target + 1] = pixels[source + 1]
                output[target + 2] = pixels[source + 2]
            }
        }
        return RGBImage(width: width, height: height, pixels: output)
    }

    /// `region` (inside the image) resampled to `width × height` with PIL's antialiased
    /// bilinear filter: a triangle kernel widened by the reduction factor when shrinking, so
    /// downscaling averages rather than aliases; pixels centred at half-integers; taps may
    /// read just outside `region` but never outside the image. The intermediate pass stays in
    /// `Float`, so results can differ from PIL's (which rounds between passes) by one level.
    public func resampled(_ region: CropRegion, width outputWidth: Int, height outputHeight: Int) -> RGBImage {
        precondition(region.x >= 0 && region.y >= 0 && region.width > 0 && region.height > 0
                     && region.x + region.width <= width && region.y + region.height <= height,
                     "region \(region) outside a \(width)×\(height) image")
        let horizontal = ResampleTaps(inputSize: width, start: region.x, extent: region.width, outputSize: outputWidth)
        let vertical = ResampleTaps(inputSize: height, start: region.y, extent: region.height, outputSize: outputHeight)
        let rows = vertical.inputRange
        // Horizontal pass over the rows the vertical taps read: [rows, outputWidth, 3].
        let stripeRow = outputWidth * 3
        var stripe = [Float](repeating: 0, count: rows.count * stripeRow)
        stripe.withUnsafeMutableBufferPointer { stripe in
            pixels.withUnsafeBufferPointer { pixels in
                for row in rows {
                    let source = pixels.baseAddress! + row * width * 3
                    let target = stripe.baseAddress! + (row - rows.lowerBound) * stripeRow
                    for x in 0 ..< outputWidth {
                        var r: Float = 0, g: Float = 0, b: Float = 0
                        let weights = horizontal.weights(x)
                        var p = source + horizontal.first[x] * 3
                        for weight in weights {
                            r += weight * Float(p[0])
                            g += weight * Float(p[1])
                            b += weight * Float(p[2])
                            p += 3
                        }
                        target[x * 3] = r
                        target[x * 3 + 1] = g
                        target[x * 3 + 2] = b
                    }
                }
            }
        }
        // Vertical pass: each output row is a weighted sum of stripe rows, rounded to bytes.
        var output = [UInt8](repeating: 0, count: outputHeight * stripeRow)
        var sum = [Float](repeating: 0, count: stripeRow)
        output.withUnsafeMutableBufferPointer { output in
            stripe.withUnsafeBufferPointer { stripe in
                sum.withUnsafeMutableBufferPointer { sum in
                    for y in 0 ..< outputHeight {
                        sum.update(repeating: 0)
                        var row = stripe.baseAddress! + (vertical.first[y] - rows.lowerBound) * stripeRow
                        for weight in vertical.weights(y) {
                            for i in 0 ..< stripeRow { sum[i] += weight * row[i] }
                            row += stripeRow
                        }
                        let target = output.baseAddress! + y * stripeRow
                        for i in 0 ..< stripeRow { target[i] = UInt8(min(255, max(0, sum[i].rounded()))) }
                    }
                }
            }
        }
        return RGBImage(width: outputWidth, height: outputHeight, pixels: output)
    }

    /// Writes `(pixel / 255 - mean[c]) / std[c]` into `output` as `[3, height, width]`.
    public func normalize(mean: [Float], std: [Float], into output: UnsafeMutablePointer<Float>) {
        precondition(mean.count == 3 && std.count == 3, "RGB normalisation needs 3 means and standard deviations")
        let plane = width * height
        for channel in 0 ..< 3 {
            let shift = mean[channel], scale = 1 / std[channel]
            let target = output + channel * plane
            for p in 0 ..< plane { target[p] = (Float(pixels[3 * p + channel]) / 255 - shift) * scale }
        }
    }
}

/// The bilinear filter taps of one axis of a resampling (PIL's `precompute_coeffs`):
/// output `i` reads inputs `first[i] ..< first[i] + counts[i]` with `weights(i)`, which
/// sum to 1.
private struct ResampleTaps {
    let first: [Int]
    private let counts: [Int]
    private let weights: [Float]
    private let stride: Int
    /// Input indices read by any output.
    let inputRange: Range<Int>

    init(inputSize: Int, start: Int, extent: Int, outputSize: Int) {
        let scale = Double(extent) / Double(outputSize)
        let filterScale = max(scale, 1)
        let support = filterScale
        stride = Int(support.rounded(.up)) * 2 + 1
        var first = [Int](repeating: 0, count: outputSize)
        var counts = [Int](repeating: 0, count: outputSize)
        var weights = [Float](repeating: 0, count: outputSize * stride)
        for output in 0 ..< outputSize {
            let center = Double(start) + (Double(output) + 0.5) * scale
            let low = max(Int(center - support + 0.5), 0)
            let high = min(Int(center + support + 0.5), inputSize)
            let taps = (low ..< high).map { max(0, 1 - abs((Double($0) - center + 0.5) / filterScale)) }
            let total = taps.reduce(0, +)
            for (i, tap) in taps.enumerated() { weights[output * stride + i] = Float(tap / total) }
            first[output] = low
            counts[output] = taps.count
        }
        self.first = first
        self.counts = counts
        self.weights = weights
        inputRange = first.min()! ..< zip(first, counts).map(+).max()!
    }

    /// The weights of output `index`, for inputs `first[index]` onwards.
    func weights(_ index: Int) -> ArraySlice<Float> {
        weights[index * stride ..< index * stride + counts[index]]
    }
}
