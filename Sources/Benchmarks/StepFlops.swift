import NeuMeta

/// Floating-point operations of one NeuMeta training step on LeNet, counted from the matrix
/// products the code runs (`HyperNetwork.products`, `LeNet.products`): 2·m·n·k each.
/// Element-wise work (embedding sin/cos, biases, ReLU, pooling, losses, AdamW) is not counted:
/// on the order of 0.1 GFLOP, 1–2 % of the products.
///
/// Against the usual estimate ("one INR step of the LeNet config (batch 128, widths 8…32) is roughly
/// 14 GFLOP: INR forward+backward ≈ 8, target network ≈ 6"): the INR part agrees — 7.0 GFLOP at
/// the mean width 20 and 7.8 averaged over the widths 8…32 (the work grows with w², so the average
/// exceeds the value at the mean); its backward is a little under twice its forward because the
/// input layer needs no gradient with respect to the embedding. The target network is 1.3 GFLOP,
/// not 6: 6 is the full LeNet (28×28, 14×14 and 7×7 feature maps), while this LeNet computes only
/// the top-left region the classifier reads (20×20, 8×8 and 2×2 outputs; see `LeNet`), about a
/// fifth of the work. So a step is about 8.3 GFLOP at the mean width, 9.2 on average.
///
/// `nominal` is the step's work as a full-size implementation does it (PyTorch computes the
/// whole 28×28, 14×14, 7×7 maps): the same INR products plus the full LeNet's, ≈ 13 GFLOP at the
/// mean width — the count the performance issue's "about 15 GFLOP per step" refers to. A rate
/// computed from it is an *effective* rate (nominal work per second), as is usual for fast
/// convolution algorithms; `total` / time is the rate of the products actually run.
public struct StepFlops: Sendable, Equatable {
    public var inrForward: Int, inrBackward: Int, targetForward: Int, targetBackward: Int
    /// The full-size LeNet's products (forward + backward).
    public var fullTarget: Int
    public var total: Int { inrForward + inrBackward + targetForward + targetBackward }
    public var nominal: Int { inrForward + inrBackward + fullTarget }

    /// The step at LeNet width `width` (batch `batch`, `classCount` classes) with an INR of `config`.
    public init(lenetWidth width: Int, batch: Int, inr config: INRConfig, classCount: Int = 10) {
        let net = LeNet(width: width, classCount: classCount)
        let layout = CoordinateLayout(specs: net.trainableSpecs, outputSize: config.outputSize)
        let inr = HyperNetwork.products(config: config, layout: layout), target = net.products(batch: batch)
        func sum(_ shapes: [GemmShape]) -> Int { shapes.reduce(0) { $0 + $1.flops } }
        inrForward = sum(inr.forward); inrBackward = sum(inr.backward)
        targetForward = sum(target.forward); targetBackward = sum(target.backward)
        let full = [
            Conv2d(ConvGeometry(channels: 1, height: 28, width: 28, kernel: 3, padding: 1, mode: .replicate), outChannels: width)
                .products(batch: batch, inputGradient: false),
            Conv2d(ConvGeometry(channels: width, height: 14, width: 14, kernel: 5, padding: 2, mode: .replicate), outChannels: 2 * width)
                .products(batch: batch, inputGradient: true),
            Conv2d(ConvGeometry(channels: 2 * width, height: 7, width: 7, kernel: 5, padding: 2, mode: .replicate), outChannels: 4 * width)
                .products(batch: batch, inputGradient: true),
            Linear.products(batch: batch, inputs: 4 * width, outputs: classCount, inputGradient: true),
        ]
        fullTarget = full.reduce(0) { $0 + sum($1.forward) + sum($1.backward) }
    }
}
