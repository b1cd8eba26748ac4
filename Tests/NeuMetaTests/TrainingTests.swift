import Foundation
import Testing
@testable import NeuMeta

@Suite struct OptimizerTests {
    /// AdamW against the textbook formula, computed independently in Double for two steps.
    @Test func adamWMatchesReference() {
        let values = FloatStorage(count: 3), grads = FloatStorage(count: 3)
        let start: [Float] = [0.5, -1, 2], g1: [Float] = [0.1, -0.2, 0.3], g2: [Float] = [-0.05, 0.4, 0.0]
        values.base.update(from: start, count: 3)
        var adam = AdamW(parameterCount: 3, learningRate: 0.01, weightDecay: 0.1)
        var m = [Double](repeating: 0, count: 3), v = m, theta = start.map(Double.init)
        for (t, g) in [g1, g2].enumerated() {
            grads.base.update(from: g, count: 3)
            adam.update(values: values, gradients: grads)
            for i in 0..<3 {
                m[i] = 0.9 * m[i] + 0.1 * Double(g[i]); v[i] = 0.999 * v[i] + 0.001 * Double(g[i] * g[i])
                let mh = m[i] / (1 - pow(0.9, Double(t + 1))), vh = v[i] / (1 - pow(0.999, Double(t + 1)))
                theta[i] -= 0.01 * (mh / (vh.squareRoot() + 1e-8) + 0.1 * theta[i])
            }
        }
        expectClose(Array(values.buffer), theta.map(Float.init), atol: 1e-6, rtol: 1e-5, "AdamW")
    }

    /// The vector kernel (`apply`, SIMD8, split over threads) gives the bits of its one-element
    /// reference on awkward lengths (trainable ranges of 37, 957 and 69,001 with gaps, a step
    /// range cutting two of them), with 1, 2 and 3 gradient sources, clipping active (clip
    /// 0.01 below |scale·g|'s range) and the EMA fused.
    @Test(arguments: [1, 2, 3]) func adamWVectorKernelMatchesItsReference(sourceCount: Int) {
        let n = 70_010, trainable = [0..<37, 40..<997, 1003..<70_004], range = 20..<50_001
        var rng = SeededRandom(77)
        let sources = (0..<sourceCount).map { _ in (0..<n).map { _ in rng.normal() * 0.05 } }
        let start = (0..<n).map { _ in rng.normal() }
        func run(reference: Bool) -> [[Float]] {
            var adam = AdamW(parameterCount: n, trainable: trainable, learningRate: 0.01, weightDecay: 0.1)
            let values = FloatStorage(count: n), gradients = FloatStorage(count: n)
            values.base.update(from: start, count: n)
            let ema = EMA(of: values, decay: 0.99)
            for _ in 0..<2 {
                let k = adam.beginStep()
                sources.withUnsafeBufferPointers { s in
                    if reference {
                        adam.referenceApply(k, to: range, values: values, gradients: gradients, ema: ema, sources: s, scale: 0.5, clip: 0.01)
                    } else {
                        adam.apply(k, to: range, values: values, gradients: gradients, ema: ema, sources: s, scale: 0.5, clip: 0.01)
                    }
                }
            }
            return [values, gradients, adam.firstMoment, adam.secondMoment, ema.average].map { Array($0.buffer) }
        }
        let fast = run(reference: false), slow = run(reference: true)
        #expect(fast.map { $0.map(\.bitPattern) } == slow.map { $0.map(\.bitPattern) })
        #expect(fast[0][25] != start[25] && fast[0][10] == start[10] && fast[0][38] == start[38] && fast[0][60_000] == start[60_000])
        #expect(fast[1].contains(0.01) && fast[1].contains(-0.01))  // clipping happened
    }

