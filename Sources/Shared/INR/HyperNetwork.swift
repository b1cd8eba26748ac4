import Foundation

/// What a generated value is the INR's output added to (docs/algorithm.md §2).
public enum WeightPrior: String, Sendable, Equatable, Codable, CaseIterable {
    /// The value is the INR's output alone (the paper's INR).
    case none
    /// The value is the permuted base network resampled to the width
    /// (`PretrainedResampling`: neighbouring channels merged or split) plus the INR's output,
    /// whose output layers start at zero: training starts from the resampled base, which at
    /// the base width is the base network itself.
    case base
}

/// Size of NeuMeta's implicit neural representation (docs/algorithm.md §2).
public struct INRConfig: Sendable, Equatable, Codable {
    /// Hidden width H of every head.
    public var hidden = 256
    /// L: one input linear + (L − 1) residual blocks.
    public var layers = 4
    /// F: sinusoidal frequencies per coordinate.
    public var frequencies = 16
    /// Outputs per head (the largest kernel area: 25 for 5×5).
    public var outputSize = 25
    /// Coordinate normaliser: the largest trained width.
    public var norm: Float = 32
    /// What generated values are added to.
    public var prior = WeightPrior.none

    public init() {}
    public init(hidden: Int, layers: Int, frequencies: Int, outputSize: Int, norm: Float) {
        self.hidden = hidden; self.layers = layers; self.frequencies = frequencies
        self.outputSize = outputSize; self.norm = norm
    }

    enum CodingKeys: String, CodingKey { case hidden, layers, frequencies, outputSize, norm, prior }

    /// Decodes every field; a spec or checkpoint without `prior` means `.none`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hidden = try c.decode(Int.self, forKey: .hidden)
        layers = try c.decode(Int.self, forKey: .layers)
        frequencies = try c.decode(Int.self, forKey: .frequencies)
        outputSize = try c.decode(Int.self, forKey: .outputSize)
        norm = try c.decode(Float.self, forKey: .norm)
        prior = try c.decodeIfPresent(WeightPrior.self, forKey: .prior) ?? .none
    }
}

/// The "compose" INR: one residual MLP head per generated tensor, all parameters in one
/// `ParameterSet`. Head t maps an embedded coordinate e (D = 6 + 12F values) to outputs:
///
///     h₀ = relu(W_in e + b_in)                               [H]
///     hᵢ = sᵢ · relu(Wᵢ hᵢ₋₁ + bᵢ) + hᵢ₋₁,   i = 1 … L−1       [H]
///     y  = W_out h_{L−1} + b_out                              [outputSize]
///
/// and the generated value is y[outputStart + kk] / in_size (fan-in scaling by the raw, noisy
/// input-channel count of that coordinate), plus the resampled base network's value there
/// when `config.prior` is `.base` (`NetworkGenerator` adds it).
public final class HyperNetwork: @unchecked Sendable {
    public let config: INRConfig
    public let targetSpecs: [ParameterSpec]
    public let parameters: ParameterSet
    public let embedding: CoordinateEmbedding

    /// Parameter indices of head t: input (weight, bias), blocks (weight, bias, scale)…, output (weight, bias).
    struct Head { let inWeight: Int, inBias: Int, blocks: [(weight: Int, bias: Int, scale: Int)], outWeight: Int, outBias: Int }
    let heads: [Head]
    /// Rows per parallel chunk of the INR's work (`generate`, `backward`); a change alters the
    /// rounding of the gradient sums (and of products of other shapes), not what is computed.
    var rowChunk = HyperNetwork.defaultRowChunk
    /// Layouts of more rows than this keep only their raw coordinates between `generate` and
    /// `backward`, which recomputes the rest chunk by chunk (bounded memory; tests lower it).
    var recomputeRows = HyperNetwork.defaultRecomputeRows

    /// Specs of an INR for the given target tensors (names `heads.t.…`, PyTorch-like).
    public static func specs(config: INRConfig, tensorCount: Int) -> [ParameterSpec] {
        let D = 6 + 12 * config.frequencies, H = config.hidden
        var specs = [ParameterSpec]()
        for t in 0..<tensorCount {
            specs.append(ParameterSpec("heads.\(t).input.weight", [H, D], .linearWeight))
            specs.append(ParameterSpec("heads.\(t).input.bias", [H], .bias))
            for b in 0..<(config.layers - 1) {
                specs.append(ParameterSpec("heads.\(t).blocks.\(b).weight", [H, H], .linearWeight))
                specs.append(ParameterSpec("heads.\(t).blocks.\(b).bias", [H], .bias))
                specs.append(ParameterSpec("heads.\(t).blocks.\(b).scale", [1], .residualScale))
            }
            specs.append(ParameterSpec("heads.\(t).output.weight", [config.outputSize, H], .linearWeight))
            specs.append(ParameterSpec("heads.\(t).output.bias", [config.outputSize], .bias))
        }
        return specs
    }

    /// A new INR for the trainable tensors `targetSpecs` of a target family, PyTorch default
    /// initialisation (residual scales 0.1) from `seed`.
    public init(config: INRConfig, targetSpecs: [ParameterSpec], seed: UInt64) {
        precondition(config.layers >= 1 && config.hidden >= 1, "INR needs at least one layer and one hidden unit")
        self.config = config
        self.targetSpecs = targetSpecs
        parameters = ParameterSet(specs: Self.specs(config: config, tensorCount: targetSpecs.count))
        embedding = CoordinateEmbedding(frequencies: config.frequencies, norm: config.norm)
        var heads = [Head](), i = 0
        for _ in targetSpecs {
            let inW = i, inB = i + 1
            i += 2
            var blocks = [(weight: Int, bias: Int, scale: Int)]()
            for _ in 0..<(config.layers - 1) { blocks.append((i, i + 1, i + 2)); i += 3 }
            heads.append(Head(inWeight: inW, inBias: inB, blocks: blocks, outWeight: i, outBias: i + 1))
            i += 2
        }
        self.heads = heads
        var rng = SeededRandom(seed, 0x1A4)
        parameters.initializeDefault(rng: &rng)
        if config.prior == .base {
            // Zero output layers: every generated value starts as the prior's.
            for h in heads { parameters.value(h.outWeight).fill(0); parameters.value(h.outBias).fill(0) }
        }
    }
}
