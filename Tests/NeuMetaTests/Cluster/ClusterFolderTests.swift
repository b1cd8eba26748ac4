import Foundation
import NeuMeta
import Testing

/// INR training on an image folder, with real processes: the first 320 training and test images
/// of Fashion-MNIST exported as 20×20 RGB PNGs, trained at 16×16 with random-resized crops and
/// flips. However the folder is read — streamed with 8 batches prefetched or none, decoded into
/// memory, by one process or by one or three workers, one of them SIGKILLed mid-run — the INR
/// ends with the same bits.
@Suite(.serialized) struct ClusterFolderTests {
    static let imageSize = 16
    static let exported = ExportedFolder()

    /// The exported folder, made once for the suite (in the temporary directory; removed by the
    /// system, as the fixtures' directories are by each test).
    final class ExportedFolder: @unchecked Sendable {
        private let lock = NSLock()
        private var made: String?

        func path() throws -> String {
            lock.lock(); defer { lock.unlock() }
            if let made { return made }
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-folder-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
            try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
            let export = try ChildProcess(Products.coordinator, ["export-folder", "--dataset", "fashion-mnist", "--out", root.appendingPathComponent("fmnist").path,
                                                                 "--size", "20", "--limit", "320"], in: root, label: "export")
            try #require(export.wait(timeout: 120) == 0, "export-folder failed:\n\(export.stderr)")
            made = root.appendingPathComponent("fmnist").path
            return made!
        }
    }

    static func fixture(_ name: String) throws -> ClusterFixture {
        try ClusterFixture(name, folder: (try exported.path(), imageSize))
    }

    /// `train` in one process; the digest of its parameters.
    static func train(_ fixture: ClusterFixture, _ label: String, _ extra: [String] = []) throws -> String {
        let process = try ChildProcess(Products.coordinator, ["train", "--config", fixture.directory.appendingPathComponent("cluster.yaml").path,
                                                              "--json", "--threads", "1", "--checkpoint-dir", label, "--out", label + ".safetensors",
                                                              "--metrics", label + ".jsonl"] + extra, in: fixture.directory, label: label)
        #expect(process.wait(timeout: 240) == 0, "train \(label) failed:\n\(process.stderr.suffix(3000))")
        return try #require(ClusterFixture.summary(of: process)?["params_digest"] as? String)
    }

