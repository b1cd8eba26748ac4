import ArgumentParser
import Foundation
import CommandLineSupport
import NeuMeta

struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export a network of any width sampled from a trained INR.",
        discussion: """
        Generates the width-w network from the EMA INR (averaging K samples: the first with clean \
        coordinates, the rest with coordinate noise) and writes it as a safetensors file with the \
        base family's PyTorch key names and input normalisation, loadable by train-base's \
        consumers and by PyTorch. With --evaluate, prints its test accuracy. A network with batch \
        norm gets its running statistics recomputed on --recalibration-batches training batches \
        (--data names the data set's directory where it is not Fashion-MNIST's default).

        Example: neumeta-coordinator sample --inr runs/inr.safetensors --width 20 --out runs/lenet-20.safetensors
        """
    )

    @Option(help: "INR checkpoint (train output).") var inr: String
    @Option(help: "Width of the sampled network (any positive integer).") var width: Int
    @Option(help: "Where to write the network (.safetensors).") var out: String
    @Option(help: "Samples K to average.") var samples = 1
    @Option(help: "Coordinate noise ε of samples 2…K (default: the training noise).") var noise: Float?
    @Option(help: "Seed of the sampling noise.") var seed: UInt64 = 0
    @Flag(help: "Also measure the test accuracy of the sampled network.") var evaluate = false
    @Option(help: "Dataset directory (default for fashion-mnist: \(FashionMNIST.defaultDirectory)).") var data: String?
    @Option(help: "Dataset: fashion-mnist, cifar10, cifar100 or folder (default: the one the INR was trained on).") var dataset: String?
    @Option(help: "Training batches the running statistics of a network with batch norm are recomputed on.")
    var recalibrationBatches = BatchNormRecalibration.defaultBatches
    @Flag(help: "Print one JSON object with the result.") var json = false
    @OptionGroup var blas: BLASOptions

    func validate() throws {
        guard width >= 1 else { throw ValidationError("--width must be at least 1") }
        guard samples >= 1 else { throw ValidationError("--samples must be at least 1") }
        guard recalibrationBatches >= 1 else { throw ValidationError("--recalibration-batches must be at least 1") }
    }

    func run() throws {
        blas.apply()
        let checkpoint = try INRCheckpoint.load(path: inr)
        let generator = checkpoint.makeGenerator()
        let (network, weights) = try generator.sample(width: width, samples: samples, noise: noise ?? checkpoint.plan.noise, seed: seed)
        var metadata = ["sampled_from": inr, "samples": String(samples), "recipe": checkpoint.recipe]
        var result: [String: Any] = ["width": width, "samples": samples, "out": out, "params": weights.count]
        let needsData = evaluate || weights.specs.contains { $0.role == .runningMean }
        let sets = needsData ? try SampledNetworkData(checkpoint: checkpoint, dataset: dataset, directory: data) : nil
        if let sets, sets.train != nil {
            try sets.recalibrate(network, weights, checkpoint: checkpoint, batches: recalibrationBatches)
            metadata["recalibration_batches"] = String(recalibrationBatches)
        }
        if evaluate, let test = sets?.test {
            let accuracy = try BaseTrainer.accuracy(network: network, parameters: weights, data: test, mean: checkpoint.mean, std: checkpoint.std)
            metadata["test_accuracy"] = String(accuracy)
            result["test_accuracy"] = accuracy
            log(String(format: "width %d (K=%d): test accuracy %.2f%%", width, samples, 100 * accuracy))
        }
        try NetworkCheckpoint(network: network, parameters: weights, mean: checkpoint.mean, std: checkpoint.std, metadata: metadata).save(to: out)
        log("wrote \(network.family) width \(width) (\(weights.count) parameters) to \(out)")
        if json { printJSON(result) }
    }
}
