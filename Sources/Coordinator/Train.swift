import ArgumentParser
import Foundation
import NeuMeta

/// Named starting points for INR training.
enum Recipe: String, ExpressibleByArgument, CaseIterable {
    /// The paper's recipe, exactly (NEUMETA.md §2–3).
    case paper
    /// Ours, from measurements on Fashion-MNIST (see README).
    case `default`

    func apply(to plan: inout RoundPlan, _ optimizer: inout OptimizerSettings, _ config: inout INRConfig) {
        switch self {
        case .paper:
            config.hidden = 256; config.layers = 4; config.frequencies = 16
            plan.configurationsPerRound = 1; plan.fitPretrainedEveryRound = false
            optimizer.learningRate = 1e-3; optimizer.cosineSchedule = false; optimizer.gradientClip = nil
        case .default:
            config.hidden = 256; config.layers = 4; config.frequencies = 6
            plan.configurationsPerRound = 2; plan.fitPretrainedEveryRound = true
            optimizer.learningRate = 1e-3; optimizer.cosineSchedule = true; optimizer.gradientClip = nil
        }
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a NeuMeta INR from a pretrained base network on this process.",
        discussion: """
        Loads the base checkpoint (from train-base), permutes its channels along shortest \
        Hamiltonian paths, then trains the INR over the width range with coordinate noise: \
        each round samples configurations (width, mini-batch, noise seed), averages their \
        gradients, steps AdamW and the EMA. Saves the EMA INR (plus optimizer state) to --out.

        Recipes: 'paper' is the paper's recipe exactly (16 frequencies, one width per step); \
        'default' is ours (6 frequencies, the pretrained width fitted every round next to a \
        uniformly drawn one, cosine learning rate).

        Example: neumeta-coordinator train --base runs/lenet-32.safetensors --epochs 6 --out runs/inr.safetensors
        """
    )

    @Option(help: "Pretrained base network checkpoint (train-base output).")
    var base: String

    @Option(help: "INR training epochs (passes over the training set, counting every configuration's batch).")
    var epochs: Double = 6

    @Option(help: "Where to write the INR checkpoint.")
    var out: String

    @Option(help: "Recipe: \(Recipe.allCases.map(\.rawValue).joined(separator: ", ")).")
    var recipe: Recipe = .default

    @Option(help: "Smallest trained width.") var minWidth = 8
    @Option(help: "Largest trained width (also the coordinate normaliser).") var maxWidth = 32
    @Option(help: "Configurations per round (overrides the recipe).") var configsPerRound: Int?
    @Option(help: "Sinusoidal frequencies F (overrides the recipe).") var frequencies: Int?
    @Option(help: "INR hidden width (overrides the recipe).") var hidden: Int?
    @Option(help: "INR layers L (overrides the recipe).") var layers: Int?
    @Option(help: "Learning rate (overrides the recipe).") var lr: Float?
    @Option(help: "λ_rec at round 0, the reconstruction weight at the pretrained width (overrides the recipe; decays linearly to 0).")
    var reconstruction: Float?
    @Option(help: "Reconstruction weight at the other widths toward the resampled pretrained network (0: off; overrides the recipe).")
    var resampledReconstruction: Float?
    @Flag(help: "Scale-free reconstruction: divide each tensor's error by Σ a·W*² instead of its element count.")
    var normalizedReconstruction = false
    @Option(help: "Mini-batch size.") var batchSize = 128
    @Option(help: "Coordinate noise ε.") var noise: Float = 1
    @Option(help: "Seed of the run (widths, batches, noise, INR initialisation).") var seed: UInt64 = 0
    @Option(help: "Print a progress line every this many rounds.") var logEvery = 50
    @Option(help: "Dataset directory (Fashion-MNIST IDX files).") var data = FashionMNIST.defaultDirectory
    @Flag(help: "Skip the channel permutation (ablation).") var noPermute = false
    @Flag(help: "Print one JSON object per logged round and a summary on standard output.") var json = false
    @OptionGroup var blas: BLASOptions

    func validate() throws {
        guard epochs > 0 else { throw ValidationError("--epochs must be positive") }
        guard minWidth >= 1, maxWidth >= minWidth else { throw ValidationError("need 1 ≤ --min-width ≤ --max-width") }
    }

