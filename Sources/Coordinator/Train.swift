import ArgumentParser
import Foundation
import CommandLineSupport
import NeuMeta

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a NeuMeta INR in this process: the experiment of cluster.yaml without the cluster.",
        discussion: """
        Reads the experiment from --config (cluster.yaml: its experiment, base, checkpoints and \
        output sections; the options below override it). Loads the base network (training it \
        first when base.checkpoint is missing), permutes its channels along shortest Hamiltonian \
        paths, then trains the INR over the width range with coordinate noise: each round samples \
        configurations (width, mini-batch, noise seed), sums their gradients in configuration \
        order, steps AdamW and the EMA — the same round loop `run` drives with cluster workers, \
        so both give the same bits. Checkpoints every checkpoints.every_rounds rounds; --resume \
        continues from the newest good one and ends exactly where an uninterrupted run would. \
        Saves the EMA INR (plus optimizer state) to output.inr and reports the test accuracy of \
        networks sampled at the smallest, middle and largest trained width.

        Recipes: 'paper' is the paper's recipe exactly (16 frequencies, noise 1, one width per \
        step); 'default' is ours (the INR's output added to the base network resampled to the \
        width, 6 frequencies, noise 0.5, two uniformly drawn widths per step on one shared \
        mini-batch; constant learning rate 1e-3 as in the paper).

        Example: neumeta-coordinator train --config cluster.yaml --epochs 6 --out runs/inr.safetensors --checkpoint-dir runs/train-checkpoints
        """
    )

    @OptionGroup var experiment: ExperimentOptions
    @OptionGroup var blas: BLASOptions

    func run() throws {
        blas.apply()
        log(BLASRuntime.summary)
        let c = try experiment.settings()
        let setup = try TrainingSetup(c, baseGiven: experiment.base != nil, permute: !experiment.noPermute)
        let run = try TrainingRun(options: experiment, setup: setup)
        let source = try setup.makeLocalSource(for: run.trainer)
        let seconds = try run.train(with: source)

        let plan = run.trainer.plan
        let test = try setup.data.test(setup.dataset, mean: setup.checkpoint.mean, std: setup.checkpoint.std, classCount: setup.classCount)
        let generator = run.trainer.checkpoint().makeGenerator()
        var accuracies: [String: Double] = [:]
        for width in Set([plan.minWidth, (plan.minWidth + plan.maxWidth) / 2, plan.maxWidth]).sorted() {
            let (network, weights) = try generator.sample(width: width, samples: 1, noise: plan.noise, seed: plan.seed)
            try BatchNormRecalibration.recalibrate(network: network, parameters: weights, data: source.objective.dataset,
                                                   mean: setup.checkpoint.mean, std: setup.checkpoint.std,
                                                   batches: BatchNormRecalibration.defaultBatches, batchSize: plan.batchSize, seed: plan.seed)
            let acc = try BaseTrainer.accuracy(network: network, parameters: weights, data: test, mean: setup.checkpoint.mean,
                                           std: setup.checkpoint.std)
            accuracies[String(width)] = acc
            log(String(format: "sampled width %d (K=1): test accuracy %.2f%%", width, 100 * acc))
        }
        if experiment.json {
            printJSON(run.summary(["epochs": plan.epochs, "seconds": seconds, "recipe": setup.recipe.rawValue, "test_accuracy_k1": accuracies]))
        }
    }
}
