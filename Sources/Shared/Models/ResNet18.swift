/// torchvision's ResNet-18 (He et al. 2016, ImageNet), input [3, S, S] (S = 224 by default):
///
///     conv1 7×7 stride 2 pad 3 (3 → w1, no bias), bn1, ReLU          [w1, S/2, S/2]
///     maxpool 3×3 stride 2 pad 1                                     [w1, S/4, S/4]
///     layer1: 2 basic blocks, width w1                               [w1, S/4, S/4]
///     layer2: 2 basic blocks, width w2, first with stride 2          [w2, S/8, S/8]
///     layer3: 2 basic blocks, width w3, first with stride 2          [w3, S/16, S/16]
///     layer4: 2 basic blocks, width w4, first with stride 2          [w4, S/32, S/32]
///     global average pool, fc (w4 → classes)
///
/// (sizes rounded up). The stride-2 blocks use the 1×1 conv + BN projection shortcut
/// (`layerK.0.downsample.0/1`); key names are torchvision's, so its state dict loads by name
/// (without `num_batches_tracked`). At the default widths there are 11,689,512 trainable
/// parameters, torchvision's count.
///
/// Widths, hidden widths, folding and channel groups work as in `CIFARResNet`.
public final class ResNet18: ResidualNetwork {
    public let stageWidths: [Int]
    /// [4][2]: the hidden width (conv1 → conv2) of every block.
    public let blockHiddenWidths: [[Int]]
    public let classCount: Int
    public let inputShape: [Int]
    public let batchNorm: Bool
    let trunk: ResidualTrunk

    /// - Parameters:
    ///   - stageWidths: four positive stream widths.
    ///   - blockHiddenWidths: four lists of 2 positive widths, or nil for the stage widths.
    ///   - inputSize: height and width of the (square) input; every stage keeps ≥ 1 pixel.
    ///   - batchNorm: false for the folded form (conv biases instead of batch norm).
    public init(stageWidths: [Int] = [64, 128, 256, 512], blockHiddenWidths: [[Int]]? = nil, classCount: Int = 1000,
                inputSize: Int = 224, batchNorm: Bool = true) {
        precondition(stageWidths.count == 4, "ResNet-18 has four stages, got widths \(stageWidths)")
        let hidden = blockHiddenWidths ?? stageWidths.map { [$0, $0] }
        precondition(hidden.count == 4 && hidden.allSatisfy { $0.count == 2 },
                     "blockHiddenWidths must be 4 lists of 2 widths, got \(hidden)")
        self.stageWidths = stageWidths
        self.blockHiddenWidths = hidden
        self.classCount = classCount
        self.inputShape = [3, inputSize, inputSize]
        self.batchNorm = batchNorm
        trunk = ResidualTrunk(inputShape: inputShape, stemKernel: 7, stemStride: 2, stemPadding: 3, maxPool: true,
                              stageWidths: stageWidths, hiddenWidths: hidden, classCount: classCount, batchNorm: batchNorm)
    }

    /// Rebuilds a network from its recorded `widths` (4 stage widths, then the 8 hidden widths;
    /// 4 stage widths alone also work). nil when the count does not fit.
    public convenience init?(widths: [Int], classCount: Int = 1000, inputSize: Int = 224, batchNorm: Bool = true) {
        guard widths.count == 4 || widths.count == 12, widths.allSatisfy({ $0 >= 1 }) else { return nil }
        var hidden: [[Int]]? = nil
        if widths.count == 12 { hidden = (0..<4).map { (s: Int) -> [Int] in Array(widths[(4 + 2 * s)..<(6 + 2 * s)]) } }
        self.init(stageWidths: Array(widths[0..<4]), blockHiddenWidths: hidden, classCount: classCount,
                  inputSize: inputSize, batchNorm: batchNorm)
    }

    /// "resnet18", or "resnet18-folded" without batch norm.
    public var family: String { batchNorm ? "resnet18" : "resnet18-folded" }
    /// The 4 stage widths, then the hidden width of every block, stage by stage (12 numbers).
    public var widths: [Int] { stageWidths + blockHiddenWidths.flatMap { $0 } }

    /// The folded architecture and parameters with the same inference-mode logits
    /// (see `CIFARResNet.foldedBatchNorm`).
    public func foldedBatchNorm(_ parameters: ParameterSet) -> (network: ResNet18, parameters: ParameterSet) {
        precondition(batchNorm, "network is already folded")
        let net = ResNet18(stageWidths: stageWidths, blockHiddenWidths: blockHiddenWidths, classCount: classCount,
                           inputSize: inputShape[1], batchNorm: false)
        let folded = net.makeParameters()
        trunk.fold(parameters, into: folded)
        return (net, folded)
    }
}
