/// A decoded 8-bit colour image.
///
/// `pixels` is `[height, width, 3]` (rows top to bottom, then red, green, blue per pixel),
/// the interleaved layout decoders produce; `normalize` converts to planar `Float`.
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    /// `[height, width, 3]` bytes.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width > 0 && height > 0, "empty image \(width)×\(height)")
        precondition(pixels.count == width * height * 3, "\(pixels.count) bytes for a \(width)×\(height) RGB image")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// A grey image as RGB: each of the `width × height` bytes of `grey` (rows top to
    /// bottom) becomes a pixel with three equal channels.
    public init(grey: some Collection<UInt8>, width: Int, height: Int) {
        precondition(grey.count == width * height, "\(grey.count) bytes for a \(width)×\(height) grey image")
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for (index, value) in grey.enumerated() {
            pixels[3 * index] = value
            pixels[3 * index + 1] = value
            pixels[3 * index + 2] = value
        }
        self.init(width: width, height: height, pixels: pixels)
    }

    /// The red, green and blue values at column `x`, row `y`.
    public subscript(x: Int, y: Int) -> (r: UInt8, g: UInt8, b: UInt8) {
        let base = (y * width + x) * 3
        return (pixels[base], pixels[base + 1], pixels[base + 2])
    }
}
