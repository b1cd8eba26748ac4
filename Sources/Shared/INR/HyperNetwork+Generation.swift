/// Activations of one generation pass over a `CoordinateLayout`, kept for its backward.
/// Buffers grow to the largest layout seen and are reused, so steady-state steps allocate nothing.
public final class INRActivations: @unchecked Sendable {
    private(set) var rows = 0
    private var capacity = 0
    let hidden: Int, depth: Int, embeddingWidth: Int, outputSize: Int
    /// Raw noisy coordinates [rows, 6], embedded coordinates [rows, D].
    private(set) var raw = FloatStorage(count: 0), embedded = FloatStorage(count: 0)
    /// h₀, then per block i: aᵢ = relu(zᵢ) and hᵢ; each [rows, H].
    private(set) var h0 = FloatStorage(count: 0)
    private(set) var blockA: [FloatStorage] = [], blockH: [FloatStorage] = []
    /// The weight of the layer being generated, transposed ([in, out]; H·max(D, H, outputSize)).
    let transposedWeight: FloatStorage
    /// Backward scratch: dh and dz [rows, H], d(output) [rows, outputSize], and the per-chunk
    /// partial sums of the fused backward loops [chunks, H + 1].
    private(set) var dH = FloatStorage(count: 0), dZ = FloatStorage(count: 0), dOut = FloatStorage(count: 0)
    private(set) var partialSums = FloatStorage(count: 0)

    public init(config: INRConfig) {
        hidden = config.hidden; depth = config.layers - 1
        embeddingWidth = 6 + 12 * config.frequencies; outputSize = config.outputSize
        transposedWeight = FloatStorage(count: hidden * max(embeddingWidth, hidden, outputSize))
    }

    func prepare(rows n: Int) {
        rows = n
        guard n > capacity else { return }
        capacity = n
        let H = hidden
        raw = FloatStorage(count: n * 6); embedded = FloatStorage(count: n * embeddingWidth)
        h0 = FloatStorage(count: n * H)
        blockA = (0..<depth).map { _ in FloatStorage(count: n * H) }
        blockH = (0..<depth).map { _ in FloatStorage(count: n * H) }
        dH = FloatStorage(count: n * H); dZ = FloatStorage(count: n * H); dOut = FloatStorage(count: n * outputSize)
        partialSums = FloatStorage(count: HyperNetwork.chunkCount(rows: n) * (H + 1))
    }

    /// The last hidden state h_{L−1} (h₀ when there are no residual blocks).
    var last: FloatStorage { depth == 0 ? h0 : blockH[depth - 1] }
}

