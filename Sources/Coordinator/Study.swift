import ArgumentParser
import Foundation
import CommandLineSupport
import NeuMeta

/// NeuMeta's open questions, each answered by one command that trains the INRs it compares
/// (in this process, as `train` does) and tests networks sampled from them.
struct Study: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Answer the method's open questions by measurement: extrapolation beyond the trained widths, smoothness against accuracy.",
        discussion: """
        Each study trains the INRs it compares with `train` (the experiment of --config, \
        cluster.yaml by default, with the study's overrides), one after the other, into --out: \
        <variant>.safetensors, its checkpoints and metrics. An INR already trained to the end is \
        reused, an interrupted one resumed, so a study that stops part-way continues where it \
        stopped. Then every variant's sampled networks are tested on the test set, and the study \
        writes its table (Markdown and CSV) and an SVG plot into --out.

        The cost question (generation time per width, bytes of the INR against every individually \
        trained width) is measured by `neumeta-bench --parts generation`.
        """,
        subcommands: [StudyExtrapolation.self, StudySmoothness.self]
    )
}

/// The options every study shares.
struct StudyOptions: ParsableArguments {
    @Option(help: "Experiment description the INRs are trained with (default: cluster.yaml in the current directory, or the built-in defaults).")
    var config: String?
    @Option(help: "Start from this trained base network (overrides base.checkpoint).") var base: String?
    @Option(help: "Dataset directory (overrides experiment.data).") var data: String?
    @Option(help: "INR epochs of every variant.") var epochs: Double = 6
    @Option(help: "Widths tested (default: the study's).") var widths: String?
    @Option(help: "K of the noise-averaged samples.") var samples = 10
    @Option(help: "Seed of the sampling noise.") var seed: UInt64 = 0
    @Option(help: "Compute threads (default: one per core).") var threads: Int?

