import CJPEG
import Foundation

// How corrupt JPEGs are kept from stopping the process
// ----------------------------------------------------
// libjpeg reports a fatal error by calling `error_exit`, which must never return: the stock
// handler calls `exit()`, and C programs `longjmp` out of it. Swift can do neither safely,
// and a tiny C target is not an option here, so two layers are used instead:
//
// 1. `JPEGStructure` validates the whole marker structure first and rejects, with a
//    `DataError`, every file on which libjpeg-turbo would reach `error_exit` (truncation,
//    bad tables, unsupported modes, …). What remains for libjpeg are recoverable
//    warnings about damaged entropy-coded data; those that mean image data was lost
//    (premature end of data, bad Huffman codes, missing restart markers) make the decode
//    fail with `DataError.corruptImage` once libjpeg has finished.
// 2. Should `error_exit` be reached anyway, the decode is already running on a thread of its
//    own: the handler records libjpeg's message, releases the decompressor's memory and ends
//    that thread with `pthread_exit`, abandoning the libjpeg frames mid-call; the waiting
//    caller then throws. The decoding thread touches only the plain memory of a `JPEGJob`
//    (no reference-counted values), so abandoning its frames leaks nothing.

/// What a decoding thread and its caller share: plain memory only, owned by the caller.
private struct JPEGJob {
    var input: UnsafePointer<UInt8>
    var inputCount: Int
    var decompressor: UnsafeMutablePointer<jpeg_decompress_struct>
    var errorManager: UnsafeMutablePointer<jpeg_error_mgr>
    /// libjpeg's message for the first fatal error or data-loss warning (NUL-terminated).
    var message: UnsafeMutablePointer<CChar>
    /// `[height, width, components]` samples, allocated by the decoding thread.
    var output: UnsafeMutablePointer<UInt8>?
    var width = 0
    var height = 0
    var components = 0
    var invertedCMYK = false
    var failed = false
    var finished = false
}

/// Templates of libjpeg warnings that mean decoded pixels are not the encoded ones.
private let dataLossWarnings = ["Premature end of JPEG file", "premature end of data segment",
                                "bad Huffman code", "instead of RST"]

private func job(of common: j_common_ptr) -> UnsafeMutablePointer<JPEGJob> {
    common.pointee.client_data.assumingMemoryBound(to: JPEGJob.self)
}

/// `error_exit`: record the message, free libjpeg's memory, end the decoding thread.
private func jpegFatalError(_ common: j_common_ptr?) {
    let job = job(of: common!)
    if !job.pointee.failed { common!.pointee.err.pointee.format_message(common, job.pointee.message) }
    job.pointee.failed = true
    jpeg_destroy(common)
    pthread_exit(nil)
}

/// `emit_message`: ignore traces (level ≥ 0); keep the first data-loss warning.
private func jpegMessage(_ common: j_common_ptr?, _ level: Int32) {
    guard level < 0, let common else { return }
    let errors = common.pointee.err.pointee
    let code = Int(errors.msg_code)
    guard code >= 0, code <= Int(errors.last_jpeg_message), let template = errors.jpeg_message_table[code] else { return }
    let text = String(cString: template)
    let job = job(of: common)
    if !job.pointee.failed, dataLossWarnings.contains(where: { text.contains($0) }) {
        errors.format_message(common, job.pointee.message)
        job.pointee.failed = true
    }
}

/// The body of a decoding thread: header, decompression into `output`, teardown.
private func runJPEGJob(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let job = argument!.assumingMemoryBound(to: JPEGJob.self)
    let decompressor = job.pointee.decompressor
    decompressor.pointee.err = jpeg_std_error(job.pointee.errorManager)
    job.pointee.errorManager.pointee.error_exit = jpegFatalError
    job.pointee.errorManager.pointee.emit_message = jpegMessage
    job.pointee.errorManager.pointee.output_message = { _ in }
    decompressor.pointee.client_data = UnsafeMutableRawPointer(job)
    jpeg_CreateDecompress(decompressor, JPEG_LIB_VERSION, MemoryLayout<jpeg_decompress_struct>.size)
    jpeg_mem_src(decompressor, job.pointee.input, UInt(job.pointee.inputCount))
    _ = jpeg_read_header(decompressor, 1)
    let cmyk = decompressor.pointee.num_components == 4
    decompressor.pointee.out_color_space = cmyk ? JCS_CMYK : JCS_RGB
    job.pointee.invertedCMYK = decompressor.pointee.saw_Adobe_marker != 0
    _ = jpeg_start_decompress(decompressor)
    let width = Int(decompressor.pointee.output_width), height = Int(decompressor.pointee.output_height)
    let components = Int(decompressor.pointee.out_color_components)
    let output = UnsafeMutablePointer<UInt8>.allocate(capacity: width * height * components)
    job.pointee.output = output
    job.pointee.width = width
    job.pointee.height = height
    job.pointee.components = components
    while decompressor.pointee.output_scanline < decompressor.pointee.output_height {
        var row: JSAMPROW? = output + Int(decompressor.pointee.output_scanline) * width * components
        guard jpeg_read_scanlines(decompressor, &row, 1) == 1 else {
            strcpy(job.pointee.message, "decoder stopped before the last row")
            job.pointee.failed = true
            break
        }
    }
    // Not jpeg_finish_decompress: it would read on past the last scan, which the structure
    // check has already covered, and has nothing to add to the pixels.
    jpeg_destroy_decompress(decompressor)
    job.pointee.finished = true
    return nil
}