extension HyperNetwork {
    /// Generates every tensor of `layout` into `target` (values), using coordinate noise ε drawn
    /// from `rng`, and keeps what the backward pass needs in `act`.
    public func generate(_ layout: CoordinateLayout, noise epsilon: Float, rng: inout SeededRandom,
                         activations act: INRActivations, into target: ParameterSet) {
        precondition(layout.entries.count == heads.count, "layout has \(layout.entries.count) tensors, INR has \(heads.count) heads")
        act.prepare(rows: layout.rowCount)
        let embeddingTiming = Profile.start(.embedding)
        layout.rawCoordinates(noise: epsilon, rng: &rng, into: act.raw.base)
        embedding.embed(raw: act.raw.base, rows: layout.rowCount, into: act.embedded.base)
        embeddingTiming?.stop()
        let H = config.hidden, D = embedding.width, p = parameters, wt = act.transposedWeight.base
        for (t, e) in layout.entries.enumerated() {
            let head = heads[t], R = e.rows, area = e.spec.kernelArea
            guard R > 0 else { continue }
            let x = act.embedded.base + e.firstRow * D, h0 = act.h0.base + e.firstRow * H
            // h₀ = relu(X W_inᵀ + b_in); every product multiplies by a transposed copy of its
            // weight (see `Transpose`: BLAS is twice as fast without the transposed operand).
            Transpose.transpose(p.value(head.inWeight).data, rows: H, columns: D, into: wt)
            Gemm.sgemm(m: R, n: H, k: D, a: x, lda: D, b: wt, ldb: H, beta: 0, c: h0, ldc: H)
            Self.addBias(h0, rows: R, p.value(head.inBias).data, H, relu: true)
            var previous = h0
            for (i, block) in head.blocks.enumerated() {
                // aᵢ = relu(hᵢ₋₁ Wᵢᵀ + bᵢ),  hᵢ = sᵢ·aᵢ + hᵢ₋₁
                let a = act.blockA[i].base + e.firstRow * H, h = act.blockH[i].base + e.firstRow * H
                Transpose.transpose(p.value(block.weight).data, rows: H, columns: H, into: wt)
                Gemm.sgemm(m: R, n: H, k: H, a: previous, lda: H, b: wt, ldb: H, beta: 0, c: a, ldc: H)
                Self.addBiasReluResidual(a, h, previous, rows: R, p.value(block.bias).data, H, scale: p.value(block.scale)[0])
                previous = h
            }
            // y = h W_outᵀ + b_out on the selected outputs, then divided by the noisy in_size.
            let out = target.value(e.tensor).data
            Transpose.transpose(p.value(head.outWeight).data + e.outputStart * H, rows: area, columns: H, into: wt)
            Gemm.sgemm(m: R, n: area, k: H, a: previous, lda: H, b: wt, ldb: area, beta: 0, c: out, ldc: area)
            let bias = p.value(head.outBias).data + e.outputStart, raw = act.raw.base + 6 * e.firstRow
            let timing = Profile.start(.elementwise)
            for r in 0..<R {
                let scale = 1 / raw[6 * r + 5]
                for k in 0..<area { out[r * area + k] = (out[r * area + k] + bias[k]) * scale }
            }
            timing?.stop()
        }
    }

    /// Back-propagates the gradient with respect to the generated tensors (`target.gradients`)
    /// into the INR's parameter gradients, which it overwrites (a head whose tensor has no rows
    /// gets zeros), through the last `generate` with `act`:
    ///
    ///     dy = dW_target / in_size;  dW_out = dyᵀh;  db_out = Σdy;  dh = dy W_out
    ///     block i (reversed): dsᵢ = Σ dh⊙aᵢ;  dz = sᵢ·dh⊙[aᵢ>0];  dWᵢ = dzᵀhᵢ₋₁;  dbᵢ = Σdz;  dh += dz Wᵢ
    ///     input: dz = dh⊙[h₀>0];  dW_in = dzᵀe;  db_in = Σdz
    ///
    /// (W_out's rows outside the tensor's output selection get 0.) The masks, the residual
    /// scale's sum and the bias sums run in one pass per layer (`maskedBackward`).
    public func backward(_ layout: CoordinateLayout, activations act: INRActivations, targetGradients target: ParameterSet) {
        let H = config.hidden, D = embedding.width, p = parameters
        for (t, e) in layout.entries.enumerated() {
            let head = heads[t], R = e.rows, area = e.spec.kernelArea
            p.gradient(head.outWeight).zero(); p.gradient(head.outBias).zero()
            guard R > 0 else {
                for b in head.blocks { p.gradient(b.weight).zero(); p.gradient(b.bias).zero(); p.gradient(b.scale).zero() }
                p.gradient(head.inWeight).zero(); p.gradient(head.inBias).zero()
                continue
            }
            let raw = act.raw.base + 6 * e.firstRow, dTarget = target.gradient(e.tensor).data, dy = act.dOut.base
            let scaling = Profile.start(.elementwise)
            for r in 0..<R {
                let scale = 1 / raw[6 * r + 5]
                for k in 0..<area { dy[r * area + k] = dTarget[r * area + k] * scale }
            }
            scaling?.stop()
            let last = head.blocks.isEmpty ? act.h0.base + e.firstRow * H : act.blockH[head.blocks.count - 1].base + e.firstRow * H
            Gemm.sgemm(transA: true, m: area, n: H, k: R, a: dy, lda: area, b: last, ldb: H, beta: 0,
                       c: p.gradient(head.outWeight).data + e.outputStart * H, ldc: H)
            Self.addColumnSums(dy, rows: R, columns: area, into: p.gradient(head.outBias).data + e.outputStart)
            let dH = act.dH.base, dZ = act.dZ.base, partial = act.partialSums.base
            Gemm.sgemm(m: R, n: H, k: area, a: dy, lda: area, b: p.value(head.outWeight).data + e.outputStart * H, ldb: H,
                       beta: 0, c: dH, ldc: H)
            for (i, block) in head.blocks.enumerated().reversed() {
                let a = act.blockA[i].base + e.firstRow * H
                let previous = i == 0 ? act.h0.base + e.firstRow * H : act.blockH[i - 1].base + e.firstRow * H
                p.gradient(block.scale)[0] = Self.maskedBackward(dH, a, scale: p.value(block.scale)[0], into: dZ, rows: R, columns: H,
                                                                 biasGradient: p.gradient(block.bias).data, partialSums: partial)
                Gemm.sgemm(transA: true, m: H, n: H, k: R, a: dZ, lda: H, b: previous, ldb: H, beta: 0, c: p.gradient(block.weight).data, ldc: H)
                Gemm.sgemm(m: R, n: H, k: H, a: dZ, lda: H, b: p.value(block.weight).data, ldb: H, beta: 1, c: dH, ldc: H)
            }
            let h0 = act.h0.base + e.firstRow * H, x = act.embedded.base + e.firstRow * D
            _ = Self.maskedBackward(dH, h0, scale: 1, into: dZ, rows: R, columns: H, biasGradient: p.gradient(head.inBias).data,
                                    partialSums: partial)
            Gemm.sgemm(transA: true, m: H, n: D, k: R, a: dZ, lda: H, b: x, ldb: D, beta: 0, c: p.gradient(head.inWeight).data, ldc: D)
        }
    }

