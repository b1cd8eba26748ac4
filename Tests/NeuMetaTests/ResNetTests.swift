import Testing
@testable import NeuMeta

// MARK: - Helpers (test-only; the real permutation code will live in Smoothness/)

/// Applies `order` along each member's axis: new[..., i, ...] = old[..., order[i], ...].
private func permute(_ p: ParameterSet, group: ChannelGroup, order: [Int]) {
    precondition(order.count == group.size)
    for m in group.members {
        let t = p.value(m.parameter), s = t.shape
        precondition(s[m.axis] == group.size, "\(m.parameter) axis \(m.axis) has \(s[m.axis]) channels, group \(group.size)")
        let outer = s[..<m.axis].reduce(1, *), inner = s[(m.axis + 1)...].reduce(1, *), size = group.size
        let old = t.clone()
        for o in 0..<outer {
            for i in 0..<size {
                for j in 0..<inner { t[(o * size + i) * inner + j] = old[(o * size + order[i]) * inner + j] }
            }
        }
    }
}

/// PyTorch default init, then batch-norm affine terms and running statistics drawn at random so
/// that every tensor matters (a default BN — γ = 1, β = 0, μ = 0, σ² = 1 — hides wiring errors).
private func randomParameters(_ net: Network, seed: UInt64) -> ParameterSet {
    let p = net.makeParameters()
    var rng = SeededRandom(seed)
    p.initializeDefault(rng: &rng)
    for (i, s) in p.specs.enumerated() {
        let v = p.value(i)
        for j in 0..<v.count {
            switch s.role {
            case .normWeight: v[j] = rng.uniform(0.5, 1.5)
            case .normBias, .runningMean: v[j] = 0.3 * rng.normal()
            case .runningVar: v[j] = rng.uniform(0.5, 2)
            default: break
            }
        }
    }
    return p
}

private func copyParameters(_ p: ParameterSet) -> ParameterSet {
    let q = ParameterSet(specs: p.specs)
    q.values.base.update(from: p.values.base, count: p.count)
    return q
}

/// Activations of the last forward (test access to the trunk's arena).
private func activations(_ trunk: ResidualTrunk, batch: Int) -> [Tensor] { trunk.arena.views(batch: batch, shapes: trunk.shapes) }

/// An independent naive forward built from state-dict names alone: `Conv2d.naiveForward`,
/// batch norm when `<bn>.weight` exists (else the conv has a bias), blocks discovered by name,
/// stride 2 in the first block of every stage after the first, projection when
/// `downsample.0.weight` exists.
private struct ReferenceResNet {
    let p: ParameterSet, mode: ForwardMode

    func conv(_ x: Tensor, _ name: String, stride: Int, padding: Int) -> Tensor {
        let w = p.value("\(name).weight")
        let g = ConvGeometry(channels: x.shape[1], height: x.shape[2], width: x.shape[3], kernel: w.shape[2],
                             stride: stride, padding: padding)
        let y = Tensor(zeros: [x.shape[0], w.shape[0], g.outHeight, g.outWidth])
        Conv2d(g, outChannels: w.shape[0]).naiveForward(x: x, weight: w, bias: p.index(of: "\(name).bias").map { p.value($0) }, y: y)
        return y
    }

    func norm(_ x: Tensor, _ name: String) -> Tensor {
        guard p.index(of: "\(name).weight") != nil else { return x }
        let y = Tensor(zeros: x.shape), c = x.shape[1], bn = BatchNorm2d(channels: c)
        let (g, b) = (p.value("\(name).weight"), p.value("\(name).bias"))
        switch mode {
        case .training:
            bn.forwardTraining(x: x, gamma: g, beta: b, runningMean: nil, runningVar: nil, y: y, saved: Tensor(zeros: [2, c]))
        case .inference:
            bn.forwardInference(x: x, gamma: g, beta: b, runningMean: p.value("\(name).running_mean"),
                                runningVar: p.value("\(name).running_var"), y: y)
        }
        return y
    }

    func relu(_ x: Tensor) -> Tensor { let y = Tensor(zeros: x.shape); ReLU.forward(x: x, y: y); return y }