extension ImageDecoding {
    /// Decodes a baseline, extended or progressive Huffman-coded JPEG with libjpeg(-turbo).
    static func decodeJPEG(_ bytes: [UInt8], path: String) throws -> RGBImage {
        try bytes.withUnsafeBufferPointer { buffer in
            try JPEGStructure.validate(buffer, path: path, maxPixels: maxPixels)
            return try decompressJPEG(buffer, path: path)
        }
    }

    /// Runs libjpeg on `buffer` on a thread of its own, without the structure check, so a
    /// fatal libjpeg error ends that thread and surfaces here as `DataError.corruptImage`.
    static func decompressJPEG(_ buffer: UnsafeBufferPointer<UInt8>, path: String) throws -> RGBImage {
        let decompressor = UnsafeMutablePointer<jpeg_decompress_struct>.allocate(capacity: 1)
        decompressor.initialize(to: jpeg_decompress_struct())
        let errorManager = UnsafeMutablePointer<jpeg_error_mgr>.allocate(capacity: 1)
        errorManager.initialize(to: jpeg_error_mgr())
        let message = UnsafeMutablePointer<CChar>.allocate(capacity: Int(JMSG_LENGTH_MAX))
        message.initialize(repeating: 0, count: Int(JMSG_LENGTH_MAX))
        let job = UnsafeMutablePointer<JPEGJob>.allocate(capacity: 1)
        job.initialize(to: JPEGJob(input: buffer.baseAddress!, inputCount: buffer.count, decompressor: decompressor,
                                   errorManager: errorManager, message: message, output: nil))
        defer {
            job.pointee.output?.deallocate()
            job.deallocate()
            message.deallocate()
            errorManager.deallocate()
            decompressor.deallocate()
        }

        var thread = pthread_t()
        let started = pthread_create(&thread, nil, { runJPEGJob($0) }, UnsafeMutableRawPointer(job))
        guard started == 0 else {
            throw DataError.unreadable(path: path, reason: "cannot start a decoding thread: "
                                           + String(cString: strerror(started)))
        }
        pthread_join(thread, nil)

        let result = job.pointee
        guard result.finished, !result.failed, let output = result.output else {
            throw DataError.corruptImage(path: path, reason: "JPEG: " + String(cString: message))
        }
        return RGBImage(width: result.width, height: result.height,
                        pixels: rgbPixels(output, count: result.width * result.height,
                                          components: result.components, invertedCMYK: result.invertedCMYK))
    }

    /// Interleaved RGB from libjpeg's output: RGB as is; CMYK multiplied out, where Adobe
    /// files store the inks inverted (255 = no ink).
    private static func rgbPixels(_ samples: UnsafeMutablePointer<UInt8>, count: Int, components: Int,
                                  invertedCMYK: Bool) -> [UInt8] {
        if components == 3 { return Array(UnsafeBufferPointer(start: samples, count: count * 3)) }
        var rgb = [UInt8](repeating: 0, count: count * 3)
        for pixel in 0 ..< count {
            let base = samples + 4 * pixel
            let black = invertedCMYK ? Int(base[3]) : 255 - Int(base[3])
            for channel in 0 ..< 3 {
                let ink = invertedCMYK ? Int(base[channel]) : 255 - Int(base[channel])
                rgb[3 * pixel + channel] = UInt8((ink * black + 127) / 255)
            }
        }
        return rgb
    }
}
