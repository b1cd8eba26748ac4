import Foundation
import Testing
@testable import NeuMeta

/// Random RGB images of side `size` (uniform bytes), labels uniform in 0..<10.
func syntheticRGB(count: Int, size: Int, seed: UInt64) -> ImageDataset {
    var rng = SeededRandom(seed)
    let pixels = (0..<(count * 3 * size * size)).map { _ in UInt8(rng.index(below: 256)) }
    let labels = (0..<count).map { _ in Int32(rng.index(below: 10)) }
    return ImageDataset(name: "synthetic-rgb", channels: 3, height: size, width: size, classCount: 10, pixels: pixels, labels: labels)
}

@Suite struct MorphPlanTests {
    @Test func lenetScalesItsOneWidthAndGeneratesEverything() throws {
        let plan = try MorphPlan(base: LeNet(width: 32), scope: .all)
        #expect(plan.baseWidth == 32 && plan.widths(for: 12) == [12] && plan.imageSize == nil)
        let net = try plan.network(width: 12, classCount: 10)
        #expect(plan.generated(net.parameterSpecs) == Array(0..<8))
        #expect(try plan.largestKernelArea(classCount: 10) == 25)
        #expect(throws: MorphPlanError.noResidualBlock(family: "lenet")) { try MorphPlan(base: LeNet(width: 32), scope: .lastBlock) }
    }

    /// `all`: every width keeps the base's ratio to the first; `last-block`: only the last hidden
    /// width follows w, and the last block's trainable tensors are the generated ones.
    @Test func resnet20WidthsAndGeneratedTensors() throws {
        let base = CIFARResNet(depth: 20)
        let all = try MorphPlan(base: base, scope: .all)
        #expect(all.baseWidth == 16 && all.imageSize == 32)
        #expect(all.widths(for: 8) == [8, 16, 32, 8, 8, 8, 16, 16, 16, 32, 32, 32])
        #expect(all.widths(for: 12) == [12, 24, 48, 12, 12, 12, 24, 24, 24, 48, 48, 48])
        let allNet = try all.network(width: 8, classCount: 10)
        #expect(all.generated(allNet.parameterSpecs).count == allNet.trainableSpecs.count)

        let last = try MorphPlan(base: base, scope: .lastBlock)
        #expect(last.baseWidth == 64 && last.widths(for: 24) == Array(base.widths.dropLast()) + [24])
        let net = try last.network(width: 24, classCount: 10)
        #expect(last.generated(net.parameterSpecs).map { net.parameterSpecs[$0].name } == [
            "layer3.2.conv1.weight", "layer3.2.bn1.weight", "layer3.2.bn1.bias", "layer3.2.conv2.weight", "layer3.2.bn2.weight",
            "layer3.2.bn2.bias",
        ])
        #expect(net.parameterSpecs[net.parameterSpecs.firstIndex { $0.name == "layer3.2.conv1.weight" }!].shape == [24, 64, 3, 3])

        let (foldedNet, _) = base.foldedBatchNorm(base.makeParameters())
        let folded = try MorphPlan(base: foldedNet, scope: .lastBlock)
        let specs = try folded.generatedSpecs(classCount: 10)
        #expect(folded.family == "resnet20-folded")
        #expect(specs.map(\.name) == ["layer3.2.conv1.weight", "layer3.2.conv1.bias", "layer3.2.conv2.weight", "layer3.2.conv2.bias"])
        #expect(try folded.largestKernelArea(classCount: 10) == 9)
    }

    /// ResNet-18's 7×7 stem makes heads of 49 outputs: the stem takes all of them, a 3×3 conv
    /// the centre 9 (20…28), a 1×1 projection the centre one (24).
    @Test func resnet18HeadsCoverTheSevenBySevenStem() throws {
        let plan = try MorphPlan(base: ResNet18(stageWidths: [4, 4, 8, 8], classCount: 10, inputSize: 32), scope: .all)
        #expect(try plan.largestKernelArea(classCount: 10) == 49)
        let specs = try plan.generatedSpecs(classCount: 10)
        let layout = CoordinateLayout(specs: specs, outputSize: 49)
        func entry(_ name: String) -> CoordinateLayout.Entry { layout.entries.first { $0.spec.name == name }! }
        #expect(entry("conv1.weight").outputStart == 0 && entry("conv1.weight").spec.kernelArea == 49)
        #expect(entry("layer1.0.conv1.weight").outputStart == 20)
        #expect(entry("layer2.0.downsample.0.weight").outputStart == 24)
        #expect(entry("fc.bias").outputStart == 0)
        #expect(plan.widths(for: 2) == [2, 2, 4, 4, 2, 2, 2, 2, 4, 4, 4, 4])
    }
}

