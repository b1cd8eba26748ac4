/// The residual machinery shared by `CIFARResNet` and `ResNet18`: a conv + batch-norm unit, the
/// basic block built from two of them, and the trunk (stem, blocks, pooled classifier) that runs
/// forward and backward over activations carved from an `ActivationArena`.
///
/// Shapes throughout are [N, C, H, W]; every activation is one slot of the trunk's arena, named
/// by an integer index fixed at init, so a step allocates nothing once the arenas have grown.

/// A convolution followed by batch norm, or — in a network with batch norm folded away — a
/// convolution with a bias.
///
///     batch norm: pre = W ⋆ x,       out = γ·(pre − μ)/√(σ² + ε) + β     (pre and out distinct slots)
///     folded:     pre = out = W ⋆ x + b                                  (one slot)
struct ConvBN {
    /// PyTorch module names: the conv ("layer1.0.conv1") and its norm ("layer1.0.bn1").
    let convName: String, normName: String
    let conv: Conv2d
    /// nil when folded.
    let norm: BatchNorm2d?
    /// Parameter indices. Folded: `weight`, `bias`. Batch norm: `weight`, then γ, β, μ, σ² at
    /// `weight + 1 ... weight + 4`.
    let weight: Int
    var bias: Int { weight + 1 }
    var gamma: Int { weight + 1 }
    var beta: Int { weight + 2 }
    var runningMean: Int { weight + 3 }
    var runningVar: Int { weight + 4 }
    /// Activation slots: the conv output and the unit output (equal when folded).
    let pre: Int, out: Int
    /// (μ, 1/√(σ²+ε)) of the last training forward, [2, C].
    let saved: Tensor

    var outChannels: Int { conv.outChannels }

    /// State-dict entries in PyTorch order: conv weight, then bn weight/bias/running stats (or the conv bias).
    var specs: [ParameterSpec] {
        let g = conv.geometry, o = conv.outChannels
        let w = ParameterSpec("\(convName).weight", [o, g.channels, g.kernel, g.kernel], .convWeight)
        guard norm != nil else { return [w, ParameterSpec("\(convName).bias", [o], .bias)] }
        return [w, ParameterSpec("\(normName).weight", [o], .normWeight), ParameterSpec("\(normName).bias", [o], .normBias),
                ParameterSpec("\(normName).running_mean", [o], .runningMean),
                ParameterSpec("\(normName).running_var", [o], .runningVar)]
    }

    /// Every (parameter, axis) indexed by this unit's output channels.
    var outputMembers: [ChannelGroup.Member] {
        let names = norm == nil ? ["\(convName).bias"]
            : ["weight", "bias", "running_mean", "running_var"].map { "\(normName).\($0)" }
        return [.init("\(convName).weight", axis: 0)] + names.map { .init($0, axis: 0) }
    }

    /// The (parameter, axis) indexed by this unit's input channels.
    var inputMember: ChannelGroup.Member { .init("\(convName).weight", axis: 1) }

    /// Forward: a[pre] = W ⋆ x (+ b when folded); with batch norm a[out] = BN(a[pre]), batch
    /// statistics in training (running statistics updated), running statistics in inference.
    func forward(_ p: ParameterSet, x: Tensor, _ a: [Tensor], mode: ForwardMode, workspace: Workspace) {
        let y = a[pre]
        conv.forward(x: x, weight: p.value(weight), bias: norm == nil ? p.value(bias) : nil, y: y, workspace: workspace)
        guard let norm else { return }
        switch mode {
        case .training:
            norm.forwardTraining(x: y, gamma: p.value(gamma), beta: p.value(beta), runningMean: p.value(runningMean),
                                 runningVar: p.value(runningVar), y: a[out], saved: saved)
        case .inference:
            norm.forwardInference(x: y, gamma: p.value(gamma), beta: p.value(beta), runningMean: p.value(runningMean),
                                  runningVar: p.value(runningVar), y: a[out])
        }
    }