    func run() throws {
        blas.apply()
        log(BLASRuntime.summary)
        let checkpoint = try NetworkCheckpoint.load(path: base)
        guard checkpoint.network.widths.count == 1 else { throw ValidationError("only single-width families are supported by train") }
        let train = try FashionMNIST.load(split: .train, directory: data)
        let test = try FashionMNIST.load(split: .test, directory: data)
        let pretrainedWidth = checkpoint.network.widths[0]
        log("base: \(checkpoint.network.family) width \(pretrainedWidth) from \(base)")

        var config = INRConfig(), plan = RoundPlan(), optimizer = OptimizerSettings()
        recipe.apply(to: &plan, &optimizer, &config)
        if let configsPerRound { plan.configurationsPerRound = configsPerRound }
        if let frequencies { config.frequencies = frequencies }
        if let hidden { config.hidden = hidden }
        if let layers { config.layers = layers }
        if let lr { optimizer.learningRate = lr }
        if let reconstruction { plan.reconstruction = reconstruction }
        if normalizedReconstruction { plan.normalizedReconstruction = true }
        if let resampledReconstruction { plan.resampledReconstruction = resampledReconstruction }
        config.norm = Float(maxWidth)
        plan.minWidth = minWidth; plan.maxWidth = maxWidth; plan.pretrainedWidth = pretrainedWidth
        plan.batchSize = batchSize; plan.noise = noise; plan.seed = seed; plan.datasetCount = train.count
        plan.rounds = max(1, Int((epochs * Double(plan.batchesPerEpoch) / Double(plan.configurationsPerRound)).rounded()))

        let permuted = checkpoint.parameters
        if !noPermute {
            let report = Permutation.permute(permuted, groups: checkpoint.network.channelGroups, seed: seed)
            log(String(format: "permuted %d channel groups: total variation %.1f → %.1f", report.groups.count, report.totalVariationBefore,
                       report.totalVariationAfter))
        }
        let inr = HyperNetwork(config: config, targetSpecs: checkpoint.network.trainableSpecs, seed: seed)
        let objective = ConfigurationGradient(inr: inr, family: checkpoint.network.family, dataset: train, mean: checkpoint.mean,
                                              std: checkpoint.std, pretrained: permuted, pretrainedWidth: pretrainedWidth)
        let trainer = INRTrainer(objective: objective, plan: plan, optimizer: optimizer)
        log("training INR (\(recipe.rawValue) recipe): \(inr.parameters.count) parameters, hidden \(config.hidden), L \(config.layers), F \(config.frequencies); "
            + "\(plan.rounds) rounds × \(plan.configurationsPerRound) configurations (\(String(format: "%.2f", plan.epochs)) epochs), widths \(minWidth)…\(maxWidth)")

        let start = Date()
        var window = LossTerms(), windowConfigs = 0
        var progress = ProgressLine()
        while trainer.round < plan.rounds {
            let r = try trainer.runRound()
            window = window + r.terms; windowConfigs += r.configurations
            let done = trainer.round, elapsed = Date().timeIntervalSince(start)
            let eta = elapsed / Double(done) * Double(plan.rounds - done)
            let n = Double(max(windowConfigs, 1))
            progress.draw(String(format: "round %d/%d  loss %.4f  ce %.4f  rec %.5f  acc %.1f%%  %@ elapsed, ETA %@", done, plan.rounds,
                                 window.total / n, window.crossEntropy / n, window.reconstruction / n,
                                 100 * Double(window.correct) / Double(max(window.samples, 1)), formatDuration(elapsed), formatDuration(eta)))
            if done % logEvery == 0 || done == plan.rounds {
                progress.clear()
                log(String(format: "round %d/%d  loss %.4f  ce %.4f  reg %.2f  rec %.5f  batch acc %.1f%%  lr %.2e  %.2f rounds/s  ETA %@", done,
                           plan.rounds, window.total / n, window.crossEntropy / n, window.normRegularizer / n, window.reconstruction / n,
                           100 * Double(window.correct) / Double(max(window.samples, 1)), r.learningRate, Double(done) / elapsed,
                           formatDuration(eta)))
                if json {
                    printJSON(["round": done, "loss": window.total / n, "cross_entropy": window.crossEntropy / n,
                               "norm_regularizer": window.normRegularizer / n, "reconstruction": window.reconstruction / n,
                               "batch_accuracy": Double(window.correct) / Double(max(window.samples, 1)), "seconds": elapsed])
                }
                window = LossTerms(); windowConfigs = 0
            }
        }
        let seconds = Date().timeIntervalSince(start)
        var saved = INRCheckpoint(trainer: trainer, base: permuted, family: checkpoint.network.family, mean: checkpoint.mean,
                                  std: checkpoint.std, recipe: recipe.rawValue)
        saved.extra["base_checkpoint"] = base
        saved.extra["train_seconds"] = String(format: "%.1f", seconds)
        try saved.save(to: out)
        log(String(format: "trained %d rounds in %@; saved %@", plan.rounds, formatDuration(seconds), out))

        let generator = saved.makeGenerator()
        var accuracies: [String: Double] = [:]
        for width in Set([minWidth, (minWidth + maxWidth) / 2, maxWidth]).sorted() {
            let (network, weights) = try generator.sample(width: width, samples: 1, noise: noise, seed: seed)
            let acc = BaseTrainer.accuracy(network: network, parameters: weights, data: test, mean: checkpoint.mean, std: checkpoint.std)
            accuracies[String(width)] = acc
            log(String(format: "sampled width %d (K=1): test accuracy %.2f%%", width, 100 * acc))
        }
        if json {
            printJSON(["rounds": plan.rounds, "epochs": plan.epochs, "seconds": seconds, "recipe": recipe.rawValue, "out": out,
                       "test_accuracy_k1": accuracies])
        }
    }
}
