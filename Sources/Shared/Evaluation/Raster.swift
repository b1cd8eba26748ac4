import CPNG

/// An 8-bit sRGB colour.
struct RGB: Hashable {
    var r: UInt8, g: UInt8, b: UInt8
    init(_ r: UInt8, _ g: UInt8, _ b: UInt8) { self.r = r; self.g = g; self.b = b }

    static let white = RGB(255, 255, 255)
}

/// Plot-marker outlines.
enum MarkerShape: CaseIterable { case circle, square, triangle, diamond }

/// An RGB drawing surface for charts, supersampled for smooth edges.
///
/// Coordinates are in output pixels; pixel (i, j) covers [i, i+1) × [j, j+1), y pointing down.
/// Shapes are drawn at `scale`× resolution and averaged down when written, so slanted lines and
/// round markers are anti-aliased while axis-aligned shapes on whole pixels stay crisp and keep
/// their exact colour.
struct Raster {
    let width: Int, height: Int
    let scale: Int
    /// Supersampled RGB triples, row-major, (width·scale) × (height·scale).
    private var samples: [UInt8]

    init(width: Int, height: Int, scale: Int = 3, background: RGB = .white) {
        precondition(width > 0 && height > 0 && scale > 0, "bad raster \(width)×\(height) at scale \(scale)")
        self.width = width; self.height = height; self.scale = scale
        samples = [UInt8](repeating: 0, count: width * height * scale * scale * 3)
        for i in stride(from: 0, to: samples.count, by: 3) {
            samples[i] = background.r; samples[i + 1] = background.g; samples[i + 2] = background.b
        }
    }

    /// Paints every sample whose centre lies in the box x0 ≤ x < x1, y0 ≤ y < y1 (output pixels)
    /// and satisfies `inside`.
    private mutating func fill(x0: Double, y0: Double, x1: Double, y1: Double, _ color: RGB,
                               inside: (Double, Double) -> Bool = { _, _ in true }) {
        let s = Double(scale), rowLength = width * scale
        let sx0 = max(0, Int((x0 * s - 0.5).rounded(.up))), sx1 = min(rowLength, Int((x1 * s - 0.5).rounded(.up)))
        let sy0 = max(0, Int((y0 * s - 0.5).rounded(.up))), sy1 = min(height * scale, Int((y1 * s - 0.5).rounded(.up)))
        guard sx0 < sx1, sy0 < sy1 else { return }
        for sy in sy0..<sy1 {
            let y = (Double(sy) + 0.5) / s
            for sx in sx0..<sx1 where inside((Double(sx) + 0.5) / s, y) {
                let i = 3 * (sy * rowLength + sx)
                samples[i] = color.r; samples[i + 1] = color.g; samples[i + 2] = color.b
            }
        }
    }

    /// An axis-aligned rectangle; on whole-pixel coordinates it covers exactly those pixels.
    mutating func fillRect(x: Double, y: Double, width w: Double, height h: Double, _ color: RGB) {
        fill(x0: x, y0: y, x1: x + w, y1: y + h, color)
    }

    /// A straight stroke of the given width with round ends, from a to b.
    mutating func line(from a: (x: Double, y: Double), to b: (x: Double, y: Double), width w: Double, _ color: RGB) {
        let r = w / 2, dx = b.x - a.x, dy = b.y - a.y, length2 = dx * dx + dy * dy
        fill(x0: min(a.x, b.x) - r, y0: min(a.y, b.y) - r, x1: max(a.x, b.x) + r, y1: max(a.y, b.y) + r, color) { x, y in
            let t = length2 > 0 ? min(1, max(0, ((x - a.x) * dx + (y - a.y) * dy) / length2)) : 0
            let ex = x - (a.x + t * dx), ey = y - (a.y + t * dy)
            return ex * ex + ey * ey <= r * r
        }
    }

    /// A filled marker of the given shape centred on c, fitting a circle of radius r.
    mutating func marker(_ shape: MarkerShape, at c: (x: Double, y: Double), radius r: Double, _ color: RGB) {
        fill(x0: c.x - r, y0: c.y - r, x1: c.x + r, y1: c.y + r, color) { x, y in
            let u = x - c.x, v = y - c.y
            switch shape {
            case .circle: return u * u + v * v <= r * r
            case .square: return max(abs(u), abs(v)) <= r * 0.82
            case .diamond: return abs(u) + abs(v) <= r
            case .triangle: return v <= r * 0.75 && 2 * abs(u) <= (v + r) * 1.05
            }
        }
    }

    /// `text` in the bitmap font, each font pixel `size` output pixels square, the top-left
    /// corner of its first glyph at (x, y); descenders reach below the glyph height. Vertical
    /// text is turned a quarter counter-clockwise, reading upwards, with (x, y) the top-left
    /// corner of its bounding box without descenders.
    mutating func text(_ text: String, x: Int, y: Int, size: Int, _ color: RGB, vertical: Bool = false) {
        let length = BitmapFont.width(of: text)
        for (k, c) in text.enumerated() {
            for (row, bits) in BitmapFont.rows(c).enumerated() {
                for column in 0..<BitmapFont.glyphWidth where bits & (0x10 >> column) != 0 {
                    let u = k * BitmapFont.advance + column
                    let (px, py) = vertical ? (x + row * size, y + (length - 1 - u) * size) : (x + u * size, y + row * size)
                    fillRect(x: Double(px), y: Double(py), width: Double(size), height: Double(size), color)
                }
            }
        }
    }

    /// The output image: each pixel the mean of its scale × scale samples, RGB row-major.
    func pixels() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: width * height * 3)
        let rowLength = width * scale, area = scale * scale
        for y in 0..<height {
            for x in 0..<width {
                var sum = (0, 0, 0)
                for sy in y * scale..<(y + 1) * scale {
                    for sx in x * scale..<(x + 1) * scale {
                        let i = 3 * (sy * rowLength + sx)
                        sum.0 += Int(samples[i]); sum.1 += Int(samples[i + 1]); sum.2 += Int(samples[i + 2])
                    }
                }
                let o = 3 * (y * width + x)
                out[o] = UInt8((sum.0 + area / 2) / area)
                out[o + 1] = UInt8((sum.1 + area / 2) / area)
                out[o + 2] = UInt8((sum.2 + area / 2) / area)
            }
        }
        return out
    }

    /// Writes the image as an 8-bit RGB PNG with libpng's simplified API; on failure returns
    /// libpng's message.
    func writePNG(to path: String) -> String? {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        image.width = UInt32(width)
        image.height = UInt32(height)
        image.format = UInt32(PNG_FORMAT_RGB)
        defer { png_image_free(&image) }
        let data = pixels()
        let written = data.withUnsafeBytes { png_image_write_to_file(&image, path, 0, $0.baseAddress, 0, nil) }
        guard written == 0 else { return nil }
        return withUnsafeBytes(of: image.message) { raw in
            let text = String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            return text.isEmpty ? "libpng could not write the file" : text
        }
    }
}
