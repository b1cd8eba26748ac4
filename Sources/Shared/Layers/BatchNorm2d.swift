import Foundation

/// Batch normalisation over [N, C, H, W], per channel c (M = N·H·W values each):
///   x̂ = (x − μ_c) / √(σ²_c + ε),   y = γ_c · x̂ + β_c.
/// Training uses the batch statistics (biased σ²) and updates the running ones as PyTorch does
/// (momentum 0.1, unbiased variance); inference uses the running statistics.
public struct BatchNorm2d: Sendable {
    public let channels: Int
    public var eps: Float = 1e-5
    public var momentum: Float = 0.1

    public init(channels: Int) { self.channels = channels }

    /// Training forward. `saved` [2, C] receives (μ, 1/√(σ²+ε)) for the backward pass.
    public func forwardTraining(x: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor?, runningVar: Tensor?,
                                y: Tensor, saved: Tensor) {
        let C = channels, N = x.shape[0], HW = x.count / (N * C), M = N * HW
        for c in 0..<C {
            var s = 0.0, ss = 0.0
            for n in 0..<N {
                let p = x.data + (n * C + c) * HW
                for i in 0..<HW { let v = Double(p[i]); s += v; ss += v * v }
            }
            let mean = s / Double(M), variance = max(ss / Double(M) - mean * mean, 0)
            let invStd = 1 / (variance + Double(eps)).squareRoot()
            saved.data[c] = Float(mean); saved.data[C + c] = Float(invStd)
            if let runningMean, let runningVar {
                let unbiased = M > 1 ? variance * Double(M) / Double(M - 1) : variance
                runningMean.data[c] = (1 - momentum) * runningMean.data[c] + momentum * Float(mean)
                runningVar.data[c] = (1 - momentum) * runningVar.data[c] + momentum * Float(unbiased)
            }
            let a = gamma.data[c] * Float(invStd), b = beta.data[c] - a * Float(mean)
            for n in 0..<N {
                let p = x.data + (n * C + c) * HW, q = y.data + (n * C + c) * HW
                for i in 0..<HW { q[i] = a * p[i] + b }
            }
        }
    }

    /// Inference: y = γ (x − μ_run)/√(σ²_run + ε) + β.
    public func forwardInference(x: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVar: Tensor, y: Tensor) {
        let C = channels, N = x.shape[0], HW = x.count / (N * C)
        for c in 0..<C {
            let a = gamma.data[c] / (runningVar.data[c] + eps).squareRoot()
            let b = beta.data[c] - a * runningMean.data[c]
            for n in 0..<N {
                let p = x.data + (n * C + c) * HW, q = y.data + (n * C + c) * HW
                for i in 0..<HW { q[i] = a * p[i] + b }
            }
        }
    }

    /// With batch statistics:
    ///   dγ += Σ dy·x̂,   dβ += Σ dy,
    ///   dx = γ/(M·σ̃) · (M·dy − Σdy − x̂·Σ(dy·x̂)),  σ̃ = √(σ²+ε).  Overwrites dx.
    public func backward(x: Tensor, gamma: Tensor, saved: Tensor, dy: Tensor, dx: Tensor, dGamma: Tensor, dBeta: Tensor) {
        let C = channels, N = x.shape[0], HW = x.count / (N * C), M = Float(N * HW)
        for c in 0..<C {
            let mean = saved.data[c], invStd = saved.data[C + c]
            var sdy: Float = 0, sdyx: Float = 0
            for n in 0..<N {
                let p = x.data + (n * C + c) * HW, g = dy.data + (n * C + c) * HW
                for i in 0..<HW { sdy += g[i]; sdyx += g[i] * (p[i] - mean) * invStd }
            }
            dGamma.data[c] += sdyx; dBeta.data[c] += sdy
            let k = gamma.data[c] * invStd / M
            for n in 0..<N {
                let p = x.data + (n * C + c) * HW, g = dy.data + (n * C + c) * HW, d = dx.data + (n * C + c) * HW
                for i in 0..<HW { d[i] = k * (M * g[i] - sdy - (p[i] - mean) * invStd * sdyx) }
            }
        }
    }

    /// Folds inference-mode batch norm into the preceding convolution (weight [O, ...], bias [O]
    /// or none): W'_o = W_o · γ_o/√(σ²_o+ε),  b'_o = (b_o − μ_o) · γ_o/√(σ²_o+ε) + β_o.
    /// Returns (W', b'); the conv followed by BN and the folded conv compute the same function.
    public func fold(weight: Tensor, bias: Tensor?, gamma: Tensor, beta: Tensor, runningMean: Tensor,
                     runningVar: Tensor) -> (weight: Tensor, bias: Tensor) {
        let O = weight.shape[0], per = weight.count / O
        let w = weight.clone(), b = Tensor(zeros: [O])
        for o in 0..<O {
            let a = gamma.data[o] / (runningVar.data[o] + eps).squareRoot()
            for i in 0..<per { w.data[o * per + i] *= a }
            b.data[o] = ((bias?.data[o] ?? 0) - runningMean.data[o]) * a + beta.data[o]
        }
        return (w, b)
    }
}
