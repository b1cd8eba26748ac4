import Foundation

/// Which tensors of a network its INR generates (docs/algorithm.md §6).
public enum MorphScope: String, Sendable, Codable, CaseIterable {
    /// Every trainable tensor; every width of the network scales with the scalar width.
    case all
    /// Only the last residual block: its hidden width is the scalar width, and the block's
    /// trainable tensors are generated; everything else is copied from the permuted base
    /// (the NeuMeta paper's ResNet protocol).
    case lastBlock = "last-block"
}

/// How one scalar width w becomes a network of a family, and which of its tensors the INR
/// generates (the rest are copied from the permuted base network).
///
/// - `all`: every recorded width of the base (LeNet's w; a ResNet's stage widths, then every
///   block's hidden width) is scaled by w / w₀, w₀ = the base's first width, rounded to the
///   nearest integer (at least 1), so the base's ratios are kept; every trainable tensor is
///   generated.
/// - `lastBlock`: the base's widths with the last block's hidden width replaced by w
///   (w₀ = that hidden width); generated are the trainable tensors of the last residual block
///   (conv1, its norm or bias, conv2, its norm or bias), copied everything else.
///
/// Generated tensors keep their state-dict order; they are the INR's heads in that order. A
/// copied tensor never changes shape with w, so the base's value fits every width. Running
/// statistics of a morphed width are neither (they are buffers): `BatchNormRecalibration`
/// recomputes them after sampling.
public struct MorphPlan: Sendable, Equatable, Codable {
    /// The base's family ("lenet", "resnet20", "resnet20-folded", ...).
    public var family: String
    /// The base network's recorded widths (`Network.widths`).
    public var baseWidths: [Int]
    public var scope: MorphScope
    /// Side of the square RGB input of the ResNets (nil: LeNet's fixed input).
    public var imageSize: Int?

    public init(family: String, baseWidths: [Int], scope: MorphScope = .all, imageSize: Int? = nil) {
        self.family = family; self.baseWidths = baseWidths; self.scope = scope; self.imageSize = imageSize
    }

    /// The plan of `base` (its family, widths and input size) with `scope`. Throws when the
    /// family cannot be morphed that way (LeNet has no residual block).
    public init(base: Network, scope: MorphScope) throws {
        let size = base.inputShape[0] == 3 ? base.inputShape[1] : nil
        self.init(family: base.family, baseWidths: base.widths, scope: scope, imageSize: size)
        if scope == .lastBlock && lastBlockPrefix(of: base.parameterSpecs) == nil {
            throw MorphPlanError.noResidualBlock(family: base.family)
        }
    }

    /// w₀: the scalar width of the base network (the reconstruction target's width).
    public var baseWidth: Int { scope == .all ? baseWidths[0] : baseWidths[baseWidths.count - 1] }

    /// The recorded widths of the network of scalar width `w`.
    public func widths(for w: Int) -> [Int] {
        switch scope {
        case .all:
            let w0 = Double(baseWidths[0])
            return baseWidths.map { max(1, Int((Double($0) * Double(w) / w0).rounded())) }
        case .lastBlock:
            return baseWidths.dropLast() + [w]
        }
    }

    /// The network of scalar width `w`.
    public func network(width w: Int, classCount: Int) throws -> Network {
        precondition(w >= 1, "width must be at least 1, got \(w)")
        return try NetworkFamily.make(family, widths: widths(for: w), classCount: classCount, imageSize: imageSize)
    }

    /// Indices in `specs` (a network's state dict under this plan) of the generated tensors.
    public func generated(_ specs: [ParameterSpec]) -> [Int] {
        switch scope {
        case .all:
            return specs.indices.filter { specs[$0].role.trainable }
        case .lastBlock:
            guard let prefix = lastBlockPrefix(of: specs) else { return [] }
            return specs.indices.filter { specs[$0].role.trainable && specs[$0].name.hasPrefix(prefix) }
        }
    }

    /// The specs of the generated tensors at the base width (what the INR's heads are made for).
    public func generatedSpecs(classCount: Int) throws -> [ParameterSpec] {
        let specs = try network(width: baseWidth, classCount: classCount).parameterSpecs
        return generated(specs).map { specs[$0] }
    }

    /// The largest kernel area among the generated tensors: the INR's output size, so that a
    /// k×k kernel (7×7 included) takes its k² outputs of a head.
    public func largestKernelArea(classCount: Int) throws -> Int {
        try generatedSpecs(classCount: classCount).map(\.kernelArea).max() ?? 1
    }
}

/// "layerS.B." of the last "*.conv1.weight" in `specs` (the last residual block), or nil.
func lastBlockPrefix(of specs: [ParameterSpec]) -> String? {
    guard let conv1 = specs.last(where: { $0.name.hasSuffix(".conv1.weight") && $0.name.hasPrefix("layer") }) else { return nil }
    return String(conv1.name.dropLast("conv1.weight".count))
}

public enum MorphPlanError: Error, CustomStringConvertible, Equatable {
    case noResidualBlock(family: String)

    public var description: String {
        switch self {
        case .noResidualBlock(let f): "--morph last-block needs a residual network; \(f) has no residual block (use --morph all)"
        }
    }
}

/// What INR training does with a base network's batch norm (docs/algorithm.md §6).
public enum BatchNormHandling: String, Sendable, Codable, CaseIterable {
    /// Fold every batch norm into its convolution before training (W' = W·γ/√(σ²+ε),
    /// b' = β − μ·γ/√(σ²+ε)): the INR generates convolutions with biases, and a sampled network
    /// is complete as generated.
    case fold
    /// Keep batch norm: the INR generates the morphed layers' γ and β too, target networks train
    /// on batch statistics, and a sampled network's running statistics are recomputed on a few
    /// training batches (`BatchNormRecalibration`).
    case recalibrate
}