    /// Backward from dy = ∂L/∂out (left untouched):
    ///   batch norm: g[pre] = BN⁻ᵀ(dy) (dγ, dβ accumulated), then the conv on g[pre];
    ///   folded: the conv directly on dy (db accumulated).
    /// The conv accumulates dW and overwrites `dx` (nil: no input gradient needed).
    func backward(_ p: ParameterSet, x: Tensor, dy: Tensor, _ a: [Tensor], _ g: [Tensor], dx: Tensor?, workspace: Workspace) {
        var dConv = dy
        if let norm {
            norm.backward(x: a[pre], gamma: p.value(gamma), saved: saved, dy: dy, dx: g[pre],
                          dGamma: p.gradient(gamma), dBeta: p.gradient(beta))
            dConv = g[pre]
        }
        conv.backward(x: x, weight: p.value(weight), dy: dConv, dx: dx, dWeight: p.gradient(weight),
                      dBias: norm == nil ? p.gradient(bias) : nil, workspace: workspace)
    }
}

/// The ResNet basic block (He et al. 2016), input x [N, Cin, H, W] → output [N, Cout, H', W']:
///
///     h = ReLU(BN1(conv1 x))                 conv1: 3×3, stride s, pad 1, Cin → hidden
///     z = BN2(conv2 h) + shortcut(x)         conv2: 3×3, stride 1, pad 1, hidden → Cout
///     y = ReLU(z)
///
/// shortcut(x) = x when the shape is kept, else BN_D(convD x) with convD 1×1 stride s
/// ("option B", torchvision's `downsample.0`/`downsample.1`).
struct BasicBlock {
    let name: String
    let conv1: ConvBN, conv2: ConvBN
    let downsample: ConvBN?
    /// Activation slots of the block input (a stream written earlier) and output (= conv2.out).
    let input: Int, output: Int
    /// Gradient scratch of the input's shape for the projection shortcut (−1 without one).
    let shortcutGradient: Int

    func forward(_ p: ParameterSet, _ a: [Tensor], mode: ForwardMode, workspace: Workspace) {
        let x = a[input], y = a[output]
        conv1.forward(p, x: x, a, mode: mode, workspace: workspace)
        ReLU.forward(x: a[conv1.out], y: a[conv1.out])
        conv2.forward(p, x: a[conv1.out], a, mode: mode, workspace: workspace)   // writes y = BN2(conv2 h)
        var shortcut = x
        if let downsample {
            downsample.forward(p, x: x, a, mode: mode, workspace: workspace)
            shortcut = a[downsample.out]
        }
        ResidualAdd.forward(a: y, b: shortcut, y: y)
        ReLU.forward(x: y, y: y)
    }

    /// With dy = ∂L/∂y in g[output]:
    ///   dz = dy · [y > 0]                                   (in place)
    ///   dh = conv2ᵀ(BN2ᵀ dz),  dh ← dh · [h > 0]
    ///   dx = conv1ᵀ(BN1ᵀ dh) + (x-shortcut: dz | projection: convDᵀ(BN_Dᵀ dz))
    /// Overwrites g[input]; accumulates every parameter gradient of the block.
    func backward(_ p: ParameterSet, _ a: [Tensor], _ g: [Tensor], workspace: Workspace) {
        let x = a[input], dx = g[input], dz = g[output]
        ReLU.backward(y: a[output], dy: dz, dx: dz)
        let h = a[conv1.out], dh = g[conv1.out]
        conv2.backward(p, x: h, dy: dz, a, g, dx: dh, workspace: workspace)
        ReLU.backward(y: h, dy: dh, dx: dh)
        conv1.backward(p, x: x, dy: dh, a, g, dx: dx, workspace: workspace)
        if let downsample {
            let ds = g[shortcutGradient]
            downsample.backward(p, x: x, dy: dz, a, g, dx: ds, workspace: workspace)
            accumulate(dx, ds)
        } else {
            accumulate(dx, dz)
        }
    }

    /// Number of state-dict entries of the block (conv1, conv2, projection and their norms or biases).
    var parameterCount: Int { conv1.specs.count + conv2.specs.count + (downsample?.specs.count ?? 0) }

