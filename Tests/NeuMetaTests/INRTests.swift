import Foundation
import Testing
@testable import NeuMeta

/// A small synthetic 28×28 data set (random pixels, labels 0..<10).
func syntheticImages(count: Int, seed: UInt64) -> ImageDataset {
    var rng = SeededRandom(seed)
    let pixels = (0..<(count * 784)).map { _ in UInt8(rng.index(below: 256)) }
    let labels = (0..<count).map { _ in Int32(rng.index(below: 10)) }
    return ImageDataset(name: "synthetic", channels: 1, height: 28, width: 28, classCount: 10, pixels: pixels, labels: labels)
}

@Suite struct INRTests {
    static let tiny = INRConfig(hidden: 8, layers: 3, frequencies: 2, outputSize: 25, norm: 4)

    @Test func coordinatesFollowTheSpecification() {
        let net = LeNet(width: 2)
        let layout = CoordinateLayout(specs: net.trainableSpecs, outputSize: 25)
        #expect(layout.layerCount == 8)
        #expect(layout.rowCount == 2 * 1 + 2 + 4 * 2 + 4 + 8 * 4 + 8 + 10 * 8 + 10)
        #expect(layout.entries[0].outputStart == 8)   // 3×3 kernel: centre 9 of 25
        #expect(layout.entries[2].outputStart == 0)   // 5×5 kernel: all 25
        #expect(layout.entries[6].outputStart == 0)   // linear weight: output 0
        var rng = SeededRandom(0)
        var raw = [Float](repeating: 0, count: layout.rowCount * 6)
        raw.withUnsafeMutableBufferPointer { layout.rawCoordinates(noise: 0, rng: &rng, into: $0.baseAddress!) }
        // Row of conv2.weight (tensor 2), out 3, in 1: [2, 3, 1, 8, 4, 2].
        let row = layout.entries[2].firstRow + 3 * 2 + 1
        #expect(Array(raw[(6 * row)..<(6 * row + 6)]) == [2, 3, 1, 8, 4, 2])
        // A bias row has in_index 0 and in_size 1.
        let bias = layout.entries[3].firstRow + 1
        #expect(Array(raw[(6 * bias)..<(6 * bias + 6)]) == [3, 1, 0, 8, 4, 1])
        // Noise stays within ±ε/2.
        var noisy = [Float](repeating: 0, count: raw.count)
        noisy.withUnsafeMutableBufferPointer { layout.rawCoordinates(noise: 1, rng: &rng, into: $0.baseAddress!) }
        #expect(zip(noisy, raw).allSatisfy { abs($0 - $1) <= 0.5 } && noisy != raw)
    }

    @Test func embeddingValues() {
        let e = CoordinateEmbedding(frequencies: 2, norm: 8)
        let raw: [Float] = [1, 2, 3, 4, 8, 6]
        var out = [Float](repeating: 0, count: e.width)
        raw.withUnsafeBufferPointer { r in out.withUnsafeMutableBufferPointer { e.embed(raw: r.baseAddress!, rows: 1, into: $0.baseAddress!) } }
        let v: [Float] = [0.25, 0.25, 0.5, 0.5, 1, 0.75]
        expectClose(Array(out[0..<6]), v, atol: 1e-6, rtol: 0, "normalised coordinate")
        expectClose(Array(out[6..<12]), v.map { Foundation.sin(Float.pi * $0) }, atol: 1e-5, rtol: 0, "sin k=0")
        expectClose(Array(out[24..<30]), v.map { Foundation.cos(2 * Float.pi * $0) }, atol: 1e-5, rtol: 0, "cos k=1")
    }