    @Test func adamSkipsBuffers() {
        let net = CIFARResNet(depth: 8, stageWidths: [2, 2, 2])
        let p = net.makeParameters()
        var rng = SeededRandom(1)
        p.initializeDefault(rng: &rng)
        for i in 0..<p.count { p.gradients.base[i] = 1 }
        var adam = AdamW(parameterCount: p.count, trainable: AdamW.trainableRanges(of: p), weightDecay: 0.1)
        let before = Array(p.values.buffer)
        adam.update(values: p.values, gradients: p.gradients)
        for (i, s) in p.specs.enumerated() {
            let changed = p.value(i).toArray() != Array(before[p.offsets[i]..<(p.offsets[i] + s.count)])
            #expect(changed == s.role.trainable, "\(s.name) changed: \(changed)")
        }
    }

    @Test func emaFollowsDefinition() {
        let v = FloatStorage(count: 2)
        v.base.update(from: [1, 2], count: 2)
        let ema = EMA(of: v, decay: 0.9)
        v.base.update(from: [3, 0], count: 2)
        ema.update(with: v)
        expectClose(Array(ema.average.buffer), [0.9 * 1 + 0.1 * 3, 0.9 * 2], atol: 1e-7, rtol: 0, "EMA")
    }
}

@Suite struct RoundPlanTests {
    func plan() -> RoundPlan {
        var p = RoundPlan()
        p.datasetCount = 1000; p.batchSize = 100; p.configurationsPerRound = 3; p.rounds = 20; p.seed = 4
        return p
    }

    @Test func configurationsArePureFunctionsOfSeedRoundAndIndex() {
        let p = plan()
        #expect(p.configuration(round: 5, index: 2) == p.configuration(round: 5, index: 2))
        #expect(p.configurations(round: 5) == (0..<3).map { p.configuration(round: 5, index: $0) })
        var other = p; other.seed = 5
        #expect(other.configuration(round: 5, index: 2) != p.configuration(round: 5, index: 2))
    }

    @Test func widthsBatchesAndReconstructionWeight() {
        var p = plan()
        let all = (0..<20).flatMap { p.configurations(round: $0) }
        #expect(all.allSatisfy { (8...32).contains($0.width) && $0.batch.count == 100 })
        #expect(Set(all.map(\.width)).count > 10)  // 60 draws over 25 widths
        // One epoch (10 batches) covers every example exactly once.
        let firstEpoch = all.prefix(10).flatMap(\.batch)
        #expect(Set(firstEpoch).count == 1000)
        #expect(p.reconstructionWeight(round: 0) == 1 && p.reconstructionWeight(round: 10) == 0.5 && p.reconstructionWeight(round: 20) == 0)
        #expect(p.epochs == 20.0 * 3 / 10 && p.rounds(forEpochs: 1) == 3)
        // A shared batch: every configuration of a round reads the same one; epochs count rounds.
        p.sharedBatch = true
        #expect((0..<20).allSatisfy { r in Set((0..<3).map { p.configuration(round: r, index: $0).batch }).count == 1 })
        #expect(Set((0..<10).flatMap { p.configuration(round: $0, index: 2).batch }).count == 1000)
        #expect(p.epochs == 2 && p.rounds(forEpochs: 1) == 10)
        #expect(Set((0..<20).map { p.configuration(round: $0, index: 1).width }).count > 5)
    }

    @Test func cosineScheduleEndsAtTheFloor() {
        var o = OptimizerSettings()
        o.cosineSchedule = true
        #expect(o.learningRate(round: 0, rounds: 11) == 1e-3)
        #expect(abs(o.learningRate(round: 10, rounds: 11) - 5e-5) < 1e-9)
        #expect(abs(o.learningRate(round: 5, rounds: 11) - (5e-5 + 0.5 * (1e-3 - 5e-5))) < 1e-9)
    }
}