    /// y += x, element-wise.
    private func accumulate(_ y: Tensor, _ x: Tensor) {
        precondition(x.count == y.count, "shortcut gradient \(x.shape) vs \(y.shape)")
        let n = y.count, py = y.data, px = x.data
        for i in 0..<n { py[i] += px[i] }
    }
}

/// The shared body of the residual families:
///
///     stem:   conv k×k stride s pad p (no bias) → BN → ReLU [→ maxpool 3×3 stride 2 pad 1]
///     stages: for stage i, `blocksPerStage` basic blocks of width stageWidths[i]; the first block
///             of every stage after the first has stride 2 (and so a projection shortcut)
///     head:   global average pool → fc (weight [classes, C_last], bias)
///
/// Channel groups (docs/algorithm.md §5): one *stream* group per residual stream — everything that
/// writes it (the stem or a projection conv, + its BN; every block's conv2 + bn2) and everything
/// that reads it (every reading block's conv1 on axis 1, the next stage's projection conv on
/// axis 1, the fc on axis 1) — and one *hidden* group per block (conv1 out + bn1, conv2 in).
final class ResidualTrunk {
    let inputShape: [Int]
    let classCount: Int
    let stem: ConvBN
    let stemPool: ConvGeometry?
    /// Slot the first block reads: the stem output, or the pooled stem output.
    let stemOutput: Int
    let blocks: [BasicBlock]
    let pooled: Int, logits: Int
    let fcWeight: Int, fcBias: Int
    let specs: [ParameterSpec]
    let groups: [ChannelGroup]
    /// Per-sample shapes of the activation slots (the gradient arena uses the same layout).
    let shapes: [[Int]]
    let arena = ActivationArena(), gradArena = ActivationArena()
    let workspace = Workspace()
    private var lastForward: (batch: Int, mode: ForwardMode)?

