/// ReLU and the residual add: the element-wise layers.
public enum ReLU {
    /// y = max(x, 0); `y` may alias `x`.
    public static func forward(x: Tensor, y: Tensor) {
        let n = x.count, xs = x.data, ys = y.data
        Parallel.forRanges(n, minimum: 1 << 15) { r in for i in r { ys[i] = max(xs[i], 0) } }
    }

    /// dx = dy · [y > 0] (the output decides, so the input need not be kept); `dx` may alias `dy`.
    public static func backward(y: Tensor, dy: Tensor, dx: Tensor) {
        let n = y.count, ys = y.data, g = dy.data, d = dx.data
        Parallel.forRanges(n, minimum: 1 << 15) { r in for i in r { d[i] = ys[i] > 0 ? g[i] : 0 } }
    }
}

/// y = a + b (identity shortcut of a residual block).
public enum ResidualAdd {
    public static func forward(a: Tensor, b: Tensor, y: Tensor) {
        precondition(a.count == b.count && a.count == y.count, "residual add of \(a.shape) and \(b.shape)")
        let n = y.count, pa = a.data, pb = b.data, py = y.data
        for i in 0..<n { py[i] = pa[i] + pb[i] }
    }

    /// ∂y/∂a = ∂y/∂b = I: both branches receive dy; accumulated into `da` and `db`.
    public static func backward(dy: Tensor, da: Tensor, db: Tensor) {
        let n = dy.count, g = dy.data, pa = da.data, pb = db.data
        for i in 0..<n { pa[i] += g[i]; pb[i] += g[i] }
    }
}
