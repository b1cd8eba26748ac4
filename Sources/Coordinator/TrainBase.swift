import ArgumentParser
import Foundation
import NeuMeta

struct TrainBase: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-base",
        abstract: "Train one network of a family at a chosen width on this process.",
        discussion: """
        Trains with Adam and cross-entropy on inputs standardised by the training set's \
        per-channel mean and std, prints one line per epoch (a live progress line on a \
        terminal), and saves a safetensors checkpoint with PyTorch key names whose metadata \
        records the family, widths, input mean/std and test accuracy. Also produces the \
        "individually trained" baseline at any width.

        Example: neumeta-coordinator train-base --width 32 --epochs 5 --out runs/lenet-32.safetensors
        """
    )

    @Option(help: "Network family (\(NetworkFamily.names.joined(separator: ", "))).")
    var family = "lenet"

    @Option(help: "Network width w: LeNet channels w, 2w, 4w; CIFAR ResNet stages w, 2w, 4w; ResNet-18 w…8w.")
    var width = 32

    @Option(help: "Explicit comma-separated widths (stage widths, then optional block hidden widths); overrides --width.")
    var widths: String?

    @Option(help: "Dataset: fashion-mnist (IDX files), cifar10 or cifar100 (binary batches) under --data.")
    var dataset = "fashion-mnist"

    @Option(help: "Training epochs.")
    var epochs = 5

    @Option(help: "Mini-batch size.")
    var batchSize = 128

    @Option(help: "Adam learning rate.")
    var lr: Float = 1e-3

    @Option(help: "Seed for initialisation and data order.")
    var seed: UInt64 = 0

    @Option(help: "Dataset directory (default for fashion-mnist: \(FashionMNIST.defaultDirectory)).")
    var data: String?

    @Option(help: "Where to write the checkpoint (.safetensors).")
    var out: String

    @Flag(help: "Print one JSON object with the result on standard output.")
    var json = false

    @OptionGroup var blas: BLASOptions

    func validate() throws {
        guard width >= 1 else { throw ValidationError("--width must be at least 1") }
        guard ["fashion-mnist", "cifar10", "cifar100"].contains(dataset) else {
            throw ValidationError("--dataset must be fashion-mnist, cifar10 or cifar100, not '\(dataset)'")
        }
        guard dataset == "fashion-mnist" || data != nil else { throw ValidationError("--dataset \(dataset) needs --data DIR") }
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard lr > 0 else { throw ValidationError("--lr must be positive") }
    }

    func loadData() throws -> (ImageDataset, ImageDataset) {
        switch dataset {
        case "cifar10", "cifar100":
            let variant: CIFAR.Variant = dataset == "cifar10" ? .cifar10 : .cifar100
            return (try CIFAR.load(split: .train, directory: data!, variant: variant), try CIFAR.load(split: .test, directory: data!, variant: variant))
        default:
            let directory = data ?? FashionMNIST.defaultDirectory
            return (try FashionMNIST.load(split: .train, directory: directory), try FashionMNIST.load(split: .test, directory: directory))
        }
    }

    func run() throws {
        blas.apply()
        log(BLASRuntime.summary)
        let (train, test) = try loadData()
        log("data: \(train.count) training and \(test.count) test images (\(train.name))")
        let chosen = try widths.map { try parseWidths($0, option: "--widths") } ?? NetworkFamily.widths(family, scaledFrom: width)
        let network = try NetworkFamily.make(family, widths: chosen, classCount: train.classCount)
        var config = BaseTrainingConfig()
        config.epochs = epochs; config.batchSize = batchSize; config.learningRate = lr; config.seed = seed
        let trainer = try BaseTrainer(network: network, train: train, test: test, config: config)
        log("training \(family) widths \(network.widths): \(trainer.parameters.count) parameters, \(epochs) epochs, batch \(batchSize), Adam lr \(lr)")

        var progress = ProgressLine()
        let result = try trainer.run(onStep: { s in
            let done = Double((s.epoch - 1) * s.steps + s.step), total = Double(epochs * s.steps)
            let eta = s.elapsed / done * (total - done)
            progress.draw(String(format: "epoch %d/%d  step %d/%d  loss %.4f  %@ elapsed, ETA %@", s.epoch, epochs, s.step, s.steps,
                                 s.loss, formatDuration(s.elapsed), formatDuration(eta)))
        }, onEpoch: { r in
            progress.clear()
            let eta = r.elapsed / Double(r.epoch) * Double(r.epochs - r.epoch)
            log(String(format: "epoch %d/%d  loss %.4f  train acc %.2f%%  test acc %.2f%%  %.1fs  (ETA %@)", r.epoch, r.epochs,
                       r.trainLoss, 100 * r.trainAccuracy, 100 * r.testAccuracy, r.seconds, formatDuration(eta)))
        })!

        let checkpoint = NetworkCheckpoint(network: network, parameters: trainer.parameters, mean: trainer.mean, std: trainer.std,
                                           metadata: ["test_accuracy": String(result.testAccuracy), "epochs": String(epochs),
                                                      "seed": String(seed), "dataset": train.name])
        try checkpoint.save(to: out)
        log(String(format: "test accuracy %.2f%% after %d epochs in %.1fs; saved %@", 100 * result.testAccuracy, epochs, result.elapsed, out))
        if json {
            printJSON(["family": family, "width": network.widths[0], "widths": network.widths, "epochs": epochs, "test_accuracy": result.testAccuracy,
                       "train_loss": result.trainLoss, "seconds": result.elapsed, "parameters": trainer.parameters.count,
                       "checkpoint": out, "blas_core": BLASRuntime.coreName])
        }
    }
}
