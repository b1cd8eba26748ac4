import CPNG

extension ImageDecoding {
    /// Decodes a PNG with libpng's simplified API, which reports every error by return value
    /// (its `longjmp` stays inside libpng). Output is read as 8-bit RGBA and the alpha dropped,
    /// as `PIL.Image.convert("RGB")` does; greyscale and palette images expand to RGB.
    static func decodePNG(_ bytes: [UInt8], path: String) throws -> RGBImage {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        defer { png_image_free(&image) }
        let begun = bytes.withUnsafeBytes { png_image_begin_read_from_memory(&image, $0.baseAddress, $0.count) }
        guard begun != 0 else { throw DataError.corruptImage(path: path, reason: "PNG: \(message(of: image))") }
        let width = Int(image.width), height = Int(image.height)
        guard width > 0, height > 0, width * height <= maxPixels else {
            throw DataError.unsupportedImage(path: path,
                                             reason: "\(width)×\(height) pixels exceeds the limit of \(maxPixels)")
        }
        image.format = UInt32(PNG_FORMAT_FLAG_COLOR | PNG_FORMAT_FLAG_ALPHA)
        var rgba = [UInt8](repeating: 0, count: width * height * 4)
        let finished = rgba.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
        guard finished != 0 else { throw DataError.corruptImage(path: path, reason: "PNG: \(message(of: image))") }
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        rgb.withUnsafeMutableBufferPointer { output in
            rgba.withUnsafeBufferPointer { input in
                for pixel in 0 ..< width * height {
                    output[3 * pixel] = input[4 * pixel]
                    output[3 * pixel + 1] = input[4 * pixel + 1]
                    output[3 * pixel + 2] = input[4 * pixel + 2]
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: rgb)
    }

    private static func message(of image: png_image) -> String {
        withUnsafeBytes(of: image.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}
