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

    /// Floats of im2col columns per chunk of images (1 MiB): a chunk's columns, their gradient
    /// and its products stay in cache from im2col through the products to col2im, instead of
    /// streaming a whole batch's columns (16 MB for LeNet's conv2 at w = 20) through memory.
    public static let chunkFloats = 1 << 18

    /// Images per chunk: as many as fit `chunkFloats` columns, at least 1. A function of the
    /// geometry alone — never of the thread count — so sums over chunks (dW, db) round the same
    /// on every machine.
    public func imagesPerChunk(batch: Int) -> Int {
        max(1, min(batch, Self.chunkFloats / max(1, geometry.patchSize * geometry.positions)))
    }

    /// y = W ⋆ x + b, computed per chunk of images as Y[O, n·P] = W[O, C·k·k] · columns[C·k·k, n·P];
    /// with `relu`, y = relu(W ⋆ x + b) in the same pass (its backward is the caller's:
    /// `ReLU.backward` or a pooling backward's `mask`). `keepColumns`: every chunk's columns are
    /// kept in the workspace (the whole batch's) for `backward(…, columnsFromForward: true)`,
    /// which then need not rebuild them.
    public func forward(x: Tensor, weight: Tensor, bias: Tensor?, y: Tensor, workspace: Workspace, relu: Bool = false,
                        keepColumns: Bool = false) {
        let g = geometry, N = x.shape[0], O = outChannels, P = g.positions, KK = g.patchSize
        precondition(x.count == N * g.channels * g.height * g.width, "conv input \(x.shape) vs geometry")
        precondition(weight.count == O * KK && y.count == N * O * P, "conv weight/output shapes")
        let chunk = imagesPerChunk(batch: N), plane = g.channels * g.height * g.width
        let allColumns = workspace.buffer(.columns, count: KK * (keepColumns ? N : chunk) * P)
        let prod = workspace.buffer(.product, count: O * chunk * P)
        for first in stride(from: 0, to: N, by: chunk) {
            let n = min(chunk, N - first), cols = keepColumns ? allColumns + KK * first * P : allColumns
            im2col(x.data + first * plane, batch: n, g, columns: cols)
            Gemm.sgemm(m: O, n: n * P, k: KK, a: weight.data, lda: KK, b: cols, ldb: n * P, beta: 0, c: prod, ldc: n * P)
            // Y[o, i·P + p] → y[first + i, o, p], adding the bias.
            Parallel.forRanges(n * O) { rows in
                for row in rows {
                    let (i, o) = row.quotientAndRemainder(dividingBy: O)
                    let src = prod + o * n * P + i * P, dst = y.data + ((first + i) * O + o) * P
                    let b = bias?.data[o] ?? 0
                    if relu { for p in 0..<P { dst[p] = max(src[p] + b, 0) } } else { for p in 0..<P { dst[p] = src[p] + b } }
                }
            }
        }
    }

    /// With Y = W·X (X the im2col columns), per chunk of images:
    ///   dW += dY · Xᵀ,   db += Σ_{n,p} dy[n, o, p],   dX = Wᵀ · dY,   dx = col2im(dX).
    /// `dx` may be nil for the first layer (no input gradient needed). `columnsFromForward`:
    /// the workspace still holds this layer's im2col columns of `x` from a `forward(…,
    /// keepColumns: true)` (a network that gives each conv its own workspace skips rebuilding them).
    public func backward(x: Tensor, weight: Tensor, dy: Tensor, dx: Tensor?, dWeight: Tensor, dBias: Tensor?,
                         workspace: Workspace, columnsFromForward: Bool = false) {
        let g = geometry, N = x.shape[0], O = outChannels, P = g.positions, KK = g.patchSize
        let chunk = imagesPerChunk(batch: N), plane = g.channels * g.height * g.width
        let allColumns = workspace.buffer(.columns, count: KK * (columnsFromForward ? N : chunk) * P)
        let dY = workspace.buffer(.gradProduct, count: O * chunk * P)
        let dCols = dx == nil ? nil : workspace.buffer(.gradColumns, count: KK * chunk * P)
        for first in stride(from: 0, to: N, by: chunk) {
            let n = min(chunk, N - first)
            let cols = columnsFromForward ? allColumns + KK * first * P : allColumns
            if !columnsFromForward { im2col(x.data + first * plane, batch: n, g, columns: cols) }
            // dy[first + i, o, p] → dY[o, i·P + p], summing each output channel's row for db on the way.
            Parallel.forRanges(O) { channels in
                for o in channels {
                    let row = dY + o * n * P
                    var s: Float = 0
                    for i in 0..<n {
                        let src = dy.data + ((first + i) * O + o) * P, dst = row + i * P
                        for p in 0..<P { dst[p] = src[p]; s += src[p] }
                    }
                    if let dBias { dBias.data[o] += s }
                }
            }
            Gemm.sgemm(transB: true, m: O, n: KK, k: n * P, a: dY, lda: n * P, b: cols, ldb: n * P,
                       beta: 1, c: dWeight.data, ldc: KK)
            guard let dx, let dCols else { continue }
            Gemm.sgemm(transA: true, m: KK, n: n * P, k: O, a: weight.data, lda: KK, b: dY, ldb: n * P,
                       beta: 0, c: dCols, ldc: n * P)
            col2im(dCols, batch: n, g, dx: dx.data + first * plane)
        }
    }

    /// The sgemm calls of `forward` and `backward` on a batch of `batch`, per chunk of images:
    /// Y = W·X (O×n·P×C·k²); dW += dY·Xᵀ, and dX = Wᵀ·dY when the input gradient is wanted.
    public func products(batch: Int, inputGradient: Bool) -> (forward: [GemmShape], backward: [GemmShape]) {
        let O = outChannels, P = geometry.positions, KK = geometry.patchSize, chunk = imagesPerChunk(batch: batch)
        var forward = [GemmShape](), backward = [GemmShape]()
        for first in stride(from: 0, to: batch, by: chunk) {
            let NP = min(chunk, batch - first) * P
            forward.append(GemmShape(m: O, n: NP, k: KK))
            backward.append(GemmShape(transB: true, m: O, n: KK, k: NP))
            if inputGradient { backward.append(GemmShape(transA: true, m: KK, n: NP, k: O)) }
        }
        return (forward, backward)
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
