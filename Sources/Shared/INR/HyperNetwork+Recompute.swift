import Foundation

/// Generation and backward for layouts too large to keep their activations (a whole ResNet-18
/// has over a million coordinate rows; at H = 256, L = 4 the kept activations take ≈ 9.7 KB a
/// row). `generate` keeps only the raw coordinates; `backward` recomputes, chunk by chunk, the
/// embedding and hidden activations of the rows it back-propagates — one more forward pass of
/// the INR for memory that no longer grows with the rows: the raw coordinates, per-thread
/// scratch for one chunk, and at most `tasksPerTensor − 1` partial gradients per head.
///
/// Work is cut into tasks of consecutive row chunks of one tensor, at most `tasksPerTensor` per
/// tensor, each run on one thread accumulating its chunks' weight gradients in row order; the
/// cut depends on the layout only, so results do not depend on the thread count. (They differ
/// from the keep-everything path only in the order of the gradient sums.)
extension HyperNetwork {
    /// Rows above which activations are recomputed (2¹⁷ rows ≈ 1.2 GB kept at H = 256, L = 4).
    public static let defaultRecomputeRows = 1 << 17
    /// The most tasks (and so partial-gradient slots + 1) of one tensor when recomputing.
    static let tasksPerTensor = 4

    /// Fills `act.chunks` with the tasks of `layout` (tensors in order of increasing rows, as in
    /// `planChunks`) and sizes the partial-sum buffer.
    func planTasks(_ layout: CoordinateLayout, _ act: INRActivations) {
        act.chunks.removeAll(keepingCapacity: true)
        var slots = 0
        let order = layout.entries.indices.sorted { (layout.entries[$0].rows, $0) < (layout.entries[$1].rows, $1) }
        for t in order where layout.entries[t].rows > 0 {
            let rows = layout.entries[t].rows, chunks = (rows + rowChunk - 1) / rowChunk, count = min(chunks, Self.tasksPerTensor)
            for j in 0..<count {
                let lo = (j * chunks / count) * rowChunk, hi = min(rows, ((j + 1) * chunks / count) * rowChunk)
                act.chunks.append(RowChunk(entry: t, lo: lo, hi: hi, count: count, slot: j == 0 ? -1 : slots, index: j))
                if j > 0 { slots += 1 }
            }
        }
        let H = config.hidden, D = embedding.width
        let transposedPerHead = H * D + heads[0].blocks.count * H * H + H * config.outputSize
        act.reserve(transposed: heads.count * transposedPerHead, partials: slots * headParameterCount, heads: heads.count)
    }

    /// The forward pass of every task, chunk by chunk through scratch, writing only the outputs.
    func generateRecomputing(_ layout: CoordinateLayout, _ act: INRActivations, into target: ParameterSet) {
        Parallel.forTasks(act.chunks.count) { c in
            let task = act.chunks[c], e = layout.entries[task.entry], area = e.spec.kernelArea
            let scratch = act.scratch.take(rowChunk)
            defer { act.scratch.give(scratch) }
            for lo in stride(from: task.lo, to: task.hi, by: rowChunk) {
                let R = min(task.hi, lo + rowChunk) - lo, raw = act.raw.base + 6 * (e.firstRow + lo)
                embedding.embedSerially(raw: raw, rows: R, into: scratch.rows.x)
                forwardRows(e, head: task.entry, lo: lo, count: R, raw: raw, scratch.rows, act, output: target.value(e.parameter).data + lo * area)
            }
        }
    }

    /// `backward` for a layout generated without its activations: each task recomputes each of
    /// its chunks' activations, then back-propagates the chunk, accumulating into its slot.
    func backwardRecomputing(_ layout: CoordinateLayout, _ act: INRActivations, _ target: ParameterSet, headFinished: ((Int) -> Void)?) {
        Parallel.forTasks(act.chunks.count) { c in
            let task = act.chunks[c], e = layout.entries[task.entry], destination = chunkDestination(task, act)
            let scratch = act.scratch.take(rowChunk)
            for lo in stride(from: task.lo, to: task.hi, by: rowChunk) {
                let R = min(task.hi, lo + rowChunk) - lo, raw = act.raw.base + 6 * (e.firstRow + lo)
                embedding.embedSerially(raw: raw, rows: R, into: scratch.rows.x)
                forwardRows(e, head: task.entry, lo: lo, count: R, raw: raw, scratch.rows, act, output: nil)
                backwardRows(e, head: task.entry, lo: lo, count: R, raw: raw, scratch.rows, dy: scratch.dy, dH: scratch.dH, dZ: scratch.dZ,
                             target: target, destination: destination, accumulate: lo != task.lo)
            }
            act.scratch.give(scratch)
            finishChunk(c, act, headFinished: headFinished)
        }
    }
}

/// One task's scratch for `rows` rows: the activations (`HyperNetwork.RowActivations`) and the
/// backward's dy [rows, outputSize], dH and dZ [rows, H], in one allocation.
final class RowScratch: @unchecked Sendable {
    let capacity: Int
    let storage: FloatStorage
    let rows: HyperNetwork.RowActivations
    let dy: UnsafeMutablePointer<Float>, dH: UnsafeMutablePointer<Float>, dZ: UnsafeMutablePointer<Float>

    init(rows n: Int, config: INRConfig) {
        let H = config.hidden, D = 6 + 12 * config.frequencies, depth = config.layers - 1
        capacity = n
        storage = FloatStorage(count: n * (D + H * (1 + 2 * depth) + 2 * H + config.outputSize))
        var next = storage.base
        func carve(_ count: Int) -> UnsafeMutablePointer<Float> { defer { next += count }; return next }
        let x = carve(n * D), h0 = carve(n * H)
        let a = (0..<depth).map { _ in carve(n * H) }, h = (0..<depth).map { _ in carve(n * H) }
        rows = HyperNetwork.RowActivations(x: x, h0: h0, a: a, h: h)
        dH = carve(n * H); dZ = carve(n * H); dy = carve(n * config.outputSize)
    }
}

/// Scratch handed to concurrently running tasks: as many as ever ran at once are made, then reused.
final class RowScratchPool: @unchecked Sendable {
    private let config: INRConfig
    private var free: [RowScratch] = []
    private let lock = NSLock()

    init(config: INRConfig) { self.config = config }

    func take(_ rows: Int) -> RowScratch {
        lock.lock()
        defer { lock.unlock() }
        if let i = free.lastIndex(where: { $0.capacity >= rows }) { return free.remove(at: i) }
        return RowScratch(rows: rows, config: config)
    }

    func give(_ scratch: RowScratch) {
        lock.lock()
        free.append(scratch)
        lock.unlock()
    }
}
