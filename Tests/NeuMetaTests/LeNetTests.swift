import Testing
@testable import NeuMeta

@Suite struct LeNetTests {
    /// The full-size network, computed without any cropping by the naive kernels.
    func referenceLogits(_ net: LeNet, _ p: ParameterSet, _ x: Tensor) -> [Float] {
        let n = x.shape[0], w = net.width
        func convReLUPool(_ input: Tensor, _ c: Int, _ size: Int, _ k: Int, _ o: Int, _ wi: Int) -> Tensor {
            let g = ConvGeometry(channels: c, height: size, width: size, kernel: k, padding: k / 2, mode: .replicate)
            let y = Tensor(zeros: [n, o, size, size])
            Conv2d(g, outChannels: o).naiveForward(x: input, weight: p.value(wi), bias: p.value(wi + 1), y: y)
            ReLU.forward(x: y, y: y)
            let pg = ConvGeometry(channels: o, height: size, width: size, kernel: 2, stride: 2)
            let pooled = Tensor(zeros: [n, o, size / 2, size / 2])
            AvgPool2d.forward(x: y, y: pooled, pg)
            return pooled
        }
        let (channels, side) = (x.shape[1], x.shape[2])
        let h1 = convReLUPool(x, channels, side, 3, w, 0), h2 = convReLUPool(h1, w, side / 2, 5, 2 * w, 2)
        let h3 = convReLUPool(h2, 2 * w, side / 4, 5, 4 * w, 4)
        let plane = (side / 8) * (side / 8)
        let feature = Tensor(zeros: [n, 4 * w])
        for i in 0..<n { for c in 0..<(4 * w) { feature[i * 4 * w + c] = h3[(i * 4 * w + c) * plane] } }
        let logits = Tensor(zeros: [n, 10])
        Linear.forward(x: feature, weight: p.value(6), bias: p.value(7), y: logits)
        return logits.toArray()
    }

    @Test func croppedForwardEqualsFullNetwork() {
        let net = LeNet(width: 3)
        let p = net.makeParameters()
        var rng = SeededRandom(1)
        p.initializeDefault(rng: &rng)
        let x = randomTensor([2, 1, 28, 28], seed: 2)
        let logits = net.forward(p, input: x, mode: .training).toArray()
        expectClose(logits, referenceLogits(net, p, x), atol: 1e-5, rtol: 1e-4, "LeNet logits vs full-size reference")
    }

    /// RGB inputs of other sizes (an image folder's): the cropped computation is still the full
    /// network's, whatever rows the poolings drop.
    @Test(arguments: [8, 16, 30, 64])
    func rgbInputsOfAnySizeEqualTheFullNetwork(side: Int) throws {
        let net = try #require(try NetworkFamily.make("lenet", widths: [3], imageSize: side) as? LeNet)
        #expect(net.inputShape == [3, side, side] && net.parameterSpecs[0].shape == [3, 3, 3, 3])
        let p = net.makeParameters()
        var rng = SeededRandom(5)
        p.initializeDefault(rng: &rng)
        let x = randomTensor([2, 3, side, side], seed: 6)
        let logits = net.forward(p, input: x, mode: .training).toArray()
        expectClose(logits, referenceLogits(net, p, x), atol: 1e-5, rtol: 1e-4, "LeNet \(side)×\(side) RGB logits vs full-size reference")
    }

    @Test func tooSmallImagesAreRefused() {
        #expect(throws: (any Error).self) { try NetworkFamily.make("lenet", widths: [3], imageSize: 7) }
    }

    @Test func specsAndGroups() {
        let net = LeNet(width: 32)
        #expect(net.parameterSpecs.map(\.name) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                                   "conv3.weight", "conv3.bias", "fc.weight", "fc.bias"])
        #expect(net.parameterSpecs[4].shape == [128, 64, 5, 5])
        #expect(net.makeParameters().count == 32 * 9 + 32 + 64 * 32 * 25 + 64 + 128 * 64 * 25 + 128 + 10 * 128 + 10)
        #expect(net.channelGroups.map(\.size) == [32, 64, 128])
        #expect(net.channelGroups[2].members.last == .init("fc.weight", axis: 1))
    }

    /// Whole-network gradient of the cross-entropy against central differences (h = 1e-3,
    /// tolerance atol 5e-3 + 5% relative: Float forward noise ~1e-7·|L|/2h ≈ 1e-4 plus the
    /// chance of a perturbation crossing a ReLU kink, which this seed avoids).
    @Test func backwardMatchesFiniteDifferences() {
        let net = LeNet(width: 2)
        let p = net.makeParameters()
        var rng = SeededRandom(3)
        p.initializeDefault(rng: &rng)
        let x = randomTensor([2, 1, 28, 28], seed: 4)
        let labels: [Int32] = [3, 7]
        let loss: () -> Double = {
            labels.withUnsafeBufferPointer {
                SoftmaxCrossEntropy.forwardBackward(logits: net.forward(p, input: x, mode: .training), labels: $0.baseAddress!, dLogits: nil).loss
            }
        }
        p.zeroGradients()
        let logits = net.forward(p, input: x, mode: .training)
        let dLogits = Tensor(zeros: logits.shape)
        labels.withUnsafeBufferPointer { _ = SoftmaxCrossEntropy.forwardBackward(logits: logits, labels: $0.baseAddress!, dLogits: dLogits) }
        net.backward(p, input: x, dLogits: dLogits)
        for i in 0..<p.specs.count {
            expectClose(p.gradient(i).toArray(), finiteDifference(p.value(i), h: 1e-3, loss), atol: 5e-3, rtol: 5e-2, p.specs[i].name)
        }
    }
}
