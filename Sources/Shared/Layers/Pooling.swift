/// Average, max and global-average pooling over [N, C, H, W].
/// Each pooling geometry uses `ConvGeometry` (kernel, stride, padding, output crop) with `channels = C`.
public enum AvgPool2d {
    /// y[n,c,oh,ow] = (1/k²) Σ_{i,j<k} x[n,c,oh·s+i−p, ow·s+j−p], zero padding counted (PyTorch
    /// `count_include_pad=True`). Non-overlapping windows without padding (k = s, p = 0, LeNet's
    /// 2×2) take a direct path; `referenceForward` is the general loop and the oracle.
    public static func forward(x: Tensor, y: Tensor, _ g: ConvGeometry) {
        guard g.kernel == g.stride, g.padding == 0 else { return referenceForward(x: x, y: y, g) }
        let NC = x.shape[0] * g.channels, k = g.kernel, scale = 1 / Float(k * k)
        Parallel.forRanges(NC, minimum: 256) { planes in for nc in planes {
            let src = x.data + nc * g.height * g.width, dst = y.data + nc * g.positions
            for oh in 0..<g.outHeight {
                let out = dst + oh * g.outWidth
                for ow in 0..<g.outWidth { out[ow] = 0 }
                for i in 0..<k {
                    let row = src + (oh * k + i) * g.width
                    for ow in 0..<g.outWidth { for j in 0..<k { out[ow] += row[ow * k + j] } }
                }
                for ow in 0..<g.outWidth { out[ow] *= scale }
            }
        } }
    }

    /// dx[n,c,ih,iw] = (1/k²) Σ over windows containing (ih, iw) of dy; overwrites dx. With
    /// `mask` (the output of the ReLU before the pool, shaped like dx) it also back-propagates
    /// through that ReLU: dx ⊙= [mask > 0]. Direct path as in `forward`.
    public static func backward(dy: Tensor, dx: Tensor, _ g: ConvGeometry, mask: Tensor? = nil) {
        guard g.kernel == g.stride, g.padding == 0 else {
            referenceBackward(dy: dy, dx: dx, g)
            if let mask { ReLU.backward(y: mask, dy: dx, dx: dx) }
            return
        }
        let NC = dx.shape[0] * g.channels, k = g.kernel, scale = 1 / Float(k * k)
        let planeSize = g.height * g.width
        Parallel.forRanges(NC, minimum: 256) { planes in for nc in planes {
            let dst = dx.data + nc * planeSize, src = dy.data + nc * g.positions
            let keep = mask.map { $0.data + nc * planeSize }
            dst.update(repeating: 0, count: planeSize)
            for oh in 0..<g.outHeight {
                for i in 0..<k {
                    let row = dst + (oh * k + i) * g.width, gradient = src + oh * g.outWidth
                    for ow in 0..<g.outWidth { for j in 0..<k { row[ow * k + j] = gradient[ow] * scale } }
                    if let keep {
                        let m = keep + (oh * k + i) * g.width
                        for c in 0..<(g.outWidth * k) where !(m[c] > 0) { row[c] = 0 }
                    }
                }
            }
        } }
    }

    /// The general forward: any kernel, stride and padding (the oracle of the direct path).
    public static func referenceForward(x: Tensor, y: Tensor, _ g: ConvGeometry) {
        let NC = x.shape[0] * g.channels, scale = 1 / Float(g.kernel * g.kernel)
        Parallel.forRanges(NC, minimum: 256) { planes in for nc in planes {
            let src = x.data + nc * g.height * g.width, dst = y.data + nc * g.positions
            for oh in 0..<g.outHeight {
                for ow in 0..<g.outWidth {
                    var s: Float = 0
                    for i in 0..<g.kernel {
                        let ih = g.source(oh, i, g.height); if ih < 0 { continue }
                        for j in 0..<g.kernel {
                            let iw = g.source(ow, j, g.width); if iw >= 0 { s += src[ih * g.width + iw] }
                        }
                    }
                    dst[oh * g.outWidth + ow] = s * scale
                }
            }
        } }
    }