    /// The sgemm calls `generate` (forward) and `backward` make for `layout`, in call order: per
    /// generated tensor of R rows, forward R×H×D, (L−1)× R×H×H, R×area×H; backward the weight
    /// gradients and dh of the output layer, then per block dW (H×H×R) and dh (R×H×H), then the
    /// input layer's dW (H×D×R) — no product for the gradient of the embedding, which is not needed.
    public static func products(config: INRConfig, layout: CoordinateLayout) -> (forward: [GemmShape], backward: [GemmShape]) {
        let H = config.hidden, D = 6 + 12 * config.frequencies, blocks = config.layers - 1
        var forward = [GemmShape](), backward = [GemmShape]()
        for e in layout.entries where e.rows > 0 {
            let R = e.rows, area = e.spec.kernelArea
            forward.append(GemmShape(m: R, n: H, k: D))
            for _ in 0..<blocks { forward.append(GemmShape(m: R, n: H, k: H)) }
            forward.append(GemmShape(m: R, n: area, k: H))
            backward.append(GemmShape(transA: true, m: area, n: H, k: R))
            backward.append(GemmShape(m: R, n: H, k: area))
            for _ in 0..<blocks {
                backward.append(GemmShape(transA: true, m: H, n: H, k: R))
                backward.append(GemmShape(m: R, n: H, k: H))
            }
            backward.append(GemmShape(transA: true, m: H, n: D, k: R))
        }
        return (forward, backward)
    }

    /// m[r, c] += bias[c] (then relu) for every row.
    static func addBias(_ m: UnsafeMutablePointer<Float>, rows: Int, _ bias: UnsafePointer<Float>, _ columns: Int, relu: Bool) {
        let timing = Profile.start(.elementwise)
        defer { timing?.stop() }
        Parallel.forRanges(rows, minimum: 128) { range in
            for r in range {
                let row = m + r * columns
                if relu { for c in 0..<columns { row[c] = max(row[c] + bias[c], 0) } } else { for c in 0..<columns { row[c] += bias[c] } }
            }
        }
    }

    /// a[r, c] = relu(a[r, c] + bias[c]) and h[r, c] = s·a[r, c] + previous[r, c], in one pass
    /// (a residual block's forward after its product).
    static func addBiasReluResidual(_ a: UnsafeMutablePointer<Float>, _ h: UnsafeMutablePointer<Float>, _ previous: UnsafePointer<Float>,
                                    rows: Int, _ bias: UnsafePointer<Float>, _ columns: Int, scale s: Float) {
        let timing = Profile.start(.elementwise)
        defer { timing?.stop() }
        Parallel.forRanges(rows, minimum: 128) { range in
            for r in range {
                let ar = a + r * columns, hr = h + r * columns, pr = previous + r * columns
                for c in 0..<columns {
                    let v = max(ar[c] + bias[c], 0)
                    ar[c] = v
                    hr[c] = s * v + pr[c]
                }
            }
        }
    }

