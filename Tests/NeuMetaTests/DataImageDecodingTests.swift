import CJPEG
import CPNG
import Foundation
import Testing
@testable import NeuMeta

/// Encoders for test images (libjpeg compression, libpng's simplified writer).
enum ImageTestFiles {
    /// A smooth `width × height` colour gradient: channel values vary slowly in x and y.
    static func gradient(width: Int, height: Int) -> RGBImage {
        var pixels: [UInt8] = []
        for y in 0 ..< height {
            for x in 0 ..< width {
                pixels += [UInt8(40 + 160 * x / max(1, width - 1)), UInt8(30 + 180 * y / max(1, height - 1)),
                           UInt8(200 - 60 * (x + y) / max(1, width + height - 2))]
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    /// JPEG bytes of `samples` (`[height, width, components]`) in `colorSpace`, with
    /// libjpeg's defaults (4:2:0 chroma for colour) at `quality`.
    static func jpeg(_ samples: [UInt8], width: Int, height: Int, components: Int, colorSpace: J_COLOR_SPACE,
                     quality: Int32 = 95, progressive: Bool = false) -> [UInt8] {
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
            for pointer in [UnsafeMutableRawPointer(compressor), UnsafeMutableRawPointer(errors),
                            UnsafeMutableRawPointer(buffer), UnsafeMutableRawPointer(size)] { pointer.deallocate() }
        }
        compressor.pointee.err = jpeg_std_error(errors)
        jpeg_CreateCompress(compressor, JPEG_LIB_VERSION, MemoryLayout<jpeg_compress_struct>.size)
        jpeg_mem_dest(compressor, buffer, size)
        compressor.pointee.image_width = JDIMENSION(width)
        compressor.pointee.image_height = JDIMENSION(height)
        compressor.pointee.input_components = Int32(components)
        compressor.pointee.in_color_space = colorSpace
        jpeg_set_defaults(compressor)
        jpeg_set_quality(compressor, quality, 1)
        if progressive { jpeg_simple_progression(compressor) }
        jpeg_start_compress(compressor, 1)
        var rows = samples
        rows.withUnsafeMutableBufferPointer { rows in
            while compressor.pointee.next_scanline < compressor.pointee.image_height {
                var row: JSAMPROW? = rows.baseAddress! + Int(compressor.pointee.next_scanline) * width * components
                _ = jpeg_write_scanlines(compressor, &row, 1)
            }
        }
        jpeg_finish_compress(compressor)
        jpeg_destroy_compress(compressor)
        return Array(UnsafeBufferPointer(start: buffer.pointee, count: Int(size.pointee)))
    }

    static func jpeg(_ image: RGBImage, quality: Int32 = 95, progressive: Bool = false) -> [UInt8] {
        jpeg(image.pixels, width: image.width, height: image.height, components: 3, colorSpace: JCS_RGB,
             quality: quality, progressive: progressive)
    }

    /// PNG bytes of `samples` (`[height, width, channels]`, 1 = grey, 3 = RGB, 4 = RGBA).
    static func png(_ samples: [UInt8], width: Int, height: Int, channels: Int) throws -> [UInt8] {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        image.width = UInt32(width)
        image.height = UInt32(height)
        image.format = [1: 0, 3: PNG_FORMAT_FLAG_COLOR, 4: PNG_FORMAT_FLAG_COLOR | PNG_FORMAT_FLAG_ALPHA][channels]!
        var size = 0
        #expect(samples.withUnsafeBytes { png_image_write_to_memory(&image, nil, &size, 0, $0.baseAddress, 0, nil) } != 0)
        var encoded = [UInt8](repeating: 0, count: size)
        let written = encoded.withUnsafeMutableBytes { memory in
            samples.withUnsafeBytes { png_image_write_to_memory(&image, memory.baseAddress, &size, 0, $0.baseAddress, 0, nil) }
        }
        #expect(written != 0)
        return Array(encoded.prefix(size))
    }

    static func png(_ image: RGBImage) throws -> [UInt8] {
        try png(image.pixels, width: image.width, height: image.height, channels: 3)
    }
}

@Suite struct DataImageDecodingTests {
    @Test func pngDecodesExactly() throws {
        let image = ImageTestFiles.gradient(width: 13, height: 7)
        #expect(try ImageDecoding.decode(ImageTestFiles.png(image), path: "gradient.png") == image)

        // Grey becomes grey RGB; alpha is dropped, not composited.
        let grey: [UInt8] = [0, 50, 100, 150, 200, 255]
        let fromGrey = try ImageDecoding.decode(ImageTestFiles.png(grey, width: 3, height: 2, channels: 1), path: "g.png")
        #expect(fromGrey.pixels == grey.flatMap { [$0, $0, $0] })
        let rgba: [UInt8] = [10, 20, 30, 0, 40, 50, 60, 128]
        let fromRGBA = try ImageDecoding.decode(ImageTestFiles.png(rgba, width: 2, height: 1, channels: 4), path: "a.png")
        #expect(fromRGBA.pixels == [10, 20, 30, 40, 50, 60])
    }

    /// Quality 95 with 4:2:0 chroma on a smooth gradient: every sample within 12 of the
    /// original (libjpeg-turbo gives a maximum error of a few units here).
    @Test(arguments: [false, true]) func jpegDecodesWithinTolerance(progressive: Bool) throws {
        let image = ImageTestFiles.gradient(width: 40, height: 24)
        let decoded = try ImageDecoding.decode(ImageTestFiles.jpeg(image, progressive: progressive), path: "g.jpg")
        #expect(decoded.width == 40 && decoded.height == 24)
        let worst = zip(decoded.pixels, image.pixels).map { abs(Int($0) - Int($1)) }.max()!
        #expect(worst <= 12)
    }

    @Test func greyAndCMYKJPEGsBecomeRGB() throws {
        let grey = (0 ..< 16 * 8).map { UInt8(60 + $0) }
        let fromGrey = try ImageDecoding.decode(
            ImageTestFiles.jpeg(grey, width: 16, height: 8, components: 1, colorSpace: JCS_GRAYSCALE), path: "grey.jpg")
        for (pixel, value) in grey.enumerated() {
            #expect(fromGrey.pixels[3 * pixel] == fromGrey.pixels[3 * pixel + 1])
            #expect(fromGrey.pixels[3 * pixel] == fromGrey.pixels[3 * pixel + 2])
            #expect(abs(Int(fromGrey.pixels[3 * pixel]) - Int(value)) <= 4)
        }
        // Adobe CMYK stores inverted inks: with K' = 255 (no black) the RGB is C', M', Y'.
        let rgb = ImageTestFiles.gradient(width: 16, height: 16)
        var cmyk: [UInt8] = []
        for pixel in 0 ..< 256 { cmyk += rgb.pixels[3 * pixel ..< 3 * pixel + 3] + [255] }
        let jpeg = ImageTestFiles.jpeg(cmyk, width: 16, height: 16, components: 4, colorSpace: JCS_CMYK)
        let fromCMYK = try ImageDecoding.decode(jpeg, path: "cmyk.jpg")
        #expect(zip(fromCMYK.pixels, rgb.pixels).allSatisfy { abs(Int($0) - Int($1)) <= 6 })
    }

    @Test func damagedAndForeignFilesAreErrorsNamingTheFile() throws {
        let image = ImageTestFiles.gradient(width: 32, height: 32)
        let jpeg = ImageTestFiles.jpeg(image), png = try ImageTestFiles.png(image)
        let cases: [(String, [UInt8])] = [
            ("half.jpg", Array(jpeg.prefix(jpeg.count / 2))),
            ("header-only.jpg", Array(jpeg.prefix(40))),
            ("no-eoi.jpg", Array(jpeg.dropLast(2))),
            ("half.png", Array(png.prefix(png.count / 2))),
            ("signature-only.png", Array(png.prefix(8))),
            ("text.jpg", Array("not an image at all".utf8)),
            ("empty.png", []),
        ]
        for (path, bytes) in cases {
            let error = try #require(throws: DataError.self) { try ImageDecoding.decode(bytes, path: path) }
            #expect(error.description.contains(path), "\(error)")
        }
        // Entropy-coded data overwritten in the middle: libjpeg's corrupt-data warnings fail it.
        var scrambled = jpeg
        var random = SeededRandom(5)
        let scanStart = jpeg.count - 400
        for offset in scanStart ..< scanStart + 200 { scrambled[offset] = UInt8(random.index(below: 255)) }
        let scrambleError = try #require(throws: DataError.self) { try ImageDecoding.decode(scrambled, path: "scrambled.jpg") }
        #expect(scrambleError.description.contains("scrambled.jpg"))
    }

    /// libjpeg's own fatal errors (reached here by skipping the structure check) end the
    /// decoding thread and come back as errors instead of ending the process.
    @Test func libjpegFatalErrorsAreContained() throws {
        let jpeg = ImageTestFiles.jpeg(ImageTestFiles.gradient(width: 16, height: 16))
        let sof = try #require((0 ..< jpeg.count - 1).first { jpeg[$0] == 0xFF && jpeg[$0 + 1] == 0xC0 })
        var twelveBit = jpeg
        twelveBit[sof + 4] = 12
        let cases: [(String, [UInt8])] = [
            ("twelve-bit.jpg", twelveBit), ("cut.jpg", Array(jpeg.prefix(sof + 6))), ("soi-only.jpg", [0xFF, 0xD8]),
        ]
        for (path, bytes) in cases {
            let error = try #require(throws: DataError.self) {
                try bytes.withUnsafeBufferPointer { try ImageDecoding.decompressJPEG($0, path: path) }
            }
            #expect(error.description.contains(path) && error.description.contains("JPEG: "), "\(error)")
            // The validating entry point refuses the same bytes before libjpeg sees them.
            #expect(throws: DataError.self) { try ImageDecoding.decode(bytes, path: path) }
        }
        #expect(try ImageDecoding.decode(jpeg, path: "intact.jpg").width == 16)
    }

    /// Random damage to baseline and progressive JPEGs never stops the process: each variant
    /// decodes or throws a `DataError` naming the file.
    @Test(arguments: [false, true]) func randomlyDamagedJPEGsNeverCrash(progressive: Bool) throws {
        let jpeg = ImageTestFiles.jpeg(ImageTestFiles.gradient(width: 24, height: 20), progressive: progressive)
        var random = SeededRandom(2024, progressive ? 1 : 0)
        var failures = 0
        for trial in 0 ..< 400 {
            var damaged = jpeg
            switch trial % 4 {
            case 0: // overwrite a few bytes anywhere after SOI
                for _ in 0 ... random.index(below: 4) {
                    damaged[2 + random.index(below: damaged.count - 2)] = UInt8(random.index(below: 256))
                }
            case 1: // cut the file short
                damaged = Array(damaged.prefix(2 + random.index(below: damaged.count - 2)))
            case 2: // delete a run of bytes
                let start = 2 + random.index(below: damaged.count - 2)
                damaged.removeSubrange(start ..< min(damaged.count, start + 1 + random.index(below: 16)))
            default: // flip one bit in the headers (the first 300 bytes)
                let offset = 2 + random.index(below: min(300, damaged.count - 2))
                damaged[offset] ^= UInt8(1 << random.index(below: 8))
            }
            do {
                let image = try ImageDecoding.decode(damaged, path: "fuzz-\(trial).jpg")
                #expect(image.pixels.count == image.width * image.height * 3)
            } catch let error as DataError {
                #expect(error.description.contains("fuzz-\(trial).jpg"))
                failures += 1
            }
        }
        #expect(failures > 100)
    }
}