    init(inputShape: [Int], stemKernel: Int, stemStride: Int, stemPadding: Int, maxPool: Bool,
         stageWidths: [Int], hiddenWidths: [[Int]], classCount: Int, batchNorm: Bool) {
        precondition(inputShape.count == 3 && inputShape.allSatisfy { $0 >= 1 }, "input shape [C, H, W], got \(inputShape)")
        precondition(stageWidths.allSatisfy { $0 >= 1 } && hiddenWidths.joined().allSatisfy { $0 >= 1 },
                     "widths must be positive: \(stageWidths), \(hiddenWidths)")
        precondition(hiddenWidths.count == stageWidths.count, "one list of hidden widths per stage")
        self.inputShape = inputShape
        self.classCount = classCount
        var shapes = [[Int]](), specs = [ParameterSpec]()
        func slot(_ shape: [Int]) -> Int { shapes.append(shape); return shapes.count - 1 }
        func unit(_ convName: String, _ normName: String, inChannels: Int, outChannels: Int, height: Int, width: Int,
                  kernel: Int, stride: Int, padding: Int) -> ConvBN {
            let geometry = ConvGeometry(channels: inChannels, height: height, width: width, kernel: kernel,
                                        stride: stride, padding: padding)
            let outShape = [outChannels, geometry.outHeight, geometry.outWidth]
            let pre = slot(outShape), out = batchNorm ? slot(outShape) : pre
            let u = ConvBN(convName: convName, normName: normName, conv: Conv2d(geometry, outChannels: outChannels),
                           norm: batchNorm ? BatchNorm2d(channels: outChannels) : nil, weight: specs.count,
                           pre: pre, out: out, saved: Tensor(zeros: [2, outChannels]))
            specs += u.specs
            return u
        }

        // Stem.
        var (c, h, w) = (inputShape[0], inputShape[1], inputShape[2])
        stem = unit("conv1", "bn1", inChannels: c, outChannels: stageWidths[0], height: h, width: w,
                    kernel: stemKernel, stride: stemStride, padding: stemPadding)
        (c, h, w) = (stageWidths[0], stem.conv.geometry.outHeight, stem.conv.geometry.outWidth)
        var current = stem.out
        if maxPool {
            let g = ConvGeometry(channels: c, height: h, width: w, kernel: 3, stride: 2, padding: 1)
            (h, w) = (g.outHeight, g.outWidth)
            stemPool = g
            current = slot([c, h, w])
        } else {
            stemPool = nil
        }
        stemOutput = current

        // Groups are built as (name, members) and sized at the end from the first member.
        var groupList: [(name: String, size: Int, members: [ChannelGroup.Member])] = []
        groupList.append(("layer1.stream", c, stem.outputMembers))
        var stream = 0
        var blocks = [BasicBlock]()
        for (s, width) in stageWidths.enumerated() {
            for (b, hidden) in hiddenWidths[s].enumerated() {
                let name = "layer\(s + 1).\(b)", stride = (s > 0 && b == 0) ? 2 : 1
                let input = current
                let conv1 = unit("\(name).conv1", "\(name).bn1", inChannels: c, outChannels: hidden, height: h, width: w,
                                 kernel: 3, stride: stride, padding: 1)
                let (oh, ow) = (conv1.conv.geometry.outHeight, conv1.conv.geometry.outWidth)
                let conv2 = unit("\(name).conv2", "\(name).bn2", inChannels: hidden, outChannels: width, height: oh, width: ow,
                                 kernel: 3, stride: 1, padding: 1)
                var downsample: ConvBN? = nil, shortcutGradient = -1
                groupList[stream].members.append(conv1.inputMember)
                if stride != 1 || c != width {
                    let d = unit("\(name).downsample.0", "\(name).downsample.1", inChannels: c, outChannels: width,
                                 height: h, width: w, kernel: 1, stride: stride, padding: 0)
                    downsample = d
                    shortcutGradient = slot([c, h, w])
                    groupList[stream].members.append(d.inputMember)
                    groupList.append(("layer\(s + 1).stream", width, d.outputMembers))
                    stream = groupList.count - 1
                }
                groupList[stream].members += conv2.outputMembers
                groupList.append(("\(name).hidden", hidden, conv1.outputMembers + [conv2.inputMember]))
                blocks.append(BasicBlock(name: name, conv1: conv1, conv2: conv2, downsample: downsample,
                                         input: input, output: conv2.out, shortcutGradient: shortcutGradient))
                (c, h, w) = (width, oh, ow)
                current = conv2.out
            }
        }
        self.blocks = blocks

        // Head.
        pooled = slot([c])
        logits = slot([classCount])
        fcWeight = specs.count
        fcBias = specs.count + 1
        specs += [ParameterSpec("fc.weight", [classCount, c], .linearWeight), ParameterSpec("fc.bias", [classCount], .bias)]
        groupList[stream].members.append(.init("fc.weight", axis: 1))

        // Stream groups first in stage order, each followed by its stage's hidden groups.
        self.groups = groupList.map { ChannelGroup(name: $0.name, size: $0.size, members: $0.members) }
        self.specs = specs
        self.shapes = shapes
    }

    /// Every conv + norm unit, in state-dict order.
    var units: [ConvBN] {
        [stem] + blocks.flatMap { b in [b.conv1, b.conv2] + (b.downsample.map { [$0] } ?? []) }
    }

    func forward(_ p: ParameterSet, input: Tensor, mode: ForwardMode) -> Tensor {
        let n = input.shape[0]
        precondition(input.rank == 4 && input.shape[1] == inputShape[0] && input.shape[2] == inputShape[1]
                     && input.shape[3] == inputShape[2], "input \(input.shape) for per-image shape \(inputShape)")
        precondition(p.specs.count == specs.count, "parameter set of another network")
        let a = arena.views(batch: n, shapes: shapes)
        stem.forward(p, x: input, a, mode: mode, workspace: workspace)
        ReLU.forward(x: a[stem.out], y: a[stem.out])
        if let stemPool { MaxPool2d.forward(x: a[stem.out], y: a[stemOutput], stemPool) }
        for block in blocks { block.forward(p, a, mode: mode, workspace: workspace) }
        GlobalAvgPool.forward(x: a[blocks.last!.output], y: a[pooled])
        Linear.forward(x: a[pooled], weight: p.value(fcWeight), bias: p.value(fcBias), y: a[logits])
        lastForward = (n, mode)
        return a[logits]
    }

