import Foundation

/// The marker structure of a JPEG file, validated before libjpeg is given the file.
///
/// libjpeg reports fatal errors through `error_exit`, which must not return and which Swift
/// cannot leave with `longjmp`. This walk mirrors, marker by marker, the checks with which
/// libjpeg-turbo's Huffman (baseline, extended and progressive) decoder ends in
/// `error_exit`, so that a file passing it only meets libjpeg's recoverable warnings:
///
/// - SOI first; every segment whole; EOI present, after at least one scan (truncation);
/// - one frame: 8-bit precision, 1, 3 or 4 components, non-zero size within limits,
///   sampling factors 1…4 that divide the largest ones (libjpeg has no fractional upsampling);
/// - DQT/DHT table indices 0…3, well-formed lengths; Huffman code counts that form a valid
///   prefix code and DC symbols 0…15;
/// - scans: 1…4 known, distinct components, at most 10 blocks per MCU, Huffman tables
///   defined before use, quantisation tables defined before a component's first scan,
///   legal progressive parameters, and no scan after a sequential scan that already
///   covered every component; every component coded by some scan;
/// - no lossless, hierarchical or arithmetic-coded frames and no unknown markers.
///
/// Entropy-coded data is skipped, not decoded: its corruption is reported by libjpeg as
/// warnings, which the decoder collects.
enum JPEGStructure {
    private struct Component {
        let id: UInt8
        let horizontal: Int
        let vertical: Int
        let quantTable: Int
        var coded = false
    }

