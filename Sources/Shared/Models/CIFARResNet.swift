/// The CIFAR ResNets of He et al. 2016 (§4.2), depth 6n + 2 (ResNet-20/32/44/56/110), input
/// [3, 32, 32] by default:
///
///     conv1 3×3 (3 → w1, no bias), bn1, ReLU                                  [w1, 32, 32]
///     layer1: n basic blocks, width w1                                         [w1, 32, 32]
///     layer2: n basic blocks, width w2, first with stride 2                    [w2, 16, 16]
///     layer3: n basic blocks, width w3, first with stride 2                    [w3,  8,  8]
///     global average pool, fc (w3 → classes)
///
/// Each basic block is conv3×3–BN–ReLU–conv3×3–BN, + shortcut, ReLU (see `BasicBlock`).
///
/// **Shortcut: option B.** Where a block changes shape (the stride-2 first blocks of layer2 and
/// layer3) the shortcut is a 1×1 stride-2 conv without bias + BN (`layerK.0.downsample.0/1`),
/// elsewhere the identity — torchvision's BasicBlock wiring, so state dicts of the common
/// PyTorch CIFAR ResNets in torchvision layout load by name. (He et al. used option A, a
/// zero-padded strided identity with no parameters; option B adds w1·w2 + w2·w3 conv weights and
/// 2·(w2 + w3) BN affine terms, 2,752 for ResNet-20, and gives each widened stream a writer that
/// can be morphed like any other.)
///
/// Widths: `stageWidths` are the residual-stream widths; `blockHiddenWidths[s][b]` is the width
/// between conv1 and conv2 of block b of stage s (default: the stage width). NeuMeta's public code
/// morphs exactly that hidden width; full-network morphing changes both.
///
/// **Folded batch norm.** With `batchNorm: false` every conv + BN pair is a conv with a bias
/// (`conv1.weight`, `conv1.bias`, `layer2.0.downsample.0.bias`, ...) and nothing else changes;
/// `foldedBatchNorm(_:)` turns the parameters of a batch-norm network into those of the folded
/// one with identical inference-mode logits (the form Sommariva et al. 2025 morph; docs/algorithm.md §6).
///
/// Parameter counts (widths 16/32/64, 10 classes; trainable = conv/fc weights, biases, BN affine,
/// running statistics excluded): ResNet-20 272,474 · ResNet-32 466,906 · ResNet-56 855,770.
public final class CIFARResNet: ResidualNetwork {
    public let depth: Int
    public let stageWidths: [Int]
    /// [3][n]: the hidden width of every block.
    public let blockHiddenWidths: [[Int]]
    public let classCount: Int
    public let inputShape: [Int]
    /// false: batch norm folded into conv biases (see the type's documentation).
    public let batchNorm: Bool
    let trunk: ResidualTrunk

    /// Basic blocks per stage, n = (depth − 2) / 6.
    public var blocksPerStage: Int { (depth - 2) / 6 }

    /// - Parameters:
    ///   - depth: 6n + 2 with n ≥ 1 (20, 32, 44, 56, 110).
    ///   - stageWidths: three positive stream widths.
    ///   - blockHiddenWidths: three lists of n positive widths, or nil for the stage widths.
    ///   - inputShape: [C, H, W] of one image.
    ///   - batchNorm: false for the folded form (conv biases instead of batch norm).
    public init(depth: Int, stageWidths: [Int] = [16, 32, 64], blockHiddenWidths: [[Int]]? = nil,
                classCount: Int = 10, inputShape: [Int] = [3, 32, 32], batchNorm: Bool = true) {
        precondition(depth >= 8 && (depth - 2) % 6 == 0, "CIFAR ResNet depth must be 6n + 2, got \(depth)")
        precondition(stageWidths.count == 3, "CIFAR ResNet has three stages, got widths \(stageWidths)")
        let n = (depth - 2) / 6
        let hidden = blockHiddenWidths ?? stageWidths.map { Array(repeating: $0, count: n) }
        precondition(hidden.count == 3 && hidden.allSatisfy { $0.count == n },
                     "blockHiddenWidths must be 3 lists of \(n) widths, got \(hidden)")
        self.depth = depth
        self.stageWidths = stageWidths
        self.blockHiddenWidths = hidden
        self.classCount = classCount
        self.inputShape = inputShape
        self.batchNorm = batchNorm
        trunk = ResidualTrunk(inputShape: inputShape, stemKernel: 3, stemStride: 1, stemPadding: 1, maxPool: false,
                              stageWidths: stageWidths, hiddenWidths: hidden, classCount: classCount, batchNorm: batchNorm)
    }

    /// Rebuilds a network from its recorded `widths` (3 stage widths followed by the 3n hidden
    /// widths, stage by stage; 3 stage widths alone also work). nil when the count does not fit.
    public convenience init?(depth: Int, widths: [Int], classCount: Int = 10, inputShape: [Int] = [3, 32, 32],
                             batchNorm: Bool = true) {
        guard depth >= 8, (depth - 2) % 6 == 0, widths.allSatisfy({ $0 >= 1 }) else { return nil }
        let n = (depth - 2) / 6
        guard widths.count == 3 || widths.count == 3 + 3 * n else { return nil }
        var hidden: [[Int]]? = nil
        if widths.count > 3 { hidden = (0..<3).map { (s: Int) -> [Int] in Array(widths[(3 + s * n)..<(3 + (s + 1) * n)]) } }
        self.init(depth: depth, stageWidths: Array(widths[0..<3]), blockHiddenWidths: hidden, classCount: classCount,
                  inputShape: inputShape, batchNorm: batchNorm)
    }

    /// "resnet20", "resnet56", ...; "-folded" appended without batch norm (a different state dict).
    public var family: String { "resnet\(depth)" + (batchNorm ? "" : "-folded") }
    /// The 3 stage widths, then the hidden width of every block, stage by stage (3 + 3n numbers).
    public var widths: [Int] { stageWidths + blockHiddenWidths.flatMap { $0 } }

    /// The same architecture with batch norm folded into conv biases, and the parameters that
    /// make its logits equal this network's inference-mode logits:
    ///   W' = W · γ/√(σ²_run + ε),   b' = β − μ_run · γ/√(σ²_run + ε)   (per output channel).
    public func foldedBatchNorm(_ parameters: ParameterSet) -> (network: CIFARResNet, parameters: ParameterSet) {
        precondition(batchNorm, "network is already folded")
        let net = CIFARResNet(depth: depth, stageWidths: stageWidths, blockHiddenWidths: blockHiddenWidths,
                              classCount: classCount, inputShape: inputShape, batchNorm: false)
        let folded = net.makeParameters()
        trunk.fold(parameters, into: folded)
        return (net, folded)
    }
}
