import Foundation
import Testing
@testable import NeuMeta

/// Load-generating workers against the real coordinator: `neumeta-coordinator synthetic` and
/// `neumeta-worker --synthetic` processes over CURVE on 127.0.0.1.
@Suite(.serialized) struct ClusterScaleProcessTests {
    /// 32 synthetic workers started within about a second are all admitted — none refused or
    /// dropped — and each measured round gives every worker one configuration (so its busiest
    /// worker computed one configuration time); every worker exits 0 when the coordinator
    /// says goodbye.
    @Test(.timeLimit(.minutes(5))) func aJoinStormOfSyntheticWorkersIsAdmittedWhole() throws {
        let n = 32, seconds = 0.2
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-scale-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let keys = directory.appendingPathComponent("keys")
        try KeyStore.generate(into: keys, workers: ["worker"])
        let coordinator = try ChildProcess(Products.coordinator, ["synthetic", "--keys", keys.path, "--family", "lenet", "--hidden", "16",
                                                                  "--workers", String(n), "--configurations", String(n), "--rounds", "2",
                                                                  "--exit-with-parent"], in: directory, label: "coordinator")
        defer { coordinator.kill() }
        // The first line of standard output names the endpoint.
        var endpoint: String?
        let deadline = Date().addingTimeInterval(60)
        while endpoint == nil && Date() < deadline {
            endpoint = coordinator.stdout.split(separator: "\n").first
                .flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }?["endpoint"] as? String
            if endpoint == nil { usleep(50_000) }
        }
        let bound = try #require(endpoint)
        let started = Date()
        let workers = try (0..<n).map { i in
            try ChildProcess(Products.worker, ["--synthetic", String(seconds), "--connect", bound, "--keys", keys.path,
                                               "--name", "storm-\(i)", "--threads", "1", "--exit-with-parent"], in: directory, label: "storm-\(i)")
        }
        defer { for w in workers { w.kill() } }
        #expect(Date().timeIntervalSince(started) < 5, "the workers were started together")
        #expect(coordinator.wait(timeout: 240) == 0, "coordinator: \(coordinator.stderr.suffix(2000))")
        let log = coordinator.stderr
        #expect(log.contains("(\(n) connected)"))
        #expect(!log.contains("dropped worker") && !log.contains("refused worker"), "\(log.suffix(2000))")
        let records = coordinator.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let measured = records.filter { ($0["measured"] as? Bool) == true }
        #expect(measured.count == 2)
        for round in measured {
            #expect(round["workers"] as? Int == n && round["configurations"] as? Int == n)
            let compute = (round["compute_seconds"] as? NSNumber)?.doubleValue ?? 0
            #expect(compute >= seconds && compute < 2 * seconds, "one configuration per worker: busiest computed \(compute) s")
        }
        #expect(records.last?["summary"] as? Bool == true)
        for w in workers { #expect(w.wait(timeout: 30) == 0, "\(w.label): \(w.stderr.suffix(500))") }
    }
}
