import ArgumentParser
import CAllocationCounter
import Foundation
import CommandLineSupport
import NeuMeta

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "neumeta-bench",
        abstract: "Measure sgemm, the base-network step, the INR training step, the SHP permutation, gradient messages over CURVE, cluster rounds and the cost of sampled networks (build with -c release).",
        discussion: """
        Parts (--parts, comma-separated; default all):

        sgemm: GFLOP/s of Gemm.sgemm (OpenBLAS, split over the compute threads) at 2048³ \
        (sgemm_gflops, the machine's reference rate) and at every product shape one INR step \
        runs at the mean width of 8…32, and the target network's shapes; each checked against \
        a Double dot product on sampled entries; best of --repeats. sgemm_inr_shapes_gflops is \
        the rate of the INR's whole product mix (total FLOPs over total time): what the INR's \
        products could reach if each ran as fast as alone.

        lenet: one LeNet w=32 base-network training step (batch 128, forward, backward, Adam).

        inr: INR training rounds with the paper's recipe (hidden 256, 4 layers, 16 frequencies, \
        25 outputs, one configuration per round, widths uniform in 8…32, batch 128, noise 1.0) \
        on the Fashion-MNIST training set, a LeNet-32 base (random unless --base), the round \
        plan seeded by --seed so runs are comparable. inr_steps_per_s is 1 / median round time \
        (configurations drawn, INR forward, target network forward and backward, INR backward, \
        AdamW, EMA). flops_per_step_gflop counts the matrix products run (2·m·n·k) at the mean \
        width; nominal_flops_per_step_gflop the same step with the full-size LeNet (28×28, 14×14, \
        7×7 maps, as PyTorch computes it; this LeNet computes only the region the classifier \
        reads). performed_gflops is the median over rounds of a round's counted FLOPs / its time; \
        effective_gflops the same with nominal FLOPs, and effective_vs_sgemm its fraction of the \
        2048³ sgemm rate measured between the rounds \
        (sgemm_gflops_during_inr, under the same load; goal ≥ 0.6). speedup_vs_pytorch \
        compares with a PyTorch CPU reference of 5.6 steps/s (goal ≥ 1.5, target 2). The share_* \
        figures come from profiled rounds interleaved with the timed ones: time in sgemm, in im2col/col2im plus the \
        INR's embedding and element-wise loops, and elsewhere (target-network element-wise \
        layers, losses, AdamW, EMA, data); profile_phases splits a round into plan, INR forward, \
        target network, INR backward and update; gemm_gflops_in_step is sgemm's rate inside the \
        step (compare sgemm_inr_shapes_gflops); flops_counted_vs_analytic (1.000000) checks the \
        FLOP count against the sgemm calls made. allocations_per_step (every heap allocation of \
        the process) and rss_growth_mib show whether the steady state allocates, after a \
        warm-up that visits every width used; allocations_outside_parallel_loops_per_step \
        leaves out the few small blocks each parallel loop costs (closure box, libdispatch).

        permute: Permutation.permute (SHP, shortest Hamiltonian paths) of a LeNet w=32 and a \
        CIFAR ResNet-20 of width 64 (stages 64, 128, 256), random unless --base / --resnet-base: \
        seconds and the total variation after / before.

        wire: gradient messages carrying one whole gradient of the default recipe's INR sent from a \
        DEALER to a DEALER over TCP on 127.0.0.1 (separate ZeroMQ contexts, as between two \
        processes) and decoded: GB/s with CURVE and float32 (wire_curve_f32_gbytes_per_s, goal \
        ≥ 1), CURVE and bfloat16, and plaintext float32 for comparison; the cipher alone \
        (wire_cipher_gbytes_per_s) bounds what one CURVE connection can carry on this CPU.

        cluster: `neumeta-coordinator run` (from the same build folder) with the default recipe from cluster.yaml's defaults (a random LeNet-32 \
        base unless --base) for --cluster-rounds rounds, with 1 and then 2 local workers of one \
        thread each, then 2 workers sending bfloat16 gradients, CURVE over loopback: \
        configurations/s, the share of round time not spent computing gradients (1 − busiest \
        worker's compute / round time; goal < 10 % with 2 workers), bytes per round and the \
        optimizer step (summed over the heads, which are stepped as their gradient pieces \
        arrive, overlapping the round), over the rounds after the first 5.

        generation: the cost of a sampled network: milliseconds to generate one from the INR at \
        each of --generation-widths with K = 1 and K = --generation-samples (median of --repeats \
        after a warm-up call that builds the width's buffers), and the bytes stored as float32 — \
        the INR against one individually trained network of every integer width of its trained \
        range. The INR is --inr, or a freshly initialised default-recipe LeNet INR (generation \
        time does not depend on the trained values).

        scale (only when named): the coordinator's cost of a round at scale. Per point, \
        `neumeta-coordinator synthetic` (the real ClusterServer and AdamW on the INR of LeNet or \
        ResNet-18, default recipe: 8 or 62 heads, 7.2 or 55.6 MB) and N `neumeta-worker \
        --synthetic --scale-seconds` processes on 127.0.0.1, which sleep instead of computing and \
        send stand-in gradients of the real sizes; --scale-rounds rounds once all N are connected. \
        Default points: each family at N = 1, 4, 16, 64 (--quick 1, 4) with M = N float32, \
        N = 4 with M = 16, and N = 4 in bfloat16; --scale-points family:N:M:precision,… for others \
        (a point that would not fit in the available memory is skipped). Reports configurations/s, \
        the share of round time not computing, the coordinator's peak RSS and the workers' RSS, the \
        time until all N were connected and any dropped; fits T = C + t₀ + (min(M, N) gradients + N \
        parameter copies) / wire rate + AdamW (P / update rate + M·P / sum rate) by non-negative \
        least squares and predicts 64 and 256 workers; writes scale.md, scale.csv and two SVG \
        plots into --scale-out. --scale-from CSV refits an earlier run's scale.csv.

        Figures depend on the machine's load: compare ratios within one run, and note the load \
        average printed with them. --quick runs every part in seconds (fewer repeats and steps).
        """
    )

    @Option(help: "Comma-separated parts to run: sgemm, lenet, inr, permute, wire, cluster, generation, scale (scale runs only when named).")
    var parts = "sgemm,lenet,inr,permute,wire,cluster,generation"

    @Flag(help: "Few repeats and steps: every part in seconds (figures are noisier).")
    var quick = false

    @Option(help: "Repetitions per sgemm / LeNet measurement (the best or median is reported; default 5, --quick 1).")
    var repeats: Int?

    @Option(help: "Timed INR rounds (default 200, --quick 6).")
    var steps: Int?

    @Option(help: "Profiled INR rounds, interleaved with the timed ones (default 30, --quick 3).")
    var profiledSteps: Int?

    @Option(help: "Local-search descents per channel group for permute (default 1000 as in training, --quick 20).")
    var permuteIterations: Int?

    @Option(help: "Rounds per cluster run (default 60, --quick 8).")
    var clusterRounds: Int?

    @Option(name: .customLong("scale-points"),
            help: "Points of the scale part, comma-separated family:N:M:precision (default: the sweep --help describes).")
    var scalePointsOption: String?

    @Option(help: "Seconds a synthetic worker takes per configuration in the scale part.")
    var scaleSeconds = 1.0

    @Option(help: "Measured rounds per scale point (default 3, --quick 2).")
    var scaleRounds: Int?

    @Option(help: "Refit the scale part's model to an earlier run's scale.csv instead of measuring.")
    var scaleFrom: String?

    @Option(help: "Directory for the scale part's scale.md, scale.csv and plots.")
    var scaleOut = "bench-scale"

    @Option(help: "LeNet-32 base checkpoint for the inr, permute and cluster parts (default: random initialisation).")
    var base: String?

    @Option(help: "ResNet-20 checkpoint for the permute part (default: random initialisation at width 64).")
    var resnetBase: String?

    @Option(name: .customLong("inr"), help: "Trained INR checkpoint for the generation part (default: a new default-recipe LeNet INR).")
    var generationINR: String?

    @Option(help: "Widths the generation part samples.")
    var generationWidths = "4,8,16,24,32,48"

    @Option(help: "K of the generation part's noise-averaged samples.")
    var generationSamples = 10

    @Option(help: "Seed of the INR round plan, initialisations and path search.")
    var seed: UInt64 = 0

    @Option(help: "Dataset directory (Fashion-MNIST IDX files).")
    var data = FashionMNIST.defaultDirectory

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @OptionGroup var blas: BLASOptions

    static let knownParts: Set<String> = ["sgemm", "lenet", "inr", "permute", "wire", "cluster", "generation", "scale"]
    /// Steps/s of a plain PyTorch CPU implementation of the same step (paper recipe, batch 128), measured on a 2-core AVX2 machine: the reference of `speedup_vs_pytorch`.
    static let pytorchStepsPerSecond = 5.6

    var selected: Set<String> { Set(parts.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }

    func validate() throws {
        let unknown = selected.subtracting(Self.knownParts)
        guard unknown.isEmpty else { throw ValidationError("--parts: unknown \(unknown.sorted().joined(separator: ", "))") }
        for (name, value) in [("--repeats", repeats), ("--steps", steps), ("--permute-iterations", permuteIterations),
                              ("--cluster-rounds", clusterRounds), ("--scale-rounds", scaleRounds)] {
            if let value, value < 1 { throw ValidationError("\(name) must be at least 1") }
        }
        _ = try parseWidths(generationWidths, option: "--generation-widths")
        if generationSamples < 1 { throw ValidationError("--generation-samples must be at least 1") }
        if let profiledSteps, profiledSteps < 0 { throw ValidationError("--profiled-steps must not be negative") }
        if !(scaleSeconds >= 0 && scaleSeconds <= 3600) { throw ValidationError("--scale-seconds must be between 0 and 3600") }
        if let scalePointsOption {
            for text in scalePointsOption.split(separator: ",") where ScalePoint(text) == nil {
                throw ValidationError("--scale-points: '\(text)' is not family:N:M:precision (family lenet or resnet18, precision float32 or bfloat16)")
            }
        }
    }

    func run() throws {
        blas.apply()
        log(BLASRuntime.summary)
        var out = Figures()
        out.add("blas_core", BLASRuntime.coreName, "OpenBLAS core", BLASRuntime.coreName, section: "machine")
        out.add("blas_threads", BLASRuntime.threads, "BLAS threads per call", "\(BLASRuntime.threads)")
        out.add("compute_threads", Parallel.threads, "compute threads", "\(Parallel.threads)")
        let load = Self.loadAverage()
        out.add("load_average", load, "load average (1, 5, 15 min) at start", load.map { String(format: "%.2f", $0) }.joined(separator: ", "))
        let repeats = self.repeats ?? (quick ? 1 : 5)
        if selected.contains("sgemm") { sgemmPart(&out, repeats: repeats) }
        if selected.contains("lenet") {
            let step = Self.lenetStepSeconds(width: 32, batch: 128, repeats: max(repeats, quick ? 3 : 10))
            out.add("lenet_base_step_ms", step * 1000, "LeNet w=32 base training step, batch 128 (median)",
                    String(format: "%.2f ms (%.0f images/s)", step * 1000, 128 / step), section: "lenet")
        }
        if selected.contains("inr") { try inrPart(&out) }
        if selected.contains("permute") { try permutePart(&out) }
        if selected.contains("wire") { try wirePart(&out) }
        if selected.contains("cluster") { try clusterPart(&out) }
        if selected.contains("generation") { try generationPart(&out) }
        if selected.contains("scale") { try scalePart(&out) }
        let loadEnd = Self.loadAverage()
        out.add("load_average_end", loadEnd, "load average (1, 5, 15 min) at end",
                loadEnd.map { String(format: "%.2f", $0) }.joined(separator: ", "), section: "machine")
        if json { printJSON(out.json) } else { out.printTable() }
    }

    // MARK: sgemm

    func sgemmPart(_ out: inout Figures, repeats: Int) {
        let square = Self.sgemmGFLOPS(GemmShape(m: 2048, n: 2048, k: 2048), repeats: repeats)
        out.add("sgemm_gflops", square, "sgemm 2048³", String(format: "%.1f GFLOP/s", square), section: "sgemm")
        let (config, plan, _) = Self.paperSetup()
        let width = (plan.minWidth + plan.maxWidth) / 2
        let layout = CoordinateLayout(specs: LeNet(width: width).trainableSpecs, outputSize: config.outputSize)
        let inr = HyperNetwork.products(config: config, layout: layout)
        let target = LeNet(width: width).products(batch: 128)
        for (name, label, products) in [("inr", "INR", inr.forward + inr.backward), ("lenet", "LeNet", target.forward + target.backward)] {
            let (rate, rows) = Self.productMix(products, repeats: repeats)
            out.add("sgemm_\(name)_shapes_gflops", rate, "sgemm, \(label) step's product mix at w=\(width)", String(format: "%.1f GFLOP/s", rate))
            out.json["sgemm_\(name)_shapes"] = rows.map { r in
                ["m": r.shape.m, "n": r.shape.n, "k": r.shape.k, "trans_a": r.shape.transA, "trans_b": r.shape.transB,
                 "calls": r.calls, "flop_share": r.share, "gflops": r.gflops] as [String: Any]
            }
            for r in rows.prefix(while: { $0.share >= 0.05 }) {
                out.rows.append((String(format: "  %@ ×%d (%.0f%% of its FLOPs)", r.shape.description, r.calls, 100 * r.share),
                                 String(format: "%.1f GFLOP/s", r.gflops), ""))
            }
        }
    }

    /// The distinct shapes of `products`, each timed, by decreasing FLOP share; and the mix's
    /// rate: total FLOPs over the total time of running every product once.
    static func productMix(_ products: [GemmShape], repeats: Int)
        -> (gflops: Double, rows: [(shape: GemmShape, calls: Int, share: Double, gflops: Double)]) {
        var calls: [GemmShape: Int] = [:]
        for p in products { calls[p, default: 0] += 1 }
        let total = Double(products.reduce(0) { $0 + $1.flops })
        var seconds = 0.0
        let rows = calls.map { shape, n in
            let gflops = sgemmGFLOPS(shape, repeats: repeats)
            seconds += Double(n * shape.flops) / (gflops * 1e9)
            return (shape: shape, calls: n, share: Double(n * shape.flops) / total, gflops: gflops)
        }
        return (total / seconds / 1e9, rows.sorted { $0.share > $1.share })
    }

    /// Best-of-`repeats` GFLOP/s of one product shape, verified against a Double dot product.
    static func sgemmGFLOPS(_ s: GemmShape, repeats: Int) -> Double {
        let probe = SgemmProbe(s)
        let rate = probe.gflops(repeats: repeats)
        probe.verify()
        return rate
    }

    // MARK: lenet

    /// Median seconds of one LeNet forward + backward + Adam step on random data.
    static func lenetStepSeconds(width: Int, batch: Int, repeats: Int) -> Double {
        let net = LeNet(width: width)
        let p = net.makeParameters()
        var rng = SeededRandom(1)
        p.initializeDefault(rng: &rng)
        var adam = AdamW(parameterCount: p.count)
        let x = Tensor(zeros: [batch, 1, 28, 28])
        for i in 0..<x.count { x[i] = rng.normal() }
        let labels = (0..<batch).map { Int32($0 % 10) }
        let dz = Tensor(zeros: [batch, 10])
        var times: [Double] = []
        for _ in 0...repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds
            p.zeroGradients()
            let logits = net.forward(p, input: x, mode: .training)
            labels.withUnsafeBufferPointer { _ = SoftmaxCrossEntropy.forwardBackward(logits: logits, labels: $0.baseAddress!, dLogits: dz) }
            net.backward(p, input: x, dLogits: dz)
            adam.update(values: p.values, gradients: p.gradients)
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        return times.dropFirst().sorted()[times.count / 2 - 1]
    }

    // MARK: inr

    /// The paper's recipe (`Recipe.paper`) with the defaults of `train`: widths 8…32 (also the
    /// coordinate normaliser), pretrained width 32, batch 128, noise 1.
    static func paperSetup() -> (config: INRConfig, plan: RoundPlan, optimizer: OptimizerSettings) {
        var config = INRConfig(), plan = RoundPlan(), optimizer = OptimizerSettings()
        Recipe.paper.apply(to: &plan, &optimizer, &config)
        config.norm = Float(plan.maxWidth)
        return (config, plan, optimizer)
    }

    func inrPart(_ out: inout Figures) throws {
        let steps = self.steps ?? (quick ? 6 : 200), profiled = profiledSteps ?? (quick ? 3 : 30)
        let train = try FashionMNIST.load(split: .train, directory: data)
        let (config, paperPlan, optimizer) = Self.paperSetup()
        var plan = paperPlan
        plan.seed = seed; plan.datasetCount = train.count
        plan.rounds = 1 + steps + profiled
        let pretrained: ParameterSet, mean: [Float], std: [Float]
        if let base {
            let checkpoint = try NetworkCheckpoint.load(path: base)
            guard checkpoint.network.family == "lenet", checkpoint.network.widths == [plan.pretrainedWidth] else {
                throw ValidationError("--base must be a LeNet of width \(plan.pretrainedWidth), not \(checkpoint.network.family) \(checkpoint.network.widths)")
            }
            (pretrained, mean, std) = (checkpoint.parameters, checkpoint.mean, checkpoint.std)
        } else {
            pretrained = LeNet(width: plan.pretrainedWidth).makeParameters()
            var rng = SeededRandom(seed, 0xBE)
            pretrained.initializeDefault(rng: &rng)
            (mean, std) = train.channelMeanStd()
        }
        let network = LeNet(width: plan.pretrainedWidth)
        let inr = HyperNetwork(config: config, targetSpecs: network.trainableSpecs, seed: seed)
        let objective = ConfigurationGradient(inr: inr, family: "lenet", dataset: train, mean: mean, std: std, pretrained: pretrained,
                                              pretrainedWidth: plan.pretrainedWidth)
        let trainer = INRTrainer(inr: inr, plan: plan, optimizer: optimizer,
                                 target: TrainingTarget(base: pretrained, family: "lenet", classCount: train.classCount, mean: mean, std: std,
                                                        recipe: "bench"))
        let source = LocalGradientSource(objective: objective, plan: plan)
        log("inr: \(inr.parameters.count) parameters; warm-up, \(steps) timed and \(profiled) profiled rounds")
        let counting = neumeta_allocation_counting() != 0
        let square = SgemmProbe(GemmShape(m: 2048, n: 2048, k: 2048))
        let r = try StepBenchmark.run(trainer: trainer, source: source, rounds: steps, profiledRounds: profiled, referenceSamples: quick ? 2 : 10,
                                      reference: { square.gflops(repeats: 1) }, allocations: counting ? {
            (Int(neumeta_allocations_total()), Int(neumeta_allocated_bytes_total()))
        } : nil)
        let sgemmRate = StepBenchmark.Result.median(r.references)

        func flops(_ widths: [Int]) -> Int { widths.reduce(0) { $0 + StepFlops(lenetWidth: $1, batch: plan.batchSize, inr: config).total } }
        let median = r.medianSeconds, stepsPerSecond = 1 / median
        let meanWidth = (plan.minWidth + plan.maxWidth) / 2
        let atMean = StepFlops(lenetWidth: meanWidth, batch: plan.batchSize, inr: config)
        let expected = Double(flops(Array(plan.minWidth...plan.maxWidth))) / Double(plan.maxWidth - plan.minWidth + 1)
        func nominal(_ widths: [Int]) -> Int { widths.reduce(0) { $0 + StepFlops(lenetWidth: $1, batch: plan.batchSize, inr: config).nominal } }
        let performed = StepBenchmark.Result.median(zip(r.widths, r.seconds).map { Double(flops($0)) / $1 / 1e9 })
        let effective = StepBenchmark.Result.median(zip(r.widths, r.seconds).map { Double(nominal($0)) / $1 / 1e9 })
        out.add("inr_steps_per_s", stepsPerSecond, "INR training step (round), median of \(steps)",
                String(format: "%.2f steps/s (%.1f ms)", stepsPerSecond, median * 1000), section: "inr step (paper recipe, widths \(plan.minWidth)…\(plan.maxWidth), batch \(plan.batchSize))")
        out.json["inr_step_ms_median"] = median * 1000
        out.json["inr_steps"] = steps
        out.json["inr_step_ms"] = r.seconds.map { $0 * 1000 }
        out.json["inr_step_widths"] = r.widths.map { $0.count == 1 ? $0[0] as Any : $0 as Any }
        out.json["inr_mean_width"] = Double(r.widths.joined().reduce(0, +)) / Double(max(1, r.widths.joined().count))
        out.add("flops_per_step_gflop", Double(atMean.total) / 1e9, "FLOPs per step at the mean width \(meanWidth)",
                String(format: "%.2f GFLOP (INR fwd %.2f + bwd %.2f, target fwd %.2f + bwd %.2f)", Double(atMean.total) / 1e9,
                       Double(atMean.inrForward) / 1e9, Double(atMean.inrBackward) / 1e9, Double(atMean.targetForward) / 1e9,
                       Double(atMean.targetBackward) / 1e9))
        out.json["flops_inr_forward_gflop"] = Double(atMean.inrForward) / 1e9
        out.json["flops_inr_backward_gflop"] = Double(atMean.inrBackward) / 1e9
        out.json["flops_target_forward_gflop"] = Double(atMean.targetForward) / 1e9
        out.json["flops_target_backward_gflop"] = Double(atMean.targetBackward) / 1e9
        out.add("flops_per_step_expected_gflop", expected / 1e9, "FLOPs per step averaged over widths \(plan.minWidth)…\(plan.maxWidth)",
                String(format: "%.2f GFLOP", expected / 1e9))
        out.add("nominal_flops_per_step_gflop", Double(atMean.nominal) / 1e9, "nominal FLOPs per step at w=\(meanWidth) (full-size LeNet maps)",
                String(format: "%.2f GFLOP (target %.2f instead of %.2f)", Double(atMean.nominal) / 1e9, Double(atMean.fullTarget) / 1e9,
                       Double(atMean.targetForward + atMean.targetBackward) / 1e9))
        out.add("performed_gflops", performed, "rate of the products run (median of counted FLOPs / time per step)",
                String(format: "%.1f GFLOP/s", performed))
        out.add("effective_gflops", effective, "effective rate (median of nominal FLOPs / time per step)", String(format: "%.1f GFLOP/s", effective))
        out.add("sgemm_gflops_during_inr", sgemmRate, "sgemm 2048³ between the rounds (median of \(r.references.count))",
                String(format: "%.1f GFLOP/s", sgemmRate))
        out.add("effective_vs_sgemm", effective / sgemmRate, "effective / sgemm 2048³ between the rounds (goal ≥ 0.60)",
                String(format: "%.2f", effective / sgemmRate))
        out.add("performed_vs_sgemm", performed / sgemmRate, "performed / sgemm 2048³ between the rounds",
                String(format: "%.2f", performed / sgemmRate))
        out.json["pytorch_reference_steps_per_s"] = Self.pytorchStepsPerSecond
        out.add("speedup_vs_pytorch", stepsPerSecond / Self.pytorchStepsPerSecond,
                String(format: "steps/s / PyTorch CPU %.1f (goal ≥ 1.5, target 2)", Self.pytorchStepsPerSecond),
                String(format: "%.2f×", stepsPerSecond / Self.pytorchStepsPerSecond))
        if let allocations = r.allocations, let bytes = r.allocatedBytes {
            out.add("allocations_per_step", Double(allocations) / Double(steps), "heap allocations per step (timed rounds)",
                    String(format: "%.2f (%.0f bytes)", Double(allocations) / Double(steps), Double(bytes) / Double(steps)))
            out.json["allocated_bytes_per_step"] = Double(bytes) / Double(steps)
        }
        let mib = 1024.0 * 1024
        out.add("rss_growth_mib", Double(r.residentBytesAfter - r.residentBytesBefore) / mib, "resident memory growth over the measured rounds",
                String(format: "%+.2f MiB (resident %.0f MiB)", Double(r.residentBytesAfter - r.residentBytesBefore) / mib, Double(r.residentBytesAfter) / mib))
        out.json["rss_mib"] = Double(r.residentBytesAfter) / mib
        if profiled > 0 { profileFigures(&out, r, flops: flops, stepSeconds: median) }
    }

    func profileFigures(_ out: inout Figures, _ r: StepBenchmark.Result, flops: ([Int]) -> Int, stepSeconds: Double) {
        let p = r.profile, n = Double(r.profiledSeconds.count), total = r.profiledSeconds.reduce(0, +)
        out.json["inr_profiled_step_ms_median"] = 1000 * StepBenchmark.Result.median(r.profiledSeconds)
        out.json["inr_profiled_mean_width"] = Double(r.profiledWidths.joined().reduce(0, +)) / Double(max(1, r.profiledWidths.joined().count))
        let gemm = p.seconds(.gemm), im2col = p.seconds(.im2col), inrLoops = p.seconds(.embedding) + p.seconds(.elementwise)
        out.add("share_gemm", gemm / total, "share of step time in sgemm (\(Int(n)) profiled rounds)",
                String(format: "%.1f%%", 100 * gemm / total), section: "where the step's time goes")
        out.add("share_im2col_elementwise", (im2col + inrLoops) / total, "… in im2col/col2im + INR embedding and element-wise loops",
                String(format: "%.1f%% (im2col %.1f%%, embedding %.1f%%, element-wise %.1f%%)", 100 * (im2col + inrLoops) / total,
                       100 * im2col / total, 100 * p.seconds(.embedding) / total, 100 * p.seconds(.elementwise) / total))
        out.add("share_elsewhere", 1 - (gemm + im2col + inrLoops) / total, "… elsewhere (target element-wise, losses, AdamW, EMA, data)",
                String(format: "%.1f%%", 100 * (1 - (gemm + im2col + inrLoops) / total)))
        let counted = p.gemmFlops()
        out.add("gemm_gflops_in_step", Double(counted) / gemm / 1e9, "sgemm rate inside the step", String(format: "%.1f GFLOP/s", Double(counted) / gemm / 1e9))
        let analytic = r.profiledWidths.reduce(0) { $0 + flops($1) }
        out.add("flops_counted_vs_analytic", Double(counted) / Double(analytic), "sgemm FLOPs counted while running / counted analytically",
                String(format: "%.6f", Double(counted) / Double(analytic)))
        var phases: [String: Any] = [:], loops = 0, loopAllocations = 0
        let names: [(Profile.Phase, String, String)] = [(.plan, "plan", "configurations drawn"), (.inrForward, "inr_forward", "INR forward"),
                                                         (.targetNetwork, "target_network", "target net fwd+bwd, losses"),
                                                         (.inrBackward, "inr_backward", "INR backward"), (.update, "update", "AdamW, EMA, averaging")]
        for (phase, key, label) in names {
            let s = p.seconds(in: phase), g = p.seconds(.gemm, in: phase), i = p.seconds(.im2col, in: phase)
            let e = p.seconds(.embedding, in: phase) + p.seconds(.elementwise, in: phase)
            let a = p.allocations(in: phase), l = p.parallelLoops(in: phase), la = p.parallelLoopAllocations(in: phase)
            loops += l; loopAllocations += la
            phases[key] = ["ms_per_step": 1000 * s / n, "share": s / total, "gemm_ms": 1000 * g / n, "im2col_ms": 1000 * i / n,
                           "inr_elementwise_ms": 1000 * e / n, "other_ms": 1000 * (s - g - i - e) / n,
                           "allocations_per_step": Double(a) / n, "parallel_loops_per_step": Double(l) / n,
                           "allocations_in_parallel_loops_per_step": Double(la) / n]
            out.rows.append(("  " + label, String(format: "%6.1f ms %5.1f%%  (sgemm %.1f, im2col %.1f, INR loops %.1f, other %.1f ms)",
                                                   1000 * s / n, 100 * s / total, 1000 * g / n, 1000 * i / n, 1000 * e / n,
                                                   1000 * (s - g - i - e) / n), ""))
            out.rows.append(("", String(format: "%.1f allocations, %.1f of them in %.1f parallel loops", Double(a) / n, Double(la) / n,
                                        Double(l) / n), ""))
        }
        out.json["profile_phases"] = phases
        out.json["parallel_loops_per_step"] = Double(loops) / n
        if let allocations = r.profiledAllocations {
            out.add("allocations_outside_parallel_loops_per_step", Double(allocations - loopAllocations) / n,
                    "allocations per step outside parallel loops (profiled rounds)",
                    String(format: "%.2f (of %.1f; %.1f parallel loops per step)", Double(allocations - loopAllocations) / n,
                           Double(allocations) / n, Double(loops) / n))
        }
        let regions = Double(p.regions) / n
        let on = StepBenchmark.profileCost(enabled: true), off = StepBenchmark.profileCost(enabled: false)
        out.json["profile_regions_per_step"] = regions
        out.json["profile_ns_per_region_enabled"] = on * 1e9
        out.json["profile_ns_per_region_disabled"] = off * 1e9
        out.add("profile_overhead_enabled_percent", 100 * regions * on / stepSeconds, "profiling cost, on / off (share of a step)",
                String(format: "%.4f%% / %.5f%% (%.0f regions per step, %.0f / %.1f ns each)", 100 * regions * on / stepSeconds,
                       100 * regions * off / stepSeconds, regions, on * 1e9, off * 1e9))
        out.json["profile_overhead_disabled_percent"] = 100 * regions * off / stepSeconds
    }

    // MARK: permute

    func permutePart(_ out: inout Figures) throws {
        let iterations = permuteIterations ?? (quick ? 20 : SearchBudget().maxIterations)
        func load(_ path: String?, family: String, width: Int) throws -> (Network, ParameterSet) {
            guard let path else { return try Self.randomNetwork(family, widths: NetworkFamily.widths(family, scaledFrom: width), seed: seed) }
            let c = try NetworkCheckpoint.load(path: path)
            guard c.network.family == family else { throw ValidationError("\(path) holds a \(c.network.family), not a \(family)") }
            return (c.network, c.parameters)
        }
        let lenet = try load(base, family: "lenet", width: 32), resnet = try load(resnetBase, family: "resnet20", width: 64)
        var rows: [[String: Any]] = []
        for (key, (network, p)) in [("lenet", lenet), ("resnet20", resnet)] {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let report = Permutation.permute(p, groups: network.channelGroups, seed: seed, budget: SearchBudget(maxIterations: iterations))
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            let ratio = report.totalVariationAfter / report.totalVariationBefore
            rows.append(["network": network.family, "widths": network.widths, "groups": report.groups.count, "iterations": iterations,
                         "seconds": seconds, "total_variation_before": report.totalVariationBefore,
                         "total_variation_after": report.totalVariationAfter, "total_variation_ratio": ratio])
            out.add("permute_\(key)_seconds", seconds, "\(network.family) w=\(network.widths[0]): SHP permutation (\(report.groups.count) groups, \(iterations) descents)",
                    String(format: "%.2f s", seconds), section: key == "lenet" ? "permute" : nil)
            out.add("permute_\(key)_tv_ratio", ratio, "  total variation after / before", String(format: "%.3f (%.1f → %.1f)", ratio,
                                                                                             report.totalVariationBefore, report.totalVariationAfter))
        }
        out.json["permute"] = rows
    }

    static func randomNetwork(_ family: String, widths: [Int], seed: UInt64) throws -> (Network, ParameterSet) {
        let network = try NetworkFamily.make(family, widths: widths)
        let p = network.makeParameters()
        var rng = SeededRandom(seed, 0xBE)
        p.initializeDefault(rng: &rng)
        return (network, p)
    }

    // MARK: output

    /// The 1, 5 and 15 minute load averages (/proc/loadavg), empty where unavailable.
    static func loadAverage() -> [Double] {
        guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return [] }
        return text.split(separator: " ").prefix(3).compactMap { Double($0) }
    }
}

