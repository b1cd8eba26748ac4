import CJPEG
import CPNG
import Foundation

/// Why an image could not be encoded.
public struct ImageEncodingError: Error, CustomStringConvertible, Equatable, Sendable {
    /// `"PNG"` or `"JPEG"`.
    public let format: String
    public let reason: String

    public var description: String { "cannot encode \(format): \(reason)" }
}

/// Encodes `RGBImage`s as PNG or JPEG files in memory, the inverse of `ImageDecoding`.
///
/// Both encoders write 8-bit RGB. Pixels survive `png` exactly; `jpeg` is lossy.
public enum ImageEncoding {
    /// Largest width or height libjpeg accepts (`JPEG_MAX_DIMENSION`).
    public static let maxJPEGDimension = 65_500

    /// An 8-bit RGB PNG of `image`, written by libpng's simplified API at zlib's default
    /// compression. libpng reports every failure by return value (its `longjmp` stays inside
    /// libpng), thrown here as `ImageEncodingError`.
    public static func png(_ image: RGBImage) throws -> [UInt8] {
        var header = png_image()
        header.version = UInt32(PNG_IMAGE_VERSION)
        header.width = UInt32(image.width)
        header.height = UInt32(image.height)
        header.format = UInt32(PNG_FORMAT_RGB)
        defer { png_image_free(&header) }
        // One compression into a buffer of libpng's worst-case size (PNG_IMAGE_PNG_SIZE_MAX,
        // a macro Swift cannot import); should that bound ever be short, libpng reports the
        // size it needs and the image is written again.
        let data = image.height * (image.width * 3 + 1)
        let compressed = data + (data + 7) / 8 + (data + 63) / 64 + 11
        var capacity = 8 + 25 + 16 + 44 + 12 + 12 * (compressed / 8192 + 2) + compressed
        for _ in 0 ..< 2 {
            var encoded = [UInt8](repeating: 0, count: capacity)
            var size = capacity
            let written = encoded.withUnsafeMutableBytes { memory in
                image.pixels.withUnsafeBytes { png_image_write_to_memory(&header, memory.baseAddress, &size, 0, $0.baseAddress, 0, nil) }
            }
            if written != 0 {
                encoded.removeLast(encoded.count - size)
                return encoded
            }
            guard size > capacity else { break }
            capacity = size
            header.warning_or_error = 0
            header.message = png_image().message
        }
        throw ImageEncodingError(format: "PNG", reason: message(of: header))
    }

    /// A baseline JPEG of `image` at `quality` (1…100, as libjpeg's `jpeg_set_quality`), with
    /// libjpeg's other defaults: YCbCr, 4:2:0 chroma subsampling, standard Huffman tables (as
    /// PIL's `save(…, quality=q)`).
    ///
    /// Everything libjpeg could reject (dimensions, quality) is checked first and thrown as
    /// `ImageEncodingError`; libjpeg's fatal handler, which exits the process, remains only
    /// for a failed allocation.
    public static func jpeg(_ image: RGBImage, quality: Int = 95) throws -> [UInt8] {
        guard (1 ... 100).contains(quality) else {
            throw ImageEncodingError(format: "JPEG", reason: "quality \(quality) is outside 1…100")
        }
        guard image.width <= maxJPEGDimension, image.height <= maxJPEGDimension else {
            throw ImageEncodingError(format: "JPEG", reason: "\(image.width)×\(image.height) exceeds "
                                         + "\(maxJPEGDimension) pixels per side")
        }
        // libjpeg keeps pointers to the error manager and the output buffer and size across
        // calls, so they live in allocated memory rather than in Swift variables.
        let compressor = UnsafeMutablePointer<jpeg_compress_struct>.allocate(capacity: 1)
        compressor.initialize(to: jpeg_compress_struct())
        let errors = UnsafeMutablePointer<jpeg_error_mgr>.allocate(capacity: 1)
        errors.initialize(to: jpeg_error_mgr())
        let buffer = UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>.allocate(capacity: 1)
        buffer.initialize(to: nil)
        let size = UnsafeMutablePointer<UInt>.allocate(capacity: 1)
        size.initialize(to: 0)
        defer {
            free(buffer.pointee)
            compressor.deallocate()
            errors.deallocate()
            buffer.deallocate()
            size.deallocate()
        }
        compressor.pointee.err = jpeg_std_error(errors)
        jpeg_CreateCompress(compressor, JPEG_LIB_VERSION, MemoryLayout<jpeg_compress_struct>.size)
        defer { jpeg_destroy_compress(compressor) }
        jpeg_mem_dest(compressor, buffer, size)
        compressor.pointee.image_width = JDIMENSION(image.width)
        compressor.pointee.image_height = JDIMENSION(image.height)
        compressor.pointee.input_components = 3
        compressor.pointee.in_color_space = JCS_RGB
        jpeg_set_defaults(compressor)
        jpeg_set_quality(compressor, Int32(quality), 1)
        jpeg_start_compress(compressor, 1)
        let rowBytes = image.width * 3
        image.pixels.withUnsafeBufferPointer { pixels in
            while compressor.pointee.next_scanline < compressor.pointee.image_height {
                let start = pixels.baseAddress! + Int(compressor.pointee.next_scanline) * rowBytes
                var row: JSAMPROW? = UnsafeMutablePointer(mutating: start)
                _ = jpeg_write_scanlines(compressor, &row, 1)
            }
        }
        jpeg_finish_compress(compressor)
        guard let output = buffer.pointee, size.pointee > 0 else {
            throw ImageEncodingError(format: "JPEG", reason: "libjpeg wrote no data")
        }
        return Array(UnsafeBufferPointer(start: output, count: Int(size.pointee)))
    }

    private static func message(of image: png_image) -> String {
        let text = withUnsafeBytes(of: image.message) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
        return text.isEmpty ? "libpng reported an error without a message" : text
    }
}
