import Foundation

/// Activations of one generation pass over a `CoordinateLayout`, kept for its backward.
/// Buffers grow to the largest layout seen and are reused, so steady-state steps allocate nothing.
/// For a layout of more than `HyperNetwork.recomputeRows` rows only the raw coordinates are kept
/// (24 bytes a row) and per-thread scratch of one task's chunk (`RowScratch`).
public final class INRActivations: @unchecked Sendable {
    private(set) var rows = 0
    private var capacity = 0, rawCapacity = 0
    /// Whether the last `generate` kept every activation (false: `backward` recomputes them).
    private(set) var keepsActivations = true
    /// Scratch of the recomputing passes, one per concurrently running task.
    let scratch: RowScratchPool
    let hidden: Int, depth: Int, embeddingWidth: Int, outputSize: Int
    /// Raw noisy coordinates [rows, 6], embedded coordinates [rows, D].
    private(set) var raw = FloatStorage(count: 0), embedded = FloatStorage(count: 0)
    /// h₀, then per block i: aᵢ = relu(zᵢ) and hᵢ; each [rows, H].
    private(set) var h0 = FloatStorage(count: 0)
    private(set) var blockA: [FloatStorage] = [], blockH: [FloatStorage] = []
    /// Every head's weights transposed ([in, out]: W_inᵀ, each Wᵢᵀ, W_outᵀ), head after head.
    private(set) var transposedWeights = FloatStorage(count: 0)
    /// The row chunks of the last layout (`HyperNetwork.planChunks`), and the weight-gradient
    /// partial sums of every chunk but a tensor's first [slots, head parameters].
    var chunks: [HyperNetwork.RowChunk] = []
    private(set) var partials = FloatStorage(count: 0)
    /// `backward`'s count of unfinished chunks per head, under `remainingLock` (grown by `reserve`).
    private(set) var remainingChunks = UnsafeMutablePointer<Int>.allocate(capacity: 1), headCapacity = 1
    let remainingLock = NSLock()
    /// Backward scratch: dh and dz [rows, H], d(output) [rows, outputSize].
    private(set) var dH = FloatStorage(count: 0), dZ = FloatStorage(count: 0), dOut = FloatStorage(count: 0)

    public init(config: INRConfig) {
        hidden = config.hidden; depth = config.layers - 1
        embeddingWidth = 6 + 12 * config.frequencies; outputSize = config.outputSize
        scratch = RowScratchPool(config: config)
    }

    /// Grows the transposed-weight, partial-sum and per-head buffers to at least these sizes.
    func reserve(transposed: Int, partials count: Int, heads: Int) {
        if headCapacity < heads {
            remainingChunks.deallocate()
            remainingChunks = .allocate(capacity: heads)
            headCapacity = heads
        }
        if transposedWeights.count < transposed { transposedWeights = FloatStorage(count: transposed) }
        if partials.count < count { partials = FloatStorage(count: count) }
    }

    /// Sizes the buffers for `n` rows: all of them, or the raw coordinates only.
    func prepare(rows n: Int, keepActivations: Bool = true) {
        rows = n
        keepsActivations = keepActivations
        if n > rawCapacity { raw = FloatStorage(count: n * 6); rawCapacity = n }
        guard keepActivations, n > capacity else { return }
        capacity = n
        let H = hidden
        embedded = FloatStorage(count: n * embeddingWidth)
        h0 = FloatStorage(count: n * H)
        blockA = (0..<depth).map { _ in FloatStorage(count: n * H) }
        blockH = (0..<depth).map { _ in FloatStorage(count: n * H) }
        dH = FloatStorage(count: n * H); dZ = FloatStorage(count: n * H); dOut = FloatStorage(count: n * outputSize)
    }

    deinit { remainingChunks.deallocate() }

}

extension HyperNetwork {
    /// A task of the INR's work: rows `lo ..< hi` of layout entry `entry`, one of that entry's
    /// `count` chunks, writing its weight gradients to partial slot `slot` (−1: the first chunk,
    /// into the gradients). Chunks run in parallel, each on one thread, with products of fixed
    /// shapes, so their results do not depend on the thread count; a chunk's activations stay in
    /// cache from one layer to the next.
    ///
    /// With recomputation (`HyperNetwork.recomputeRows`) a task covers several consecutive row
    /// chunks of its tensor, at most `tasksPerTensor` tasks per tensor; `index` is the task's
    /// position among its tensor's.
    struct RowChunk { let entry: Int, lo: Int, hi: Int, count: Int, slot: Int, index: Int }

