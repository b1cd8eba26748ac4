import Foundation

/// Softmax cross-entropy averaged over the batch. Shapes: logits [N, K], labels [N] in 0..<K.
public enum SoftmaxCrossEntropy {
    /// loss = (1/N) Σ_n [logsumexp(z_n) − z_n[y_n]], and
    /// ∂loss/∂z_n = (softmax(z_n) − onehot(y_n)) / N, written to `dLogits` (may be nil).
    /// Returns the loss and the number of rows whose arg-max equals the label.
    @discardableResult
    public static func forwardBackward(logits: Tensor, labels: UnsafePointer<Int32>, dLogits: Tensor?) -> (loss: Double, correct: Int) {
        let N = logits.shape[0], K = logits.count / N
        var loss = 0.0, correct = 0
        for n in 0..<N {
            let z = logits.data + n * K
            var best = 0
            for k in 1..<K where z[k] > z[best] { best = k }
            let label = Int(labels[n])
            precondition(label >= 0 && label < K, "label \(label) outside 0..<\(K)")
            if best == label { correct += 1 }
            let m = z[best]
            var sum = 0.0
            for k in 0..<K { sum += Foundation.exp(Double(z[k] - m)) }
            loss += Foundation.log(sum) + Double(m) - Double(z[label])
            if let dLogits {
                let d = dLogits.data + n * K
                for k in 0..<K {
                    let p = Foundation.exp(Double(z[k] - m)) / sum
                    d[k] = Float((p - (k == label ? 1 : 0)) / Double(N))
                }
            }
        }
        return (loss / Double(N), correct)
    }
}