    func validate() throws {
        guard epochs.isFinite && epochs > 0 else { throw ValidationError("--epochs must be a positive number") }
        guard samples >= 1 else { throw ValidationError("--samples must be at least 1") }
        if let widths { _ = try parseWidths(widths, option: "--widths") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    /// The INR of variant `name` trained with `overrides` (train options) into `out`, or the one
    /// already there when it is finished.
    func trainedVariant(_ name: String, out: String, overrides: [String]) throws -> INRCheckpoint {
        let path = "\(out)/\(name).safetensors"
        if FileManager.default.fileExists(atPath: path), let done = try? INRCheckpoint.load(path: path),
           done.round == done.plan.rounds, done.plan.rounds(forEpochs: epochs) == done.plan.rounds {
            log("\(name): reusing \(path) (\(done.round) rounds)")
            return done
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        log("\(name): training (\(overrides.joined(separator: " ")))")
        var arguments = ["--epochs", String(epochs), "--out", path, "--checkpoint-dir", "\(out)/\(name)-checkpoints",
                         "--metrics", "\(out)/\(name).jsonl", "--resume", "--log-every", "200"] + overrides
        if let config { arguments += ["--config", config] }
        if let base { arguments += ["--base", base] }
        if let data { arguments += ["--data", data] }
        if let threads { arguments += ["--threads", String(threads)] }
        try Train.parse(arguments).run()
        return try INRCheckpoint.load(path: path)
    }

    /// The experiment's dataset directory (--data, or the config's experiment.data).
    func dataDirectory() throws -> String {
        if let data { return data }
        return try ExperimentOptions.parse(config.map { ["--config", $0] } ?? []).settings().experiment.data
    }

    /// The variant's networks under test on the experiment's test set.
    func sampled(_ checkpoint: INRCheckpoint) throws -> SampledVariant {
        try SampledVariant(checkpoint, directory: dataDirectory())
    }

    /// Writes `markdown`, `csv` and the plot into `out`/`name`.{md,csv,svg}.
    func write(_ name: String, out: String, markdown: String, csv: String, plot: LinePlot) throws {
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let prefix = "\(out)/\(name)"
        try markdown.write(toFile: prefix + ".md", atomically: true, encoding: .utf8)
        try csv.write(toFile: prefix + ".csv", atomically: true, encoding: .utf8)
        try plot.writeSVG(to: prefix + ".svg")
        print(markdown, terminator: "")
        log("wrote \(prefix).md, \(prefix).csv, \(prefix).svg")
    }
}

struct StudyExtrapolation: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "extrapolation",
        abstract: "Accuracy far outside the trained widths, with and without coordinate noise, K = 1 and K = --samples.",
        discussion: """
        Trains two INRs over the experiment's width range (8…32 by default): with the recipe's \
        coordinate noise ε ('noise') and with ε = 0 ('clean'), and tests both at widths from a \
        quarter of the smallest trained width to three times the largest (default 2, 3, 4, 6, 8, \
        12, 16, 20, 24, 28, 32, 40, 48, 64, 96: ½×, 1.5×, 2× and 3× the range's ends), beside \
        the resampled base network. Writes extrapolation.{md,csv,svg} into --out.

        Example: neumeta-coordinator study extrapolation --epochs 6 --out runs/study-extrapolation
        """
    )

    @OptionGroup var study: StudyOptions
    @Option(help: "Output directory (INRs, table, plot).") var out = "runs/study-extrapolation"

    func run() throws {
        let noisy = try study.sampled(study.trainedVariant("noise", out: out, overrides: []))
        let clean = try study.sampled(study.trainedVariant("clean", out: out, overrides: ["--noise", "0"]))
        let plan = noisy.checkpoint.plan
        let widths = try study.widths.map { try parseWidths($0, option: "--widths") }
            ?? Self.defaultWidths(min: plan.minWidth, max: plan.maxWidth)
        let k = study.samples
        let columns = ["noise_k1", "noise_k\(k)", "clean_k1", "clean_k\(k)", "resampled"]
        var table = ResultTable(columns: columns)
        for width in widths {
            var row: [String: Double] = [:], parameters = 0
            for (name, variant) in [("noise", noisy), ("clean", clean)] {
                let one = try variant.accuracy(width: width, samples: 1, seed: study.seed)
                row["\(name)_k1"] = one.accuracy
                parameters = one.parameters
                row["\(name)_k\(k)"] = try variant.accuracy(width: width, samples: k, seed: study.seed).accuracy
            }
            row["resampled"] = try noisy.resampledBaseAccuracy(width: width)
            table.add(width: width, params: parameters, accuracies: row)
            log("width \(width): " + columns.map { c in String(format: "%@ %.2f%%", c, 100 * row[c]!) }.joined(separator: "  "))
        }
        var plot = LinePlot(title: "\(noisy.checkpoint.family): trained widths \(plan.minWidth)-\(plan.maxWidth), noise ε = \(plan.noise) vs 0",
                            xLabel: "width", yLabel: "test accuracy %")
        for c in columns { plot.add(series: c, points: table.points(c)) }
        let header = "Trained widths \(plan.minWidth)…\(plan.maxWidth); 'noise': ε = \(plan.noise), 'clean': ε = 0; "
            + "\(String(format: "%g", plan.epochs)) epochs each; test accuracy %.\n\n"
        try study.write("extrapolation", out: out, markdown: header + table.markdown, csv: table.csv, plot: plot)
    }

    /// ¼×, ⅜×, ½× and ¾× the smallest trained width, the range in sixths, and 1.25×, 1.5×, 2×
    /// and 3× the largest (for 8…32: 2, 3, 4, 6, 8, 12, 16, 20, 24, 28, 32, 40, 48, 64, 96).
    static func defaultWidths(min: Int, max: Int) -> [Int] {
        var widths = Set([min / 4, min * 3 / 8, min / 2, min * 3 / 4, max, max * 5 / 4, max * 3 / 2, max * 2, max * 3])
        widths.formUnion(stride(from: min, through: max, by: Swift.max(1, (max - min) / 6)))
        return widths.filter { $0 >= 1 }.sorted()
    }
}

struct StudySmoothness: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "smoothness",
        abstract: "Smoothness against generalisation: coordinate noise ε × channel permutation on/off.",
        discussion: """
        Trains one INR per (ε, permutation) pair — ε from --noise, the permutation of the base's \
        channels on and off (`train --no-permute`) — and reports for each: the total variation of \
        the generated weights (docs/algorithm.md §5: summed |differences| of neighbouring channels \
        along both channel axes, over the generated tensors, per generated value, averaged over the \
        tested widths), the K = 1 accuracy at every tested width, its mean and minimum over the \
        trained range and its mean outside it, and the Pearson correlation between total \
        variation and mean accuracy across the runs. Writes smoothness.md / .csv (one row per run) \
        and smoothness-widths.{md,csv,svg} (accuracy by width, one column per run) into --out.

        Example: neumeta-coordinator study smoothness --noise 0,0.25,0.5,1 --epochs 6 --out runs/study-smoothness
        """
    )

    @OptionGroup var study: StudyOptions
    @Option(help: "Output directory (INRs, tables, plot).") var out = "runs/study-smoothness"
    @Option(help: "Comma-separated coordinate noise values ε.") var noise = "0,0.25,0.5,1"

    func noiseValues() throws -> [Float] {
        let values = noise.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil && $0!.isFinite && $0! >= 0 }) else {
            throw ValidationError("--noise must be comma-separated numbers ≥ 0, got '\(noise)'")
        }
        return values.map { $0! }
    }

    func validate() throws { _ = try noiseValues() }

    struct Outcome { let name: String, noise: Float, permuted: Bool, variation: Double, mean: Double, minimum: Double, outside: Double? }

    func run() throws {
        var outcomes: [Outcome] = [], names: [String] = []
        var byWidth: [(name: String, rows: [(width: Int, parameters: Int, accuracy: Double)])] = []
        for permuted in [true, false] {
            for epsilon in try noiseValues() {
                let name = String(format: "noise%g-%@", epsilon, permuted ? "permuted" : "unpermuted")
                let variant = try study.sampled(study.trainedVariant(name, out: out,
                                                                     overrides: ["--noise", String(epsilon)] + (permuted ? [] : ["--no-permute"])))
                let plan = variant.checkpoint.plan
                let widths = try study.widths.map { try parseWidths($0, option: "--widths") }
                    ?? [plan.minWidth / 2, plan.minWidth, (3 * plan.minWidth + plan.maxWidth) / 4, (plan.minWidth + plan.maxWidth) / 2,
                        (plan.minWidth + 3 * plan.maxWidth) / 4, plan.maxWidth, plan.maxWidth * 3 / 2].filter { $0 >= 1 }
                var rows: [(width: Int, parameters: Int, accuracy: Double)] = [], variation = 0.0
                for width in Set(widths).sorted() {
                    let r = try variant.accuracy(width: width, samples: 1, seed: study.seed)
                    let generated = variant.generator.morph.generated(r.weights.specs)
                    let values = generated.reduce(0) { $0 + r.weights.specs[$1].count }
                    variation += TotalVariation.of(r.weights, tensors: generated) / Double(values)
                    rows.append((width, r.parameters, r.accuracy))
                    log(String(format: "%@ width %d: %.2f%%", name, width, 100 * r.accuracy))
                }
                let inside = rows.filter { (plan.minWidth...plan.maxWidth).contains($0.width) }.map(\.accuracy)
                let outside = rows.filter { !(plan.minWidth...plan.maxWidth).contains($0.width) }.map(\.accuracy)
                outcomes.append(Outcome(name: name, noise: epsilon, permuted: permuted, variation: variation / Double(rows.count),
                                        mean: inside.reduce(0, +) / Double(max(1, inside.count)), minimum: inside.min() ?? 0,
                                        outside: outside.isEmpty ? nil : outside.reduce(0, +) / Double(outside.count)))
                names.append(name)
                byWidth.append((name, rows))
            }
        }
        var table = ResultTable(columns: names)
        for (name, rows) in byWidth { for r in rows { table.add(width: r.width, params: r.parameters, accuracies: [name: r.accuracy]) } }
        var plot = LinePlot(title: "accuracy by width: noise ε × permutation", xLabel: "width", yLabel: "test accuracy % (K = 1)")
        for name in names { plot.add(series: name, points: table.points(name)) }
        try study.write("smoothness-widths", out: out, markdown: table.markdown, csv: table.csv, plot: plot)

        let r = Self.pearson(outcomes.map(\.variation), outcomes.map(\.mean))
        var md = "| ε | permutation | total variation per value | mean accuracy, trained widths | minimum | mean accuracy, outside |\n"
        md += "|---:|---|---:|---:|---:|---:|\n"
        var csv = "noise,permuted,total_variation_per_value,mean_accuracy,min_accuracy,outside_accuracy\n"
        for o in outcomes {
            let outside = o.outside.map { String(format: "%.2f", 100 * $0) }
            md += String(format: "| %g | %@ | %.5f | %.2f | %.2f | %@ |\n", o.noise, o.permuted ? "on" : "off", o.variation, 100 * o.mean,
                         100 * o.minimum, outside ?? "–")
            csv += String(format: "%g,%@,%.6f,%.2f,%.2f,%@\n", o.noise, o.permuted ? "true" : "false", o.variation, 100 * o.mean,
                          100 * o.minimum, outside ?? "")
        }
        md += String(format: "\nPearson correlation of total variation and mean accuracy over the %d runs: %@\n", outcomes.count,
                     r.map { String(format: "%.3f", $0) } ?? "undefined (no spread)")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try md.write(toFile: "\(out)/smoothness.md", atomically: true, encoding: .utf8)
        try csv.write(toFile: "\(out)/smoothness.csv", atomically: true, encoding: .utf8)
        print(md, terminator: "")
        log("wrote \(out)/smoothness.md, \(out)/smoothness.csv")
    }

    /// Pearson's r of paired samples; nil when either has no spread.
    static func pearson(_ x: [Double], _ y: [Double]) -> Double? {
        let n = Double(x.count)
        guard x.count == y.count, x.count >= 2 else { return nil }
        let mx = x.reduce(0, +) / n, my = y.reduce(0, +) / n
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for (a, b) in zip(x, y) { sxy += (a - mx) * (b - my); sxx += (a - mx) * (a - mx); syy += (b - my) * (b - my) }
        guard sxx > 0, syy > 0 else { return nil }
        return sxy / (sxx * syy).squareRoot()
    }
}