@Suite struct TrainingRunTests {
    /// The INR trainer lowers the loss of a fixed configuration on a tiny problem.
    @Test func inrTrainingReducesLoss() throws {
        let net = LeNet(width: 2)
        let data = syntheticImages(count: 64, seed: 2)
        let inr = HyperNetwork(config: INRConfig(hidden: 16, layers: 2, frequencies: 2, outputSize: 25, norm: 4), targetSpecs: net.trainableSpecs, seed: 1)
        let objective = ConfigurationGradient(inr: inr, family: "lenet", dataset: data, mean: [0.5], std: [0.3], pretrained: nil, pretrainedWidth: nil)
        var plan = RoundPlan()
        plan.minWidth = 2; plan.maxWidth = 4; plan.pretrainedWidth = 4; plan.batchSize = 64; plan.datasetCount = 64; plan.rounds = 30
        var settings = OptimizerSettings()
        settings.learningRate = 3e-3
        let (trainer, source) = makeTrainer(objective, plan: plan, settings: settings)
        let probe = Configuration(width: 3, batch: Array(0..<64), noiseSeed: 1, noise: 0, lossWeights: LossWeights())
        let before = try objective.compute(probe).crossEntropy
        try trainer.train(until: 30, source: source)
        let after = try objective.compute(probe).crossEntropy
        #expect(trainer.round == 30 && after < before - 0.1, "cross-entropy \(before) → \(after)")
    }

    /// Base training on real Fashion-MNIST data learns: 3000 images, one epoch, LeNet width 8.
    @Test func baseTrainingLearnsFashionMNIST() throws {
        let full = try FashionMNIST.load(split: .train)
        let n = 3000, size = full.imageSize
        let train = ImageDataset(name: "fmnist-3k", channels: 1, height: 28, width: 28, classCount: 10,
                                 pixels: Array(full.pixels[0..<(n * size)]), labels: Array(full.labels[0..<n]))
        let test = ImageDataset(name: "fmnist-1k", channels: 1, height: 28, width: 28, classCount: 10,
                                pixels: Array(full.pixels[(n * size)..<((n + 1000) * size)]), labels: Array(full.labels[n..<(n + 1000)]))
        var config = BaseTrainingConfig()
        config.epochs = 1; config.batchSize = 32
        let trainer = try BaseTrainer(network: LeNet(width: 8), train: train, test: test, config: config)
        let report = try trainer.run()!
        #expect(report.testAccuracy > 0.55, "test accuracy \(report.testAccuracy) after one epoch on 3000 images")
        // A family whose input does not match the data is refused with an error naming both.
        #expect(throws: BaseTrainer.ShapeMismatch.self) {
            try BaseTrainer(network: CIFARResNet(depth: 8, stageWidths: [2, 2, 2]), train: train, test: test, config: config)
        }
    }
}

@Suite struct ResamplingTests {
    /// Halving merges neighbouring channels: an output channel is the mean of the two it covers,
    /// an input channel the sum (fan-in); classes map to themselves; the same width is a copy.
    @Test func halvingAveragesOutputsAndSumsInputs() {
        let big = LeNet(width: 4), small = LeNet(width: 2)
        let p = big.makeParameters(), q = small.makeParameters()
        for i in 0..<p.count { p.values.base[i] = Float(i % 97) }
        PretrainedResampling.resample(p, into: q)
        let b = p.value("conv1.bias")
        #expect(q.value("conv1.bias").toArray() == [(b[0] + b[1]) / 2, (b[2] + b[3]) / 2])
        // conv2.weight [8, 4, 5, 5] → [4, 2, 5, 5]: out 2 = mean of 4, 5; in 1 = sum of 2, 3.
        let w = p.value("conv2.weight"), v = q.value("conv2.weight")
        func at(_ o: Int, _ i: Int) -> Float { w[((o * 4 + i) * 25) + 7] }
        let expected = ((at(4, 2) + at(4, 3)) + (at(5, 2) + at(5, 3))) / 2
        #expect(abs(v[((2 * 2 + 1) * 25) + 7] - expected) <= 1e-4 * abs(expected))
        // fc.weight [10, 16] → [10, 8]: classes map to themselves, inputs 2 and 3 summed.
        let fc = p.value("fc.weight")
        #expect(q.value("fc.weight")[3 * 8 + 1] == fc[3 * 16 + 2] + fc[3 * 16 + 3])
        let same = big.makeParameters()
        PretrainedResampling.resample(p, into: same)
        #expect(Array(same.values.buffer) == Array(p.values.buffer))
    }

