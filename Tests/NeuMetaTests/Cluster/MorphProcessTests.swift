import Foundation
import Testing
@testable import NeuMeta

/// The coordinator's `train`, `sample` and `evaluate` on a CIFAR ResNet-20 morphed through its
/// last block, on CIFAR-10-format files written here (5 training files of 32 records, a test
/// file of 40), from a random base network: each command exits 0 and writes what it says.
@Suite(.serialized) struct MorphProcessTests {
    /// Records whose colour depends on the label, with noise.
    static func writeCIFAR10(into directory: URL, recordsPerFile: Int, testRecords: Int) throws {
        var rng = SeededRandom(13)
        func file(_ name: String, _ records: Int) throws {
            var bytes = [UInt8]()
            for _ in 0..<records {
                let label = rng.index(below: 10)
                bytes.append(UInt8(label))
                for c in 0..<3 { for _ in 0..<1024 { bytes.append(UInt8(min(255, 40 + 20 * ((label + c) % 10) + rng.index(below: 40)))) } }
            }
            try Data(bytes).write(to: directory.appendingPathComponent(name))
        }
        for i in 1...5 { try file("data_batch_\(i).bin", recordsPerFile) }
        try file("test_batch.bin", testRecords)
    }

    func run(_ arguments: [String], in directory: URL, label: String) throws -> String {
        let child = try ChildProcess(Products.coordinator, arguments, in: directory, label: label)
        let status = child.wait(timeout: 240)
        #expect(status == 0, "\(label) exited with \(String(describing: status)): \(child.stderr.suffix(2000))")
        return child.stdout
    }

    @Test(.timeLimit(.minutes(10)), arguments: ["fold", "recalibrate"])
    func cifarResNet20LastBlockEndToEnd(batchNorm: String) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-morph-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try Self.writeCIFAR10(into: directory, recordsPerFile: 32, testRecords: 40)
        let base = CIFARResNet(depth: 20, stageWidths: [4, 8, 16])
        let parameters = base.makeParameters()
        var rng = SeededRandom(7)
        parameters.initializeDefault(rng: &rng)
        try NetworkCheckpoint(network: base, parameters: parameters, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25])
            .save(to: directory.appendingPathComponent("base.safetensors").path)

        _ = try run(["train", "--base", "base.safetensors", "--dataset", "cifar10", "--data", directory.path, "--morph", "last-block",
                     "--batch-norm", batchNorm, "--min-width", "8", "--max-width", "16", "--batch-size", "16", "--epochs", "1",
                     "--rounds", "2", "--hidden", "16", "--layers", "2", "--frequencies", "2", "--out", "inr.safetensors",
                     "--checkpoint-dir", "checkpoints", "--metrics", "metrics.jsonl"], in: directory, label: "train")
        let inr = try INRCheckpoint.load(path: directory.appendingPathComponent("inr.safetensors").path)
        #expect(inr.morph.scope == .lastBlock && inr.round == 2 && inr.extra["dataset"] == "cifar10")
        #expect(inr.family == (batchNorm == "fold" ? "resnet20-folded" : "resnet20") && inr.plan.pretrainedWidth == 16)
        #expect(inr.config.outputSize == 9)

        let sampled = try run(["sample", "--inr", "inr.safetensors", "--width", "12", "--out", "s12.safetensors", "--data", directory.path,
                               "--evaluate", "--json"], in: directory, label: "sample")
        let result = try JSONSerialization.jsonObject(with: Data(sampled.utf8)) as? [String: Any]
        let accuracy = result?["test_accuracy"] as? Double
        #expect(accuracy.map { (0...1).contains($0) } == true, "sample printed \(sampled)")
        let network = try NetworkCheckpoint.load(path: directory.appendingPathComponent("s12.safetensors").path)
        #expect(network.network.widths == [4, 8, 16, 4, 4, 4, 8, 8, 8, 16, 16, 12])
        // Everything outside the last block is the permuted base's.
        for name in ["conv1.weight", "layer2.0.conv1.weight", "layer3.1.conv2.weight", "fc.weight"] {
            #expect(network.parameters.value(name).toArray() == inr.base.value(name).toArray(), "\(name)")
        }
        if batchNorm == "recalibrate" {
            // The morphed width's running statistics were recomputed (they start at 0 and 1).
            #expect(network.parameters.value("layer3.2.bn1.running_mean").toArray().contains { $0 != 0 })
            #expect(network.parameters.value("layer3.2.bn1.running_var").toArray().contains { $0 != 1 })
        }

        let evaluated = try run(["evaluate", "--inr", "inr.safetensors", "--widths", "8,16", "--samples", "2", "--data", directory.path,
                                 "--baselines", "none", "--json"], in: directory, label: "evaluate")
        let rows = (try JSONSerialization.jsonObject(with: Data(evaluated.utf8)) as? [String: Any])?["rows"] as? [[String: Any]]
        #expect(rows?.count == 2, "evaluate printed \(evaluated)")
        #expect(rows?.last?["pruning_l1"] as? Double != nil && rows?.first?["resampled"] as? Double != nil)
        for suffix in ["csv", "md", "svg"] {
            #expect(FileManager.default.fileExists(atPath: directory.appendingPathComponent("inr.eval.\(suffix)").path))
        }

        // The individually trained baseline of a last-block width: the base's widths with that
        // hidden width, trained with batch norm (also when the INR's base was folded).
        let withBaseline = try run(["evaluate", "--inr", "inr.safetensors", "--widths", "12", "--samples", "1", "--data", directory.path,
                                    "--baselines", "baselines", "--train-baselines", "--baseline-epochs", "1", "--json"],
                                   in: directory, label: "evaluate-baselines")
        let row = ((try JSONSerialization.jsonObject(with: Data(withBaseline.utf8)) as? [String: Any])?["rows"] as? [[String: Any]])?.first
        #expect(row?["individual"] as? Double != nil, "evaluate printed \(withBaseline)")
        let baseline = try NetworkCheckpoint.load(path: directory.appendingPathComponent("baselines/resnet20-last-block-12.safetensors").path)
        #expect(baseline.network.widths == [4, 8, 16, 4, 4, 4, 8, 8, 8, 16, 16, 12] && baseline.network.family == "resnet20")
    }
}