    /// Rows per chunk (`HyperNetwork.rowChunk`, which tests may change) by default.
    public static let defaultRowChunk = 512

    /// Parameters of one head (all heads have the same).
    var headParameterCount: Int {
        let h = heads[0], p = parameters
        return p.offsets[h.outBias] + p.specs[h.outBias].count - p.offsets[h.inWeight]
    }

    /// Fills `act.chunks` for `layout` (no allocation once the array has grown) and sizes the
    /// partial-sum buffer: one head-sized slot for every chunk after a tensor's first.
    ///
    /// Tensors go in order of increasing rows (a tensor's chunks stay together): the order does
    /// not change any result, but `backward` then finishes the small heads first, and a worker
    /// sends their gradient heads while the largest head is still being computed.
    func planChunks(_ layout: CoordinateLayout, _ act: INRActivations) {
        act.chunks.removeAll(keepingCapacity: true)
        var slots = 0
        withUnsafeTemporaryAllocation(of: Int.self, capacity: layout.entries.count) { order in
            // Insertion sort of the entry indices by rows (stable; a dozen entries).
            for t in layout.entries.indices {
                var j = t
                while j > 0 && layout.entries[order[j - 1]].rows > layout.entries[t].rows { order[j] = order[j - 1]; j -= 1 }
                order[j] = t
            }
            for t in order where layout.entries[t].rows > 0 {
                let e = layout.entries[t], count = (e.rows + rowChunk - 1) / rowChunk
                for i in 0..<count {
                    act.chunks.append(RowChunk(entry: t, lo: i * rowChunk, hi: min(e.rows, (i + 1) * rowChunk), count: count,
                                               slot: i == 0 ? -1 : slots, index: i))
                    if i > 0 { slots += 1 }
                }
            }
        }
        let H = config.hidden, D = embedding.width
        let transposedPerHead = H * D + heads[0].blocks.count * H * H + H * config.outputSize
        act.reserve(transposed: heads.count * transposedPerHead, partials: slots * headParameterCount, heads: heads.count)
    }

    /// Offsets of head t's transposed weights in `act.transposedWeights`: W_inᵀ [D, H], then the
    /// blocks' Wᵢᵀ [H, H] from `blocks` on (block i at blocks + i·H·H), then W_outᵀ [H, outputSize].
    func transposedOffsets(head t: Int) -> (input: Int, blocks: Int, output: Int) {
        let H = config.hidden, D = embedding.width, blocks = heads[0].blocks.count
        let base = t * (H * D + blocks * H * H + H * config.outputSize)
        return (base, base + H * D, base + H * D + blocks * H * H)
    }

    /// Generates every tensor of `layout` into `target` (values), using coordinate noise ε drawn
    /// from `rng`, and keeps what the backward pass needs in `act`: every activation, or — for
    /// layouts of more than `recomputeRows` rows — only the raw coordinates, from which
    /// `backward` recomputes each chunk's activations (see `HyperNetwork+Recompute.swift`).
    ///
    /// Per row chunk (in parallel, one thread each):
    ///     h₀ = relu(X W_inᵀ + b_in);  hᵢ = sᵢ·relu(hᵢ₋₁ Wᵢᵀ + bᵢ) + hᵢ₋₁;  y = (h W_outᵀ + b_out) / in_size
    /// with every weight transposed once beforehand (BLAS multiplies by W far faster than by Wᵀ;
    /// see `Transpose`).
    public func generate(_ layout: CoordinateLayout, noise epsilon: Float, rng: inout SeededRandom,
                         activations act: INRActivations, into target: ParameterSet) {
        precondition(layout.entries.count == heads.count, "layout has \(layout.entries.count) tensors, INR has \(heads.count) heads")
        let recompute = layout.rowCount > recomputeRows
        act.prepare(rows: layout.rowCount, keepActivations: !recompute)
        recompute ? planTasks(layout, act) : planChunks(layout, act)
        let embeddingTiming = Profile.start(.embedding)
        layout.rawCoordinates(noise: epsilon, rng: &rng, into: act.raw.base)
        if !recompute { embedding.embed(raw: act.raw.base, rows: layout.rowCount, into: act.embedded.base) }
        embeddingTiming?.stop()
        transposeWeights(layout, act)
        if recompute { return generateRecomputing(layout, act, into: target) }
        let H = config.hidden, D = embedding.width
        Parallel.forTasks(act.chunks.count) { c in
            let chunk = act.chunks[c], e = layout.entries[chunk.entry], row = e.firstRow + chunk.lo
            let rows = RowActivations(x: act.embedded.base + row * D, h0: act.h0.base + row * H,
                                      a: act.blockA.map { $0.base + row * H }, h: act.blockH.map { $0.base + row * H })
            forwardRows(e, head: chunk.entry, lo: chunk.lo, count: chunk.hi - chunk.lo, raw: act.raw.base + 6 * row, rows, act,
                        output: target.value(e.parameter).data + chunk.lo * e.spec.kernelArea)
        }
    }