    /// Any ratio, down and up, against the formula evaluated naively in Double: overlap lengths
    /// A[j, s] = max(0, min((j+1)·S/T, s+1) − max(j·S/T, s)) over every base channel s.
    /// Tolerance 1e-5 relative: the product sums ≤ 6 Float terms.
    @Test(arguments: [(4, 3), (4, 6), (3, 7), (5, 2)]) func anyRatioMatchesTheOverlapFormula(from: Int, to: Int) {
        let p = LeNet(width: from).makeParameters(), q = LeNet(width: to).makeParameters()
        var rng = SeededRandom(3)
        p.initializeDefault(rng: &rng)
        PretrainedResampling.resample(p, into: q)
        func overlap(_ j: Int, _ s: Int, _ T: Int, _ S: Int) -> Double {
            let step = Double(S) / Double(T)
            return max(0, min(Double(j + 1) * step, Double(s + 1)) - max(Double(j) * step, Double(s)))
        }
        for t in q.specs.indices {
            let d = q.specs[t], s = p.specs[t], src = p.value(t), dst = q.value(t), area = d.kernelArea
            let (O, I, sO, sI) = (d.outSize, d.inSize, s.outSize, s.inSize)
            for o in 0..<O {
                for i in 0..<I {
                    for k in 0..<area {
                        var sum = 0.0
                        for so in 0..<sO {
                            let wo = O == sO ? (so == o ? 1 : 0) : overlap(o, so, O, sO) / (Double(sO) / Double(O))
                            for si in 0..<sI {
                                let wi = d.shape.count == 1 ? 1 : (I == sI ? (si == i ? 1 : 0) : overlap(i, si, I, sI))
                                sum += wo * wi * Double(src[(so * sI + si) * area + k])
                            }
                        }
                        let got = Double(dst[(o * I + i) * area + k])
                        #expect(abs(got - sum) <= 1e-5 * max(1, abs(sum)), "\(d.name)[\(o), \(i), \(k)]: \(got) vs \(sum)")
                    }
                }
            }
        }
    }
}