    /// The general backward (the oracle of the direct path); overwrites dx.
    public static func referenceBackward(dy: Tensor, dx: Tensor, _ g: ConvGeometry) {
        dx.zero()
        let NC = dx.shape[0] * g.channels, scale = 1 / Float(g.kernel * g.kernel)
        Parallel.forRanges(NC, minimum: 256) { planes in for nc in planes {
            let dst = dx.data + nc * g.height * g.width, src = dy.data + nc * g.positions
            for oh in 0..<g.outHeight {
                for ow in 0..<g.outWidth {
                    let v = src[oh * g.outWidth + ow] * scale
                    for i in 0..<g.kernel {
                        let ih = g.source(oh, i, g.height); if ih < 0 { continue }
                        for j in 0..<g.kernel {
                            let iw = g.source(ow, j, g.width); if iw >= 0 { dst[ih * g.width + iw] += v }
                        }
                    }
                }
            }
        } }
    }
}

public enum MaxPool2d {
    /// y = max over the window; padding never wins (PyTorch pads with −∞).
    public static func forward(x: Tensor, y: Tensor, _ g: ConvGeometry) {
        precondition(g.mode == .zeros, "max pooling pads with -inf; use .zeros geometry")
        let NC = x.shape[0] * g.channels
        for nc in 0..<NC {
            let src = x.data + nc * g.height * g.width, dst = y.data + nc * g.positions
            for oh in 0..<g.outHeight {
                for ow in 0..<g.outWidth { dst[oh * g.outWidth + ow] = src[argmax(src, oh, ow, g)] }
            }
        }
    }

    /// The gradient flows to the first maximal element of each window (PyTorch's tie rule);
    /// the arg-max is recomputed from x rather than stored. Overwrites dx.
    public static func backward(x: Tensor, dy: Tensor, dx: Tensor, _ g: ConvGeometry) {
        dx.zero()
        let NC = x.shape[0] * g.channels
        for nc in 0..<NC {
            let src = x.data + nc * g.height * g.width, d = dx.data + nc * g.height * g.width
            let gy = dy.data + nc * g.positions
            for oh in 0..<g.outHeight {
                for ow in 0..<g.outWidth { d[argmax(src, oh, ow, g)] += gy[oh * g.outWidth + ow] }
            }
        }
    }

    @inline(__always) static func argmax(_ src: UnsafeMutablePointer<Float>, _ oh: Int, _ ow: Int, _ g: ConvGeometry) -> Int {
        var best = -1, bestValue = -Float.infinity
        for i in 0..<g.kernel {
            let ih = g.source(oh, i, g.height); if ih < 0 { continue }
            for j in 0..<g.kernel {
                let iw = g.source(ow, j, g.width); if iw < 0 { continue }
                let v = src[ih * g.width + iw]
                if best < 0 || v > bestValue { best = ih * g.width + iw; bestValue = v }
            }
        }
        return best
    }
}

/// [N, C, H, W] → [N, C]: y[n,c] = mean_{h,w} x[n,c,h,w].
public enum GlobalAvgPool {
    public static func forward(x: Tensor, y: Tensor) {
        let NC = y.count, HW = x.count / NC, scale = 1 / Float(HW)
        for nc in 0..<NC {
            var s: Float = 0
            let src = x.data + nc * HW
            for i in 0..<HW { s += src[i] }
            y.data[nc] = s * scale
        }
    }

    /// dx[n,c,h,w] = dy[n,c] / (H·W); overwrites dx.
    public static func backward(dy: Tensor, dx: Tensor) {
        let NC = dy.count, HW = dx.count / NC, scale = 1 / Float(HW)
        for nc in 0..<NC { (dx.data + nc * HW).update(repeating: dy.data[nc] * scale, count: HW) }
    }
}
