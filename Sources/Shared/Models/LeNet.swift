/// The LeNet variant of the NeuMeta paper (docs/algorithm.md §7), width w, input C×S×S
/// (the paper's 1×28×28 by default; 3×S×S for an RGB image folder, S ≥ 8):
///
///     conv1: C → w,   3×3, padding 1 (replicate), bias; ReLU; avgpool 2
///     conv2: w → 2w,  5×5, padding 2 (replicate), bias; ReLU; avgpool 2
///     conv3: 2w → 4w, 5×5, padding 2 (replicate), bias; ReLU; avgpool 2
///     fc:    4w → 10 on the feature map's top-left position ([:, :, 0, 0])
///
/// Because the classifier reads only position (0, 0), each layer computes just the top-left
/// region that position depends on (for 28×28: conv3 2×2 of 7×7, conv2 8×8 of 14×14, conv1
/// 20×20 of 28×28; larger inputs need no more). The logits are exactly those of the full network (a test checks this against the
/// full-size naive computation) at about a fifth of the work.
public final class LeNet: Network {
    public let width: Int
    public let classCount: Int
    public var family: String { "lenet" }
    public var widths: [Int] { [width] }
    public let inputShape: [Int]

    let conv1: Conv2d, conv2: Conv2d, conv3: Conv2d
    let pool1: ConvGeometry, pool2: ConvGeometry, pool3: ConvGeometry
    private let arena = ActivationArena(), gradArena = ActivationArena()
    /// One workspace per conv, so each keeps its im2col columns from forward to backward.
    private let workspaces = [Workspace(), Workspace(), Workspace()]
    /// Per-sample shapes of the activations a1, p1, a2, p2, a3, p3 and the logits (made once:
    /// forward and backward run without allocating).
    private let activationShapes: [[Int]]
    private let names = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                         "conv3.weight", "conv3.bias", "fc.weight", "fc.bias"]

    /// `inputShape`: [channels, side, side], side ≥ 8 (three poolings by 2 leave at least 1×1).
    public init(width: Int, classCount: Int = 10, inputShape: [Int] = [1, 28, 28]) {
        precondition(width >= 1, "LeNet width must be at least 1, got \(width)")
        precondition(inputShape.count == 3 && inputShape[0] >= 1 && inputShape[1] >= 8 && inputShape[2] == inputShape[1],
                     "LeNet input must be C×S×S with S ≥ 8, got \(inputShape)")
        self.width = width
        self.classCount = classCount
        self.inputShape = inputShape
        let side = inputShape[1]
        // Regions needed, from the classifier back to the input (feature maps of S, S/2, S/4).
        let p3 = 1, a3 = 2 * p3                                            // pool3 1×1 ← conv3 2×2
        let p2 = ConvGeometry.inputExtent(output: a3, kernel: 5, stride: 1, padding: 2, size: side / 4)
        let a2 = 2 * p2
        let p1 = ConvGeometry.inputExtent(output: a2, kernel: 5, stride: 1, padding: 2, size: side / 2)
        let a1 = 2 * p1
        conv1 = Conv2d(ConvGeometry(channels: inputShape[0], height: side, width: side, kernel: 3, padding: 1, mode: .replicate,
                                    outHeight: a1, outWidth: a1), outChannels: width)
        pool1 = ConvGeometry(channels: width, height: a1, width: a1, kernel: 2, stride: 2)
        conv2 = Conv2d(ConvGeometry(channels: width, height: p1, width: p1, kernel: 5, padding: 2, mode: .replicate,
                                    outHeight: a2, outWidth: a2), outChannels: 2 * width)
        pool2 = ConvGeometry(channels: 2 * width, height: a2, width: a2, kernel: 2, stride: 2)
        conv3 = Conv2d(ConvGeometry(channels: 2 * width, height: p2, width: p2, kernel: 5, padding: 2, mode: .replicate,
                                    outHeight: a3, outWidth: a3), outChannels: 4 * width)
        pool3 = ConvGeometry(channels: 4 * width, height: a3, width: a3, kernel: 2, stride: 2)
        let (g1, g2, g3) = (conv1.geometry, conv2.geometry, conv3.geometry)
        activationShapes = [
            [width, g1.outHeight, g1.outWidth], [width, pool1.outHeight, pool1.outWidth],
            [2 * width, g2.outHeight, g2.outWidth], [2 * width, pool2.outHeight, pool2.outWidth],
            [4 * width, g3.outHeight, g3.outWidth], [4 * width, 1, 1], [classCount],
        ]
    }

    public var parameterSpecs: [ParameterSpec] {
        let w = width
        return [
            ParameterSpec("conv1.weight", [w, inputShape[0], 3, 3], .convWeight), ParameterSpec("conv1.bias", [w], .bias),
            ParameterSpec("conv2.weight", [2 * w, w, 5, 5], .convWeight), ParameterSpec("conv2.bias", [2 * w], .bias),
            ParameterSpec("conv3.weight", [4 * w, 2 * w, 5, 5], .convWeight), ParameterSpec("conv3.bias", [4 * w], .bias),
            ParameterSpec("fc.weight", [classCount, 4 * w], .linearWeight), ParameterSpec("fc.bias", [classCount], .bias),
        ]
    }

    /// Each hidden layer's output channels, its bias and the next layer's input channels.
    public var channelGroups: [ChannelGroup] {
        [("conv1", "conv2", width), ("conv2", "conv3", 2 * width), ("conv3", "fc", 4 * width)].map { layer, next, size in
            ChannelGroup(name: layer, size: size, members: [
                .init("\(layer).weight", axis: 0), .init("\(layer).bias", axis: 0), .init("\(next).weight", axis: 1),
            ])
        }
    }

    /// The sgemm calls of `forward` (training) and `backward` on a batch of `batch`, in call
    /// order (conv1 computes no input gradient).
    public func products(batch: Int) -> (forward: [GemmShape], backward: [GemmShape]) {
        let layers = [conv1.products(batch: batch, inputGradient: false), conv2.products(batch: batch, inputGradient: true),
                      conv3.products(batch: batch, inputGradient: true),
                      Linear.products(batch: batch, inputs: 4 * width, outputs: classCount, inputGradient: true)]
        return (layers.flatMap(\.forward), layers.reversed().flatMap(\.backward))
    }


    public func forward(_ p: ParameterSet, input: Tensor, mode: ForwardMode) -> Tensor {
        let n = input.shape[0]
        let a = arena.views(batch: n, shapes: activationShapes)
        let (a1, p1, a2, p2, a3, p3, logits) = (a[0], a[1], a[2], a[3], a[4], a[5], a[6])
        conv1.forward(x: input, weight: p.value(0), bias: p.value(1), y: a1, workspace: workspaces[0], relu: true, keepColumns: true)
        AvgPool2d.forward(x: a1, y: p1, pool1)
        conv2.forward(x: p1, weight: p.value(2), bias: p.value(3), y: a2, workspace: workspaces[1], relu: true, keepColumns: true)
        AvgPool2d.forward(x: a2, y: p2, pool2)
        conv3.forward(x: p2, weight: p.value(4), bias: p.value(5), y: a3, workspace: workspaces[2], relu: true, keepColumns: true)
        AvgPool2d.forward(x: a3, y: p3, pool3)
        Linear.forward(x: p3, weight: p.value(6), bias: p.value(7), y: logits)  // p3 [n, 4w, 1, 1] = [n, 4w]
        return logits
    }

    public func backward(_ p: ParameterSet, input: Tensor, dLogits: Tensor) {
        let n = input.shape[0]
        let a = arena.views(batch: n, shapes: activationShapes)
        let d = gradArena.views(batch: n, shapes: activationShapes)
        let (a1, p1, a2, p2, a3, p3) = (a[0], a[1], a[2], a[3], a[4], a[5])
        let (da1, dp1, da2, dp2, da3, dp3) = (d[0], d[1], d[2], d[3], d[4], d[5])
        Linear.backward(x: p3, weight: p.value(6), dy: dLogits, dx: dp3, dWeight: p.gradient(6), dBias: p.gradient(7))
        AvgPool2d.backward(dy: dp3, dx: da3, pool3, mask: a3)
        conv3.backward(x: p2, weight: p.value(4), dy: da3, dx: dp2, dWeight: p.gradient(4), dBias: p.gradient(5), workspace: workspaces[2],
                        columnsFromForward: true)
        AvgPool2d.backward(dy: dp2, dx: da2, pool2, mask: a2)
        conv2.backward(x: p1, weight: p.value(2), dy: da2, dx: dp1, dWeight: p.gradient(2), dBias: p.gradient(3), workspace: workspaces[1],
                        columnsFromForward: true)
        AvgPool2d.backward(dy: dp1, dx: da1, pool1, mask: a1)
        conv1.backward(x: input, weight: p.value(0), dy: da1, dx: nil, dWeight: p.gradient(0), dBias: p.gradient(1), workspace: workspaces[0],
                        columnsFromForward: true)
    }
}

extension ConvGeometry {
    /// Rows of an input of `size` rows that the first `output` output rows read: the largest
    /// source row plus one (replicate and zero padding both read nothing further down).
    public static func inputExtent(output: Int, kernel: Int, stride: Int, padding: Int, size: Int) -> Int {
        min(size, (output - 1) * stride - padding + kernel)
    }
}