    func logits(_ x: Tensor, stemKernel: Int, stemStride: Int, maxPool: Bool) -> [Float] {
        var h = relu(norm(conv(x, "conv1", stride: stemStride, padding: stemKernel / 2), "bn1"))
        if maxPool {
            let g = ConvGeometry(channels: h.shape[1], height: h.shape[2], width: h.shape[3], kernel: 3, stride: 2, padding: 1)
            let y = Tensor(zeros: [h.shape[0], h.shape[1], g.outHeight, g.outWidth])
            MaxPool2d.forward(x: h, y: y, g)
            h = y
        }
        var stage = 1
        while p.index(of: "layer\(stage).0.conv1.weight") != nil {
            var b = 0
            while p.index(of: "layer\(stage).\(b).conv1.weight") != nil {
                let name = "layer\(stage).\(b)", stride = stage > 1 && b == 0 ? 2 : 1
                let main = norm(conv(relu(norm(conv(h, "\(name).conv1", stride: stride, padding: 1), "\(name).bn1")),
                                     "\(name).conv2", stride: 1, padding: 1), "\(name).bn2")
                let shortcut = p.index(of: "\(name).downsample.0.weight") == nil ? h
                    : norm(conv(h, "\(name).downsample.0", stride: stride, padding: 0), "\(name).downsample.1")
                let sum = Tensor(zeros: main.shape)
                ResidualAdd.forward(a: main, b: shortcut, y: sum)
                h = relu(sum)
                b += 1
            }
            stage += 1
        }
        let pooled = Tensor(zeros: [h.shape[0], h.shape[1]])
        GlobalAvgPool.forward(x: h, y: pooled)
        let out = Tensor(zeros: [h.shape[0], p.value("fc.weight").shape[0]])
        Linear.forward(x: pooled, weight: p.value("fc.weight"), bias: p.value("fc.bias"), y: out)
        return out.toArray()
    }
}

/// Whole-network gradient of the cross-entropy (training mode) against finite differences for
/// every trainable tensor — all of its elements up to 64, else 64 or so at an even stride (a
/// backward error spoils whole tensors, not single entries). Returns (elements checked,
/// elements that needed a one-sided difference).
///
/// Step and tolerance: h = 1e-4, |analytic − numeric| ≤ 5e-3 + 5%·|numeric|. The tolerance is
/// LeNet's; the step is 10× smaller because at these tiny widths batch norm divides by small
/// per-channel batch deviations, so a step moves pre-activations a lot and the loss is strongly
/// curved (ResNet-20 below, bn1.bias: analytic −0.3478; central h = 1e-3 → −0.3801, one-sided
/// −0.414 / −0.346; h = 1e-4 → −0.3478). Rounding noise at h = 1e-4 is ~1e-7·|L| / 2h ≈ 1e-3.
///
/// Kinks: a network of ~2,000 ReLU and max-pool decisions often has some within reach of a
/// step in a high-gain parameter (a stem weight moves everything downstream), and then the
/// central difference straddles a kink and is wrong. Measured over six seeds of each tiny net
/// below: 0–13% of the elements; on most of them one side matches the analytic value while the
/// other does not, and both converge to it as h → 1e-5. So an element passes when the central
/// difference or one of the one-sided differences (L(θ±h) − L(θ))/±h agrees. A wrong backward
/// cannot hide behind this: away from kinks all three estimates agree with each other to
/// ~h·|L''| ≲ 5e-3. An element with kinks on both sides within h still fails (in 6 of those
/// 12 seeds, one such element in each of 1–3 tensors); the seeds used here need no one-sided estimate at all, which
/// the tests assert, so they stay robust to rounding-level changes in the kernels.
@discardableResult
private func checkGradients(_ net: Network, _ p: ParameterSet, _ x: Tensor, labels: [Int32], _ what: String,
                            sourceLocation: SourceLocation = #_sourceLocation) -> (checked: Int, oneSided: Int) {
    func loss(_ dLogits: Tensor?) -> Double {
        labels.withUnsafeBufferPointer {
            SoftmaxCrossEntropy.forwardBackward(logits: net.forward(p, input: x, mode: .training), labels: $0.baseAddress!,
                                                dLogits: dLogits).loss
        }
    }
    p.zeroGradients()
    let dLogits = Tensor(zeros: [x.shape[0], net.classCount])
    let l0 = loss(dLogits)
    net.backward(p, input: x, dLogits: dLogits)
    let h: Float = 1e-4, atol: Float = 5e-3, rtol: Float = 5e-2
    var checked = 0, oneSided = 0
    for i in p.specs.indices where p.specs[i].role.trainable {
        let t = p.value(i), g = p.gradient(i)
        var failure: String? = nil
        for j in stride(from: 0, to: t.count, by: (t.count + 63) / 64) {
            let saved = t[j]
            t[j] = saved + h; let lp = loss(nil)
            t[j] = saved - h; let lm = loss(nil)
            t[j] = saved
            let central = Float((lp - lm) / (2 * Double(h)))
            let right = Float((lp - l0) / Double(h)), left = Float((l0 - lm) / Double(h))
            func ok(_ e: Float) -> Bool { abs(g[j] - e) <= atol + rtol * abs(e) }
            checked += 1
            if ok(central) { continue }
            if ok(right) || ok(left) { oneSided += 1; continue }
            if failure == nil { failure = "index \(j): analytic \(g[j]), central \(central), right \(right), left \(left)" }
        }
        #expect(failure == nil, "\(what) \(p.specs[i].name): \(failure ?? "")", sourceLocation: sourceLocation)
    }
    return (checked, oneSided)
}

