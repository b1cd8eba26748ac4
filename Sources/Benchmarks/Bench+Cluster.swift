import ArgumentParser
import Foundation
import NeuMeta

/// The `cluster` part of `bench`: real `run` processes with 1 and 2 local workers (and 2 with
/// bfloat16 gradients).
extension Bench {
    func clusterPart(_ out: inout Figures) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-bench-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let basePath: String
        if let base {
            basePath = base
        } else {
            // A random LeNet-32: speed does not depend on what the base network learned.
            let network = LeNet(width: 32), parameters = network.makeParameters()
            var rng = SeededRandom(seed, 0xBE)
            parameters.initializeDefault(rng: &rng)
            basePath = directory.appendingPathComponent("base.safetensors").path
            try NetworkCheckpoint(network: network, parameters: parameters, mean: [0.286], std: [0.353]).save(to: basePath)
        }
        let rounds = clusterRounds ?? (quick ? 8 : 60), skipped = min(5, rounds / 2)
        var first = true
        for (workers, gradients) in [(1, "float32"), (2, "float32"), (2, "bfloat16")] {
            let records = try Self.clusterRun(workers: workers, gradients: gradients, rounds: rounds, base: basePath, data: data,
                                              directory: directory, seed: seed)
            let measured = Array(records.dropFirst(skipped))
            func values(_ key: String) -> [Double] { measured.map { ($0[key] as? NSNumber)?.doubleValue ?? 0 } }
            func mean(_ key: String) -> Double { values(key).reduce(0, +) / Double(max(measured.count, 1)) }
            let seconds = values("seconds"), total = max(seconds.reduce(0, +), 1e-9)
            let configurations = zip(values("configurations_per_s"), seconds).map { $0 * $1 }.reduce(0, +) / total
            let overhead = 1 - values("compute_seconds").reduce(0, +) / total
            let bytes = mean("bytes_sent") + mean("bytes_received"), step = mean("step_seconds")
            let bf16 = gradients == "bfloat16"
            let key = "cluster_\(workers)_worker\(workers == 1 ? "" : "s")" + (bf16 ? "_bf16" : "")
            let label = "\(workers) local worker\(workers == 1 ? "" : "s") × 1 thread" + (bf16 ? ", bfloat16 gradients" : "")
            out.add("\(key)_configurations_per_s", configurations, "\(label): configurations/s", String(format: "%.2f", configurations),
                    section: first ? "cluster rounds (run, default recipe, rounds \(skipped + 1)…\(rounds), CURVE on loopback)" : nil)
            out.add("\(key)_overhead_share", overhead, "  share of round time not computing", String(format: "%.1f%%", 100 * overhead))
            out.add("\(key)_bytes_per_round", bytes, "  bytes sent + received per round", String(format: "%.1f MB", bytes / 1e6))
            out.add("\(key)_step_ms", step * 1000, "  optimizer step (AdamW head by head as pieces arrive, summed)",
                    String(format: "%.1f ms", step * 1000))
            out.record("\(key)_round_ms", 1000 * total / Double(max(measured.count, 1)))
            first = false
        }
    }

    /// Runs `neumeta-coordinator run` (beside this executable) for `rounds` rounds with `workers` local
    /// workers on a cluster.yaml written into `directory`; returns its metrics records.
    static func clusterRun(workers: Int, gradients: String, rounds: Int, base: String, data: String, directory: URL,
                           seed: UInt64) throws -> [[String: Any]] {
        let run = directory.appendingPathComponent("run-\(workers)-\(gradients)")
        try? FileManager.default.removeItem(at: run)
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
        let config = run.appendingPathComponent("cluster.yaml"), metrics = run.appendingPathComponent("metrics.jsonl")
        try """
        experiment:
          data: \(data)
          seed: \(seed)
        base:
          checkpoint: \(base)
        coordinator:
          bind: tcp://127.0.0.1:*
        keys:
          directory: \(directory.appendingPathComponent("keys").path)
        workers:
          local: \(workers)
          threads: 1
          gradients: \(gradients)
        checkpoints:
          directory: \(run.appendingPathComponent("checkpoints").path)
          every_rounds: 1000000
        output:
          inr: \(run.appendingPathComponent("inr.safetensors").path)
          metrics: \(metrics.path)

        """.write(to: config, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = try coordinatorExecutable()
        process.arguments = ["run", "--config", config.path, "--rounds", String(rounds), "--skip-evaluation", "--exit-with-parent",
                             "--log-every", String(rounds)]
        process.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let log = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("bench cluster: run with \(workers) workers exited \(process.terminationStatus):\n"
                                  + String(decoding: log.suffix(2000), as: UTF8.self))
        }
        let text = try String(contentsOf: metrics, encoding: .utf8)
        return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// `neumeta-coordinator` in this executable's folder (`swift build` builds both there).
    static func coordinatorExecutable() throws -> URL {
        let url = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("neumeta-coordinator")
        guard FileManager.default.isExecutableFile(atPath: url.path) else {
            throw ValidationError("bench cluster: \(url.path) is missing; build it (swift build -c release --product neumeta-coordinator)")
        }
        return url
    }
}