    /// Walks `bytes` (the whole file at `path`), throwing `DataError.corruptImage` or
    /// `.unsupportedImage` for the first problem found. Images of more than `maxPixels`
    /// pixels are refused as unsupported.
    static func validate(_ bytes: UnsafeBufferPointer<UInt8>, path: String, maxPixels: Int) throws {
        func corrupt(_ reason: String) -> DataError { .corruptImage(path: path, reason: reason) }
        func unsupported(_ reason: String) -> DataError { .unsupportedImage(path: path, reason: reason) }
        func hex(_ marker: UInt8) -> String { "0xFF" + String(marker, radix: 16, uppercase: true) }
        let count = bytes.count
        guard count >= 4, bytes[0] == 0xFF, bytes[1] == 0xD8 else { throw corrupt("no JPEG start-of-image marker") }

        var components: [Component] = []
        var frameMarker: UInt8?
        var quantDefined = [Bool](repeating: false, count: 4)
        var dcDefined = [Bool](repeating: false, count: 4), acDefined = [Bool](repeating: false, count: 4)
        var scans = 0
        var sawCompleteSequentialScan = false
        var position = 2

        markers: while true {
            // Like libjpeg's next_marker: skip stray bytes, fill 0xFFs and stuffed 0xFF00 pairs.
            var marker: UInt8 = 0
            while marker == 0 {
                while position < count && bytes[position] != 0xFF { position += 1 }
                while position < count && bytes[position] == 0xFF { position += 1 }
                guard position < count else { throw corrupt("file ends before the end-of-image marker (truncated)") }
                marker = bytes[position]
                position += 1
            }
            let markerOffset = position - 2
            switch marker {
            case 0xD9:
                guard scans > 0 else { throw corrupt("end-of-image marker before any image data") }
                if let missing = components.first(where: { !$0.coded }) {
                    throw corrupt("component \(missing.id) is never coded by any scan")
                }
                break markers
            case 0xD8:
                throw corrupt("second start-of-image marker at byte \(markerOffset)")
            case 0x01, 0xD0 ... 0xD7:
                continue markers
            default:
                break
            }

            guard position + 2 <= count else { throw corrupt("file ends inside the \(hex(marker)) marker (truncated)") }
            let length = Int(bytes[position]) << 8 | Int(bytes[position + 1])
            guard length >= 2 else { throw corrupt("\(hex(marker)) segment at byte \(markerOffset) has length \(length)") }
            guard position + length <= count else {
                throw corrupt("\(hex(marker)) segment at byte \(markerOffset) runs past the end of the file (truncated)")
            }
            let segment = UnsafeBufferPointer(rebasing: bytes[position + 2 ..< position + length])
            position += length

            switch marker {
            case 0xC0, 0xC1, 0xC2:
                guard frameMarker == nil else { throw corrupt("second frame header at byte \(markerOffset)") }
                frameMarker = marker
                guard segment.count >= 6 else { throw corrupt("frame header of \(segment.count) bytes") }
                guard segment[0] == 8 else { throw unsupported("\(segment[0])-bit samples (only 8-bit is decoded)") }
                let size = (width: Int(segment[3]) << 8 | Int(segment[4]), height: Int(segment[1]) << 8 | Int(segment[2]))
                let componentCount = Int(segment[5])
                guard size.width > 0, size.height > 0 else {
                    throw unsupported("frame of \(size.width)×\(size.height) pixels (zero size or height deferred to DNL)")
                }
                guard size.width <= 65500, size.height <= 65500, size.width * size.height <= maxPixels else {
                    throw unsupported("\(size.width)×\(size.height) pixels exceeds the limit of \(maxPixels)")
                }
                guard [1, 3, 4].contains(componentCount) else {
                    throw unsupported("\(componentCount) colour components (1, 3 or 4 are decoded)")
                }
                guard segment.count == 6 + 3 * componentCount else {
                    throw corrupt("frame header length \(segment.count + 2) for \(componentCount) components")
                }
                for index in 0 ..< componentCount {
                    let base = 6 + 3 * index
                    let component = Component(id: segment[base], horizontal: Int(segment[base + 1] >> 4),
                                              vertical: Int(segment[base + 1] & 15), quantTable: Int(segment[base + 2]))
                    guard (1 ... 4).contains(component.horizontal), (1 ... 4).contains(component.vertical) else {
                        throw corrupt("component \(component.id) has sampling factors "
                                      + "\(component.horizontal)×\(component.vertical)")
                    }
                    guard component.quantTable < 4 else {
                        throw corrupt("component \(component.id) uses quantisation table \(component.quantTable)")
                    }
                    guard !components.contains(where: { $0.id == component.id }) else {
                        throw corrupt("component id \(component.id) appears twice in the frame header")
                    }
                    components.append(component)
                }
                let maxH = components.map(\.horizontal).max()!, maxV = components.map(\.vertical).max()!
                guard components.allSatisfy({ maxH % $0.horizontal == 0 && maxV % $0.vertical == 0 }) else {
                    throw unsupported("fractional chroma subsampling")
                }
            case 0xC3, 0xC5 ... 0xCB, 0xCD ... 0xCF:
                throw unsupported("lossless, hierarchical or arithmetic-coded JPEG (marker \(hex(marker)))")
            case 0xCC:
                throw unsupported("arithmetic-coding conditioning marker")
            case 0xC4:
                var offset = 0
                while segment.count - offset > 16 {
                    let selector = segment[offset]
                    let isDC = selector >> 4 == 0, index = Int(selector & 15)
                    guard selector >> 4 <= 1, index < 4 else {
                        throw corrupt("Huffman table selector 0x\(String(selector, radix: 16)) at byte \(markerOffset)")
                    }
                    let counts = (1 ... 16).map { Int(segment[offset + $0]) }
                    let symbols = counts.reduce(0, +)
                    guard symbols <= 256, offset + 17 + symbols <= segment.count else {
                        throw corrupt("Huffman table at byte \(markerOffset) declares \(symbols) symbols")
                    }
                    guard isPrefixCode(counts) else {
                        throw corrupt("Huffman table at byte \(markerOffset) has more codes than fit their lengths")
                    }
                    let values = segment[offset + 17 ..< offset + 17 + symbols]
                    if isDC {
                        guard values.allSatisfy({ $0 <= 15 }) else {
                            throw corrupt("DC Huffman table at byte \(markerOffset) has a symbol above 15")
                        }
                        dcDefined[index] = true
                    } else {
                        acDefined[index] = true
                    }
                    offset += 17 + symbols
                }
                guard offset == segment.count else {
                    throw corrupt("Huffman segment at byte \(markerOffset) has stray bytes")
                }
            case 0xDB:
                var offset = 0
                while offset < segment.count {
                    let precision = Int(segment[offset] >> 4), index = Int(segment[offset] & 15)
                    guard precision <= 1, index < 4 else {
                        throw corrupt("quantisation table selector 0x\(String(segment[offset], radix: 16)) "
                                      + "at byte \(markerOffset)")
                    }
                    offset += 1 + 64 * (precision + 1)
                    guard offset <= segment.count else {
                        throw corrupt("quantisation table at byte \(markerOffset) is cut short")
                    }
                    quantDefined[index] = true
                }
            case 0xDD:
                guard segment.count == 2 else { throw corrupt("restart-interval segment of length \(length)") }
            case 0xDA:
                guard let frame = frameMarker else { throw corrupt("scan before the frame header") }
                guard !sawCompleteSequentialScan else {
                    throw corrupt("another scan after a sequential scan of every component, at byte \(markerOffset)")
                }
                let inScan = segment.isEmpty ? 0 : Int(segment[0])
                guard (1 ... 4).contains(inScan), segment.count == 4 + 2 * inScan else {
                    throw corrupt("scan header at byte \(markerOffset) for \(inScan) components")
                }
                let spectralStart = Int(segment[1 + 2 * inScan]), spectralEnd = Int(segment[2 + 2 * inScan])
                let approximationHigh = Int(segment[3 + 2 * inScan] >> 4)
                let approximationLow = Int(segment[3 + 2 * inScan] & 15)
                let progressive = frame == 0xC2
                let isDCScan = spectralStart == 0
                if progressive {
                    let band = isDCScan ? spectralEnd == 0 : spectralStart <= spectralEnd && spectralEnd < 64 && inScan == 1
                    let legal = band && (approximationHigh == 0 || approximationLow == approximationHigh - 1)
                        && approximationLow <= 13
                    guard legal else { throw corrupt("illegal progressive scan parameters at byte \(markerOffset)") }
                }
                var scanIndices: [Int] = []
                var blocks = 0
                for slot in 0 ..< inScan {
                    let id = segment[1 + 2 * slot]
                    let dcTable = Int(segment[2 + 2 * slot] >> 4), acTable = Int(segment[2 + 2 * slot] & 15)
                    guard let index = components.firstIndex(where: { $0.id == id }), !scanIndices.contains(index) else {
                        throw corrupt("scan at byte \(markerOffset) names unknown or repeated component \(id)")
                    }
                    scanIndices.append(index)
                    blocks += inScan == 1 ? 1 : components[index].horizontal * components[index].vertical
                    let needsDC = !progressive || (isDCScan && approximationHigh == 0)
                    let needsAC = !progressive || !isDCScan
                    guard !needsDC || (dcTable < 4 && dcDefined[dcTable]),
                          !needsAC || (acTable < 4 && acDefined[acTable]) else {
                        throw corrupt("scan at byte \(markerOffset) uses an undefined Huffman table")
                    }
                    if !components[index].coded {
                        guard quantDefined[components[index].quantTable] else {
                            throw corrupt("component \(id) is coded before quantisation table "
                                          + "\(components[index].quantTable) is defined")
                        }
                        components[index].coded = true
                    }
                }
                guard blocks <= 10 else { throw corrupt("scan at byte \(markerOffset) has \(blocks) blocks per MCU") }
                sawCompleteSequentialScan = !progressive && scans == 0 && inScan == components.count
                scans += 1
                guard let end = endOfEntropyData(bytes, from: position) else {
                    throw corrupt("file ends inside the compressed data of scan \(scans) (truncated)")
                }
                position = end
            case 0xDC, 0xE0 ... 0xEF, 0xFE:
                continue markers
            default:
                throw corrupt("unknown marker \(hex(marker)) at byte \(markerOffset)")
            }
        }
    }