    /// The doubling recurrence against libm at every frequency of F = 16 and F = 32 (the ResNet
    /// config), on coordinates spread over [−0.5, 1.5]: the angle of a Float32 implementation,
    /// fl(Float(2ᵏπ)·v), evaluated in Float and its sine taken in Double; within 1e-6 (the
    /// recurrence's error bound is 2.4e-7 plus Float rounding of values ≤ 1); a wrong recurrence,
    /// or angles taken from the exact 2ᵏπv (≈ 0.006 rad off at k = 15), err by more.
    @Test func embeddingHighFrequenciesAreExact() {
        for F in [16, 32] {
            let e = CoordinateEmbedding(frequencies: F, norm: 32)
            var rng = SeededRandom(11)
            let rows = 64
            let raw: [Float] = (0..<(6 * rows)).map { i in i % 6 >= 3 ? 7 + 30 * rng.uniform() : 2 * rng.uniform() - 0.5 }
            var out = [Float](repeating: 0, count: rows * e.width)
            raw.withUnsafeBufferPointer { r in out.withUnsafeMutableBufferPointer { e.embed(raw: r.baseAddress!, rows: rows, into: $0.baseAddress!) } }
            var worst = 0.0
            for r in 0..<rows {
                for d in 0..<6 {
                    let v = out[r * e.width + d]
                    var scale = Float.pi
                    for k in 0..<F {
                        let angle = Double(scale * v)  // the Float32 angle, as PyTorch forms it
                        scale *= 2
                        worst = max(worst, abs(Double(out[r * e.width + 6 + 12 * k + d]) - Foundation.sin(angle)),
                                    abs(Double(out[r * e.width + 12 + 12 * k + d]) - Foundation.cos(angle)))
                    }
                }
            }
            #expect(worst < 1e-6, "F = \(F): worst error \(worst)")
        }
    }

    /// INR backward alone: probe L = Σ_t ⟨W_t, R_t⟩ on the generated tensors (no target network),
    /// so dW = R exactly and only the INR's own ReLUs can bend the difference quotient.
    /// Every 2nd element of every head (all output selections: 3×3 centre, 5×5, linear, bias);
    /// h = 5e-4 on parameters of scale ~0.3. Per tensor, the relative L2 error must stay under 2%:
    /// Float rounding in the generated values (~1e-6 per quotient at this h) and the odd kink
    /// crossing spoil single entries by ~1e-3, while a wrong formula errs by O(1) relative.
    @Test func inrBackwardMatchesFiniteDifferences() {
        let net = LeNet(width: 2)
        let inr = HyperNetwork(config: Self.tiny, targetSpecs: net.trainableSpecs, seed: 5)
        let layout = CoordinateLayout(specs: net.trainableSpecs, outputSize: 25)
        let act = INRActivations(config: Self.tiny), weights = net.makeParameters()
        let probeWeights = randomTensor([weights.count], seed: 8)
        weights.gradients.base.update(from: probeWeights.data, count: weights.count)
        func loss() -> Double {
            var rng = SeededRandom(3)
            inr.generate(layout, noise: 1, rng: &rng, activations: act, into: weights)
            return probe(Tensor(storage: weights.values, offset: 0, shape: [weights.count]), probeWeights)
        }
        _ = loss()
        inr.parameters.zeroGradients()
        inr.backward(layout, activations: act, targetGradients: weights)
        let analytic = Array(inr.parameters.gradients.buffer), p = inr.parameters
        for i in 0..<p.specs.count {
            let picks = Array(stride(from: i % 2, to: p.specs[i].count, by: 2))
            let fd = finiteDifference(p.value(i), at: picks, h: 5e-4, loss)
            expectRelativeL2(picks.map { analytic[p.offsets[i] + $0] }, fd, below: 0.02, p.specs[i].name)
        }
    }