@Suite struct MorphGenerationTests {
    static let tiny = INRConfig(hidden: 8, layers: 3, frequencies: 2, outputSize: 9, norm: 4)

    /// A CIFAR ResNet-8 (one block per stage) with stage widths 2/3/4 and last hidden width 4
    /// on 8×8 images, random parameters (γ, β and the running statistics too).
    static func base(batchNorm: Bool) -> (CIFARResNet, ParameterSet) {
        let net = CIFARResNet(depth: 8, stageWidths: [2, 3, 4], blockHiddenWidths: [[3], [2], [4]], inputShape: [3, 8, 8],
                              batchNorm: batchNorm)
        let p = net.makeParameters()
        var rng = SeededRandom(21)
        p.initializeDefault(rng: &rng)
        for (i, s) in p.specs.enumerated() where [.normWeight, .normBias, .runningMean, .runningVar].contains(s.role) {
            let v = p.value(i)
            for j in 0..<v.count { v[j] = s.role == .runningVar || s.role == .normWeight ? rng.uniform(0.5, 1.5) : rng.uniform(-0.3, 0.3) }
        }
        return (net, p)
    }

    /// At any width the generator writes the INR's values into the last block's tensors — the
    /// same bits as generating those tensors alone into a set of just them — and the base's
    /// values into every other tensor; the running statistics of the morphed width start at
    /// 0 and 1.
    @Test(arguments: [true, false]) func lastBlockIsGeneratedAndTheRestCopied(batchNorm: Bool) throws {
        let (net, base) = Self.base(batchNorm: batchNorm)
        let morph = try MorphPlan(base: net, scope: .lastBlock)
        let inr = HyperNetwork(config: Self.tiny, targetSpecs: try morph.generatedSpecs(classCount: 10), seed: 4)
        let generator = NetworkGenerator(inr: inr, morph: morph, classCount: 10, base: base)
        let (network, weights) = try generator.generate(width: 3, noise: 0.5, noiseSeed: 9)
        #expect(network.widths == [2, 3, 4, 3, 2, 3])
        let generated = morph.generated(weights.specs)
        let alone = ParameterSet(specs: generated.map { weights.specs[$0] })
        var rng = SeededRandom(9)
        inr.generate(CoordinateLayout(specs: alone.specs, outputSize: 9), noise: 0.5, rng: &rng, activations: INRActivations(config: Self.tiny),
                     into: alone)
        for (k, i) in generated.enumerated() { #expect(weights.value(i).toArray() == alone.value(k).toArray(), "\(weights.specs[i].name)") }
        for (i, s) in weights.specs.enumerated() where !generated.contains(i) {
            if let j = base.index(of: s.name), base.specs[j].shape == s.shape {
                #expect(weights.value(i).toArray() == base.value(j).toArray(), "\(s.name) copied")
            } else {
                #expect(s.name.hasPrefix("layer3.0.bn1.running") && weights.value(i).toArray().allSatisfy { $0 == (s.role == .runningVar ? 1 : 0) })
            }
        }
    }

    /// The whole chain for a ResNet's last block (INR → generated block inside the copied base
    /// network → cross-entropy + regulariser + reconstruction) against central differences, with
    /// batch norm on batch statistics and folded; at the base width, so the reconstruction term
    /// takes part. Relative L2 error of the gradient vector under 3%, as for LeNet.
    @Test(arguments: [true, false]) func lastBlockConfigurationGradientMatchesFiniteDifferences(batchNorm: Bool) throws {
        let (net, base) = Self.base(batchNorm: batchNorm)
        let morph = try MorphPlan(base: net, scope: .lastBlock)
        let inr = HyperNetwork(config: Self.tiny, targetSpecs: try morph.generatedSpecs(classCount: 10), seed: 5)
        let data = syntheticRGB(count: 6, size: 8, seed: 6)
        let objective = ConfigurationGradient(inr: inr, morph: morph, dataset: data, mean: [0.5, 0.5, 0.5], std: [0.3, 0.3, 0.3],
                                              pretrained: base)
        let config = Configuration(width: 4, batch: [0, 2, 3, 5], noiseSeed: 11, noise: 1,
                                   lossWeights: LossWeights(normRegularizer: 0.1, reconstruction: 1))
        let terms = try objective.compute(config)
        #expect(terms.reconstruction > 0 && terms.normRegularizer > 0 && terms.samples == 4)
        try expectConfigurationGradientMatchesFiniteDifferences(objective, config, every: 3, "last-block configuration gradient")
    }

    /// Recalibration sets each layer's running mean to the average of its batch means and its
    /// running variance to the average of its unbiased batch variances. Reference: the (μ, 1/σ̃)
    /// every unit saves in a training-mode forward of the same batches, σ² = 1/σ̃² − ε made
    /// unbiased by M/(M − 1); rtol 1e-3 (the readback divides float running values by 0.1).
    @Test func recalibrationAveragesTheBatchStatistics() throws {
        let (net, p) = Self.base(batchNorm: true)
        let data = syntheticRGB(count: 24, size: 8, seed: 3)
        let mean: [Float] = [0.5, 0.4, 0.3], std: [Float] = [0.3, 0.3, 0.3]
        let used = try BatchNormRecalibration.recalibrate(network: net, parameters: p, data: data, mean: mean, std: std, batches: 3,
                                                          batchSize: 8, seed: 7)
        #expect(used == 3)
        let units = net.trunk.units
        var expectedMean = units.map { [Double](repeating: 0, count: $0.outChannels) }, expectedVar = expectedMean
        let order = EpochOrder.indices(count: 24, seed: 7, epoch: 0)
        let x = Tensor(zeros: [8, 3, 8, 8]), labels = UnsafeMutablePointer<Int32>.allocate(capacity: 8)
        defer { labels.deallocate() }
        let scratch = net.makeParameters()
        scratch.values.base.update(from: p.values.base, count: p.count)
        for b in 0..<3 {
            try data.fillBatch(indices: Array(order[(8 * b)..<(8 * b + 8)]), augmentation: 0, mean: mean, std: std, images: x.data, labels: labels)
            _ = net.forward(scratch, input: x, mode: .training)
            for (u, unit) in units.enumerated() {
                let C = unit.outChannels, size = net.trunk.shapes[unit.pre].reduce(1, *) / C, M = Double(8 * size)
                for c in 0..<C {
                    let invStd = Double(unit.saved[C + c])
                    expectedMean[u][c] += Double(unit.saved[c]) / 3
                    expectedVar[u][c] += (1 / (invStd * invStd) - 1e-5) * M / (M - 1) / 3
                }
            }
        }
        for (u, unit) in units.enumerated() {
            expectClose(p.value(unit.runningMean).toArray(), expectedMean[u].map(Float.init), atol: 1e-5, rtol: 1e-3, "\(unit.normName) mean")
            expectClose(p.value(unit.runningVar).toArray(), expectedVar[u].map(Float.init), atol: 1e-5, rtol: 1e-3, "\(unit.normName) variance")
        }
        // A network without batch norm is left alone.
        let (folded, q) = net.foldedBatchNorm(p)
        let before = Array(q.values.buffer)
        #expect(try BatchNormRecalibration.recalibrate(network: folded, parameters: q, data: data, mean: mean, std: std, batches: 3,
                                                       batchSize: 8, seed: 7) == 0)
        #expect(Array(q.values.buffer) == before)
    }

    /// An INR checkpoint keeps its morph plan: the loaded generator makes the trainer's network
    /// bit for bit, copied tensors included.
    @Test func checkpointRoundTripKeepsTheMorphPlan() throws {
        let (net, base) = Self.base(batchNorm: false)
        let morph = try MorphPlan(base: net, scope: .lastBlock)
        let inr = HyperNetwork(config: Self.tiny, targetSpecs: try morph.generatedSpecs(classCount: 10), seed: 5)
        var plan = RoundPlan()
        plan.minWidth = 2; plan.maxWidth = 4; plan.pretrainedWidth = 4; plan.datasetCount = 6; plan.batchSize = 2
        let trainer = INRTrainer(inr: inr, plan: plan, optimizer: OptimizerSettings(),
                                 target: TrainingTarget(base: base, family: net.family, morph: morph, classCount: 10, mean: [0.5, 0.5, 0.5],
                                                        std: [0.3, 0.3, 0.3], recipe: "default"))
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("morph-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try trainer.checkpoint().save(to: path)
        let loaded = try INRCheckpoint.load(path: path)
        #expect(loaded.morph == morph)
        let (_, a) = try loaded.makeGenerator().generate(width: 3, noise: 0, noiseSeed: 1)
        let (_, b) = try NetworkGenerator(inr: inr, morph: morph, classCount: 10, base: base).generate(width: 3, noise: 0, noiseSeed: 1)
        #expect(Array(a.values.buffer) == Array(b.values.buffer))
    }
}

