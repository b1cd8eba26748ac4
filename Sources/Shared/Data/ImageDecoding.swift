/// Decodes JPEG and PNG files into `RGBImage`s.
///
/// The format is chosen by the file's signature, not its name (image collections contain
/// PNGs named `.JPEG`). Greyscale becomes grey RGB, alpha is dropped, CMYK (Adobe) JPEGs are
/// converted to RGB. Every failure — unreadable, truncated, corrupt or unsupported — is a
/// `DataError` naming the file; none of them stops the process (see `ImageDecoding+JPEG`
/// for how libjpeg's fatal errors are contained).
public enum ImageDecoding {
    /// Largest image, in pixels, that will be decoded (a 64-megapixel guard against
    /// allocating gigabytes for a corrupt or hostile header).
    public static let maxPixels = 1 << 26

    private static let pngSignature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// Reads and decodes the image file at `path`.
    public static func decodeFile(_ path: String) throws -> RGBImage {
        try decode(DataFile.contents(of: path), path: path)
    }

    /// Decodes the encoded image `bytes`; `path` names the source in errors.
    public static func decode(_ bytes: [UInt8], path: String) throws -> RGBImage {
        if bytes.starts(with: [0xFF, 0xD8]) { return try decodeJPEG(bytes, path: path) }
        if bytes.starts(with: pngSignature) { return try decodePNG(bytes, path: path) }
        guard !bytes.isEmpty else { throw DataError.corruptImage(path: path, reason: "empty file") }
        let head = bytes.prefix(4).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
        throw DataError.unsupportedImage(path: path, reason: "neither JPEG nor PNG (first bytes \(head))")
    }
}