    /// Reverse of `forward`; needs the activations of the last forward, in training mode when the
    /// network has batch norm (the backward formula uses batch statistics).
    /// With `firstParameter` > 0 the pass stops after the last block (in backward order) that
    /// holds a parameter ≥ `firstParameter`; earlier blocks and the stem get no gradients.
    func backward(_ p: ParameterSet, input: Tensor, dLogits: Tensor, from firstParameter: Int = 0) {
        let n = input.shape[0]
        guard let last = lastForward, last.batch == n, last.mode == .training || stem.norm == nil else {
            preconditionFailure("backward needs a training-mode forward of the same batch first")
        }
        let a = arena.views(batch: n, shapes: shapes), g = gradArena.views(batch: n, shapes: shapes)
        Linear.backward(x: a[pooled], weight: p.value(fcWeight), dy: dLogits, dx: g[pooled],
                        dWeight: p.gradient(fcWeight), dBias: p.gradient(fcBias))
        GlobalAvgPool.backward(dy: g[pooled], dx: g[blocks.last!.output])
        for block in blocks.reversed() {
            // A block's parameters follow its conv1's weight in the state dict.
            if firstParameter > 0 && block.conv1.weight + block.parameterCount <= firstParameter { return }
            block.backward(p, a, g, workspace: workspace)
        }
        if firstParameter > stem.weight + stem.specs.count - 1 { return }
        if let stemPool { MaxPool2d.backward(x: a[stem.out], dy: g[stemOutput], dx: g[stem.out], stemPool) }
        ReLU.backward(y: a[stem.out], dy: g[stem.out], dx: g[stem.out])
        stem.backward(p, x: input, dy: g[stem.out], a, g, dx: nil, workspace: workspace)
    }

    /// Writes into `folded` (the parameters of this architecture built with `batchNorm: false`)
    /// the inference-equivalent weights: each conv + BN becomes a conv with bias
    /// (`BatchNorm2d.fold`); fc is copied.
    func fold(_ p: ParameterSet, into folded: ParameterSet) {
        for u in units {
            guard let norm = u.norm else { preconditionFailure("network has no batch norm to fold") }
            let (w, b) = norm.fold(weight: p.value(u.weight), bias: nil, gamma: p.value(u.gamma), beta: p.value(u.beta),
                                   runningMean: p.value(u.runningMean), runningVar: p.value(u.runningVar))
            folded.value("\(u.convName).weight").copy(from: w)
            folded.value("\(u.convName).bias").copy(from: b)
        }
        folded.value("fc.weight").copy(from: p.value(fcWeight))
        folded.value("fc.bias").copy(from: p.value(fcBias))
    }
}

/// A network that is a `ResidualTrunk` (stem, residual stages, pooling, classifier): its state
/// dict, channel groups, forward and backward are the trunk's.
protocol ResidualNetwork: Network {
    var trunk: ResidualTrunk { get }
}

extension ResidualNetwork {
    public var parameterSpecs: [ParameterSpec] { trunk.specs }
    public var channelGroups: [ChannelGroup] { trunk.groups }

    public func forward(_ parameters: ParameterSet, input: Tensor, mode: ForwardMode) -> Tensor {
        trunk.forward(parameters, input: input, mode: mode)
    }

    public func backward(_ parameters: ParameterSet, input: Tensor, dLogits: Tensor) {
        trunk.backward(parameters, input: input, dLogits: dLogits)
    }

    public func backward(_ parameters: ParameterSet, input: Tensor, dLogits: Tensor, from firstParameter: Int) {
        trunk.backward(parameters, input: input, dLogits: dLogits, from: firstParameter)
    }
}