@Suite struct CheckpointFormatTests {
    @Test func networkCheckpointRoundTrip() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-net-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let net = LeNet(width: 3)
        let p = net.makeParameters()
        var rng = SeededRandom(3)
        p.initializeDefault(rng: &rng)
        try NetworkCheckpoint(network: net, parameters: p, mean: [0.28], std: [0.35], metadata: ["note": "x"]).save(to: dir + "/n.safetensors")
        let back = try NetworkCheckpoint.load(path: dir + "/n.safetensors")
        #expect(back.network.family == "lenet" && back.network.widths == [3] && back.mean == [0.28] && back.std == [0.35])
        #expect(Array(back.parameters.values.buffer) == Array(p.values.buffer))
        #expect(back.metadata["note"] == "x")
        // A flipped data byte is refused by the digest check, naming the file.
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: dir + "/n.safetensors")))
        bytes[bytes.count - 5] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/bad.safetensors"))
        #expect(throws: (any Error).self) { try NetworkCheckpoint.load(path: dir + "/bad.safetensors") }
        do { _ = try NetworkCheckpoint.load(path: dir + "/bad.safetensors") } catch { #expect("\(error)".contains("bad.safetensors")) }
    }

    @Test func inrCheckpointRoundTripAndSampling() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-inr-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let net = LeNet(width: 4)
        let base = net.makeParameters()
        var rng = SeededRandom(5)
        base.initializeDefault(rng: &rng)
        let data = syntheticImages(count: 16, seed: 3)
        let inr = HyperNetwork(config: INRConfig(hidden: 8, layers: 2, frequencies: 2, outputSize: 25, norm: 4), targetSpecs: net.trainableSpecs, seed: 2)
        let objective = ConfigurationGradient(inr: inr, family: "lenet", dataset: data, mean: [0.5], std: [0.3], pretrained: base, pretrainedWidth: 4)
        var plan = RoundPlan()
        plan.minWidth = 2; plan.maxWidth = 4; plan.pretrainedWidth = 4; plan.batchSize = 8; plan.datasetCount = 16; plan.rounds = 3
        let (trainer, source) = makeTrainer(objective, plan: plan)
        try trainer.train(until: 2, source: source)
        let saved = trainer.checkpoint()
        try saved.save(to: dir + "/inr.safetensors")
        let back = try INRCheckpoint.load(path: dir + "/inr.safetensors")
        #expect(back.round == 2 && back.adamStep == 2 && back.plan == plan && back.config == inr.config && back.recipe == "test")
        #expect(Array(back.ema.buffer) == Array(trainer.ema.average.buffer))
        #expect(Array(back.raw.buffer) == Array(inr.parameters.values.buffer))
        #expect(Array(back.adamV.buffer) == Array(trainer.optimizer.secondMoment.buffer))
        #expect(Array(back.base.values.buffer) == Array(base.values.buffer))
        // Sampling from the loaded checkpoint equals generating from the EMA parameters directly.
        let direct = HyperNetwork(config: inr.config, targetSpecs: net.trainableSpecs, seed: 0)
        direct.parameters.values.base.update(from: trainer.ema.average.base, count: direct.parameters.count)
        let (_, a) = try back.makeGenerator().sample(width: 3, samples: 1, noise: 1, seed: 0)
        let (_, b) = try NetworkGenerator(inr: direct, family: "lenet", classCount: 10).generate(width: 3, noise: 0, noiseSeed: 0)
        #expect(Array(a.values.buffer) == Array(b.values.buffer))
        // K-sample averaging differs from K = 1 and is deterministic for a seed.
        let (_, k4) = try back.makeGenerator().sample(width: 3, samples: 4, noise: 1, seed: 0)
        let k4Values = Array(k4.values.buffer)
        let (_, again) = try back.makeGenerator().sample(width: 3, samples: 4, noise: 1, seed: 0)
        #expect(k4Values != Array(a.values.buffer) && k4Values == Array(again.values.buffer))
    }
}

@Suite struct RuntimeTests {
    @Test func kernelChoice() {
        let avx512: Set = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"]
        #expect(BLASRuntime.recommendedCoreType(loadedCore: "Prescott", cpuFlags: avx512) == "SkylakeX")
        #expect(BLASRuntime.recommendedCoreType(loadedCore: "Prescott", cpuFlags: avx512.union(["avx512_bf16"])) == "Cooperlake")
        #expect(BLASRuntime.recommendedCoreType(loadedCore: "SkylakeX", cpuFlags: avx512) == nil)
        #expect(BLASRuntime.recommendedCoreType(loadedCore: "Zen", cpuFlags: ["avx2", "fma"]) == nil)
        #expect(BLASRuntime.recommendedCoreType(loadedCore: "Sandybridge", cpuFlags: ["avx2", "fma"]) == "Haswell")
        #expect(BLASRuntime.recommendedCoreType(loadedCore: "Prescott", cpuFlags: ["sse2"]) == nil)
    }

    @Test func familiesByName() throws {
        #expect(try NetworkFamily.make("resnet20", widths: [4, 8, 16]).parameterSpecs.count > 0)
        #expect(try NetworkFamily.make("resnet18", widths: [2, 2, 2, 2]).family == "resnet18")
        #expect(try NetworkFamily.make("resnet20-folded", widths: [4, 8, 16]).family == "resnet20-folded")
        #expect(throws: (any Error).self) { try NetworkFamily.make("vgg", widths: [1]) }
        #expect(throws: (any Error).self) { try NetworkFamily.make("lenet", widths: [1, 2]) }
        #expect(throws: (any Error).self) { try NetworkFamily.make("resnet21", widths: [1, 2, 3]) }
    }
}