/// Permuting every group by a random order leaves the logits unchanged (every mode given). Runs
/// on a copy so running-statistic updates stay in step. Together with `checkGroupCoverage` (each
/// channel axis in exactly one group) this pins the groups down: a member in the wrong group of
/// the same size would be permuted by the wrong order and change the logits. (A "leave one member
/// out changes the logits" check is not used: in these tiny nets some channels are dead after
/// ReLU, so leaving out their permutation can legitimately change nothing.)
private func checkPermutationInvariance(_ net: Network, _ p: ParameterSet, _ x: Tensor, modes: [ForwardMode], seed: UInt64, _ what: String) {
    let q = copyParameters(p)
    var rng = SeededRandom(seed)
    for g in net.channelGroups { permute(q, group: g, order: rng.permutation(g.size)) }
    #expect(q.values.buffer.map { $0 } != p.values.buffer.map { $0 }, "\(what): the permutations changed nothing")
    for mode in modes {
        let before = net.forward(p, input: x, mode: mode).toArray()
        let after = net.forward(q, input: x, mode: mode).toArray()
        expectClose(after, before, atol: 1e-4, rtol: 1e-4, "\(what) permuted logits (\(mode))")
    }
}

/// Each channel axis is in exactly one group, with the group's size: all axis-0 entries except
/// the classifier's, all conv in-channel axes except the image's (conv1), and fc.weight axis 1.
private func checkGroupCoverage(_ net: Network, _ what: String) {
    var seen = [String: Int]()
    let specs = Dictionary(uniqueKeysWithValues: net.parameterSpecs.map { ($0.name, $0) })
    for g in net.channelGroups {
        for m in g.members {
            #expect(specs[m.parameter]?.shape[m.axis] == g.size, "\(what): \(m.parameter) axis \(m.axis) in group \(g.name)")
            seen["\(m.parameter)#\(m.axis)", default: 0] += 1
        }
    }
    var expected: Set<String> = ["fc.weight#1"]
    for s in net.parameterSpecs where !s.name.hasPrefix("fc.") {
        expected.insert("\(s.name)#0")
        if s.role == .convWeight && s.name != "conv1.weight" { expected.insert("\(s.name)#1") }
    }
    #expect(Set(seen.keys) == expected, "\(what): missing \(expected.subtracting(seen.keys)), extra \(Set(seen.keys).subtracting(expected))")
    #expect(seen.values.allSatisfy { $0 == 1 }, "\(what): members repeated \(seen.filter { $0.value > 1 })")
}

// MARK: - CIFAR ResNet

@Suite struct CIFARResNetTests {
    /// Tiny ResNet-20 with unequal hidden widths (so a hidden/stream mix-up cannot go unnoticed).
    static func tiny(batchNorm: Bool = true) -> CIFARResNet {
        CIFARResNet(depth: 20, stageWidths: [2, 3, 4], blockHiddenWidths: [[3, 2, 1], [2, 4, 3], [5, 3, 2]],
                    inputShape: [3, 8, 8], batchNorm: batchNorm)
    }

