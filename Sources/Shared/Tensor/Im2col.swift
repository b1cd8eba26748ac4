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

/// im2col for a batch: `columns[(c·k + i)·k + j, n·P + oh·OW + ow] = x[n, c, ih, iw]`, where
/// `P = outHeight·outWidth` and (ih, iw) is the (padded) source of that kernel tap.
/// `columns` is `patchSize × (batch·P)` row-major. A `Profile` kernel (with `col2im`).
public func im2col(_ x: UnsafePointer<Float>, batch: Int, _ g: ConvGeometry, columns: UnsafeMutablePointer<Float>) {
    let timing = Profile.start(.im2col)
    defer { timing?.stop() }
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

/// col2im, the adjoint of `im2col`: `dx[n, c, ih, iw] += Σ columns[...]` over every column
/// entry that `im2col` read from (ih, iw); replicate padding sends edge taps to the edge pixel.
/// `dx` is accumulated into, not overwritten.
public func col2im(_ columns: UnsafePointer<Float>, batch: Int, _ g: ConvGeometry, dx: UnsafeMutablePointer<Float>) {
    let timing = Profile.start(.im2col)
    defer { timing?.stop() }
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