@Suite struct MorphJobSpecTests {
    /// A worker built from a ResNet last-block job spec (through its JSON) computes the bits of
    /// the single-process gradient; a LeNet spec's JSON has no morph plan, as before there was one.
    @Test func workerComputesTheLocalLastBlockGradient() throws {
        let (net, base) = MorphGenerationTests.base(batchNorm: true)
        let morph = try MorphPlan(base: net, scope: .lastBlock)
        let config = MorphGenerationTests.tiny
        let data = syntheticRGB(count: 16, size: 8, seed: 2)
        var plan = RoundPlan()
        plan.minWidth = 2; plan.maxWidth = 4; plan.pretrainedWidth = 4; plan.batchSize = 4; plan.datasetCount = 16; plan.rounds = 3
        plan.configurationsPerRound = 2
        let inr = HyperNetwork(config: config, targetSpecs: try morph.generatedSpecs(classCount: 10), seed: 3)
        let local = ConfigurationGradient(inr: inr, morph: morph, dataset: data, mean: [0.5, 0.5, 0.5], std: [0.3, 0.3, 0.3], pretrained: base)
        let fingerprint = DataFingerprint(dataset: "synthetic-rgb", files: [.init(name: "images", size: 1, digest: "ab")])
        var spec = JobSpec(family: net.family, classCount: 10, pretrainedWidth: 4, mean: [0.5, 0.5, 0.5], std: [0.3, 0.3, 0.3], inr: config,
                           plan: plan, parameterCount: inr.parameters.count, baseParameterCount: base.count, data: fingerprint)
        #expect(!String(decoding: spec.json, as: UTF8.self).contains("morph"))
        spec.morph = morph
        let decoded = try JobSpec.decode(spec.json)
        #expect(decoded.morphPlan == morph)
        let worker = try WorkerJob(spec: decoded, dataset: data, localData: fingerprint, parameters: WireTensor(copying: inr.parameters.values),
                                   base: WireTensor(copying: base.values), round: 1)
        for index in 0..<2 {
            var fromWorker = [Float](repeating: .nan, count: inr.parameters.count)
            let lock = NSLock()
            _ = try worker.gradient(round: 1, block: index) { offset, values in  // blocks of one configuration
                lock.withLock { fromWorker.replaceSubrange(offset..<(offset + values.count), with: values.array) }
            }
            _ = try local.compute(plan.configuration(round: 1, index: index))
            #expect(fromWorker == Array(inr.parameters.gradients.buffer))
        }
        // A plan that disagrees with the spec's pretrained width is refused by name.
        spec.morph = MorphPlan(family: net.family, baseWidths: morph.baseWidths.dropLast() + [5], scope: .lastBlock, imageSize: 8)
        #expect(throws: JobSpecError.self) {
            try WorkerJob(spec: spec, dataset: data, localData: fingerprint, parameters: WireTensor(copying: inr.parameters.values),
                          base: WireTensor(copying: base.values), round: 1)
        }
    }
}

