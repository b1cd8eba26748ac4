import ArgumentParser
import Foundation
import CommandLineSupport
import NeuMeta

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Test accuracy of sampled networks across widths, beside individually trained and L1-pruned baselines.",
        discussion: """
        For each width: the network sampled from the EMA INR with K = 1 and with K = --samples \
        (noise-averaged), an individually trained network of that width (read from --baselines \
        DIR/<family>-<w>.safetensors, for a ResNet DIR/<family>-<morph>-<w>.safetensors; trained \
        there first with --train-baselines, the train-base recipe), \
        L1-norm channel pruning of the base network without fine-tuning (widths up to the \
        base width), and the permuted base network resampled to the width (neighbouring channels \
        merged or split: outputs averaged, inputs summed; docs/algorithm.md §2). Writes the table as CSV and Markdown and an SVG plot next to --out. \
        Widths are the INR's scalar width: LeNet's w, a ResNet's first stage width (morph all; \
        the other widths keep the base's ratios) or its last block's hidden width (morph \
        last-block). Networks with batch norm that were not trained at their width (sampled, \
        pruned, resampled) get their running statistics recomputed on --recalibration-batches \
        training batches; individually trained ones keep theirs.

        Example: neumeta-coordinator evaluate --inr runs/inr.safetensors --widths 4,8,16,32,48 --samples 10 --json
        """
    )

    @Option(help: "INR checkpoint (train output).") var inr: String
    @Option(help: "Comma-separated widths.") var widths = "4,6,8,12,16,20,24,28,32,36,40,48"
    @Option(help: "K of the noise-averaged column.") var samples = 10
    @Option(help: "Directory of individually trained baselines (<family>-<w>.safetensors; a ResNet's <family>-<morph>-<w>.safetensors).") var baselines = "runs/baselines"
    @Flag(help: "Train missing individual baselines (train-base recipe) into --baselines.") var trainBaselines = false
    @Option(help: "Epochs for baselines trained with --train-baselines.") var baselineEpochs = 5
    @Option(help: "Output prefix: writes PREFIX.csv, PREFIX.md, PREFIX.svg (default: next to --inr).") var out: String?
    @Option(help: "Seed of the sampling noise.") var seed: UInt64 = 0
    @Flag(help: "Sample from the raw last-step INR parameters instead of their EMA.") var raw = false
    @Option(help: "Dataset directory (default for fashion-mnist: \(FashionMNIST.defaultDirectory)).") var data: String?
    @Option(help: "Dataset: fashion-mnist, cifar10, cifar100 or folder (default: the one the INR was trained on; a folder is tested on DIR/val at the INR's image size).")
    var dataset: String?
    @Option(help: "Training batches the running statistics of a sampled network with batch norm are recomputed on.")
    var recalibrationBatches = BatchNormRecalibration.defaultBatches
    @Flag(help: "Print the table as one JSON object ({\"rows\": [...]}).") var json = false
    @OptionGroup var blas: BLASOptions

    func parsedWidths() throws -> [Int] {
        try parseWidths(widths, option: "--widths")
    }

    func validate() throws {
        _ = try parsedWidths()
        guard samples >= 1 else { throw ValidationError("--samples must be at least 1") }
        guard recalibrationBatches >= 1 else { throw ValidationError("--recalibration-batches must be at least 1") }
    }

    func run() throws {
        blas.apply()
        let checkpoint = try INRCheckpoint.load(path: inr)
        let variant = try SampledVariant(checkpoint, dataset: dataset, directory: data, ema: !raw, recalibrationBatches: recalibrationBatches)
        let family = checkpoint.family, baseWidth = checkpoint.plan.pretrainedWidth
        let baseNetwork = try checkpoint.morph.network(width: baseWidth, classCount: checkpoint.classCount)
        let kColumn = "neumeta_k\(samples)"
        var columns = ["neumeta_k1"]
        if samples != 1 { columns.append(kColumn) }
        columns += ["individual", "pruning_l1", "resampled"]
        var table = ResultTable(columns: columns)
        let prefix = out ?? (inr.hasSuffix(".safetensors") ? String(inr.dropLast(".safetensors".count)) : inr) + ".eval"
        let start = Date()
        for width in try parsedWidths() {
            var row: [String: Double] = [:]
            let one = try variant.accuracy(width: width, samples: 1, seed: seed)
            row["neumeta_k1"] = one.accuracy
            if samples != 1 { row[kColumn] = try variant.accuracy(width: width, samples: samples, seed: seed).accuracy }
            if let individual = try individualBaseline(checkpoint, variant.sets, width: width) {
                row["individual"] = try BaseTrainer.accuracy(network: individual.network, parameters: individual.parameters, data: variant.sets.test,
                                                             mean: individual.mean, std: individual.std)
            }
            if width <= baseWidth {
                let pruned = try L1Pruning.prune(checkpoint.base, from: baseNetwork, to: one.network)
                row["pruning_l1"] = try variant.testAccuracy(one.network, pruned)
            }
            row["resampled"] = try variant.resampledBaseAccuracy(width: width)
            table.add(width: width, params: one.parameters, accuracies: row)
            log("width \(width): " + columns.map { c in row[c].map { String(format: "%@ %.2f%%", c, 100 * $0) } ?? "\(c) –" }.joined(separator: "  ")
                + String(format: "  (%@ elapsed)", formatDuration(Date().timeIntervalSince(start))))
        }
        try FileManager.default.createDirectory(atPath: (prefix as NSString).deletingLastPathComponent.isEmpty ? "." :
                                                (prefix as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try table.csv.write(toFile: prefix + ".csv", atomically: true, encoding: .utf8)
        try table.markdown.write(toFile: prefix + ".md", atomically: true, encoding: .utf8)
        var plot = LinePlot(title: "\(family), \(variant.sets.test.name), trained widths \(checkpoint.plan.minWidth)-\(checkpoint.plan.maxWidth)",
                            xLabel: "width", yLabel: "test accuracy %")
        for c in columns { plot.add(series: c, points: table.points(c)) }
        try plot.writeSVG(to: prefix + ".svg")
        if json { log(table.markdown) } else { print(table.markdown, terminator: "") }
        log("wrote \(prefix).csv, \(prefix).md, \(prefix).svg")
        if json { printJSON(["rows": table.jsonRows, "inr": inr, "samples": samples]) }
    }

    /// The individually trained network of `width`, trained first when asked and missing.
    /// LeNet's lives at `<family>-<w>.safetensors`; a ResNet's, whose scalar width stands for
    /// several, at `<family>-<morph>-<w>.safetensors` (its widths: `MorphPlan.widths(for:)`).
    /// A family whose batch norm was folded for generation is trained with batch norm, as
    /// networks of it are (`resnet20-folded` → `resnet20`).
    func individualBaseline(_ checkpoint: INRCheckpoint, _ sets: SampledNetworkData, width: Int) throws -> NetworkCheckpoint? {
        let morph = checkpoint.morph
        let family = NetworkFamily.unfolded(checkpoint.family)
        let widths = morph.widths(for: width), singleWidth = morph.baseWidths.count == 1
        let path = singleWidth ? "\(baselines)/\(family)-\(width).safetensors" : "\(baselines)/\(family)-\(morph.scope.rawValue)-\(width).safetensors"
        if FileManager.default.fileExists(atPath: path) {
            // A broken or mismatched baseline costs its cell, not the whole table.
            do {
                let baseline = try NetworkCheckpoint.load(path: path)
                guard baseline.network.widths == widths else {
                    log("ignoring the individual baseline \(path): its widths \(baseline.network.widths) are not \(widths)")
                    return nil
                }
                return baseline
            } catch {
                log("ignoring the individual baseline \(path): \(error)")
                return nil
            }
        }
        guard trainBaselines else { return nil }
        log("training the individual baseline \(family) widths \(widths) (\(baselineEpochs) epochs) into \(path)")
        try FileManager.default.createDirectory(atPath: baselines, withIntermediateDirectories: true)
        var arguments = ["--family", family, "--widths", widths.map(String.init).joined(separator: ","), "--epochs", String(baselineEpochs),
                         "--dataset", sets.dataset.kind.rawValue, "--data", sets.directory, "--out", path]
        if let size = sets.dataset.imageSize { arguments += ["--image-size", String(size)] }
        let command = try TrainBase.parse(arguments)
        try command.run()
        return try NetworkCheckpoint.load(path: path)
    }
}
