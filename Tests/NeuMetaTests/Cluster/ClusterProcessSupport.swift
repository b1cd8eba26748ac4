import Foundation
import NeuMeta

extension Dictionary where Key == String, Value == Any {
    func write(to url: URL) throws {
        try JSONSerialization.data(withJSONObject: self).write(to: url)
    }
}

/// The built executables: SwiftPM puts them next to the test binary.
enum Products {
    static let directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    static let coordinator = directory.appendingPathComponent("neumeta-coordinator")
    static let worker = directory.appendingPathComponent("neumeta-worker")
}

/// A child process with its standard output and error captured in files.
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    let stdoutURL: URL, stderrURL: URL
    let label: String

    init(_ executable: URL, _ arguments: [String], in directory: URL, label: String, wrapper: [String] = []) throws {
        self.label = label
        stdoutURL = directory.appendingPathComponent("\(label).out")
        stderrURL = directory.appendingPathComponent("\(label).err")
        try Data().write(to: stdoutURL)
        try Data().write(to: stderrURL)
        if wrapper.isEmpty {
            process.executableURL = executable
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: wrapper[0])
            process.arguments = Array(wrapper.dropFirst()) + [executable.path] + arguments
        }
        process.currentDirectoryURL = directory
        process.standardOutput = try FileHandle(forWritingTo: stdoutURL)
        process.standardError = try FileHandle(forWritingTo: stderrURL)
        try process.run()
    }

    var stdout: String { (try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "" }

    /// Waits until `condition` holds on standard error, polling every 50 ms.
    @discardableResult
    func waitForLog(timeout: TimeInterval, _ condition: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition(stderr) { return true }
            if !process.isRunning { return condition(stderr) }
            usleep(50_000)
        }
        return false
    }

    /// The exit status, or nil if it is still running after `timeout` (then it is killed).
    func wait(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(50_000) }
        guard !process.isRunning else { kill(); return nil }
        return process.terminationStatus
    }

    func signal(_ number: Int32) { Foundation.kill(process.processIdentifier, number) }

    func kill() {
        guard process.isRunning else { return }
        signal(SIGCONT)
        signal(SIGKILL)
        process.waitUntilExit()
    }
}

/// A small experiment in a temporary directory: a random LeNet width-8 base network, keys, and
/// a cluster.yaml with a tiny INR and batch so that a round takes milliseconds even in a debug
/// build. `rounds` rounds of 3 configurations; checkpoints every 2 rounds. With `folder`, the
/// data is that image folder (its training split a multiple of the batch, 16) at `imageSize`,
/// and the base network takes RGB images of that size.
struct ClusterFixture {
    static let rounds = 30
    static let configurationsPerRound = 3
    let directory: URL
    /// The training data's directory (what workers read by default).
    let data: String
    var keys: URL { directory.appendingPathComponent("keys") }

    init(_ name: String, folder: (path: String, imageSize: Int)? = nil) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        data = folder?.path ?? FashionMNIST.defaultDirectory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let network = try NetworkFamily.make("lenet", widths: [8], imageSize: folder?.imageSize)
        let parameters = network.makeParameters()
        var rng = SeededRandom(7)
        parameters.initializeDefault(rng: &rng)
        try NetworkCheckpoint(network: network, parameters: parameters, mean: folder == nil ? [0.286] : [0.286, 0.286, 0.286],
                              std: folder == nil ? [0.353] : [0.353, 0.353, 0.353])
            .save(to: directory.appendingPathComponent("base.safetensors").path)
        try KeyStore.generate(into: keys, workers: ["worker"])
        let batch = 16
        // The default recipe's rounds read one shared mini-batch: epochs = rounds · batch / images.
        let images = try folder.map { try ImageFolderDataset(root: $0.path, split: "train").count } ?? 60_000
        let epochs = Double(Self.rounds * batch) / Double(images)
        let dataKeys = folder.map { "\($0.path)\n  dataset: folder\n  image_size: \($0.imageSize)" } ?? FashionMNIST.defaultDirectory
        let yaml = """
        experiment:
          data: \(dataKeys)
          widths: { min: 4, max: 8 }
          epochs: \(epochs)
          configurations_per_round: \(Self.configurationsPerRound)
          batch_size: \(batch)
          inr: { hidden: 16, layers: 2, frequencies: 2 }
        base:
          checkpoint: base.safetensors
          width: 8
        coordinator:
          bind: tcp://127.0.0.1:*
        keys:
          directory: keys
          generate: false
        workers:
          local: 0
          threads: 1
        checkpoints:
          directory: checkpoints
          every_rounds: 2
          keep: 2
        output:
          inr: inr.safetensors
          metrics: metrics.jsonl
        threads: 1

        """
        try yaml.write(to: directory.appendingPathComponent("cluster.yaml"), atomically: true, encoding: .utf8)
    }

    func coordinator(_ extra: [String] = [], label: String = "coordinator", wrapper: [String] = []) throws -> ChildProcess {
        // --exit-with-parent: should this test process crash, its children do not linger.
        try ChildProcess(Products.coordinator, ["run", "--config", directory.appendingPathComponent("cluster.yaml").path, "--json",
                                                "--skip-evaluation", "--exit-with-parent"] + extra, in: directory, label: label, wrapper: wrapper)
    }

    func worker(_ name: String, endpoint: String, keys: URL? = nil, data: String? = nil, threads: Int = 1,
                wrapper: [String] = [], extra: [String] = []) throws -> ChildProcess {
        try ChildProcess(Products.worker, ["--connect", endpoint, "--keys", (keys ?? self.keys).path, "--name", name, "--data", data ?? self.data,
                                           "--threads", String(threads), "--exit-with-parent"] + extra, in: directory, label: name, wrapper: wrapper)
    }

    /// The endpoint the coordinator logged ("listening on tcp://127.0.0.1:PORT"), once it has.
    static func endpoint(of coordinator: ChildProcess, timeout: TimeInterval = 60) -> String? {
        var found: String?
        coordinator.waitForLog(timeout: timeout) { log in
            guard let range = log.range(of: "listening on ") else { return false }
            found = log[range.upperBound...].split(separator: " ").first.map(String.init)
            return true
        }
        return found
    }

    /// The last JSON line of the coordinator's standard output (the summary).
    static func summary(of coordinator: ChildProcess) -> [String: Any]? {
        guard let line = coordinator.stdout.split(separator: "\n").last,
              let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
        return object
    }

    /// The summary a finished `train` saved.
    func summary() throws -> [String: Any] {
        let data = try Data(contentsOf: directory.appendingPathComponent("summary.json"))
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }
}
