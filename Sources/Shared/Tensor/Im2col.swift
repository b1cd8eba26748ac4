/// How a convolution reads outside its input.
public enum PaddingMode: String, Sendable, Codable {
    /// Outside pixels are 0.
    case zeros
    /// Outside pixels repeat the nearest edge pixel (PyTorch `padding_mode="replicate"`).
    case replicate
}

/// The geometry of one 2-d convolution or pooling window over an [N, C, H, W] input.
public struct ConvGeometry: Sendable, Equatable {
    public var channels: Int, height: Int, width: Int
    public var kernel: Int, stride: Int, padding: Int
    public var mode: PaddingMode
    /// Output rows and columns actually computed: the top-left `outHeight × outWidth` corner of
    /// the full output (a network that reads only part of a feature map need not compute the rest).
    public var outHeight: Int, outWidth: Int

    public init(channels: Int, height: Int, width: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                mode: PaddingMode = .zeros, outHeight: Int? = nil, outWidth: Int? = nil) {
        self.channels = channels; self.height = height; self.width = width
        self.kernel = kernel; self.stride = stride; self.padding = padding; self.mode = mode
        let fullH = (height + 2 * padding - kernel) / stride + 1
        let fullW = (width + 2 * padding - kernel) / stride + 1
        self.outHeight = outHeight ?? fullH
        self.outWidth = outWidth ?? fullW
        precondition(self.outHeight <= fullH && self.outWidth <= fullW, "output crop larger than output")
    }

    public var fullOutHeight: Int { (height + 2 * padding - kernel) / stride + 1 }
    public var fullOutWidth: Int { (width + 2 * padding - kernel) / stride + 1 }
    /// Rows of the column matrix: C·k·k.
    public var patchSize: Int { channels * kernel * kernel }
    /// Output positions per image.
    public var positions: Int { outHeight * outWidth }

    /// Source index of output coordinate `o` at kernel offset `k` along an axis of length `n`,
    /// or -1 when it falls in zero padding.
    @inline(__always) func source(_ o: Int, _ k: Int, _ n: Int) -> Int {
        let i = o * stride - padding + k
        if i >= 0 && i < n { return i }
        return mode == .replicate ? min(max(i, 0), n - 1) : -1
    }
}

extension ConvGeometry {
    /// Rows and columns of the padded input window the computed outputs read:
    /// (outHeight − 1)·stride + kernel by (outWidth − 1)·stride + kernel. Window row i holds
    /// input row i − padding (clamped to the edge, or 0, outside the input).
    public var windowHeight: Int { (outHeight - 1) * stride + kernel }
    public var windowWidth: Int { (outWidth - 1) * stride + kernel }
}

/// im2col for a batch: `columns[(c·k + i)·k + j, n·P + oh·OW + ow] = x[n, c, ih, iw]`, where
/// `P = outHeight·outWidth` and (ih, iw) is the (padded) source of that kernel tap.
/// `columns` is `patchSize × (batch·P)` row-major. A `Profile` kernel (with `col2im`).
///
/// Per (channel, image) plane the padded window is built once (edges replicated or zeroed), so
/// every tap is a plain strided copy out of it with no bounds logic; planes are spread over the
/// compute threads (a one-channel first layer too). `im2colReference` is the oracle.
public func im2col(_ x: UnsafePointer<Float>, batch: Int, _ g: ConvGeometry, columns: UnsafeMutablePointer<Float>) {
    let timing = Profile.start(.im2col)
    defer { timing?.stop() }
    let (C, H, W, K, S, P, OH, OW) = (g.channels, g.height, g.width, g.kernel, g.stride, g.positions, g.outHeight, g.outWidth)
    let (WH, WW) = (g.windowHeight, g.windowWidth)
    let ld = batch * P
    Parallel.forRanges(C * batch, minimum: 4) { planes in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: WH * WW) { scratch in
            let window = scratch.baseAddress!
            for plane in planes {
                let (c, n) = plane.quotientAndRemainder(dividingBy: batch)
                fillWindow(x + (n * C + c) * H * W, g, window)
                for ki in 0..<K {
                    for kj in 0..<K {
                        let out = columns + ((c * K + ki) * K + kj) * ld + n * P
                        for oh in 0..<OH {
                            let src = window + (oh * S + ki) * WW + kj, dst = out + oh * OW
                            if S == 1 { copyRun(dst, src, OW) } else { for ow in 0..<OW { dst[ow] = src[ow * S] } }
                        }
                    }
                }
            }
        }
    }
}

