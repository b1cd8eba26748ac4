import Foundation
import NeuMeta
import Testing

/// Worker-side reduction and the bound on what a worker may send, with real processes.
extension ClusterProcessTests {
    /// Rounds of four configurations in blocks of two ({0, 1} and {2, 3}), each block summed by
    /// the worker that computes it: the single-process `train`, 1, 3 and 8 workers, and 3
    /// workers of which one is SIGKILLed mid-run all end with the same bits.
    @Test(.timeLimit(.minutes(10))) func workerSideReductionIsTheSameForAnyWorkerCount() throws {
        let blocks = ["--configs-per-round", "4", "--configs-per-block", "2"]
        let fixture = try ClusterFixture("blocks")
        defer { fixture.remove() }
        func train(_ label: String, _ options: [String]) throws -> String {
            let child = try ChildProcess(Products.coordinator, ["train", "--config", fixture.directory.appendingPathComponent("cluster.yaml").path,
                                                                "--json", "--threads", "1", "--checkpoint-dir", label, "--out", label + ".safetensors",
                                                                "--metrics", label + ".jsonl"] + options, in: fixture.directory, label: label)
            #expect(child.wait(timeout: 240) == 0, "train failed:\n\(child.stderr.suffix(3000))")
            return try #require(ClusterFixture.summary(of: child)?["params_digest"] as? String)
        }
        let reference = try train("blocks", blocks)
        #expect(try train("single", ["--configs-per-round", "4"]) != reference,
                "(g₀ + g₁) + (g₂ + g₃) is another sum than ((g₀ + g₁) + g₂) + g₃")
        for workers in [1, 3, 8] {
            let run = try ClusterFixture("blocks-\(workers)")
            defer { run.remove() }
            #expect(try Self.train(run, workers: workers, extra: blocks) == reference, "\(workers) worker(s)")
        }
        let killed = try ClusterFixture("blocks-kill")
        defer { killed.remove() }
        let (coordinator, _, workers) = try Self.start(killed, workers: 3, until: 4, extra: blocks)
        defer { workers.forEach { $0.kill() } }
        workers[0].signal(SIGKILL)
        #expect(coordinator.wait(timeout: 240) == 0, "\(coordinator.stderr.suffix(3000))")
        #expect(coordinator.stderr.contains("dropped worker w1 ("), "\(coordinator.stderr.suffix(3000))")
        #expect(ClusterFixture.summary(of: coordinator)?["params_digest"] as? String == reference)
    }

    /// A key holder sends one multipart message of 256 frames of 1 MiB. libzmq delivers it only
    /// whole, so it is buffered once; then the sender is dropped and quarantined, its key is
    /// refused at the handshake (it cannot send another), the memory goes back to the system,
    /// and the run ends with the fault-free bits.
    @Test(.timeLimit(.minutes(5))) func oversizedMessagesAreRefusedAndTheirSenderShutOut() throws {
        let fixture = try ClusterFixture("flood")
        defer { fixture.remove() }
        let (coordinator, endpoint, honest) = try Self.start(fixture, workers: 1, until: 3)
        defer { coordinator.kill(); honest.forEach { $0.kill() } }
        let flood = try Self.keyHolder("flood", fixture, endpoint: endpoint)
        guard let frames = try flood.receive(timeout: .seconds(10)), case .welcome = try Message.decode(frames) else {
            Issue.record("the flooding peer was not welcomed"); return
        }
        let before = Self.residentMiB(of: coordinator.process.processIdentifier)
        let piece = [UInt8](repeating: 0x5A, count: WireProtocol.frameBytes)
        try flood.setSendTimeout(.seconds(30))
        try flood.send(frames: [try Message.heartbeat.encoded().header] + Array(repeating: piece, count: 256))
        let dropped = coordinator.waitForLog(timeout: 60) { $0.contains("dropped oversized message from flood: a message of 257 frames") }
        #expect(dropped, "\(coordinator.stderr.suffix(3000))")
        // The same key again, from a new connection: refused at the handshake.
        let again = try Self.keyHolder("flood2", fixture, endpoint: endpoint)
        #expect(coordinator.waitForLog(timeout: 30) { $0.contains("key suspended for another") }, "\(coordinator.stderr.suffix(3000))")
        #expect(try again.receive(timeout: .seconds(2)) == nil, "a suspended key got an answer")
        let peak = Self.peakResidentMiB(of: coordinator.process.processIdentifier)
        let after = Self.residentMiB(of: coordinator.process.processIdentifier)
        #expect(coordinator.wait(timeout: 240) == 0, "\(coordinator.stderr.suffix(3000))")
        #expect(ClusterFixture.summary(of: coordinator)?["params_digest"] as? String == (try Self.reference.value()))
        // The one message was held once (≈ 256 MiB at the peak) and given back after.
        #expect(after < before + 64, "resident \(before) MiB before, \(after) MiB after")
        print("flood of 256 MiB in one message: coordinator resident \(before) MiB before, peak \(peak) MiB, \(after) MiB after")
    }

    /// Resident set (VmRSS) or its peak (VmHWM) of process `pid` in MiB, from /proc.
    static func residentMiB(of pid: Int32) -> Int { procStatusMiB(pid, "VmRSS:") }
    static func peakResidentMiB(of pid: Int32) -> Int { procStatusMiB(pid, "VmHWM:") }

    private static func procStatusMiB(_ pid: Int32, _ field: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field) }),
              let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return -1 }
        return kib / 1024
    }
}