@Suite struct INRRecomputeTests {
    /// One generate + backward of `layout` (probe L = Σ⟨W, R⟩ on the generated tensors), with
    /// activations kept or recomputed, on `threads` threads: values, gradients, the heads
    /// reported and whether the big activation buffers were made.
    static func pass(_ specs: [ParameterSpec], recompute: Bool, threads: Int) -> (values: [Float], gradients: [Float], heads: [Int], kept: Bool) {
        let config = INRConfig(hidden: 24, layers: 3, frequencies: 2, outputSize: 49, norm: 8)
        let inr = HyperNetwork(config: config, targetSpecs: specs, seed: 5)
        inr.rowChunk = 16
        inr.recomputeRows = recompute ? 0 : Int.max
        let layout = CoordinateLayout(specs: specs, outputSize: 49)
        let act = INRActivations(config: config), weights = ParameterSet(specs: specs)
        let probeWeights = randomTensor([weights.count], seed: 8)
        weights.gradients.base.update(from: probeWeights.data, count: weights.count)
        let saved = Parallel.threads
        Parallel.threads = threads
        defer { Parallel.threads = saved }
        var rng = SeededRandom(3)
        inr.generate(layout, noise: 0.5, rng: &rng, activations: act, into: weights)
        inr.parameters.gradients.base.update(repeating: .nan, count: inr.parameters.count)
        var heads: [Int] = []
        let lock = NSLock()
        inr.backward(layout, activations: act, targetGradients: weights) { t in lock.withLock { heads.append(t) } }
        return (Array(weights.values.buffer), Array(inr.parameters.gradients.buffer), heads.sorted(), act.h0.count > 0)
    }