    /// `run` with one worker per entry of `workers` (its extra options); `kill`: SIGKILL that
    /// worker once round 3 is done. The digest of the parameters.
    static func run(_ fixture: ClusterFixture, _ label: String, workers: [[String]], kill: Int? = nil) throws -> String {
        let started = Date()
        let coordinator = try fixture.coordinator(["--checkpoint-dir", label, "--out", label + ".safetensors", "--metrics", label + ".jsonl"],
                                                  label: label)
        defer { coordinator.kill() }
        let endpoint = try #require(ClusterFixture.endpoint(of: coordinator), "coordinator did not start:\n\(coordinator.stderr)")
        let processes = try workers.enumerated().map { try fixture.worker("w\($0.offset + 1)", endpoint: endpoint, extra: $0.element) }
        defer { processes.forEach { $0.kill() } }
        if let kill {
            let reached = coordinator.waitForLog(timeout: 120) { $0.contains("round 3/\(ClusterFixture.rounds)") }
            #expect(reached, "round 3 not reached:\n\(coordinator.stderr.suffix(3000))")
            processes[kill].signal(SIGKILL)
        }
        #expect(coordinator.wait(timeout: 240) == 0, "coordinator failed:\n\(coordinator.stderr.suffix(3000))")
        for (i, worker) in processes.enumerated() where i != kill {
            #expect(worker.wait(timeout: 20) == 0, "\(worker.label):\n\(worker.stderr.suffix(2000))")
        }
        if let kill { #expect(coordinator.stderr.contains("dropped worker w\(kill + 1) ("), "\(coordinator.stderr.suffix(3000))") }
        let summary = try #require(ClusterFixture.summary(of: coordinator))
        #expect(summary["rounds"] as? Int == ClusterFixture.rounds)
        print(String(format: "folder run, workers %@%@: %.1f s", "\(workers)", kill.map { ", w\($0 + 1) killed" } ?? "", Date().timeIntervalSince(started)))
        return try #require(summary["params_digest"] as? String)
    }

    @Test(.timeLimit(.minutes(15))) func folderTrainingIsBitIdenticalHoweverTheDataIsRead() throws {
        let fixture = try Self.fixture("folder")
        defer { fixture.remove() }
        let streamed = try Self.train(fixture, "streamed")  // workers.prefetch: 8 batches ahead
        #expect(try Self.train(fixture, "prefetch0", ["--prefetch", "0"]) == streamed, "prefetch 0 vs 8")
        #expect(try Self.train(fixture, "memory", ["--in-memory"]) == streamed, "in memory vs streamed")
        #expect(try Self.run(fixture, "one", workers: [[]]) == streamed, "one worker vs one process")
        #expect(try Self.run(fixture, "three", workers: [["--prefetch", "0"], [], ["--in-memory"]]) == streamed, "three workers vs one")
        #expect(try Self.run(fixture, "killed", workers: [[], [], []], kill: 1) == streamed, "a worker SIGKILLed mid-run")
        // The saved INR records the image size and the data: evaluate reads DIR/val at 16×16.
        let evaluate = try ChildProcess(Products.coordinator, ["evaluate", "--inr", "streamed.safetensors", "--data", fixture.data, "--widths", "4,8",
                                                               "--samples", "2", "--baselines", "none", "--json"],
                                        in: fixture.directory, label: "evaluate")
        #expect(evaluate.wait(timeout: 120) == 0, "evaluate failed:\n\(evaluate.stderr.suffix(3000))")
        let rows = try #require(ClusterFixture.summary(of: evaluate)?["rows"] as? [[String: Any]])
        #expect(rows.count == 2 && rows.allSatisfy { ($0["neumeta_k1"] as? Double).map { (0...100).contains($0) } == true }, "\(rows)")  // percent
    }

    /// A worker whose folder lacks one image is refused, the class named; a ResNet-18 base
    /// trains on the folder.
    @Test(.timeLimit(.minutes(5))) func otherFoldersAreRefusedAndResNet18Trains() throws {
        let fixture = try Self.fixture("folder-refused")
        defer { fixture.remove() }
        let other = fixture.directory.appendingPathComponent("other").path
        try FileManager.default.copyItem(atPath: fixture.data, toPath: other)
        let dress = other + "/train/3-dress"
        let removed = try #require(try FileManager.default.contentsOfDirectory(atPath: dress).sorted().first)
        try FileManager.default.removeItem(atPath: dress + "/" + removed)

        let coordinator = try fixture.coordinator(["--rounds", "1"])
        defer { coordinator.kill() }
        let endpoint = try #require(ClusterFixture.endpoint(of: coordinator))
        let stranger = try fixture.worker("otherfolder", endpoint: endpoint, data: other)
        #expect(stranger.wait(timeout: 60) == 3, "\(stranger.stderr)")
        #expect(stranger.stderr.contains("refused by the coordinator: the worker's data differs from the coordinator's: train/3-dress has "),
                "\(stranger.stderr)")
        #expect(!stranger.stderr.contains("train/4-coat"), "\(stranger.stderr)")
        let worker = try fixture.worker("w1", endpoint: endpoint)
        defer { worker.kill() }
        #expect(coordinator.wait(timeout: 120) == 0, "\(coordinator.stderr.suffix(3000))")

        // ResNet-18 on the folder's 16×16 images: morphed whole by the INR (batch norm kept and
        // recalibrated, the default for morph all), two rounds train and the sampled networks test.
        let network = try NetworkFamily.make("resnet18", widths: [2, 4, 8, 16], classCount: 10, imageSize: Self.imageSize)
        let parameters = network.makeParameters()
        var rng = SeededRandom(9)
        parameters.initializeDefault(rng: &rng)
        try NetworkCheckpoint(network: network, parameters: parameters, mean: [0.3, 0.3, 0.3], std: [0.35, 0.35, 0.35])
            .save(to: fixture.directory.appendingPathComponent("resnet18.safetensors").path)
        let resnet = try ChildProcess(Products.coordinator, ["train", "--config", fixture.directory.appendingPathComponent("cluster.yaml").path,
                                                             "--base", "resnet18.safetensors", "--min-width", "1", "--max-width", "2",
                                                             "--rounds", "2", "--checkpoint-dir", "resnet18-checkpoints", "--out", "resnet18-inr.safetensors"],
                                      in: fixture.directory, label: "resnet18")
        #expect(resnet.wait(timeout: 120) == 0, "\(resnet.stderr.suffix(3000))")
        let inr = try INRCheckpoint.load(path: fixture.directory.appendingPathComponent("resnet18-inr.safetensors").path)
        #expect(inr.family == "resnet18" && inr.extra["batch_norm"] == "recalibrate")
    }
}
