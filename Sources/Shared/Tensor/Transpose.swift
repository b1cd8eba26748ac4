/// Matrix transposition of row-major buffers: `transpose` in cache blocks, `transposeReference`
/// the plain double loop beside it (the test oracle).
///
/// Why it exists: OpenBLAS runs `X · Wᵀ` (a transposed right operand, PyTorch's Linear layout)
/// at about half the rate of `X · W` on this CPU (79 vs 146 GFLOP/s at 3200×256×256, `neumeta-bench
/// --parts sgemm`), so the INR's forward transposes each weight once (a 256×256 copy) and
/// multiplies without the transpose.
public enum Transpose {
    /// Side of the square blocks: 32×32 floats of source and destination (8 KB) stay in L1.
    static let block = 32

    /// dst[j·rows + i] = src[i·ld + j] for i < rows, j < columns: `dst` is the `columns × rows`
    /// transpose of the `rows × columns` matrix `src` (row stride `ld`, default `columns`).
    /// Column blocks are spread over the compute threads when the matrix is large (and
    /// `threaded`; pass false inside a parallel task).
    public static func transpose(_ src: UnsafePointer<Float>, rows: Int, columns: Int, ld: Int? = nil,
                                 into dst: UnsafeMutablePointer<Float>, threaded: Bool = true) {
        let ld = ld ?? columns
        let timing = Profile.start(.elementwise)
        defer { timing?.stop() }
        let columnBlocks = (columns + block - 1) / block
        Parallel.forRanges(columnBlocks, minimum: threaded && rows * columns >= 1 << 15 ? 1 : columnBlocks) { blocks in
            for cb in blocks {
                let j0 = cb * block, j1 = min(columns, j0 + block)
                var i0 = 0
                while i0 < rows {
                    let i1 = min(rows, i0 + block)
                    for j in j0..<j1 {
                        let out = dst + j * rows
                        for i in i0..<i1 { out[i] = src[i * ld + j] }
                    }
                    i0 = i1
                }
            }
        }
    }

    /// The plain double loop (the oracle of `transpose`).
    public static func transposeReference(_ src: UnsafePointer<Float>, rows: Int, columns: Int, ld: Int? = nil,
                                          into dst: UnsafeMutablePointer<Float>) {
        let ld = ld ?? columns
        for i in 0..<rows { for j in 0..<columns { dst[j * rows + i] = src[i * ld + j] } }
    }
}