    /// A small ResNet-18 (7×7 stem, 3×3 and 1×1 convs, batch-norm affine, fc; 49 outputs a head)
    /// with 16-row chunks, so its larger tensors span several tasks of several chunks each.
    /// Recomputing gives the kept path's generated values bit for bit and its gradients up to the
    /// order of the sums (rtol 1e-4, atol 1e-6), keeps no per-row activations, reports every head
    /// once, and does not depend on the thread count (bit for bit on 1 and 3 threads).
    @Test func recomputingMatchesKeepingTheActivations() throws {
        let specs = ResNet18(stageWidths: [4, 6, 8, 10], classCount: 10, inputSize: 32).trainableSpecs
        let kept = Self.pass(specs, recompute: false, threads: 2)
        let recomputed = Self.pass(specs, recompute: true, threads: 3)
        let serial = Self.pass(specs, recompute: true, threads: 1)
        #expect(kept.kept && !recomputed.kept)
        #expect(recomputed.values == kept.values)
        expectClose(recomputed.gradients, kept.gradients, atol: 1e-6, rtol: 1e-4, "recomputed INR gradient")
        #expect(recomputed.heads == Array(0..<specs.count) && kept.heads == recomputed.heads)
        #expect(serial.gradients == recomputed.gradients && serial.values == recomputed.values)
        #expect(specs.contains { $0.outSize * $0.inSize > 4 * 16 })  // some tensor spans more chunks than tasks
    }
}

@Suite struct PartialBackwardTests {
    /// A ResNet's backward from a parameter on gives that parameter's and every later one's
    /// gradients bit for bit as the full backward, and leaves the earlier blocks and the stem
    /// untouched (their gradients stay 0); from 0 it is the full backward.
    @Test(arguments: [true, false]) func backwardStopsAfterTheFirstNeededBlock(batchNorm: Bool) {
        let (net, p) = MorphGenerationTests.base(batchNorm: batchNorm)
        let x = randomTensor([3, 3, 8, 8], seed: 4), dLogits = randomTensor([3, 10], seed: 5)
        let first = p.index(of: "layer3.0.conv1.weight")!
        func gradients(from start: Int?) -> [Float] {
            p.zeroGradients()
            _ = net.forward(p, input: x, mode: .training)
            if let start { net.backward(p, input: x, dLogits: dLogits, from: start) } else { net.backward(p, input: x, dLogits: dLogits) }
            return Array(p.gradients.buffer)
        }
        let full = gradients(from: nil), partial = gradients(from: first), fromZero = gradients(from: 0)
        let split = p.offsets[first]
        #expect(Array(partial[split...]) == Array(full[split...]))
        #expect(partial[..<split].allSatisfy { $0 == 0 } && full[..<split].contains { $0 != 0 })
        #expect(fromZero == full)
    }
}

@Suite struct GeneratorCacheTests {
    /// A residual family keeps only the 2 most recently used widths; a width generated again
    /// after eviction is the same network bit for bit (copied tensors included). LeNet keeps all.
    @Test func residualWidthsAreEvictedAndRebuiltIdentically() throws {
        let (net, base) = MorphGenerationTests.base(batchNorm: true)
        let morph = try MorphPlan(base: net, scope: .lastBlock)
        let inr = HyperNetwork(config: MorphGenerationTests.tiny, targetSpecs: try morph.generatedSpecs(classCount: 10), seed: 4)
        let generator = NetworkGenerator(inr: inr, morph: morph, classCount: 10, base: base)
        let first = Array(try generator.generate(width: 2, noise: 0.5, noiseSeed: 3).1.values.buffer)
        for w in [3, 4, 3] { _ = try generator.generate(width: w, noise: 0.5, noiseSeed: 1) }
        #expect(generator.cachedWidths == [4, 3])
        #expect(Array(try generator.generate(width: 2, noise: 0.5, noiseSeed: 3).1.values.buffer) == first)
        let lenet = NetworkGenerator(inr: HyperNetwork(config: INRTests.tiny, targetSpecs: LeNet(width: 4).trainableSpecs, seed: 1),
                                     family: "lenet", classCount: 10)
        for w in 1...4 { _ = try lenet.generate(width: w, noise: 0, noiseSeed: 0) }
        #expect(lenet.cachedWidths == [1, 2, 3, 4])
    }
}