/// col2im, the adjoint of `im2col`: `dx[n, c, ih, iw] = Σ columns[...]` over every column entry
/// that `im2col` read from (ih, iw); replicate padding sends edge taps to the edge pixel.
/// `dx` is overwritten (input pixels no tap reads get 0).
///
/// Per (channel, image) plane the taps are summed into the padded window first (contiguous
/// adds), then the window is folded onto the plane: its padding onto the edge pixels
/// (replicate) or dropped (zeros). `col2imReference` is the oracle.
public func col2im(_ columns: UnsafePointer<Float>, batch: Int, _ g: ConvGeometry, dx: UnsafeMutablePointer<Float>) {
    let timing = Profile.start(.im2col)
    defer { timing?.stop() }
    let (C, H, W, K, S, P, OH, OW) = (g.channels, g.height, g.width, g.kernel, g.stride, g.positions, g.outHeight, g.outWidth)
    let (WH, WW, pad) = (g.windowHeight, g.windowWidth, g.padding)
    let ld = batch * P
    Parallel.forRanges(C * batch, minimum: 4) { planes in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: WH * WW) { scratch in
            let window = scratch.baseAddress!
            for plane in planes {
                let (c, n) = plane.quotientAndRemainder(dividingBy: batch)
                window.update(repeating: 0, count: WH * WW)
                for ki in 0..<K {
                    for kj in 0..<K {
                        let src = columns + ((c * K + ki) * K + kj) * ld + n * P
                        for oh in 0..<OH {
                            let dst = window + (oh * S + ki) * WW + kj, s = src + oh * OW
                            if S == 1 { addRun(dst, s, OW) } else { for ow in 0..<OW { dst[ow * S] += s[ow] } }
                        }
                    }
                }
                let out = dx + (n * C + c) * H * W
                out.update(repeating: 0, count: H * W)
                for i in 0..<WH {
                    var ih = i - pad
                    if ih < 0 || ih >= H {
                        guard g.mode == .replicate else { continue }
                        ih = min(max(ih, 0), H - 1)
                    }
                    let row = out + ih * W, wrow = window + i * WW
                    // Window columns [pad, pad + W) map onto the row; the others are padding.
                    let lo = min(pad, WW), hi = min(WW, W + pad)
                    addRun(row, wrow + pad, hi - lo)
                    if g.mode == .replicate {
                        for j in 0..<lo { row[0] += wrow[j] }
                        for j in max(hi, lo)..<WW { row[W - 1] += wrow[j] }
                    }
                }
            }
        }
    }
}

/// Fills `window` [windowHeight, windowWidth] from one input plane [H, W]: window[i, j] =
/// plane[i − padding, j − padding], with the nearest edge pixel (replicate) or 0 outside.
@inline(__always)
private func fillWindow(_ plane: UnsafePointer<Float>, _ g: ConvGeometry, _ window: UnsafeMutablePointer<Float>) {
    let (H, W, WH, WW, pad) = (g.height, g.width, g.windowHeight, g.windowWidth, g.padding)
    let lo = min(pad, WW), hi = min(WW, W + pad)
    for i in 0..<WH {
        let dst = window + i * WW
        var ih = i - pad
        if ih < 0 || ih >= H {
            guard g.mode == .replicate else { dst.update(repeating: 0, count: WW); continue }
            ih = min(max(ih, 0), H - 1)
        }
        let src = plane + ih * W
        let (left, right): (Float, Float) = g.mode == .zeros ? (0, 0) : (src[0], src[W - 1])
        for j in 0..<lo { dst[j] = left }
        copyRun(dst + lo, src + (lo - pad), hi - lo)
        for j in max(hi, lo)..<WW { dst[j] = right }
    }
}

