import COpenBLAS

/// Matrix products on row-major buffers: `C = alpha · op(A) · op(B) + beta · C`,
/// with `op(A)` of shape M×K and `op(B)` of shape K×N.
///
/// `sgemm` calls OpenBLAS; `naive` is the plain triple loop kept beside it as the test oracle.
/// `sgemm` is a `Profile` kernel (time, and 2·m·n·k operations per call, when profiling is on).
public enum Gemm {
    @inlinable
    public static func sgemm(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        // Large products are cut into fixed tiles along the larger of M and N — the same tiles
        // whatever the thread count — and the tiles are spread over the compute threads. A BLAS
        // call's rounding can depend on its shape (edge kernels, small-matrix paths), so tiling
        // by thread count would make results depend on it; fixed tiles keep every element's
        // computation identical on 1 or 16 threads (the cluster relies on this: workers with
        // different core counts must return bit-identical gradients).
        let flops = 2 * m * n * k
        guard flops >= Self.tilingThreshold else {
            return sgemmSingle(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                               beta: beta, c: c, ldc: ldc)
        }
        let timing = Profile.start(.gemm, flops: flops)
        defer { timing?.stop() }
        if n >= m {
            let (tiles, size) = Self.tiles(n)
            Parallel.forRanges(tiles) { range in
                for t in range {
                    let lo = t * size, count = min(n, lo + size) - lo
                    blas(transA, transB, m, count, k, alpha, a, lda, transB ? b + lo * ldb : b + lo, ldb, beta, c + lo, ldc)
                }
            }
        } else {
            let (tiles, size) = Self.tiles(m)
            Parallel.forRanges(tiles) { range in
                for t in range {
                    let lo = t * size, count = min(m, lo + size) - lo
                    blas(transA, transB, count, n, k, alpha, transA ? a + lo : a + lo * lda, lda, b, ldb, beta, c + lo * ldc, ldc)
                }
            }
        }
    }

    /// The product on the calling thread alone, untiled (for work already split into parallel
    /// tasks of fixed shapes, such as the INR's row chunks); a `Profile` kernel like `sgemm`.
    @inlinable
    public static func sgemmSingle(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        if k == 0 {  // BLAS leaves C alone when K = 0 only if beta = 1; make beta = 0 clear it.
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            return
        }
        let timing = Profile.start(.gemm, flops: 2 * m * n * k)
        defer { timing?.stop() }
        blas(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    }

    /// Products of at least this many FLOPs are tiled (and spread over the compute threads).
    public static let tilingThreshold = 4_000_000
    /// The largest tile along the split dimension.
    public static let maxTile = 1024

    /// Tiles of an `extent` split: aiming at an even count (two threads, or any even number,
    /// share them evenly) of equal tiles of at most `maxTile`, rounded up to multiples of 16
    /// (the kernels' unroll), the last one shorter — so small extents get one tile and the
    /// rounding may make the count odd. A function of the shape alone. Few large tiles matter: each BLAS
    /// call packs its whole other operand again (a 256×256 weight for every 128 rows of
    /// activations with small tiles).
    public static func tiles(_ extent: Int) -> (count: Int, size: Int) {
        let even = 2 * ((extent + 2 * maxTile - 1) / (2 * maxTile))
        let size = ((extent + even - 1) / even + 15) / 16 * 16
        return ((extent + size - 1) / size, size)
    }

    @usableFromInline
    static func blas(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                     _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                     _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb),
                    beta, c, blasint(ldc))
    }

    /// Reference product with Double accumulation; same contract as `sgemm`.
    public static func naive(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    let av = transA ? a[p * lda + i] : a[i * lda + p]
                    let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                    s += Double(av) * Double(bv)
                }
                let old = beta == 0 ? 0 : Double(beta) * Double(c[i * ldc + j])
                c[i * ldc + j] = Float(Double(alpha) * s + old)
            }
        }
    }
}

/// The shape of one `Gemm.sgemm` call, for counting work: C[M×N] = op(A)[M×K] · op(B)[K×N].
public struct GemmShape: Hashable, Sendable, CustomStringConvertible {
    public var transA: Bool, transB: Bool
    public var m: Int, n: Int, k: Int

    public init(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int) {
        self.transA = transA; self.transB = transB; self.m = m; self.n = n; self.k = k
    }

    /// Floating-point operations: 2·m·n·k (one multiply and one add per term).
    public var flops: Int { 2 * m * n * k }

    /// E.g. "4970×256×198 Bᵀ".
    public var description: String {
        "\(m)×\(n)×\(k)" + (transA ? " Aᵀ" : "") + (transB ? " Bᵀ" : "")
    }
}
