import ArgumentParser
import Foundation
import NeuMeta

struct TrainBase: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-base",
        abstract: "Train one network of a family at a chosen width on this process.",
        discussion: """
        Trains with Adam and cross-entropy on inputs standardised by the training set's
        per-channel mean and std, prints one line per epoch (a live progress line on a
        terminal), and saves a safetensors checkpoint with PyTorch key names whose metadata
        records the family, widths, input mean/std and test accuracy. Also produces the
        "individually trained" baseline at any width.

        Example: neumeta-coordinator train-base --width 32 --epochs 5 --out runs/lenet-32.safetensors
        """
    )

    @Option(help: "Network family (\(NetworkFamily.names.joined(separator: ", "))).")
    var family = "lenet"

    @Option(help: "Network width (LeNet: w, giving channels w, 2w, 4w).")
    var width = 32

    @Option(help: "Training epochs.")
    var epochs = 5

    @Option(help: "Mini-batch size.")
    var batchSize = 128

    @Option(help: "Adam learning rate.")
    var lr: Float = 1e-3

    @Option(help: "Seed for initialisation and data order.")
    var seed: UInt64 = 0

    @Option(help: "Dataset directory (Fashion-MNIST IDX files, gzipped or not).")
    var data = FashionMNIST.defaultDirectory

    @Option(help: "Where to write the checkpoint (.safetensors).")
    var out: String

    @Flag(help: "Print one JSON object with the result on standard output.")
    var json = false

    @OptionGroup var blas: BLASOptions

    func validate() throws {
        guard width >= 1 else { throw ValidationError("--width must be at least 1") }
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard lr > 0 else { throw ValidationError("--lr must be positive") }
    }

    func run() throws {
        blas.apply()
        log(BLASRuntime.summary)
        let train = try FashionMNIST.load(split: .train, directory: data)
        let test = try FashionMNIST.load(split: .test, directory: data)
        log("data: \(train.count) training and \(test.count) test images from \(data)")
        let network = try NetworkFamily.make(family, widths: [width], classCount: train.classCount)
        var config = BaseTrainingConfig()
        config.epochs = epochs; config.batchSize = batchSize; config.learningRate = lr; config.seed = seed
        let trainer = BaseTrainer(network: network, train: train, test: test, config: config)
        log("training \(family) width \(width): \(trainer.parameters.count) parameters, \(epochs) epochs, batch \(batchSize), Adam lr \(lr)")

        var progress = ProgressLine()
        let result = trainer.run(onStep: { s in
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
            printJSON(["family": family, "width": width, "epochs": epochs, "test_accuracy": result.testAccuracy,
                       "train_loss": result.trainLoss, "seconds": result.elapsed, "parameters": trainer.parameters.count,
                       "checkpoint": out, "blas_core": BLASRuntime.coreName])
        }
    }
}