    /// Transposes the weights of every head in use into `act.transposedWeights`: (head, matrix) tasks.
    func transposeWeights(_ layout: CoordinateLayout, _ act: INRActivations) {
        let H = config.hidden, D = embedding.width, O = config.outputSize, p = parameters, wt = act.transposedWeights.base
        let blocks = heads[0].blocks.count
        Parallel.forTasks(layout.entries.count * (blocks + 2)) { task in
            let (t, matrix) = task.quotientAndRemainder(dividingBy: blocks + 2)
            guard layout.entries[t].rows > 0 else { return }
            let head = heads[t], offsets = transposedOffsets(head: t)
            switch matrix {
            case 0: Transpose.transpose(p.value(head.inWeight).data, rows: H, columns: D, into: wt + offsets.input, threaded: false)
            case blocks + 1: Transpose.transpose(p.value(head.outWeight).data, rows: O, columns: H, into: wt + offsets.output, threaded: false)
            default:
                Transpose.transpose(p.value(head.blocks[matrix - 1].weight).data, rows: H, columns: H,
                                    into: wt + offsets.blocks + (matrix - 1) * H * H, threaded: false)
            }
        }
    }

    /// Where the activations of R consecutive rows live (each [R, width], rows contiguous): the
    /// embedded coordinates x [R, D], h₀, and per residual block aᵢ = relu(zᵢ) and hᵢ [R, H].
    struct RowActivations {
        let x: UnsafeMutablePointer<Float>, h0: UnsafeMutablePointer<Float>
        let a: [UnsafeMutablePointer<Float>], h: [UnsafeMutablePointer<Float>]
        /// h_{L−1} (h₀ without residual blocks).
        var last: UnsafeMutablePointer<Float> { h.last ?? h0 }
    }

    /// The forward pass of rows `lo ..< lo + R` of entry `e` through head `t` (x already holds
    /// their embedding), on the calling thread: the hidden activations into `rows`, and — with
    /// `output` — the generated values y = (h W_outᵀ + b_out) / in_size [R, area].
    func forwardRows(_ e: CoordinateLayout.Entry, head t: Int, lo: Int, count R: Int, raw: UnsafePointer<Float>, _ rows: RowActivations,
                     _ act: INRActivations, output: UnsafeMutablePointer<Float>?) {
        let H = config.hidden, D = embedding.width, O = config.outputSize, p = parameters, wt = act.transposedWeights.base
        let head = heads[t], offsets = transposedOffsets(head: t), area = e.spec.kernelArea
        Gemm.sgemmSingle(m: R, n: H, k: D, a: rows.x, lda: D, b: wt + offsets.input, ldb: H, beta: 0, c: rows.h0, ldc: H)
        Self.addBiasRelu(rows.h0, rows: R, p.value(head.inBias).data, H)
        var previous = rows.h0
        for (i, block) in head.blocks.enumerated() {
            let a = rows.a[i], h = rows.h[i]
            Gemm.sgemmSingle(m: R, n: H, k: H, a: previous, lda: H, b: wt + offsets.blocks + i * H * H, ldb: H, beta: 0, c: a, ldc: H)
            Self.addBiasReluResidual(a, h, previous, rows: R, p.value(block.bias).data, H, scale: p.value(block.scale)[0])
            previous = h
        }
        guard let out = output else { return }
        Gemm.sgemmSingle(m: R, n: area, k: H, a: previous, lda: H, b: wt + offsets.output + e.outputStart, ldb: O, beta: 0,
                         c: out, ldc: area)
        let bias = p.value(head.outBias).data + e.outputStart
        let timing = Profile.start(.elementwise)
        for r in 0..<R {
            let scale = 1 / raw[6 * r + 5]
            for k in 0..<area { out[r * area + k] = (out[r * area + k] + bias[k]) * scale }
        }
        timing?.stop()
    }