/// The bench's figures: one JSON object, and the same figures as table rows (label, value, key).
struct Figures {
    var json: [String: Any] = [:]
    var rows: [(label: String, value: String, key: String)] = []

    /// Records `value` under `key` and a row; `section` starts a titled group of rows.
    mutating func add(_ key: String, _ value: Any, _ label: String, _ text: String, section: String? = nil) {
        json[key] = value
        if let section { rows.append(("", "", section)) }
        rows.append((label, text, key))
    }

    /// Records `value` under `key` in the JSON object only.
    mutating func record(_ key: String, _ value: Any) { json[key] = value }

    func printTable() {
        let width = rows.map(\.label.count).max() ?? 0
        for row in rows {
            if row.label.isEmpty && row.value.isEmpty { print("\n" + row.key); continue }
            let pad = String(repeating: " ", count: max(0, width - row.label.count))
            print("  " + row.label + pad + "  " + row.value + (row.key.isEmpty ? "" : "  [\(row.key)]"))
        }
    }
}

/// Operands of one product shape, filled once, for timing `Gemm.sgemm` on them repeatedly.
struct SgemmProbe {
    let shape: GemmShape
    let a: Tensor, b: Tensor, c: Tensor

    init(_ shape: GemmShape) {
        self.shape = shape
        var rng = SeededRandom(7)
        a = Tensor(zeros: [shape.m * shape.k]); b = Tensor(zeros: [shape.k * shape.n]); c = Tensor(zeros: [shape.m * shape.n])
        for i in 0..<a.count { a[i] = rng.uniform(-1, 1) }
        for i in 0..<b.count { b[i] = rng.uniform(-1, 1) }
    }

