import ArgumentParser
import Foundation
import CommandLineSupport
import NeuMeta

struct TrainBase: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-base",
        abstract: "Train one network of a family at a chosen width on this process.",
        discussion: """
        Trains with cross-entropy on inputs standardised by the training set's per-channel mean \
        and std, prints one line per epoch (a live progress line with images/s on a terminal), \
        and saves a safetensors checkpoint with PyTorch key names whose metadata records the \
        family, widths, image size, input mean/std and test accuracy. Also produces the \
        "individually trained" baseline at any width.

        Data: fashion-mnist (IDX) and cifar10/cifar100 (binary batches) are read into memory; \
        folder reads an ImageNet-style image folder DIR/train/<class>/*.{jpg,png} (tested on \
        DIR/val) streamed from disk: decoded on background threads --prefetch batches ahead, \
        augmented with a random-resized crop and a horizontal flip (evaluation: resize and centre \
        crop) at --image-size, normalised by statistics estimated from 500 training images.

        Recipes: LeNet trains with Adam (lr 1e-3); the ResNets with SGD, momentum 0.9, weight \
        decay 5e-4 and a cosine schedule from lr 0.1 — the options below override either.

        Examples:
          neumeta-coordinator train-base --width 32 --epochs 5 --out runs/lenet-32.safetensors
          neumeta-coordinator export-folder --dataset fashion-mnist --out runs/fmnist-64 --size 64
          neumeta-coordinator train-base --family resnet18 --widths 16,32,64,128 --dataset folder --data runs/fmnist-64 \
            --image-size 64 --epochs 10 --out runs/resnet18-16.safetensors
        """
    )

    @Option(help: "Network family (\(NetworkFamily.names.joined(separator: ", "))).")
    var family = "lenet"

    @Option(help: "Network width w: LeNet channels w, 2w, 4w; CIFAR ResNet stages w, 2w, 4w; ResNet-18 w…8w.")
    var width = 32

    @Option(help: "Explicit comma-separated widths (stage widths, then optional block hidden widths); overrides --width.")
    var widths: String?

    @Option(help: "Dataset: fashion-mnist (IDX files), cifar10 or cifar100 (binary batches), or folder (an ImageNet-style image folder) under --data.")
    var dataset = "fashion-mnist"

    @Option(help: "Side of the square input images of a folder dataset (ResNet-18 and the CIFAR ResNets take any).")
    var imageSize = 64

    @Option(help: "Batches a folder dataset decodes ahead on background threads.")
    var prefetch = 8

    @Option(help: "Training epochs.")
    var epochs = 5

    @Option(help: "Mini-batch size.")
    var batchSize = 128

    @Option(help: "Optimizer: adam or sgd (default: adam for LeNet, sgd for the ResNets).")
    var optimizer: String?

    @Option(help: "Learning rate (default: 1e-3 with adam, 0.1 with sgd).")
    var lr: Float?

    @Option(help: "SGD momentum.")
    var momentum: Float = 0.9

    @Option(help: "Weight decay (default: 0 with adam, 5e-4 with sgd).")
    var weightDecay: Float?

    @Option(help: "Cosine learning-rate schedule to 0: true or false (default: true with sgd).")
    var cosine: Bool?

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
        guard ["fashion-mnist", "cifar10", "cifar100", "folder"].contains(dataset) else {
            throw ValidationError("--dataset must be fashion-mnist, cifar10, cifar100 or folder, not '\(dataset)'")
        }
        guard (1...4096).contains(imageSize) else { throw ValidationError("--image-size must be in 1…4096") }
        guard prefetch >= 0 else { throw ValidationError("--prefetch must not be negative") }
        if let optimizer, !["adam", "sgd"].contains(optimizer) { throw ValidationError("--optimizer must be adam or sgd, not '\(optimizer)'") }
        if let weightDecay, !(weightDecay >= 0) { throw ValidationError("--weight-decay must be ≥ 0") }
        guard momentum >= 0 && momentum < 1 else { throw ValidationError("--momentum must be in [0, 1)") }
        guard dataset == "fashion-mnist" || data != nil else { throw ValidationError("--dataset \(dataset) needs --data DIR") }
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        if let lr, !(lr > 0) { throw ValidationError("--lr must be positive") }
    }

    /// Training and test data, and the input normalisation (nil: the training set's own).
    func loadData() throws -> (train: any TrainingImages, test: any TrainingImages, mean: [Float]?, std: [Float]?) {
        switch dataset {
        case "folder":
            let root = data!
            let train = try ImageFolderDataset(root: root, split: "train"), test = try ImageFolderDataset(root: root, split: "val")
            guard train.classNames == test.classNames else {
                throw ValidationError("\(root): train/ and val/ have different classes (\(train.classNames.count) and \(test.classNames.count))")
            }
            let (mean, std) = try StreamingImageFolder.channelMeanStd(of: train, size: imageSize)
            log("input statistics from 500 training images: mean \(mean.map { String(format: "%.3f", $0) }), std \(std.map { String(format: "%.3f", $0) })")
            return (StreamingImageFolder(folder: train, transform: .train, size: imageSize, mean: mean, std: std, depth: prefetch),
                    StreamingImageFolder(folder: test, transform: .eval, size: imageSize, mean: mean, std: std, depth: 0), mean, std)
        case "cifar10", "cifar100":
            let variant: CIFAR.Variant = dataset == "cifar10" ? .cifar10 : .cifar100
            return (try CIFAR.load(split: .train, directory: data!, variant: variant), try CIFAR.load(split: .test, directory: data!, variant: variant),
                    nil, nil)
        default:
            let directory = data ?? FashionMNIST.defaultDirectory
            return (try FashionMNIST.load(split: .train, directory: directory), try FashionMNIST.load(split: .test, directory: directory), nil, nil)
        }
    }

    func run() throws {
        blas.apply()
        log(BLASRuntime.summary)
        let (train, test, mean, std) = try loadData()
        log("data: \(train.count) training and \(test.count) test images (\(train.name))")
        let chosen = try widths.map { try parseWidths($0, option: "--widths") } ?? NetworkFamily.widths(family, scaledFrom: width)
        let shape = train.batchImageShape
        let network = try NetworkFamily.make(family, widths: chosen, classCount: train.classCount,
                                             imageSize: shape.channels == 3 ? shape.height : nil)
        let sgd = (optimizer ?? (family == "lenet" ? "adam" : "sgd")) == "sgd"
        var config = BaseTrainingConfig()
        config.epochs = epochs; config.batchSize = batchSize; config.seed = seed
        config.optimizer = sgd ? .sgd(momentum: momentum) : .adam
        config.learningRate = lr ?? (sgd ? 0.1 : 1e-3)
        config.weightDecay = weightDecay ?? (sgd ? 5e-4 : 0)
        config.cosine = cosine ?? sgd
        let trainer = try BaseTrainer(network: network, train: train, test: test, config: config, mean: mean, std: std)
        let input = network.inputShape.map(String.init).joined(separator: "×")
        let method: String = sgd ? "SGD momentum \(momentum)" : "Adam"
        let schedule: String = config.cosine ? ", cosine schedule" : ""
        log("training \(family) widths \(network.widths) on \(input) inputs: \(trainer.parameters.count) parameters, \(epochs) epochs, "
            + "batch \(batchSize), \(method) lr \(config.learningRate), weight decay \(config.weightDecay)\(schedule)")

        var progress = ProgressLine()
        let result = try trainer.run(onStep: { s in
            let done = Double((s.epoch - 1) * s.steps + s.step), total = Double(epochs * s.steps)
            let eta = s.elapsed / done * (total - done)
            progress.draw(String(format: "epoch %d/%d  step %d/%d  loss %.4f  %.0f images/s  %@ elapsed, ETA %@", s.epoch, epochs, s.step, s.steps,
                                 s.loss, s.imagesPerSecond, formatDuration(s.elapsed), formatDuration(eta)))
        }, onEpoch: { r in
            progress.clear()
            let eta = r.elapsed / Double(r.epoch) * Double(r.epochs - r.epoch)
            log(String(format: "epoch %d/%d  loss %.4f  train acc %.2f%%  test acc %.2f%%  %.1fs  %.0f images/s  (ETA %@)", r.epoch, r.epochs,
                       r.trainLoss, 100 * r.trainAccuracy, 100 * r.testAccuracy, r.seconds, Double(train.count) / r.seconds, formatDuration(eta)))
        })!

        let checkpoint = NetworkCheckpoint(network: network, parameters: trainer.parameters, mean: trainer.mean, std: trainer.std,
                                           metadata: ["test_accuracy": String(result.testAccuracy), "epochs": String(epochs),
                                                      "seed": String(seed), "dataset": train.name])
        try checkpoint.save(to: out)
        log(String(format: "test accuracy %.2f%% after %d epochs in %.1fs; saved %@", 100 * result.testAccuracy, epochs, result.elapsed, out))
        if json {
            printJSON(["family": family, "width": network.widths[0], "widths": network.widths, "epochs": epochs, "test_accuracy": result.testAccuracy,
                       "train_loss": result.trainLoss, "seconds": result.elapsed, "image_size": network.inputShape[1], "parameters": trainer.parameters.count,
                       "checkpoint": out, "blas_core": BLASRuntime.coreName])
        }
    }
}