    /// Back-propagates the gradient with respect to the generated tensors (`target.gradients`)
    /// into the INR's parameter gradients, which it overwrites (a head whose tensor has no rows
    /// gets zeros), through the last `generate` with `act`. Per row chunk:
    ///
    ///     dy = dW_target / in_size;  dW_out = dyᵀh;  db_out = Σdy;  dh = dy W_out
    ///     block i (reversed): dsᵢ = Σ dh⊙aᵢ;  dz = sᵢ·dh⊙[aᵢ>0];  dWᵢ = dzᵀhᵢ₋₁;  dbᵢ = Σdz;  dh += dz Wᵢ
    ///     input: dz = dh⊙[h₀>0];  dW_in = dzᵀe;  db_in = Σdz
    ///
    /// (W_out's rows outside the tensor's output selection get 0.) A tensor's first chunk writes
    /// the head's gradient, every further chunk a partial slot; the thread that finishes a head's
    /// last chunk adds the slots to it in chunk order — the same sums whatever the thread count.
    ///
    /// `headFinished(t)` is called as soon as head t's gradient (`headRanges[t]` of the
    /// gradients) is final — possibly from a compute thread, concurrently for different heads —
    /// so a cluster worker can send it while the other heads are still being computed.
    public func backward(_ layout: CoordinateLayout, activations act: INRActivations, targetGradients target: ParameterSet,
                         headFinished: ((Int) -> Void)? = nil) {
        let H = config.hidden, D = embedding.width, p = parameters, headCount = headParameterCount
        for (t, e) in layout.entries.enumerated() where e.rows == 0 {
            (p.gradients.base + p.offsets[heads[t].inWeight]).update(repeating: 0, count: headCount)
            headFinished?(t)
        }
        // Chunks of each head still running; the thread that takes a head's count to 0 finishes it.
        let remaining = act.remainingChunks
        for chunk in act.chunks where chunk.slot < 0 { remaining[chunk.entry] = chunk.count }
        if !act.keepsActivations { return backwardRecomputing(layout, act, target, headFinished: headFinished) }
        Parallel.forTasks(act.chunks.count) { c in
            let chunk = act.chunks[c], e = layout.entries[chunk.entry], row = e.firstRow + chunk.lo
            let rows = RowActivations(x: act.embedded.base + row * D, h0: act.h0.base + row * H,
                                      a: act.blockA.map { $0.base + row * H }, h: act.blockH.map { $0.base + row * H })
            backwardRows(e, head: chunk.entry, lo: chunk.lo, count: chunk.hi - chunk.lo, raw: act.raw.base + 6 * row, rows,
                         dy: act.dOut.base + row * config.outputSize, dH: act.dH.base + row * H, dZ: act.dZ.base + row * H,
                         target: target, destination: chunkDestination(chunk, act), accumulate: false)
            finishChunk(c, act, headFinished: headFinished)
        }
    }

    /// Where chunk (or task) `chunk` writes its head's weight gradients: the head's gradient for
    /// a tensor's first, else its partial slot.
    func chunkDestination(_ chunk: RowChunk, _ act: INRActivations) -> UnsafeMutablePointer<Float> {
        let headBase = parameters.offsets[heads[chunk.entry].inWeight]
        return chunk.slot < 0 ? parameters.gradients.base + headBase : act.partials.base + chunk.slot * headParameterCount
    }

