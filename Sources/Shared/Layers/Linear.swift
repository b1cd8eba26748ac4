/// Fully connected layer. Shapes: x [N, I], weight [O, I] (PyTorch layout), bias [O], y [N, O];
/// x (and dx) may have any shape [N, …] of N·I elements, e.g. [N, I, 1, 1].
public enum Linear {
    /// y = x · Wᵀ + b
    public static func forward(x: Tensor, weight: Tensor, bias: Tensor?, y: Tensor) {
        let N = x.shape[0], I = x.count / N, O = weight.shape[0]
        precondition(weight.count == O * I && y.count == N * O, "linear shapes x\(x.shape) W\(weight.shape) y\(y.shape)")
        Gemm.sgemm(transB: true, m: N, n: O, k: I, a: x.data, lda: I, b: weight.data, ldb: I, beta: 0, c: y.data, ldc: O)
        if let bias { for n in 0..<N { for o in 0..<O { y.data[n * O + o] += bias.data[o] } } }
    }

    /// The sgemm calls of `forward` and `backward` for `batch` rows of `inputs` → `outputs`.
    public static func products(batch: Int, inputs: Int, outputs: Int, inputGradient: Bool) -> (forward: [GemmShape], backward: [GemmShape]) {
        let dW = GemmShape(transA: true, m: outputs, n: inputs, k: batch), dX = GemmShape(m: batch, n: inputs, k: outputs)
        return ([GemmShape(transB: true, m: batch, n: outputs, k: inputs)], inputGradient ? [dW, dX] : [dW])
    }

    /// dx = dy · W,   dW += dyᵀ · x,   db += Σ_n dy[n, :].
    public static func backward(x: Tensor, weight: Tensor, dy: Tensor, dx: Tensor?, dWeight: Tensor, dBias: Tensor?) {
        let N = x.shape[0], I = x.count / N, O = weight.shape[0]
        Gemm.sgemm(transA: true, m: O, n: I, k: N, a: dy.data, lda: O, b: x.data, ldb: I, beta: 1, c: dWeight.data, ldc: I)
        if let dBias { for n in 0..<N { for o in 0..<O { dBias.data[o] += dy.data[n * O + o] } } }
        if let dx {
            Gemm.sgemm(m: N, n: I, k: O, a: dy.data, lda: O, b: weight.data, ldb: I, beta: 0, c: dx.data, ldc: I)
        }
    }
}