    /// `backward` overwrites the INR's gradients: a second pass over garbage-filled gradients
    /// gives the same bits as the first over zeros.
    @Test func inrBackwardOverwritesGradients() {
        let net = LeNet(width: 3)
        let config = INRConfig(hidden: 20, layers: 3, frequencies: 2, outputSize: 25, norm: 4)
        let inr = HyperNetwork(config: config, targetSpecs: net.trainableSpecs, seed: 5)
        let layout = CoordinateLayout(specs: net.trainableSpecs, outputSize: 25)
        let act = INRActivations(config: config), weights = net.makeParameters()
        let probeWeights = randomTensor([weights.count], seed: 8)
        weights.gradients.base.update(from: probeWeights.data, count: weights.count)
        var rng = SeededRandom(3)
        inr.generate(layout, noise: 1, rng: &rng, activations: act, into: weights)
        inr.parameters.zeroGradients()
        inr.backward(layout, activations: act, targetGradients: weights)
        let first = Array(inr.parameters.gradients.buffer)
        inr.parameters.gradients.base.update(repeating: .nan, count: inr.parameters.count)
        inr.backward(layout, activations: act, targetGradients: weights)
        #expect(Array(inr.parameters.gradients.buffer) == first)
        #expect(first.contains { $0 != 0 })
    }

    /// Row chunks change only the order of sums: a layout cut into chunks of 100 rows (LeNet
    /// w=6: conv3 has 288 rows, conv2 72) generates the same values and, up to rounding
    /// (rtol 1e-4), the same gradients as one chunk per tensor.
    @Test func rowChunksMatchWholeTensors() {
        let net = LeNet(width: 6)
        let config = INRConfig(hidden: 24, layers: 3, frequencies: 2, outputSize: 25, norm: 8)
        let layout = CoordinateLayout(specs: net.trainableSpecs, outputSize: 25)
        let probeWeights = randomTensor([net.makeParameters().count], seed: 8)
        func run(rowChunk: Int) -> (values: [Float], gradients: [Float]) {
            let inr = HyperNetwork(config: config, targetSpecs: net.trainableSpecs, seed: 5)
            inr.rowChunk = rowChunk
            let act = INRActivations(config: config), weights = net.makeParameters()
            weights.gradients.base.update(from: probeWeights.data, count: weights.count)
            var rng = SeededRandom(3)
            inr.generate(layout, noise: 1, rng: &rng, activations: act, into: weights)
            inr.backward(layout, activations: act, targetGradients: weights)
            return (Array(weights.values.buffer), Array(inr.parameters.gradients.buffer))
        }
        let chunked = run(rowChunk: 100), whole = run(rowChunk: 1 << 20)
        expectClose(chunked.values, whole.values, atol: 1e-6, rtol: 1e-5, "generated values")
        expectClose(chunked.gradients, whole.gradients, atol: 1e-5, rtol: 1e-4, "INR gradients")
    }

