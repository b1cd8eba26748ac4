import ArgumentParser
import Foundation
import NeuMeta

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a NeuMeta INR from a pretrained base network on this process.",
        discussion: """
        Loads the base checkpoint (from train-base), permutes its channels along shortest \
        Hamiltonian paths, then trains the INR over the width range with coordinate noise: \
        each round samples configurations (width, mini-batch, noise seed), averages their \
        gradients, steps AdamW and the EMA. Saves the EMA INR (plus optimizer state) to --out.

        Recipes: 'paper' is the paper's recipe exactly (16 frequencies, noise 1, one width per \
        step); 'default' is ours (6 frequencies, noise 0.5, two uniformly drawn widths per step \
        on one shared mini-batch; constant learning rate 1e-3 as in the paper).

        Example: neumeta-coordinator train --base runs/lenet-32.safetensors --epochs 6 --out runs/inr.safetensors
        """
    )

    @Option(help: "Pretrained base network checkpoint (train-base output).")
    var base: String

    @Option(help: "INR training epochs (passes over the training set by the uniformly drawn widths; the default recipe's pretrained-width fit reuses their batches).")
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
    @Option(help: "Coordinate noise ε (overrides the recipe).") var noise: Float?
    @Option(help: "Seed of the run (widths, batches, noise, INR initialisation).") var seed: UInt64 = 0
    @Option(help: "Print a progress line every this many rounds.") var logEvery = 50
    @Option(help: "Dataset directory (Fashion-MNIST IDX files).") var data = FashionMNIST.defaultDirectory
    @Option(help: "Every configuration of a round uses the round's one mini-batch (true/false; overrides the recipe).")
    var sharedBatch: Bool?

    @Option(help: "Make configuration 0 of every round the pretrained width, on configuration 1's batch (true/false; overrides the recipe).")
    var fitPretrainedEveryRound: Bool?

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
        var overrides = RecipeOverrides()
        overrides.configurationsPerRound = configsPerRound; overrides.frequencies = frequencies; overrides.hidden = hidden
        overrides.layers = layers; overrides.learningRate = lr; overrides.reconstruction = reconstruction
        overrides.resampledReconstruction = resampledReconstruction
        overrides.normalizedReconstruction = normalizedReconstruction ? true : nil
        overrides.sharedBatch = sharedBatch; overrides.noise = noise; overrides.fitPretrainedEveryRound = fitPretrainedEveryRound
        let setup = try TrainingSetup(base: base, data: data, recipe: recipe, overrides: overrides, minWidth: minWidth, maxWidth: maxWidth,
                                      epochs: epochs, batchSize: batchSize, seed: seed, permute: !noPermute)
        let test = try FashionMNIST.load(split: .test, directory: data)
        let trainer = setup.makeTrainer()
        let plan = trainer.plan, checkpoint = setup.checkpoint

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
        var saved = setup.checkpoint(of: trainer)
        saved.extra["base_checkpoint"] = base
        saved.extra["train_seconds"] = String(format: "%.1f", seconds)
        try saved.save(to: out)
        log(String(format: "trained %d rounds in %@; saved %@", plan.rounds, formatDuration(seconds), out))

        let generator = saved.makeGenerator()
        var accuracies: [String: Double] = [:]
        for width in Set([minWidth, (minWidth + maxWidth) / 2, maxWidth]).sorted() {
            let (network, weights) = try generator.sample(width: width, samples: 1, noise: plan.noise, seed: seed)
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
