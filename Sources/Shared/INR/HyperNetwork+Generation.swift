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
    /// Backward scratch: dh and dz [rows, H], d(output) [rows, outputSize].
    private(set) var dH = FloatStorage(count: 0), dZ = FloatStorage(count: 0), dOut = FloatStorage(count: 0)

    public init(config: INRConfig) {
        hidden = config.hidden; depth = config.layers - 1
        embeddingWidth = 6 + 12 * config.frequencies; outputSize = config.outputSize
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
        let H = config.hidden, D = embedding.width, p = parameters
        for (t, e) in layout.entries.enumerated() {
            let head = heads[t], R = e.rows, area = e.spec.kernelArea
            guard R > 0 else { continue }
            let x = act.embedded.base + e.firstRow * D, h0 = act.h0.base + e.firstRow * H
            // h₀ = relu(X W_inᵀ + b_in)
            Gemm.sgemm(transB: true, m: R, n: H, k: D, a: x, lda: D, b: p.value(head.inWeight).data, ldb: D, beta: 0, c: h0, ldc: H)
            Self.addBias(h0, rows: R, p.value(head.inBias).data, H, relu: true)
            var previous = h0
            for (i, block) in head.blocks.enumerated() {
                // aᵢ = relu(hᵢ₋₁ Wᵢᵀ + bᵢ),  hᵢ = sᵢ·aᵢ + hᵢ₋₁
                let a = act.blockA[i].base + e.firstRow * H, h = act.blockH[i].base + e.firstRow * H
                Gemm.sgemm(transB: true, m: R, n: H, k: H, a: previous, lda: H, b: p.value(block.weight).data, ldb: H, beta: 0, c: a, ldc: H)
                Self.addBiasReluResidual(a, h, previous, rows: R, p.value(block.bias).data, H, scale: p.value(block.scale)[0])
                previous = h
            }
            // y = h W_outᵀ + b_out on the selected outputs, then divided by the noisy in_size.
            let out = target.value(e.tensor).data
            Gemm.sgemm(transB: true, m: R, n: area, k: H, a: previous, lda: H, b: p.value(head.outWeight).data + e.outputStart * H,
                       ldb: H, beta: 0, c: out, ldc: area)
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
    /// into the INR's parameter gradients (accumulated), through the last `generate` with `act`:
    ///
    ///     dy = dW_target / in_size;  dW_out += dyᵀh;  db_out += Σdy;  dh = dy W_out
    ///     block i (reversed): dsᵢ += Σ dh⊙aᵢ;  dz = sᵢ·dh⊙[aᵢ>0];  dWᵢ += dzᵀhᵢ₋₁;  dbᵢ += Σdz;  dh += dz Wᵢ
    ///     input: dz = dh⊙[h₀>0];  dW_in += dzᵀe;  db_in += Σdz
    public func backward(_ layout: CoordinateLayout, activations act: INRActivations, targetGradients target: ParameterSet) {
        let H = config.hidden, D = embedding.width, p = parameters
        for (t, e) in layout.entries.enumerated() {
            let head = heads[t], R = e.rows, area = e.spec.kernelArea
            guard R > 0 else { continue }
            let raw = act.raw.base + 6 * e.firstRow, dTarget = target.gradient(e.tensor).data, dy = act.dOut.base
            let scaling = Profile.start(.elementwise)
            for r in 0..<R {
                let scale = 1 / raw[6 * r + 5]
                for k in 0..<area { dy[r * area + k] = dTarget[r * area + k] * scale }
            }
            scaling?.stop()
            let last = head.blocks.isEmpty ? act.h0.base + e.firstRow * H : act.blockH[head.blocks.count - 1].base + e.firstRow * H
            Gemm.sgemm(transA: true, m: area, n: H, k: R, a: dy, lda: area, b: last, ldb: H, beta: 1,
                       c: p.gradient(head.outWeight).data + e.outputStart * H, ldc: H)
            Self.addColumnSums(dy, rows: R, columns: area, into: p.gradient(head.outBias).data + e.outputStart)
            let dH = act.dH.base, dZ = act.dZ.base
            Gemm.sgemm(m: R, n: H, k: area, a: dy, lda: area, b: p.value(head.outWeight).data + e.outputStart * H, ldb: H,
                       beta: 0, c: dH, ldc: H)
            for (i, block) in head.blocks.enumerated().reversed() {
                let a = act.blockA[i].base + e.firstRow * H
                let previous = i == 0 ? act.h0.base + e.firstRow * H : act.blockH[i - 1].base + e.firstRow * H
                p.gradient(block.scale)[0] += Self.residualBackward(dH, a, scale: p.value(block.scale)[0], into: dZ, count: R * H)
                Gemm.sgemm(transA: true, m: H, n: H, k: R, a: dZ, lda: H, b: previous, ldb: H, beta: 1, c: p.gradient(block.weight).data, ldc: H)
                Self.addColumnSums(dZ, rows: R, columns: H, into: p.gradient(block.bias).data)
                Gemm.sgemm(m: R, n: H, k: H, a: dZ, lda: H, b: p.value(block.weight).data, ldb: H, beta: 1, c: dH, ldc: H)
            }
            let h0 = act.h0.base + e.firstRow * H, x = act.embedded.base + e.firstRow * D
            let mask = Profile.start(.elementwise)
            Parallel.forRanges(R * H, minimum: 1 << 15) { r in for j in r { dZ[j] = h0[j] > 0 ? dH[j] : 0 } }
            mask?.stop()
            Gemm.sgemm(transA: true, m: H, n: D, k: R, a: dZ, lda: H, b: x, ldb: D, beta: 1, c: p.gradient(head.inWeight).data, ldc: D)
            Self.addColumnSums(dZ, rows: R, columns: H, into: p.gradient(head.inBias).data)
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
            forward.append(GemmShape(transB: true, m: R, n: H, k: D))
            for _ in 0..<blocks { forward.append(GemmShape(transB: true, m: R, n: H, k: H)) }
            forward.append(GemmShape(transB: true, m: R, n: area, k: H))
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

    /// Elements per chunk of `residualBackward`'s sum: fixed, so the sum's rounding does not
    /// depend on the thread count.
    static let reductionChunk = 8192

    /// The backward of hᵢ = s·aᵢ + hᵢ₋₁ through aᵢ = relu(zᵢ): dz = s·dh⊙[a > 0]; returns
    /// ds = Σ dh⊙a. The sum runs over fixed chunks (8 interleaved partial sums each, which lets it
    /// vectorise), and the chunk sums are added in order, so any thread count gives the same bits.
    static func residualBackward(_ dH: UnsafePointer<Float>, _ a: UnsafePointer<Float>, scale s: Float,
                                 into dZ: UnsafeMutablePointer<Float>, count: Int) -> Float {
        let timing = Profile.start(.elementwise)
        defer { timing?.stop() }
        let chunks = (count + reductionChunk - 1) / reductionChunk
        return withUnsafeTemporaryAllocation(of: Float.self, capacity: max(chunks, 1)) { partial in
            let sums = partial.baseAddress!
            Parallel.forRanges(chunks) { range in
                for chunk in range {
                    let lo = chunk * reductionChunk, hi = min(count, lo + reductionChunk)
                    var lanes = SIMD8<Float>()
                    var j = lo
                    while j + 8 <= hi {
                        let d = UnsafeRawPointer(dH + j).loadUnaligned(as: SIMD8<Float>.self)
                        let x = UnsafeRawPointer(a + j).loadUnaligned(as: SIMD8<Float>.self)
                        lanes += d * x
                        let z = SIMD8<Float>().replacing(with: s * d, where: x .> 0)
                        UnsafeMutableRawPointer(dZ + j).storeBytes(of: z, as: SIMD8<Float>.self)
                        j += 8
                    }
                    var tail: Float = 0
                    while j < hi { tail += dH[j] * a[j]; dZ[j] = a[j] > 0 ? s * dH[j] : 0; j += 1 }
                    sums[chunk] = lanes.sum() + tail
                }
            }
            var ds: Float = 0
            for c in 0..<chunks { ds += sums[c] }
            return ds
        }
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
