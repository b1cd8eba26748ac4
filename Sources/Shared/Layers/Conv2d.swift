/// 2-d convolution by im2col + GEMM, forward and backward side by side.
///
/// Shapes: x [N, C, H, W], weight [O, C, k, k] (PyTorch layout), bias [O],
/// y [N, O, outHeight, outWidth] (the geometry's output crop).
///
/// Convention for every layer here: input gradients are overwritten, parameter gradients are
/// accumulated (`+=`), so several configurations can sum into one gradient buffer.
public struct Conv2d: Sendable {
    public var geometry: ConvGeometry
    public let outChannels: Int

    public init(_ geometry: ConvGeometry, outChannels: Int) {
        self.geometry = geometry
        self.outChannels = outChannels
    }

    /// y = W ⋆ x + b, computed as Y[O, N·P] = W[O, C·k·k] · columns[C·k·k, N·P]; with `relu`,
    /// y = relu(W ⋆ x + b) in the same pass (its backward is the caller's: `ReLU.backward` or a
    /// pooling backward's `mask`).
    public func forward(x: Tensor, weight: Tensor, bias: Tensor?, y: Tensor, workspace: Workspace, relu: Bool = false) {
        let g = geometry, N = x.shape[0], O = outChannels, P = g.positions, KK = g.patchSize
        precondition(x.count == N * g.channels * g.height * g.width, "conv input \(x.shape) vs geometry")
        precondition(weight.count == O * KK && y.count == N * O * P, "conv weight/output shapes")
        let cols = workspace.buffer(.columns, count: KK * N * P)
        im2col(x.data, batch: N, g, columns: cols)
        let prod = workspace.buffer(.product, count: O * N * P)
        Gemm.sgemm(m: O, n: N * P, k: KK, a: weight.data, lda: KK, b: cols, ldb: N * P, beta: 0, c: prod, ldc: N * P)
        // Y[o, n·P + p] → y[n, o, p], adding the bias.
        Parallel.forEach(N) { n in
            for o in 0..<O {
                let src = prod + o * N * P + n * P, dst = y.data + (n * O + o) * P
                let b = bias?.data[o] ?? 0
                if relu { for p in 0..<P { dst[p] = max(src[p] + b, 0) } } else { for p in 0..<P { dst[p] = src[p] + b } }
            }
        }
    }

    /// With Y = W·X (X the im2col columns):
    ///   dW += dY · Xᵀ,   db += Σ_{n,p} dy[n, o, p],   dX = Wᵀ · dY,   dx = col2im(dX).
    /// `dx` may be nil for the first layer (no input gradient needed). `columnsFromForward`:
    /// the workspace still holds this layer's im2col columns of `x` from `forward` (a network
    /// that gives each conv its own workspace skips recomputing them).
    public func backward(x: Tensor, weight: Tensor, dy: Tensor, dx: Tensor?, dWeight: Tensor, dBias: Tensor?,
                         workspace: Workspace, columnsFromForward: Bool = false) {
        let g = geometry, N = x.shape[0], O = outChannels, P = g.positions, KK = g.patchSize
        let cols = workspace.buffer(.columns, count: KK * N * P)
        if !columnsFromForward { im2col(x.data, batch: N, g, columns: cols) }
        // dy[n, o, p] → dY[o, n·P + p], summing each output channel's row for db on the way.
        let dY = workspace.buffer(.gradProduct, count: O * N * P)
        Parallel.forRanges(O) { channels in
            for o in channels {
                let row = dY + o * N * P
                var s: Float = 0
                for n in 0..<N {
                    let src = dy.data + (n * O + o) * P, dst = row + n * P
                    for p in 0..<P { dst[p] = src[p]; s += src[p] }
                }
                if let dBias { dBias.data[o] += s }
            }
        }
        Gemm.sgemm(transB: true, m: O, n: KK, k: N * P, a: dY, lda: N * P, b: cols, ldb: N * P,
                   beta: 1, c: dWeight.data, ldc: KK)
        guard let dx else { return }
        let dCols = workspace.buffer(.gradColumns, count: KK * N * P)
        Gemm.sgemm(transA: true, m: KK, n: N * P, k: O, a: weight.data, lda: KK, b: dY, ldb: N * P,
                   beta: 0, c: dCols, ldc: N * P)
        col2im(dCols, batch: N, g, dx: dx.data)
    }

    /// The sgemm calls of `forward` and `backward` on a batch of `batch`: Y = W·X (O×N·P×C·k²);
    /// dW += dY·Xᵀ, and dX = Wᵀ·dY when the input gradient is wanted.
    public func products(batch: Int, inputGradient: Bool) -> (forward: [GemmShape], backward: [GemmShape]) {
        let O = outChannels, NP = batch * geometry.positions, KK = geometry.patchSize
        let dW = GemmShape(transB: true, m: O, n: KK, k: NP), dX = GemmShape(transA: true, m: KK, n: NP, k: O)
        return ([GemmShape(m: O, n: NP, k: KK)], inputGradient ? [dW, dX] : [dW])
    }

    /// Direct-loop reference of `forward` (the test oracle), Double accumulation.
    public func naiveForward(x: Tensor, weight: Tensor, bias: Tensor?, y: Tensor) {
        let g = geometry, N = x.shape[0], O = outChannels, K = g.kernel
        for n in 0..<N {
            for o in 0..<O {
                for oh in 0..<g.outHeight {
                    for ow in 0..<g.outWidth {
                        var s = Double(bias?.data[o] ?? 0)
                        for c in 0..<g.channels {
                            for i in 0..<K {
                                for j in 0..<K {
                                    let ih = g.source(oh, i, g.height), iw = g.source(ow, j, g.width)
                                    if ih < 0 || iw < 0 { continue }
                                    let xv = x.data[((n * g.channels + c) * g.height + ih) * g.width + iw]
                                    s += Double(xv) * Double(weight.data[((o * g.channels + c) * K + i) * K + j])
                                }
                            }
                        }
                        y.data[((n * O + o) * g.outHeight + oh) * g.outWidth + ow] = Float(s)
                    }
                }
            }
        }
    }
}