    /// ResNet-20, widths 16/32/64, by hand (option B shortcuts; trainable = weights + BN affine):
    ///   stem     3·16·9 + 2·16                                       =     464
    ///   layer1   3 × (16·16·9·2 + 2·2·16)          = 3 × 4,672       =  14,016
    ///   layer2   16·32·9 + 32·32·9 + 2·2·32 + 16·32 + 2·32 = 14,528
    ///            + 2 × (32·32·9·2 + 2·2·32) = 2 × 18,560             =  51,648
    ///   layer3   32·64·9 + 64·64·9 + 2·2·64 + 32·64 + 2·64 = 57,728
    ///            + 2 × (64·64·9·2 + 2·2·64) = 2 × 73,984             = 205,696
    ///   fc       64·10 + 10                                          =     650
    ///   total                                                          272,474
    /// (option A's well-known 269,722 plus the 2,752 of the two projections). Running statistics
    /// add 2 × 784 BN channels = 1,568. n = 5 and n = 9 follow from the same per-block terms.
    @Test func specsNamesAndParameterCounts() {
        let net = CIFARResNet(depth: 20)
        let specs = net.parameterSpecs
        #expect(specs.prefix(12).map(\.name) == [
            "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
            "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias", "layer1.0.bn1.running_mean",
            "layer1.0.bn1.running_var", "layer1.0.conv2.weight", "layer1.0.bn2.weight"])
        #expect(specs.count == 21 * 5 + 2)
        #expect(specs.suffix(2).map(\.name) == ["fc.weight", "fc.bias"])
        #expect(!specs.contains { $0.name.contains("num_batches_tracked") })
        let p = net.makeParameters()
        #expect(p.value("layer2.0.downsample.0.weight").shape == [32, 16, 1, 1])
        #expect(p.value("layer3.0.downsample.1.running_var").shape == [64])
        #expect(p.value("layer3.2.conv2.weight").shape == [64, 64, 3, 3])
        #expect(p.value("fc.weight").shape == [10, 64])
        #expect(p.index(of: "layer1.0.downsample.0.weight") == nil && p.index(of: "layer2.1.downsample.0.weight") == nil)
        #expect(Set(specs.map(\.role)) == [.convWeight, .normWeight, .normBias, .runningMean, .runningVar, .linearWeight, .bias])
        #expect(net.trainableSpecs.reduce(0) { $0 + $1.count } == 272_474)
        #expect(p.count == 272_474 + 1_568)
        #expect(CIFARResNet(depth: 32).trainableSpecs.reduce(0) { $0 + $1.count } == 466_906)
        #expect(CIFARResNet(depth: 56).trainableSpecs.reduce(0) { $0 + $1.count } == 855_770)
        #expect(net.family == "resnet20" && net.widths == [16, 32, 64] + [16, 16, 16, 32, 32, 32, 64, 64, 64])
        let rebuilt = CIFARResNet(depth: 20, widths: Self.tiny().widths, inputShape: [3, 8, 8])!
        #expect(rebuilt.parameterSpecs == Self.tiny().parameterSpecs)
        #expect(CIFARResNet(depth: 20, widths: [1, 2]) == nil)
    }

    @Test func fullSizeForwardShape() {
        let net = CIFARResNet(depth: 20)
        let p = randomParameters(net, seed: 1)
        let logits = net.forward(p, input: randomTensor([2, 3, 32, 32], seed: 2), mode: .inference)
        #expect(logits.shape == [2, 10])
        #expect(logits.toArray().allSatisfy { $0.isFinite })
        let outputs = net.trunk.blocks.map { net.trunk.shapes[$0.output] }
        #expect(outputs.map { $0[1] } == [32, 32, 32, 16, 16, 16, 8, 8, 8])
    }

    @Test(arguments: [ForwardMode.training, .inference])
    func forwardMatchesNaiveReference(mode: ForwardMode) {
        let net = CIFARResNet(depth: 20, stageWidths: [4, 6, 5], blockHiddenWidths: [[3, 5, 2], [4, 7, 6], [9, 2, 8]],
                              classCount: 7, inputShape: [3, 12, 12])
        let p = randomParameters(net, seed: 3), x = randomTensor([3, 3, 12, 12], seed: 4)
        let reference = ReferenceResNet(p: p, mode: mode).logits(x, stemKernel: 3, stemStride: 1, maxPool: false)
        expectClose(net.forward(p, input: x, mode: mode).toArray(), reference, atol: 1e-4, rtol: 1e-4, "ResNet-20 vs reference (\(mode))")
    }

    @Test func backwardMatchesFiniteDifferences() {
        let net = CIFARResNet(depth: 20, stageWidths: [2, 3, 4], inputShape: [3, 8, 8])
        let r = checkGradients(net, randomParameters(net, seed: 41), randomTensor([2, 3, 8, 8], seed: 141), labels: [3, 8], "ResNet-20")
        #expect(r.oneSided == 0, "ResNet-20: \(r.oneSided) of \(r.checked) elements needed a one-sided difference")
    }

    @Test func foldedBackwardMatchesFiniteDifferences() {
        let net = Self.tiny(batchNorm: false)
        checkGradients(net, randomParameters(net, seed: 7), randomTensor([2, 3, 8, 8], seed: 8), labels: [1, 9], "folded ResNet-20")
    }

    /// With bn2 of a block zeroed the residual branch vanishes: an identity block returns its
    /// (non-negative) input unchanged, a projection block returns ReLU(BN_D(convD x)).
    @Test func zeroedResidualBranchLeavesTheShortcut() {
        let net = Self.tiny()
        let p = randomParameters(net, seed: 9), x = randomTensor([2, 3, 8, 8], seed: 10)
        let trunk = net.trunk
        let identity = trunk.blocks[1], projection = trunk.blocks[3]
        #expect(identity.name == "layer1.1" && identity.downsample == nil && projection.name == "layer2.0")
        _ = net.forward(p, input: x, mode: .inference)
        var a = activations(trunk, batch: 2)
        #expect(a[identity.output].toArray() != a[identity.input].toArray(), "branch should matter before zeroing")
        for name in ["layer1.1.bn2.weight", "layer1.1.bn2.bias", "layer2.0.bn2.weight", "layer2.0.bn2.bias"] { p.value(name).zero() }
        _ = net.forward(p, input: x, mode: .inference)
        a = activations(trunk, batch: 2)
        #expect(a[identity.output].toArray() == a[identity.input].toArray())
        let manual = ReferenceResNet(p: p, mode: .inference)
        let expected = manual.relu(manual.norm(manual.conv(a[projection.input], "layer2.0.downsample.0", stride: 2, padding: 0),
                                               "layer2.0.downsample.1"))
        expectClose(a[projection.output].toArray(), expected.toArray(), atol: 1e-5, rtol: 1e-5, "projection block with zeroed bn2")
    }

    @Test func permutingChannelGroupsKeepsTheFunction() {
        for net in [Self.tiny(), Self.tiny(batchNorm: false)] {
            checkGroupCoverage(net, net.family)
            #expect(net.channelGroups.map(\.name).prefix(5) == ["layer1.stream", "layer1.0.hidden", "layer1.1.hidden", "layer1.2.hidden", "layer2.stream"])
            #expect(net.channelGroups.map(\.size) == [2, 3, 2, 1, 3, 2, 4, 3, 4, 5, 3, 2])
            checkPermutationInvariance(net, randomParameters(net, seed: 11), randomTensor([3, 3, 8, 8], seed: 12),
                                       modes: [.inference, .training], seed: 13, net.family)
        }
        // Stream groups as docs/algorithm.md §5 lists them, for the first stream and its hand-over.
        let g = Self.tiny().channelGroups
        #expect(g[0].members.map(\.parameter).prefix(6) == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                                                            "bn1.running_var", "layer1.0.conv1.weight"])
        #expect(g[0].members.suffix(2) == [.init("layer2.0.conv1.weight", axis: 1), .init("layer2.0.downsample.0.weight", axis: 1)])
        #expect(g[8].members.last == .init("fc.weight", axis: 1))
    }

    /// Folded conv biases reproduce the inference-mode logits of conv + BN.
    @Test func foldedBatchNormKeepsInferenceLogits() {
        let net = Self.tiny()
        let p = randomParameters(net, seed: 14), x = randomTensor([3, 3, 8, 8], seed: 15)
        let (folded, q) = net.foldedBatchNorm(p)
        #expect(folded.family == "resnet20-folded" && !folded.batchNorm)
        #expect(q.index(of: "conv1.bias") != nil && q.index(of: "bn1.weight") == nil)
        #expect(q.value("layer2.0.downsample.0.bias").shape == [3] && q.index(of: "layer2.0.downsample.1.weight") == nil)
        #expect(folded.parameterSpecs.count == 21 * 2 + 2)
        let want = net.forward(p, input: x, mode: .inference).toArray()
        expectClose(folded.forward(q, input: x, mode: .inference).toArray(), want, atol: 1e-4, rtol: 1e-4, "folded vs BN logits")
        let reference = ReferenceResNet(p: q, mode: .inference).logits(x, stemKernel: 3, stemStride: 1, maxPool: false)
        expectClose(reference, want, atol: 1e-4, rtol: 1e-4, "folded reference vs BN logits")
    }

    /// Training mode: running μ ← 0.9 μ + 0.1 mean, running σ² ← 0.9 σ² + 0.1 · unbiased variance
    /// (checked on the stem against its conv output); inference leaves them alone.
    @Test func runningStatisticsUpdateInTrainingOnly() {
        let net = Self.tiny()
        let p = randomParameters(net, seed: 16), x = randomTensor([4, 3, 8, 8], seed: 17)
        let mean0 = p.value("bn1.running_mean").toArray(), var0 = p.value("bn1.running_var").toArray()
        let deep0 = p.value("layer3.2.bn2.running_var").toArray()
        let conv = ReferenceResNet(p: p, mode: .training).conv(x, "conv1", stride: 1, padding: 1)
        _ = net.forward(p, input: x, mode: .training)
        let (C, HW, M) = (2, 64, 4 * 64)
        for c in 0..<C {
            var s = 0.0, ss = 0.0
            for n in 0..<4 { for i in 0..<HW { let v = Double(conv[(n * C + c) * HW + i]); s += v; ss += v * v } }
            let mean = s / Double(M), unbiased = (ss - Double(M) * mean * mean) / Double(M - 1)
            expectClose([p.value("bn1.running_mean")[c], p.value("bn1.running_var")[c]],
                        [0.9 * mean0[c] + 0.1 * Float(mean), 0.9 * var0[c] + 0.1 * Float(unbiased)], atol: 1e-5, rtol: 1e-5,
                        "stem running stats, channel \(c)")
        }
        #expect(p.value("layer3.2.bn2.running_var").toArray() != deep0)
        let snapshot = p.values.buffer.map { $0 }
        _ = net.forward(p, input: x, mode: .inference)
        #expect(p.values.buffer.map { $0 } == snapshot)
    }

    /// After the first step, further steps of the same batch size grow neither the workspace nor
    /// the activation arena.
    @Test func steadyStateAllocatesNothing() {
        let net = Self.tiny()
        let p = randomParameters(net, seed: 18), x = randomTensor([2, 3, 8, 8], seed: 19)
        func step() -> Tensor {
            let logits = net.forward(p, input: x, mode: .training)
            net.backward(p, input: x, dLogits: logits)
            return logits
        }
        let first = step(), growth = net.trunk.workspace.growthCount
        let second = step()
        #expect(net.trunk.workspace.growthCount == growth)
        #expect(first.storage === second.storage && first.offset == second.offset)
    }
}