    /// Counts chunk `c` of its head done; the thread that finishes a head's last chunk adds the
    /// head's further chunks' slots to its first, in chunk order (their slots are consecutive,
    /// after the first chunk's), and reports the head.
    func finishChunk(_ c: Int, _ act: INRActivations, headFinished: ((Int) -> Void)?) {
        let chunk = act.chunks[c], lock = act.remainingLock, remaining = act.remainingChunks
        lock.lock()
        remaining[chunk.entry] -= 1
        let headDone = remaining[chunk.entry] == 0
        lock.unlock()
        guard headDone else { return }
        if chunk.count > 1 {
            let headCount = headParameterCount
            let g = parameters.gradients.base + parameters.offsets[heads[chunk.entry].inWeight], slots = act.partials.base
            let firstSlot = act.chunks[c - chunk.index + 1].slot
            let timing = Profile.start(.elementwise)
            for j in 0..<headCount {
                var sum = g[j]
                for s in firstSlot..<(firstSlot + chunk.count - 1) { sum += slots[s * headCount + j] }
                g[j] = sum
            }
            timing?.stop()
        }
        headFinished?(chunk.entry)
    }

    /// The backward pass of rows `lo ..< lo + R` of entry `e` through head `t` (see `backward`),
    /// on the calling thread, from the activations in `rows`, with scratch dy [R, area] and dH,
    /// dZ [R, H]. The head's weight gradients go to `destination` (laid out as the head's
    /// parameters): written, or added to what is there with `accumulate`.
    func backwardRows(_ e: CoordinateLayout.Entry, head t: Int, lo: Int, count R: Int, raw: UnsafePointer<Float>, _ rows: RowActivations,
                      dy: UnsafeMutablePointer<Float>, dH: UnsafeMutablePointer<Float>, dZ: UnsafeMutablePointer<Float>,
                      target: ParameterSet, destination: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let H = config.hidden, D = embedding.width, p = parameters, head = heads[t], area = e.spec.kernelArea
        let headBase = p.offsets[head.inWeight], beta: Float = accumulate ? 1 : 0
        func gradient(_ i: Int) -> UnsafeMutablePointer<Float> { destination + (p.offsets[i] - headBase) }

        let dTarget = target.gradient(e.parameter).data + lo * area
        let scaling = Profile.start(.elementwise)
        for r in 0..<R {
            let scale = 1 / raw[6 * r + 5]
            for k in 0..<area { dy[r * area + k] = dTarget[r * area + k] * scale }
        }
        let outWeight = gradient(head.outWeight), outBias = gradient(head.outBias)
        if !accumulate {
            outWeight.update(repeating: 0, count: p.specs[head.outWeight].count)
            outBias.update(repeating: 0, count: p.specs[head.outBias].count)
        }
        for r in 0..<R { for k in 0..<area { outBias[e.outputStart + k] += dy[r * area + k] } }
        scaling?.stop()
        Gemm.sgemmSingle(transA: true, m: area, n: H, k: R, a: dy, lda: area, b: rows.last, ldb: H, beta: beta,
                         c: outWeight + e.outputStart * H, ldc: H)
        Gemm.sgemmSingle(m: R, n: H, k: area, a: dy, lda: area, b: p.value(head.outWeight).data + e.outputStart * H, ldb: H,
                         beta: 0, c: dH, ldc: H)
        for (i, block) in head.blocks.enumerated().reversed() {
            let previous = i == 0 ? rows.h0 : rows.h[i - 1]
            let ds = Self.maskedBackward(dH, rows.a[i], scale: p.value(block.scale)[0], into: dZ, rows: R, columns: H,
                                         biasGradient: gradient(block.bias), accumulate: accumulate)
            gradient(block.scale)[0] = accumulate ? gradient(block.scale)[0] + ds : ds
            Gemm.sgemmSingle(transA: true, m: H, n: H, k: R, a: dZ, lda: H, b: previous, ldb: H, beta: beta, c: gradient(block.weight), ldc: H)
            Gemm.sgemmSingle(m: R, n: H, k: H, a: dZ, lda: H, b: p.value(block.weight).data, ldb: H, beta: 1, c: dH, ldc: H)
        }
        _ = Self.maskedBackward(dH, rows.h0, scale: 1, into: dZ, rows: R, columns: H, biasGradient: gradient(head.inBias),
                                accumulate: accumulate)
        Gemm.sgemmSingle(transA: true, m: H, n: D, k: R, a: dZ, lda: H, b: rows.x, ldb: D, beta: beta, c: gradient(head.inWeight), ldc: D)
    }