/// dst[0..<count] = src[0..<count] for the short runs of im2col (2–32 floats): SIMD moves and
/// an unrolled tail, because a plain loop becomes a `memcpy` call per run, whose call costs more
/// than the copy at these lengths.
@inline(__always)
private func copyRun(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ count: Int) {
    var i = 0
    while i + 8 <= count {
        UnsafeMutableRawPointer(dst + i).storeBytes(of: UnsafeRawPointer(src + i).loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
        i += 8
    }
    if i + 4 <= count {
        UnsafeMutableRawPointer(dst + i).storeBytes(of: UnsafeRawPointer(src + i).loadUnaligned(as: SIMD4<Float>.self), as: SIMD4<Float>.self)
        i += 4
    }
    if i < count { dst[i] = src[i] }
    if i + 1 < count { dst[i + 1] = src[i + 1] }
    if i + 2 < count { dst[i + 2] = src[i + 2] }
}

/// dst[0..<count] += src[0..<count] for col2im's short runs, in SIMD like `copyRun`.
@inline(__always)
private func addRun(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ count: Int) {
    var i = 0
    while i + 8 <= count {
        let sum = UnsafeRawPointer(dst + i).loadUnaligned(as: SIMD8<Float>.self) + UnsafeRawPointer(src + i).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(dst + i).storeBytes(of: sum, as: SIMD8<Float>.self)
        i += 8
    }
    while i < count { dst[i] += src[i]; i += 1 }
}

/// Direct-loop reference of `im2col` (the test oracle): every tap's source looked up with
/// `ConvGeometry.source`.
public func im2colReference(_ x: UnsafePointer<Float>, batch: Int, _ g: ConvGeometry, columns: UnsafeMutablePointer<Float>) {
    let (H, W, K, P) = (g.height, g.width, g.kernel, g.positions)
    let ld = batch * P
    Parallel.forEach(g.channels) { c in
        for ki in 0..<K {
            for kj in 0..<K {
                let row = columns + ((c * K + ki) * K + kj) * ld
                for n in 0..<batch {
                    let plane = x + (n * g.channels + c) * H * W
                    let out = row + n * P
                    for oh in 0..<g.outHeight {
                        let ih = g.source(oh, ki, H)
                        let dst = out + oh * g.outWidth
                        if ih < 0 { for ow in 0..<g.outWidth { dst[ow] = 0 }; continue }
                        let src = plane + ih * W
                        if g.stride == 1 {
                            // Stride 1: a padded left run, one contiguous copy, a padded right run.
                            let lo = min(max(0, g.padding - kj), g.outWidth)
                            let hi = max(min(g.outWidth, W + g.padding - kj), lo)
                            let (left, right): (Float, Float) = g.mode == .zeros ? (0, 0) : (src[0], src[W - 1])
                            // Plain loops: the runs are short (2–32), where memmove calls cost more.
                            for ow in 0..<lo { dst[ow] = left }
                            let shifted = src + (kj - g.padding)
                            for ow in lo..<hi { dst[ow] = shifted[ow] }
                            for ow in hi..<g.outWidth { dst[ow] = right }
                        } else {
                            for ow in 0..<g.outWidth {
                                let iw = g.source(ow, kj, W)
                                dst[ow] = iw < 0 ? 0 : src[iw]
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Direct-loop reference of `col2im` (the test oracle); unlike `col2im` it accumulates into `dx`.
public func col2imReference(_ columns: UnsafePointer<Float>, batch: Int, _ g: ConvGeometry, dx: UnsafeMutablePointer<Float>) {
    let (H, W, K, P) = (g.height, g.width, g.kernel, g.positions)
    let ld = batch * P
    Parallel.forEach(g.channels) { c in
        for ki in 0..<K {
            for kj in 0..<K {
                let row = columns + ((c * K + ki) * K + kj) * ld
                for n in 0..<batch {
                    let plane = dx + (n * g.channels + c) * H * W
                    let src = row + n * P
                    for oh in 0..<g.outHeight {
                        let ih = g.source(oh, ki, H)
                        if ih < 0 { continue }
                        let dst = plane + ih * W
                        let s = src + oh * g.outWidth
                        if g.stride == 1 {
                            let lo = min(max(0, g.padding - kj), g.outWidth)
                            let hi = max(min(g.outWidth, W + g.padding - kj), lo)
                            let shifted = dst + (kj - g.padding)
                            for ow in lo..<hi { shifted[ow] += s[ow] }
                            if g.mode == .replicate {
                                for ow in 0..<lo { dst[0] += s[ow] }
                                for ow in hi..<g.outWidth { dst[W - 1] += s[ow] }
                            }
                        } else {
                            for ow in 0..<g.outWidth {
                                let iw = g.source(ow, kj, W)
                                if iw >= 0 { dst[iw] += s[ow] }
                            }
                        }
                    }
                }
            }
        }
    }
}
