import Foundation

/// Where each generated value of a target network comes from (docs/algorithm.md §1–2).
///
/// Every trainable tensor t of the target network is addressed per (output, input) pair: one
/// coordinate row per conv kernel or linear weight, one per bias entry. Rows of tensor t are
/// ordered (o, i) row-major, so row r of t fills `values[(o·in + i)·k² ..< +k²]`.
public struct CoordinateLayout: Sendable {
    public struct Entry: Sendable {
        /// Index of the tensor among the generated ones (= which INR head generates it).
        public let tensor: Int
        /// Index of the tensor in the target network's `ParameterSet` (= `tensor` when every
        /// tensor is generated, as for LeNet).
        public let parameter: Int
        public let spec: ParameterSpec
        public let firstRow: Int
        public let rows: Int
        /// The head outputs this tensor takes: `outputStart ..< outputStart + spec.kernelArea`.
        public let outputStart: Int
    }

    public let entries: [Entry]
    public let rowCount: Int
    /// Number of generated tensors: coordinate `layer_count`.
    public var layerCount: Int { entries.count }

    /// The layout of `specs` (the trainable tensors of a network, in state-dict order) for heads
    /// with `outputSize` outputs. A k×k kernel takes the centre k² outputs
    /// (start = outputSize/2 − k²/2); linear weights and biases take output 0.
    /// `parameters[t]`: where tensor t lives in the target's `ParameterSet` (default: at t).
    public init(specs: [ParameterSpec], outputSize: Int, parameters: [Int]? = nil) {
        precondition(parameters == nil || parameters!.count == specs.count, "one parameter index per generated tensor")
        var entries = [Entry](), row = 0
        for (t, spec) in specs.enumerated() {
            let area = spec.kernelArea
            precondition(area <= outputSize, "\(spec.name): kernel area \(area) exceeds INR output size \(outputSize)")
            let start = spec.role == .convWeight ? outputSize / 2 - area / 2 : 0
            let rows = spec.outSize * spec.inSize
            entries.append(Entry(tensor: t, parameter: parameters?[t] ?? t, spec: spec, firstRow: row, rows: rows, outputStart: start))
            row += rows
        }
        self.entries = entries
        self.rowCount = row
    }

    /// Raw coordinates of every row, `[rowCount, 6]` = (layer, out, in, layer_count, out_size,
    /// in_size), each plus noise (U(0,1) − 0.5)·ε drawn in row order from `rng` (none when ε = 0).
    public func rawCoordinates(noise epsilon: Float, rng: inout SeededRandom, into raw: UnsafeMutablePointer<Float>) {
        let count = Float(layerCount)
        for e in entries {
            let outSize = Float(e.spec.outSize), inSize = Float(e.spec.inSize)
            for o in 0..<e.spec.outSize {
                for i in 0..<e.spec.inSize {
                    let c = raw + 6 * (e.firstRow + o * e.spec.inSize + i)
                    c[0] = Float(e.tensor); c[1] = Float(o); c[2] = Float(i)
                    c[3] = count; c[4] = outSize; c[5] = inSize
                    if epsilon != 0 { for d in 0..<6 { c[d] += (rng.uniform() - 0.5) * epsilon } }
                }
            }
        }
    }
}

/// The sinusoidal embedding of normalised coordinates.
///
/// Normalisation (docs/algorithm.md §1): v = raw / norm, then v₀ = raw₀/raw₃, v₁ = raw₁/raw₄,
/// v₂ = raw₂/raw₅ (index over size); v₃…v₅ stay raw/norm. Embedding of the 6-vector:
/// [v, sin(2ᵏπv), cos(2ᵏπv) for k in 0..<F], i.e. 6 + 12F values per row, laid out as
/// v (6), then for each k: sin (6), cos (6).
public struct CoordinateEmbedding: Sendable {
    public let frequencies: Int
    public let norm: Float

    public init(frequencies: Int, norm: Float) {
        self.frequencies = frequencies
        self.norm = norm
    }

    public var width: Int { 6 + 12 * frequencies }

    /// Embeds `rows` raw coordinate rows `[rows, 6]` into `out` `[rows, width]`.
    ///
    /// The angles are those of a Float32 implementation (PyTorch's `sin(x · 2ᵏπ)`): aₖ =
    /// fl(Float(π)·2ᵏ · v). Scaling by 2ᵏ commutes with rounding, so aₖ = 2ᵏ·a₀ exactly, and
    /// sin aₖ, cos aₖ follow from one sin/cos pair of a₀ (in Double) by the angle-doubling
    /// recurrence sin 2θ = 2 sin θ cos θ, cos 2θ = cos²θ − sin²θ. Each doubling at most doubles
    /// the error, so after F − 1 ≤ 31 doublings it stays below 2³¹·2⁻⁵³ ≈ 2.4e-7, under Float's
    /// half-ulp at 1: the same values as 12F libm calls per row, ~12× cheaper. (At k = 15 the
    /// Float angle differs from the exact 2ᵏπv by up to ≈ 0.006 rad; keeping it keeps the paper
    /// recipe identical to the public code.)
    public func embed(raw: UnsafePointer<Float>, rows: Int, into out: UnsafeMutablePointer<Float>) {
        Parallel.forRanges(rows, minimum: 512) { range in
            embedSerially(raw: raw + 6 * range.lowerBound, rows: range.count, into: out + width * range.lowerBound)
        }
    }

    /// `embed` on the calling thread (a row's embedding does not depend on how rows are split).
    func embedSerially(raw: UnsafePointer<Float>, rows: Int, into out: UnsafeMutablePointer<Float>) {
        let D = width, F = frequencies, norm = self.norm
        for r in 0..<rows {
            let c = raw + 6 * r, e = out + D * r
            e[0] = c[0] / c[3]; e[1] = c[1] / c[4]; e[2] = c[2] / c[5]
            e[3] = c[3] / norm; e[4] = c[4] / norm; e[5] = c[5] / norm
            for d in 0..<6 {
                let angle = Double(Float.pi * e[d])
                var s = Foundation.sin(angle), co = Foundation.cos(angle)
                for k in 0..<F {
                    e[6 + 12 * k + d] = Float(s)
                    e[12 + 12 * k + d] = Float(co)
                    (s, co) = (2 * s * co, (co - s) * (co + s))
                }
            }
        }
    }
}
