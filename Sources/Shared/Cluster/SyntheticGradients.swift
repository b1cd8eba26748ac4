import Foundation

/// Stand-in gradients for load generation (`neumeta-worker --synthetic`, `neumeta-bench --parts
/// scale`): a worker that skips the computation still sends gradient heads of the job's real
/// sizes, through the real sending path, so that the coordinator's ingress, step and egress
/// are measured as they are with real workers.
///
/// Head t of configuration c of round r is the window `pattern[φ ..< φ + n_t]` of one
/// precomputed pattern, `φ = hash(seed, r, c, t) mod phases`: a pure function of (seed, round,
/// configuration, head), as a real gradient is, at the cost of one copy per head.
/// pattern[i] = 10⁻³ · sin(0.7 i + 0.3): finite, with a norm of ≈ 10⁻³ · √(n/2) whatever φ, so
/// it stays within the coordinator's plausibility bound (`CoordinatorState.normFactor` × the
/// recent median).
public struct SyntheticGradients: Sendable {
    /// The data fingerprint of a synthetic job: no files (a synthetic worker reads no data).
    public static let fingerprint = DataFingerprint(dataset: "synthetic", files: [])
    /// Distinct window offsets into the pattern.
    public static let phases = 4096

    /// Parameter range of each head, in head order (they tile the parameters).
    public let heads: [Range<Int>]
    public let seed: UInt64
    public let encoding: WireTensor.Encoding
    private let pattern: [Float]

    /// Heads of `headSizes` values each, in order.
    public init(headSizes: [Int], seed: UInt64, encoding: WireTensor.Encoding) {
        precondition(headSizes.allSatisfy { $0 >= 1 }, "synthetic heads must hold at least one value")
        var offset = 0
        heads = headSizes.map { n in defer { offset += n }; return offset..<(offset + n) }
        self.seed = seed
        self.encoding = encoding
        pattern = (0..<((headSizes.max() ?? 0) + Self.phases)).map { 1e-3 * Float(sin(0.7 * Double($0) + 0.3)) }
    }

    /// Total parameter count.
    public var parameterCount: Int { heads.last?.upperBound ?? 0 }

    /// Head `head` of configuration `configuration`'s gradient in `round`, encoded for the wire.
    public func gradientHead(_ head: Int, round: Int, configuration: Int) -> WireTensor {
        gradientPieces(head, round: round, configuration: configuration, perPiece: heads[head].count)[0].values
    }

    /// The same head in wire pieces of at most `perPiece` values (default: one
    /// `WireProtocol.frameBytes` frame each), with the parameter offset of each.
    public func gradientPieces(_ head: Int, round: Int, configuration: Int,
                               perPiece: Int? = nil) -> [(offset: Int, values: WireTensor)] {
        var rng = SeededRandom(seed, UInt64(round), UInt64(configuration), UInt64(head))
        let phase = Int(rng.next() % UInt64(Self.phases)), range = heads[head]
        let step = max(1, perPiece ?? WireProtocol.frameBytes / encoding.bytesPerElement)
        return pattern.withUnsafeBufferPointer { p in
            stride(from: 0, to: range.count, by: step).map { start in
                let window = UnsafeBufferPointer(rebasing: p[(phase + start)..<(phase + min(range.count, start + step))])
                return (range.lowerBound + start, encoding == .float32 ? WireTensor(copying: window) : WireTensor(bfloat16Rounding: window))
            }
        }
    }

    /// Loss terms of a configuration: finite values in [1, 2), a function of (seed, round, configuration).
    public func lossTerms(round: Int, configuration: Int) -> LossTerms {
        var rng = SeededRandom(seed, UInt64(round), UInt64(configuration))
        var terms = LossTerms()
        terms.crossEntropy = 1 + Double(rng.next() % 1000) / 1000
        terms.total = terms.crossEntropy
        return terms
    }
}