    /// The parameter range of each head, in head order: they tile the parameters.
    public var headRanges: [Range<Int>] {
        let n = headParameterCount
        return heads.indices.map { t in parameters.offsets[heads[t].inWeight]..<(parameters.offsets[heads[t].inWeight] + n) }
    }

    /// The sgemm calls `generate` (forward) and `backward` make for `layout`, in call order within
    /// each row chunk of R rows (chunks of `rowChunk`): forward R×H×D, (L−1)× R×H×H, R×area×H;
    /// backward the weight gradient and dh of the output layer, then per block dW (H×H×R) and dh
    /// (R×H×H), then the input layer's dW (H×D×R) — no product for the gradient of the
    /// embedding, which is not needed.
    public static func products(config: INRConfig, layout: CoordinateLayout,
                                rowChunk: Int = defaultRowChunk) -> (forward: [GemmShape], backward: [GemmShape]) {
        let H = config.hidden, D = 6 + 12 * config.frequencies, blocks = config.layers - 1
        var forward = [GemmShape](), backward = [GemmShape]()
        for e in layout.entries where e.rows > 0 {
            let area = e.spec.kernelArea
            for lo in stride(from: 0, to: e.rows, by: rowChunk) {
                let R = min(e.rows, lo + rowChunk) - lo
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
        }
        return (forward, backward)
    }

    /// m[r, c] = relu(m[r, c] + bias[c]) for every row (on the calling thread).
    static func addBiasRelu(_ m: UnsafeMutablePointer<Float>, rows: Int, _ bias: UnsafePointer<Float>, _ columns: Int) {
        let timing = Profile.start(.elementwise)
        defer { timing?.stop() }
        for r in 0..<rows {
            let row = m + r * columns
            for c in 0..<columns { row[c] = max(row[c] + bias[c], 0) }
        }
    }

    /// a[r, c] = relu(a[r, c] + bias[c]) and h[r, c] = s·a[r, c] + previous[r, c], in one pass
    /// (a residual block's forward after its product; on the calling thread).
    static func addBiasReluResidual(_ a: UnsafeMutablePointer<Float>, _ h: UnsafeMutablePointer<Float>, _ previous: UnsafePointer<Float>,
                                    rows: Int, _ bias: UnsafePointer<Float>, _ columns: Int, scale s: Float) {
        let timing = Profile.start(.elementwise)
        defer { timing?.stop() }
        for r in 0..<rows {
            let ar = a + r * columns, hr = h + r * columns, pr = previous + r * columns
            for c in 0..<columns {
                let v = max(ar[c] + bias[c], 0)
                ar[c] = v
                hr[c] = s * v + pr[c]
            }
        }
    }

    /// The backward of a ReLU layer's output a = relu(z) scaled by s (a residual block's
    /// hᵢ = s·aᵢ + hᵢ₋₁, or s = 1 for the input layer's h₀), for [rows, columns] matrices, in
    /// one pass on the calling thread:
    ///
    ///     dz = s·dh⊙[a > 0];   biasGradient[c] = Σ_r dz[r, c] (overwritten);   returns ds = Σ dh⊙a
    ///
    /// (ds in 8 interleaved lanes, rows in order.) With `accumulate` the column sums are added
    /// to `biasGradient` instead of overwriting it.
    static func maskedBackward(_ dH: UnsafePointer<Float>, _ a: UnsafePointer<Float>, scale s: Float,
                               into dZ: UnsafeMutablePointer<Float>, rows: Int, columns: Int,
                               biasGradient sums: UnsafeMutablePointer<Float>, accumulate: Bool = false) -> Float {
        let timing = Profile.start(.elementwise)
        defer { timing?.stop() }
        let vectorColumns = columns & ~7
        if !accumulate { sums.update(repeating: 0, count: columns) }
        var lanes = SIMD8<Float>(), tail: Float = 0
        for r in 0..<rows {
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
        return lanes.sum() + tail
    }
}