    /// Whether Huffman code-length counts `counts[0]` (length 1) … `counts[15]` (length 16)
    /// assign codes that fit their lengths without the all-ones code, as libjpeg requires.
    private static func isPrefixCode(_ counts: [Int]) -> Bool {
        guard let shortest = counts.firstIndex(where: { $0 > 0 }), let longest = counts.lastIndex(where: { $0 > 0 })
        else { return true }
        var code = 0
        for length in shortest ... longest {
            code += counts[length]
            if code >= 1 << (length + 1) { return false }
            code <<= 1
        }
        return true
    }

    /// The offset of the marker that ends the entropy-coded data starting at `start`
    /// (stuffed 0xFF00 and restart markers belong to the data), or nil if the file ends first.
    private static func endOfEntropyData(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        let base = bytes.baseAddress!
        var position = start
        while position < bytes.count {
            guard let found = memchr(base + position, 0xFF, bytes.count - position) else { return nil }
            let marker = base.distance(to: found.assumingMemoryBound(to: UInt8.self))
            var next = marker + 1
            while next < bytes.count && bytes[next] == 0xFF { next += 1 }
            guard next < bytes.count else { return nil }
            if bytes[next] == 0x00 || (0xD0 ... 0xD7).contains(bytes[next]) {
                position = next + 1
            } else {
                return marker
            }
        }
        return nil
    }
}