    /// `headFinished(t)` comes once per head, when the head's gradient is final: what it sees
    /// of `headRanges[t]` then is what the whole pass ends with — on 1 and 2 threads, with
    /// heads of several row chunks (LeNet w=6, chunks of 100 rows). The small heads finish
    /// first (chunks go in order of increasing rows), the head with most rows last.
    @Test(arguments: [1, 2]) func headsFinishOnceWithTheirFinalGradient(threads: Int) {
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        Parallel.threads = threads
        let net = LeNet(width: 6)
        let config = INRConfig(hidden: 24, layers: 3, frequencies: 2, outputSize: 25, norm: 8)
        let layout = CoordinateLayout(specs: net.trainableSpecs, outputSize: 25)
        let inr = HyperNetwork(config: config, targetSpecs: net.trainableSpecs, seed: 5)
        inr.rowChunk = 100
        let act = INRActivations(config: config), weights = net.makeParameters()
        let probe = randomTensor([weights.count], seed: 8)
        weights.gradients.base.update(from: probe.data, count: weights.count)
        var rng = SeededRandom(3)
        inr.generate(layout, noise: 1, rng: &rng, activations: act, into: weights)
        let ranges = inr.headRanges, lock = NSLock()
        var seen: [(head: Int, values: [Float])] = []
        inr.backward(layout, activations: act, targetGradients: weights) { t in
            let values = Array(UnsafeBufferPointer(start: inr.parameters.gradients.base + ranges[t].lowerBound, count: ranges[t].count))
            lock.withLock { seen.append((t, values)) }
        }
        #expect(seen.map(\.head).sorted() == Array(ranges.indices))
        for (t, values) in seen {
            #expect(values == Array(inr.parameters.gradients.buffer[ranges[t]]), "head \(t)")
        }
        let most = layout.entries.indices.max { layout.entries[$0].rows < layout.entries[$1].rows }!
        if threads == 1 { #expect(seen.last?.head == most) }
    }

    /// Norm-regulariser and reconstruction gradients with respect to the generated weights.
    @Test func lossTermGradients() {
        let net = LeNet(width: 2)
        let w = net.makeParameters(), target = net.makeParameters()
        var rng = SeededRandom(4)
        w.initializeDefault(rng: &rng); target.initializeDefault(rng: &rng)
        let tensors = Array(0..<8)
        w.zeroGradients()
        _ = ConfigurationGradient.addNormRegularizer(w, tensors: tensors, weight: 0.3)
        _ = ConfigurationGradient.addReconstruction(w, target: target, tensors: tensors, weight: 2)
        let loss = {
            let scratch = net.makeParameters()
            scratch.values.base.update(from: w.values.base, count: w.count)
            return 0.3 * ConfigurationGradient.addNormRegularizer(scratch, tensors: tensors, weight: 0)
                + 2 * ConfigurationGradient.addReconstruction(scratch, target: target, tensors: tensors, weight: 0)
        }
        for i in tensors {
            expectClose(w.gradient(i).toArray(), finiteDifference(w.value(i), h: 1e-3, loss), atol: 1e-4, rtol: 1e-2, w.specs[i].name)
        }
    }

    /// The whole chain (INR → generated LeNet → cross-entropy + regulariser + reconstruction)
    /// against central differences. The target network's ReLUs make a few entries' quotients
    /// cross kinks, so this compares whole gradient vectors: relative L2 error under 3%.
    @Test func configurationGradientMatchesFiniteDifferences() throws {
        let net = LeNet(width: 2)
        let inr = HyperNetwork(config: Self.tiny, targetSpecs: net.trainableSpecs, seed: 5)
        let data = syntheticImages(count: 4, seed: 6)
        let pretrained = net.makeParameters()
        var rng = SeededRandom(7)
        pretrained.initializeDefault(rng: &rng)
        let objective = ConfigurationGradient(inr: inr, family: "lenet", dataset: data, mean: [0.5], std: [0.3],
                                              pretrained: pretrained, pretrainedWidth: 2)
        let config = Configuration(width: 2, batch: [0, 2, 3], noiseSeed: 11, noise: 1,
                                   lossWeights: LossWeights(normRegularizer: 0.1, reconstruction: 1))
        let terms = try objective.compute(config)
        #expect(terms.reconstruction > 0 && terms.normRegularizer > 0 && terms.samples == 3)
        try expectConfigurationGradientMatchesFiniteDifferences(objective, config, every: 4, "whole configuration gradient")
    }

    @Test func sameInputsGiveBitIdenticalGradients() throws {
        let net = LeNet(width: 3)
        let data = syntheticImages(count: 8, seed: 1)
        func run() throws -> [Float] {
            let inr = HyperNetwork(config: Self.tiny, targetSpecs: net.trainableSpecs, seed: 2)
            let g = ConfigurationGradient(inr: inr, family: "lenet", dataset: data, mean: [0.5], std: [0.3], pretrained: nil, pretrainedWidth: nil)
            _ = try g.compute(Configuration(width: 5, batch: [1, 2, 3], noiseSeed: 9, noise: 1, lossWeights: LossWeights()))
            return Array(inr.parameters.gradients.buffer)
        }
        #expect(try run() == run())
    }

    /// Two INR training rounds (gradient, AdamW fused with the EMA) give bit-identical
    /// parameters, EMA and gradients on 1, 2 and 3 compute threads. Hidden 64 and LeNet w=6 make
    /// the residual backward's sum span three fixed chunks (288 conv3 rows × 64 > 2 × 8192) and
    /// the column sums split, so a reduction whose order followed the threads would differ.
    /// (Other tests may run meanwhile with the changed thread count — harmless for the same reason.)
    @Test func trainingDoesNotDependOnTheThreadCount() throws {
        let config = INRConfig(hidden: 64, layers: 3, frequencies: 3, outputSize: 25, norm: 8)
        let data = syntheticImages(count: 32, seed: 9)
        var plan = RoundPlan()
        // Widths 11–12: conv3 has 968 or 1,152 coordinate rows, 2–3 row chunks of the INR.
        plan.minWidth = 11; plan.maxWidth = 12; plan.pretrainedWidth = 12; plan.batchSize = 16; plan.datasetCount = 32; plan.rounds = 2
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        var results: [[Float]] = []
        for threads in [1, 2, 3] {
            Parallel.threads = threads
            let inr = HyperNetwork(config: config, targetSpecs: LeNet(width: 12).trainableSpecs, seed: 2)
            let objective = ConfigurationGradient(inr: inr, family: "lenet", dataset: data, mean: [0.5], std: [0.3], pretrained: nil,
                                                  pretrainedWidth: nil)
            let (trainer, source) = makeTrainer(objective, plan: plan)
            _ = try trainer.runRound(source: source); _ = try trainer.runRound(source: source)
            results.append(Array(inr.parameters.values.buffer) + Array(trainer.ema.average.buffer) + Array(inr.parameters.gradients.buffer))
        }
        #expect(results[0] == results[1] && results[1] == results[2])
    }

    /// The trainer's round — the EMA deferred into the next round, AdamW's vector pass summing
    /// the configurations' gradients in order — gives the bits of a plain reference round:
    /// gradients computed one by one and summed in index order by a scalar loop, then
    /// `AdamW.referenceApply` (one element at a time) with the EMA fused into the same pass.
    @Test(arguments: [1, 2, 3])
    func trainerRoundMatchesAPlainReferenceRound(configurationsPerRound: Int) throws {
        let config = INRConfig(hidden: 16, layers: 2, frequencies: 2, outputSize: 25, norm: 8)
        let data = syntheticImages(count: 32, seed: 9)
        var plan = RoundPlan()
        plan.minWidth = 6; plan.maxWidth = 8; plan.batchSize = 8; plan.datasetCount = 32; plan.rounds = 3
        plan.configurationsPerRound = configurationsPerRound
        func objective() -> ConfigurationGradient {
            let inr = HyperNetwork(config: config, targetSpecs: LeNet(width: 8).trainableSpecs, seed: 2)
            return ConfigurationGradient(inr: inr, family: "lenet", dataset: data, mean: [0.5], std: [0.3], pretrained: nil, pretrainedWidth: nil)
        }
        var settings = OptimizerSettings()
        settings.gradientClip = 0.01  // small enough to clip some values
        let (trainer, source) = makeTrainer(objective(), plan: plan, settings: settings)
        let reference = objective(), p = reference.inr.parameters, n = p.count
        var adam = AdamW(parameterCount: n, learningRate: settings.learningRate)
        let ema = EMA(of: p.values, decay: settings.emaDecay)
        let sum = FloatStorage(count: n)
        for round in 0..<3 {
            _ = try trainer.runRound(source: source)
            for (c, configuration) in plan.configurations(round: round).enumerated() {
                _ = try reference.compute(configuration)
                for i in 0..<n { sum.base[i] = c == 0 ? p.gradients.base[i] : sum.base[i] + p.gradients.base[i] }
            }
            let k = adam.beginStep()
            adam.referenceApply(k, to: 0..<n, values: p.values, gradients: p.gradients, ema: ema, sources: [UnsafePointer(sum.base)],
                                scale: 1 / Float(configurationsPerRound), clip: 0.01)
        }
        #expect(trainer.emaPending, "the last step's EMA waits for the next round or a checkpoint")
        trainer.updatePendingEMA()
        #expect(Array(trainer.inr.parameters.values.buffer) == Array(p.values.buffer))
        #expect(Array(trainer.ema.average.buffer) == Array(ema.average.buffer))
        #expect(Array(trainer.optimizer.secondMoment.buffer) == Array(adam.secondMoment.buffer))
    }
}