// MARK: - ResNet-18

@Suite struct ResNet18Tests {
    /// torchvision's count: 11,689,512 trainable; 9,600 running statistics (4,800 BN channels).
    @Test func specsNamesAndParameterCounts() {
        let net = ResNet18()
        let specs = net.parameterSpecs
        #expect(specs.count == 20 * 5 + 2)
        #expect(net.trainableSpecs.reduce(0) { $0 + $1.count } == 11_689_512)
        #expect(specs.reduce(0) { $0 + $1.count } == 11_689_512 + 9_600)
        let byName = Dictionary(uniqueKeysWithValues: specs.map { ($0.name, $0.shape) })
        #expect(byName["conv1.weight"] == [64, 3, 7, 7])
        #expect(byName["layer4.1.bn2.running_var"] == [512])
        #expect(byName["layer4.0.downsample.0.weight"] == [512, 256, 1, 1])
        #expect(byName["layer3.1.conv1.weight"] == [256, 256, 3, 3])
        #expect(byName["layer1.0.downsample.0.weight"] == nil)
        #expect(byName["fc.weight"] == [1000, 512])
        // 224 → 112 (stem) → 56 (max pool) → 56, 28, 14, 7.
        #expect(net.trunk.shapes[net.trunk.stemOutput] == [64, 56, 56])
        #expect(net.trunk.blocks.map { net.trunk.shapes[$0.output][1] } == [56, 56, 28, 28, 14, 14, 7, 7])
        #expect(net.family == "resnet18" && net.widths.count == 12)
        #expect(ResNet18(widths: [2, 2, 3, 3, 1, 2, 3, 4, 5, 6, 7, 8], classCount: 10, inputSize: 32)!.blockHiddenWidths
                == [[1, 2], [3, 4], [5, 6], [7, 8]])
    }

    @Test func smallForwardShapeAndReference() {
        let net = ResNet18(stageWidths: [3, 4, 5, 6], blockHiddenWidths: [[2, 4], [5, 3], [4, 6], [7, 2]], classCount: 7, inputSize: 32)
        let p = randomParameters(net, seed: 20), x = randomTensor([2, 3, 32, 32], seed: 21)
        for mode in [ForwardMode.training, .inference] {
            let reference = ReferenceResNet(p: p, mode: mode).logits(x, stemKernel: 7, stemStride: 2, maxPool: true)
            let logits = net.forward(p, input: x, mode: mode)
            #expect(logits.shape == [2, 7])
            expectClose(logits.toArray(), reference, atol: 1e-4, rtol: 1e-4, "ResNet-18 vs reference (\(mode))")
        }
        #expect(net.trunk.shapes[net.trunk.blocks.last!.output] == [6, 1, 1])
    }

    /// Input 36: stem 18, max pool 9, stages 9, 5, 3, 2 — the last stage keeps 2×2 pixels so its
    /// batch norms see 8 values per channel, not 2 (with 2, x̂ = ±1 and the check says little).
    @Test func backwardMatchesFiniteDifferences() {
        let net = ResNet18(stageWidths: [2, 2, 3, 3], classCount: 10, inputSize: 36)
        #expect(net.trunk.shapes[net.trunk.blocks.last!.output] == [3, 2, 2])
        let r = checkGradients(net, randomParameters(net, seed: 31), randomTensor([2, 3, 36, 36], seed: 131), labels: [2, 5], "ResNet-18")
        #expect(r.oneSided == 0, "ResNet-18: \(r.oneSided) of \(r.checked) elements needed a one-sided difference")
    }

    @Test func permutationInvarianceAndFolding() {
        let net = ResNet18(stageWidths: [3, 4, 5, 6], blockHiddenWidths: [[2, 4], [5, 3], [4, 6], [7, 2]], classCount: 7, inputSize: 32)
        checkGroupCoverage(net, "resnet18")
        #expect(net.channelGroups.count == 4 + 8)
        let p = randomParameters(net, seed: 24), x = randomTensor([3, 3, 32, 32], seed: 25)
        checkPermutationInvariance(net, p, x, modes: [.inference, .training], seed: 26, "resnet18")
        let (folded, q) = net.foldedBatchNorm(p)
        checkGroupCoverage(folded, "resnet18-folded")
        expectClose(folded.forward(q, input: x, mode: .inference).toArray(), net.forward(p, input: x, mode: .inference).toArray(),
                    atol: 1e-4, rtol: 1e-4, "folded ResNet-18")
    }
}

// MARK: - LeNet

@Suite struct LeNetPermutationTests {
    @Test func permutingChannelGroupsKeepsTheFunction() {
        let net = LeNet(width: 4)
        checkGroupCoverage(net, "lenet")
        checkPermutationInvariance(net, randomParameters(net, seed: 27), randomTensor([2, 1, 28, 28], seed: 28),
                                   modes: [.inference], seed: 29, "lenet")
    }
}