    func product() {
        let s = shape
        Gemm.sgemm(transA: s.transA, transB: s.transB, m: s.m, n: s.n, k: s.k, a: a.data, lda: s.transA ? s.m : s.k,
                   b: b.data, ldb: s.transB ? s.k : s.n, beta: 0, c: c.data, ldc: s.n)
    }

    /// Best-of-`repeats` GFLOP/s after one warm-up product; each measurement loops for ≥ 2 ms.
    func gflops(repeats: Int) -> Double {
        product()
        var best = Double.infinity
        for _ in 0..<repeats {
            var calls = 0, elapsed: UInt64 = 0
            let t0 = DispatchTime.now().uptimeNanoseconds
            repeat {
                product(); calls += 1
                elapsed = DispatchTime.now().uptimeNanoseconds - t0
            } while elapsed < 2_000_000
            best = min(best, Double(elapsed) / 1e9 / Double(calls))
        }
        return Double(shape.flops) / best / 1e9
    }

    /// Checks 16 sampled entries of the last product against a Double dot product.
    func verify() {
        let (m, n, k) = (shape.m, shape.n, shape.k)
        var rng = SeededRandom(8)
        for _ in 0..<16 {
            let i = rng.index(below: m), j = rng.index(below: n)
            var sum = 0.0
            for p in 0..<k { sum += Double(a[shape.transA ? p * m + i : i * k + p]) * Double(b[shape.transB ? j * k + p : p * n + j]) }
            precondition(abs(sum - Double(c[i * n + j])) <= 1e-3 * Double(k).squareRoot(), "sgemm \(shape) result wrong at (\(i), \(j))")
        }
    }
}