    /// Rows per chunk of `maskedBackward`'s sums: fixed, so their rounding does not depend on
    /// the thread count.
    static let reductionRows = 32

    /// Chunks of `reductionRows` rows in `rows` rows.
    static func chunkCount(rows: Int) -> Int { (rows + reductionRows - 1) / reductionRows }

    /// The backward of a ReLU layer's output a = relu(z) scaled by s (a residual block's
    /// hᵢ = s·aᵢ + hᵢ₋₁, or s = 1 for the input layer's h₀), for [rows, columns] matrices:
    ///
    ///     dz = s·dh⊙[a > 0];   biasGradient[c] = Σ_r dz[r, c];   returns ds = Σ dh⊙a
    ///
    /// in one pass. Rows are cut into fixed chunks of `reductionRows`; each chunk's partial
    /// sums (8 interleaved lanes for ds) go to `partialSums` [chunks, columns + 1] and are added in
    /// chunk order, so any thread count gives the same bits.
    static func maskedBackward(_ dH: UnsafePointer<Float>, _ a: UnsafePointer<Float>, scale s: Float,
                               into dZ: UnsafeMutablePointer<Float>, rows: Int, columns: Int,
                               biasGradient: UnsafeMutablePointer<Float>, partialSums: UnsafeMutablePointer<Float>) -> Float {
        let timing = Profile.start(.elementwise)
        defer { timing?.stop() }
        let chunks = chunkCount(rows: rows), stride = columns + 1, vectorColumns = columns & ~7
        Parallel.forRanges(chunks, minimum: rows * columns >= 1 << 15 ? 1 : chunks) { range in
            for chunk in range {
                let sums = partialSums + chunk * stride
                sums.update(repeating: 0, count: stride)
                var lanes = SIMD8<Float>(), tail: Float = 0
                for r in (chunk * reductionRows)..<min(rows, (chunk + 1) * reductionRows) {
                    let d = dH + r * columns, x = a + r * columns, z = dZ + r * columns
                    var c = 0
                    while c < vectorColumns {
                        let dv = UnsafeRawPointer(d + c).loadUnaligned(as: SIMD8<Float>.self)
                        let xv = UnsafeRawPointer(x + c).loadUnaligned(as: SIMD8<Float>.self)
                        lanes += dv * xv
                        let zv = SIMD8<Float>().replacing(with: s * dv, where: xv .> 0)
                        UnsafeMutableRawPointer(z + c).storeBytes(of: zv, as: SIMD8<Float>.self)
                        let column = UnsafeRawPointer(sums + c).loadUnaligned(as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(sums + c).storeBytes(of: column + zv, as: SIMD8<Float>.self)
                        c += 8
                    }
                    while c < columns {
                        tail += d[c] * x[c]
                        z[c] = x[c] > 0 ? s * d[c] : 0
                        sums[c] += z[c]
                        c += 1
                    }
                }
                sums[columns] = lanes.sum() + tail
            }
        }
        var ds: Float = 0
        for c in 0..<columns { biasGradient[c] = 0 }
        for chunk in 0..<chunks {
            let sums = partialSums + chunk * stride
            for c in 0..<columns { biasGradient[c] += sums[c] }
            ds += sums[columns]
        }
        return ds
    }

    /// sums[c] += Σ_r m[r, c], rows in order; columns are split over the compute threads, so the
    /// result does not depend on their number.
    static func addColumnSums(_ m: UnsafePointer<Float>, rows: Int, columns: Int, into sums: UnsafeMutablePointer<Float>) {
        let timing = Profile.start(.elementwise)
        defer { timing?.stop() }
        Parallel.forRanges(columns, minimum: rows * columns >= 1 << 16 ? 32 : columns) { cols in
            for r in 0..<rows {
                let row = m + r * columns
                for c in cols { sums[c] += row[c] }
            }
        }
    }
}
