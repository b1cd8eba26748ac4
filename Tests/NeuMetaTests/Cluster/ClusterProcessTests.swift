import Foundation
import NeuMeta
import Testing

/// The cluster's promises checked with real processes over real CURVE sockets: every run below
/// must end with the INR parameters of the fault-free one-worker run, bit for bit (compared by
/// the BLAKE2b digest `run --json` prints).
@Suite(.serialized) struct ClusterProcessTests {
    /// The digest of the fault-free run with one worker, computed once.
    static let reference = ReferenceRun()

    final class ReferenceRun: @unchecked Sendable {
        private let lock = NSLock()
        private var digests: (params: String, ema: String)?

        /// The INR parameters' digest (and, with `ema`, their EMA's).
        func value(ema: Bool = false) throws -> String {
            lock.lock(); defer { lock.unlock() }
            if digests == nil {
                let fixture = try ClusterFixture("reference")
                defer { fixture.remove() }
                let params = try ClusterProcessTests.train(fixture, workers: 1)
                let summary = try fixture.summary()
                digests = (params, try #require(summary["ema_digest"] as? String))
            }
            return ema ? digests!.ema : digests!.params
        }
    }

    /// Runs the fixture's experiment to the end with `workers` workers (worker i computing with
    /// `threads[i]` threads, default 1) and `extra` coordinator options; returns the digest.
    static func train(_ fixture: ClusterFixture, workers: Int, threads: [Int] = [], extra: [String] = []) throws -> String {
        let started = Date()
        let coordinator = try fixture.coordinator(extra)
        let endpoint = try #require(ClusterFixture.endpoint(of: coordinator), "coordinator did not start:\n\(coordinator.stderr)")
        let processes = try (1...workers).map { i in
            try fixture.worker("w\(i)", endpoint: endpoint, threads: i - 1 < threads.count ? threads[i - 1] : 1)
        }
        defer { processes.forEach { $0.kill() } }
        #expect(coordinator.wait(timeout: 240) == 0, "coordinator failed:\n\(coordinator.stderr.suffix(3000))")
        for worker in processes { #expect(worker.wait(timeout: 20) == 0, "\(worker.label):\n\(worker.stderr.suffix(2000))") }
        let summary = try #require(ClusterFixture.summary(of: coordinator))
        #expect(summary["rounds"] as? Int == ClusterFixture.rounds)
        try summary.write(to: fixture.directory.appendingPathComponent("summary.json"))
        print(String(format: "cluster run with %d worker(s): %.1f s", workers, Date().timeIntervalSince(started)))
        return try #require(summary["params_digest"] as? String)
    }

    /// Starts a coordinator and `workers` workers, waits until `round` rounds are done, and
    /// returns them for a fault to be injected.
    static func start(_ fixture: ClusterFixture, workers: Int, until round: Int,
                      extra: [String] = []) throws -> (ChildProcess, String, [ChildProcess]) {
        let coordinator = try fixture.coordinator(extra)
        let endpoint = try #require(ClusterFixture.endpoint(of: coordinator), "coordinator did not start:\n\(coordinator.stderr)")
        let processes = try (1...workers).map { try fixture.worker("w\($0)", endpoint: endpoint) }
        let reached = coordinator.waitForLog(timeout: 120) { $0.contains("round \(round)/\(ClusterFixture.rounds)") }
        #expect(reached, "round \(round) not reached:\n\(coordinator.stderr.suffix(3000))")
        return (coordinator, endpoint, processes)
    }

    /// A peer written in the test that holds the fixture's worker key: connected to `endpoint`
    /// and its hello (as `name`) sent; it speaks the wire protocol as the test decides.
    static func keyHolder(_ name: String, _ fixture: ClusterFixture, endpoint: String) throws -> ZMQ.Socket {
        let socket = try ZMQ.Socket(try ZMQ.Context(), .dealer)
        try socket.makeCurveClient(server: try KeyStore.loadPublic(fixture.keys.appendingPathComponent("coordinator.pub")),
                                   keys: try KeyStore.loadSecret(fixture.keys.appendingPathComponent("worker.key")))
        try socket.setSendTimeout(.seconds(5))  // the first send waits for the connection (a busy machine)
        try socket.connect(endpoint)
        try socket.send(.hello(workerName: name, protocolVersion: WireProtocol.version,
                               dataFingerprint: try DataFingerprint.fashionMNIST(directory: FashionMNIST.defaultDirectory).text))
        try socket.setSendTimeout(.milliseconds(500))
        return socket
    }

    @Test(.timeLimit(.minutes(10))) func oneAndThreeWorkersGiveIdenticalParameters() throws {
        let one = try Self.reference.value()
        let fixture = try ClusterFixture("three")
        defer { fixture.remove() }
        // Worker 2 splits its products over 2 threads: the gradient must not depend on that.
        let three = try Self.train(fixture, workers: 3, threads: [1, 2, 1])
        #expect(one == three)
        // The metrics file has one line per round, each naming the live workers.
        let metrics = try String(contentsOf: fixture.directory.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(metrics.count == ClusterFixture.rounds)
        // The work was really shared: three workers were alive for most rounds.
        #expect(metrics.filter { $0["workers_alive"] as? Int == 3 }.count >= ClusterFixture.rounds / 2)
        #expect(try fixture.summary()["ema_digest"] as? String == (try Self.reference.value(ema: true)))
    }

    @Test(.timeLimit(.minutes(5))) func killedWorkerIsReplacedAndTheResultIsUnchanged() throws {
        let fixture = try ClusterFixture("sigkill")
        defer { fixture.remove() }
        let started = Date()
        let (coordinator, endpoint, workers) = try Self.start(fixture, workers: 3, until: 3)
        defer { workers.forEach { $0.kill() } }
        // A worker may join at any round.
        let late = try fixture.worker("late", endpoint: endpoint)
        defer { late.kill() }
        let joined = coordinator.waitForLog(timeout: 60) { $0.contains("worker late joined at round") }
        #expect(joined, "\(coordinator.stderr.suffix(3000))")
        let joinLine = coordinator.stderr.split(separator: "\n").first { $0.contains("worker late joined") } ?? ""
        workers[1].signal(SIGKILL)
        #expect(coordinator.wait(timeout: 240) == 0, "\(coordinator.stderr.suffix(3000))")
        // Found by the heartbeat timeout, or sooner when the ROUTER reports its connection gone.
        #expect(coordinator.stderr.contains("dropped worker w2 ("), "\(coordinator.stderr.suffix(3000))")
        let summary = try #require(ClusterFixture.summary(of: coordinator))
        #expect(summary["params_digest"] as? String == (try Self.reference.value()))
        print(String(format: "SIGKILL of a worker mid-run: %.1f s (%@)", Date().timeIntervalSince(started), String(joinLine)))
    }

    @Test(.timeLimit(.minutes(5))) func frozenWorkerIsDroppedAndItsLateResultsDiscarded() throws {
        let fixture = try ClusterFixture("sigstop")
        defer { fixture.remove() }
        let started = Date()
        let (coordinator, _, workers) = try Self.start(fixture, workers: 3, until: 3)
        defer { workers.forEach { $0.kill() } }
        workers[1].signal(SIGSTOP)
        // Dropped once silent for the heartbeat timeout — unless the idle workers, re-executing
        // its configurations speculatively, finish the run first.
        let dropped = coordinator.waitForLog(timeout: 30) { $0.contains("dropped worker w2 (silent for") }
        #expect(dropped || !coordinator.process.isRunning, "\(coordinator.stderr.suffix(3000))")
        workers[1].signal(SIGCONT)  // it wakes with stale work: its results must not count
        #expect(coordinator.wait(timeout: 240) == 0, "\(coordinator.stderr.suffix(3000))")
        let summary = try #require(ClusterFixture.summary(of: coordinator))
        #expect(summary["params_digest"] as? String == (try Self.reference.value()))
        print(String(format: "SIGSTOP of a worker mid-run: %.1f s", Date().timeIntervalSince(started)))
    }

    @Test(.timeLimit(.minutes(5))) func killedCoordinatorResumesFromTheLastGoodCheckpoint() throws {
        let fixture = try ClusterFixture("resume")
        defer { fixture.remove() }
        let started = Date()
        let (first, endpoint, workers) = try Self.start(fixture, workers: 2, until: 9)
        defer { workers.forEach { $0.kill() } }
        first.kill()
        let store = CheckpointStore(directory: fixture.directory.appendingPathComponent("checkpoints").path, prefix: "inr")
        let saved = try store.checkpoints()
        try #require(saved.count >= 2, "expected at least the 2 newest checkpoints, found \(saved.map(\.path))")
        // Corrupt the newest: resume must report it and fall back to the one before.
        let newest = try FileHandle(forUpdating: URL(fileURLWithPath: saved[0].path))
        try newest.seek(toOffset: try newest.seekToEnd() - 100)
        try newest.write(contentsOf: Data(repeating: 0x5A, count: 8))
        try newest.close()

        let second = try fixture.coordinator(["--resume", "--bind", endpoint], label: "coordinator-resumed")
        #expect(second.wait(timeout: 240) == 0, "\(second.stderr.suffix(3000))")
        #expect(second.stderr.contains("skipping checkpoint \(saved[0].path)"), "\(second.stderr.prefix(3000))")
        #expect(second.stderr.contains("resumed from \(saved[1].path) at round \(saved[1].step)"), "\(second.stderr.prefix(3000))")
        let summary = try #require(ClusterFixture.summary(of: second))
        #expect(summary["params_digest"] as? String == (try Self.reference.value()))
        #expect(summary["ema_digest"] as? String == (try Self.reference.value(ema: true)))
        #expect(FileManager.default.fileExists(atPath: saved[0].path + ".corrupt"))
        print(String(format: "coordinator SIGKILL + resume: %.1f s", Date().timeIntervalSince(started)))
    }

    /// `train` (one process, the same round loop) ends with the cluster's parameters, and
    /// `train --resume` after a SIGKILL ends bit-identical to an uninterrupted `train`.
    @Test(.timeLimit(.minutes(10))) func singleProcessTrainMatchesTheClusterAndResumesExactly() throws {
        let fixture = try ClusterFixture("train")
        defer { fixture.remove() }
        let config = fixture.directory.appendingPathComponent("cluster.yaml").path
        func train(_ label: String, _ extra: [String]) throws -> ChildProcess {
            try ChildProcess(Products.coordinator, ["train", "--config", config, "--json", "--threads", "1", "--checkpoint-dir", label,
                                                    "--out", label + ".safetensors", "--metrics", label + ".jsonl"] + extra,
                             in: fixture.directory, label: label)
        }
        let straight = try train("straight", [])
        #expect(straight.wait(timeout: 240) == 0, "train failed:\n\(straight.stderr.suffix(3000))")
        let digest = try #require(ClusterFixture.summary(of: straight)?["params_digest"] as? String)
        #expect(digest == (try Self.reference.value()), "single process and cluster differ")

        let killed = try train("killed", [])
        let reached = killed.waitForLog(timeout: 120) { $0.contains("round 9/\(ClusterFixture.rounds)") }
        #expect(reached, "round 9 not reached:\n\(killed.stderr.suffix(3000))")
        killed.kill()
        let checkpoints = try FileManager.default.contentsOfDirectory(atPath: fixture.directory.appendingPathComponent("killed").path)
        #expect(checkpoints.contains { $0.hasPrefix("inr-") }, "no checkpoint before the kill")
        #expect(!FileManager.default.fileExists(atPath: fixture.directory.appendingPathComponent("killed.safetensors").path))

        let resumed = try train("killed", ["--resume"])
        #expect(resumed.wait(timeout: 240) == 0, "resume failed:\n\(resumed.stderr.suffix(3000))")
        #expect(resumed.stderr.contains("resumed from"))
        #expect(ClusterFixture.summary(of: resumed)?["params_digest"] as? String == digest)
        #expect(ClusterFixture.summary(of: resumed)?["ema_digest"] as? String == ClusterFixture.summary(of: straight)?["ema_digest"] as? String)

        // Every checkpoint corrupt: --resume refuses (non-zero exit, naming the files), nothing is
        // lost; --resume --fresh sets them aside and trains from round 0 to the same bits.
        let store = fixture.directory.appendingPathComponent("killed")
        let files = try FileManager.default.contentsOfDirectory(atPath: store.path).filter { $0.hasPrefix("inr-") && $0.hasSuffix(".safetensors") }
        #expect(!files.isEmpty)
        for file in files {
            let url = store.appendingPathComponent(file)
            var bytes = try Data(contentsOf: url)
            bytes[bytes.count - 1] ^= 0xFF
            try bytes.write(to: url)
        }
        let refused = try train("killed", ["--resume"])
        let status = refused.wait(timeout: 120)
        #expect(status != nil && status != 0)
        #expect(refused.stderr.contains("can be resumed") && refused.stderr.contains("--fresh") && refused.stderr.contains(files[0]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.path).filter { files.contains($0) }.count == files.count)
        let fresh = try train("killed", ["--resume", "--fresh"])
        #expect(fresh.wait(timeout: 240) == 0, "fresh start failed:\n\(fresh.stderr.suffix(3000))")
        #expect(fresh.stderr.contains("--fresh: moved the unusable checkpoints to"))
        #expect(ClusterFixture.summary(of: fresh)?["params_digest"] as? String == digest)
    }

    /// A TCP connection that never completes the CURVE handshake is closed by the coordinator
    /// after `WireProtocol.handshakeTimeout`, not left open to use up descriptors.
    @Test(.timeLimit(.minutes(2))) func idleConnectionsAreClosedAfterTheHandshakeTimeout() throws {
        let fixture = try ClusterFixture("handshake")
        defer { fixture.remove() }
        let coordinator = try fixture.coordinator()
        defer { coordinator.kill() }
        let endpoint = try #require(ClusterFixture.endpoint(of: coordinator), "coordinator did not start:\n\(coordinator.stderr)")
        #expect(coordinator.stderr.contains("open-file limit"))
        let port = try #require(endpoint.split(separator: ":").last.flatMap { UInt16($0) })
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(connected == 0)
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let start = Date()
        var buffer = [UInt8](repeating: 0, count: 256), closed = false
        while Date().timeIntervalSince(start) < 20 {
            let n = recv(fd, &buffer, buffer.count, 0)  // the server's greeting, then end of stream
            if n == 0 { closed = true; break }
            if n < 0 { break }
        }
        let seconds = Date().timeIntervalSince(start)
        #expect(closed, "the idle connection was not closed within 20 s")
        #expect(seconds < 12, "closed after \(seconds) s; the handshake timeout is \(WireProtocol.handshakeTimeout)")
        print(String(format: "idle connection closed after %.1f s", seconds))
    }

    @Test(.timeLimit(.minutes(5))) func unknownKeyAndPlaintextClientsGetNothing() throws {
        let fixture = try ClusterFixture("security")
        defer { fixture.remove() }
        let coordinator = try fixture.coordinator(["--rounds", "2"])
        defer { coordinator.kill() }
        let endpoint = try #require(ClusterFixture.endpoint(of: coordinator))

        // A worker whose key is not in the allow-list (it does know the coordinator's public key).
        let strangerKeys = fixture.directory.appendingPathComponent("stranger")
        try KeyStore.generate(into: strangerKeys, workers: ["worker"])
        try FileManager.default.removeItem(at: strangerKeys.appendingPathComponent("coordinator.pub"))
        try FileManager.default.copyItem(at: fixture.keys.appendingPathComponent("coordinator.pub"),
                                         to: strangerKeys.appendingPathComponent("coordinator.pub"))
        let strangerKey = try KeyStore.loadPublic(strangerKeys.appendingPathComponent("worker.pub"))
        let stranger = try fixture.worker("stranger", endpoint: endpoint, keys: strangerKeys)
        defer { stranger.kill() }
        let refused = coordinator.waitForLog(timeout: 30) { $0.contains("refused CURVE client") && $0.contains(strangerKey.z85) }
        #expect(refused, "\(coordinator.stderr.suffix(3000))")

        // A plaintext client: the CURVE handshake cannot complete, so its hello goes nowhere.
        let plain = try ZMQ.Socket(try ZMQ.Context(), .dealer)
        try plain.setSendTimeout(.milliseconds(500))
        try plain.connect(endpoint)
        try? plain.send(.hello(workerName: "plain", protocolVersion: WireProtocol.version, dataFingerprint: "x"))
        #expect(try plain.receive(timeout: .seconds(2)) == nil)
        plain.close()
        #expect(!coordinator.stderr.contains("joined"), "\(coordinator.stderr.suffix(3000))")

        // The stranger is never welcomed: after a few refused handshakes it stops with an error
        // naming the cause (while the coordinator is up; one that is not up yet does not count).
        #expect(stranger.wait(timeout: 60) == 1, "\(stranger.stderr.suffix(2000))")
        #expect(stranger.stderr.contains("authentication refused") && stranger.stderr.contains("authorized_workers"))

        // The coordinator still serves an allow-listed worker.
        let worker = try fixture.worker("w1", endpoint: endpoint)
        defer { worker.kill() }
        #expect(coordinator.wait(timeout: 120) == 0, "\(coordinator.stderr.suffix(3000))")
        // A worker whose coordinator.pub holds another key stops the same way.
        let wrongServer = fixture.directory.appendingPathComponent("wrong-server")
        try KeyStore.generate(into: wrongServer, workers: ["worker"])
        try FileManager.default.removeItem(at: wrongServer.appendingPathComponent("worker.key"))
        try FileManager.default.copyItem(at: fixture.keys.appendingPathComponent("worker.key"), to: wrongServer.appendingPathComponent("worker.key"))
        try FileManager.default.removeItem(at: wrongServer.appendingPathComponent("worker.pub"))
        try FileManager.default.copyItem(at: fixture.keys.appendingPathComponent("worker.pub"), to: wrongServer.appendingPathComponent("worker.pub"))
        let second = try fixture.coordinator(["--rounds", "2", "--checkpoint-dir", "checkpoints-2", "--out", "inr-2.safetensors"], label: "coordinator-2")
        defer { second.kill() }
        let secondEndpoint = try #require(ClusterFixture.endpoint(of: second))
        let misled = try fixture.worker("misled", endpoint: secondEndpoint, keys: wrongServer)
        defer { misled.kill() }
        #expect(misled.wait(timeout: 60) == 1, "\(misled.stderr.suffix(2000))")
        #expect(misled.stderr.contains("CURVE handshakes with the coordinator failed") && misled.stderr.contains("coordinator.pub"))
    }

    /// A key holder that joins mid-run and answers its work with finite but absurd gradients
    /// (every value 1e20): each is rejected against the recent norms, its configurations are
    /// recomputed by an honest worker, and the run ends with the fault-free parameters.
    @Test(.timeLimit(.minutes(5))) func implausibleGradientsAreRejectedAndTheRunIsUnchanged() throws {
        let fixture = try ClusterFixture("giant")
        defer { fixture.remove() }
        let (coordinator, endpoint, honest) = try Self.start(fixture, workers: 1, until: 12)
        defer { coordinator.kill(); honest.forEach { $0.kill() } }
        let giant = try Self.keyHolder("giant", fixture, endpoint: endpoint)
        var heads: [Range<Int>] = [], sent = 0
        let deadline = Date().addingTimeInterval(60)
        while sent == 0 && Date() < deadline, let frames = try giant.receive(timeout: .seconds(5)) {
            switch try Message.decode(frames) {
            case let .welcome(spec, _, _):
                let job = try JobSpec.decode(spec)
                let network = try NetworkFamily.make(job.family, widths: [job.pretrainedWidth])
                heads = HyperNetwork(config: job.inr, targetSpecs: network.trainableSpecs, seed: 0).headRanges
            case let .work(round, blocks):
                for b in blocks {
                    for range in heads {  // (LeNet's heads are one piece each)
                        try giant.send(.gradientPiece(round: round, block: b, offset: range.lowerBound,
                                                      values: WireTensor([Float](repeating: 1e20, count: range.count))))
                    }
                    var terms = LossTerms(); terms.samples = 16; terms.total = 1
                    try giant.send(.result(round: round, block: b, terms: [terms], seconds: 0.01))
                    sent += 1
                }
            default: break
            }
        }
        #expect(sent > 0, "the giant got no work")
        #expect(coordinator.waitForLog(timeout: 30) { $0.contains("rejected a gradient of worker giant") },
                "\(coordinator.stderr.suffix(3000))")
        #expect(coordinator.wait(timeout: 240) == 0, "\(coordinator.stderr.suffix(3000))")
        let summary = try #require(ClusterFixture.summary(of: coordinator))
        #expect(summary["params_digest"] as? String == (try Self.reference.value()))
        let metrics = try String(contentsOf: fixture.directory.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        let rejected = metrics.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["rejected_gradients"] as? Int
        }.reduce(0, +)
        #expect(rejected >= 1, "the metrics count the rejections")
    }

    /// A key holder that takes work and never answers (it keeps heartbeating, so it is not
    /// dropped for silence): its configurations are re-executed on the idle honest worker after
    /// a few configuration times, so no round waits for `progressTimeout`, and the result is the
    /// fault-free one.
    @Test(.timeLimit(.minutes(5))) func workTakenAndNeverAnsweredIsReexecuted() throws {
        let fixture = try ClusterFixture("stuck")
        defer { fixture.remove() }
        let (coordinator, endpoint, honest) = try Self.start(fixture, workers: 1, until: 5)
        defer { coordinator.kill(); honest.forEach { $0.kill() } }
        let stuck = try Self.keyHolder("stuck", fixture, endpoint: endpoint)
        var taken = 0
        while coordinator.process.isRunning {
            if let frames = try stuck.receive(timeout: .milliseconds(500)), case let .work(_, blocks) = try Message.decode(frames) {
                taken += blocks.count
            }
            try? stuck.send(.heartbeat)
        }
        #expect(coordinator.wait(timeout: 10) == 0, "\(coordinator.stderr.suffix(3000))")
        #expect(taken > 0, "the stuck peer got no work")
        let summary = try #require(ClusterFixture.summary(of: coordinator))
        #expect(summary["params_digest"] as? String == (try Self.reference.value()))
        let seconds = try String(contentsOf: fixture.directory.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n").compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["seconds"] as? Double }
        #expect((seconds.max() ?? .infinity) < 20, "slowest round \(seconds.max() ?? -1) s; progressTimeout is \(WireProtocol.progressTimeout)")
        print(String(format: "stuck peer took %d configurations; slowest round %.2f s", taken, seconds.max() ?? -1))
    }

    @Test(.timeLimit(.minutes(5))) func hostilePeersAreDroppedAndTheRunFinishes() throws {
        let fixture = try ClusterFixture("fuzz")
        defer { fixture.remove() }
        let started = Date()
        let coordinator = try fixture.coordinator()
        defer { coordinator.kill() }
        let endpoint = try #require(ClusterFixture.endpoint(of: coordinator))
        let keys = try KeyStore.loadSecret(fixture.keys.appendingPathComponent("worker.key"))
        let server = try KeyStore.loadPublic(fixture.keys.appendingPathComponent("coordinator.pub"))
        func peer() throws -> ZMQ.Socket {
            let socket = try ZMQ.Socket(try ZMQ.Context(), .dealer)
            try socket.makeCurveClient(server: server, keys: keys)
            try socket.setSendTimeout(.milliseconds(500))
            try socket.connect(endpoint)
            return socket
        }
        let fingerprint = try DataFingerprint.fashionMNIST(directory: FashionMNIST.defaultDirectory).text

        // An admitted worker that answers its work with a NaN gradient head (the first head's,
        // then its result): it is dropped and its configurations are recomputed by an honest worker.
        let poisoner = try peer()
        try poisoner.send(.hello(workerName: "poisoner", protocolVersion: WireProtocol.version, dataFingerprint: fingerprint))
        var parameterCount = 0, poisoned = 0
        let deadline = Date().addingTimeInterval(60)
        while poisoned == 0 && Date() < deadline, let frames = try poisoner.receive(timeout: .seconds(5)) {
            switch try Message.decode(frames) {
            case let .welcome(spec, _, _): parameterCount = try JobSpec.decode(spec).parameterCount
            case let .work(round, blocks):
                for b in blocks {
                    var t = LossTerms(); t.samples = 16; t.total = .nan
                    let head = parameterCount / LeNet(width: 1).trainableSpecs.count  // heads are equal
                    try poisoner.send(.gradientPiece(round: round, block: b, offset: 0,
                                                     values: WireTensor([Float](repeating: .nan, count: head))))
                    try poisoner.send(.result(round: round, block: b, terms: [t], seconds: 0.01))
                    poisoned += 1
                }
            default: break
            }
        }
        #expect(poisoned > 0)
        #expect(coordinator.waitForLog(timeout: 30) { $0.contains("worker poisoner returned a non-finite result") })
        let worker = try fixture.worker("w1", endpoint: endpoint)
        defer { worker.kill() }

        // An impostor with w1's key claiming w1's name: it replaces w1's connection (as a
        // restarted w1 would), never computes, is dropped; w1 reconnects; nothing is lost.
        #expect(worker.waitForLog(timeout: 60) { $0.contains("joined at round") })
        let impostor = try peer()
        try impostor.send(.hello(workerName: "w1", protocolVersion: WireProtocol.version, dataFingerprint: fingerprint))

        // A hostile peer: valid messages with random bit flips and truncations, random frame
        // sequences, and well-formed messages it should not send.
        let fuzz = try peer()
        var rng = SeededRandom(2024)
        var terms = LossTerms(); terms.samples = 16; terms.correct = 3; terms.total = 1
        let samples: [Message] = [
            .result(round: 1, block: 0, terms: [terms], seconds: 0.1),
            .work(round: 0, blocks: [0, 1]), .heartbeat, .goodbye,
            .gradientPiece(round: 1, block: 1, offset: 0, values: WireTensor([4, 5])),
            .parameterHead(round: 1, offset: 2, values: WireTensor([6])),
            .welcome(jobSpec: Array("{}".utf8), round: 0, baseWeights: WireTensor([])),
        ]
        var sent = 0
        for i in 0..<3000 where coordinator.process.isRunning {
            var frames: [[UInt8]]
            if i % 3 == 0 {
                frames = (0..<(1 + rng.index(below: 3))).map { _ in (0..<rng.index(below: 64)).map { _ in UInt8(rng.index(below: 256)) } }
            } else {
                let encoded = try samples[rng.index(below: samples.count)].encoded()
                frames = [encoded.header] + encoded.tensors.map { $0.withUnsafeFrameBytes { Array($0) } }
                let f = rng.index(below: frames.count)
                if !frames[f].isEmpty {
                    if rng.index(below: 2) == 0 { frames[f][rng.index(below: frames[f].count)] ^= UInt8(1 << rng.index(below: 8)) }
                    else { frames[f].removeLast(1 + rng.index(below: frames[f].count)) }
                }
            }
            if (try? fuzz.send(frames: frames)) != nil { sent += 1 }
            if i % 100 == 0 { usleep(10_000) }
        }
        fuzz.close()
        impostor.close()
        poisoner.close()
        #expect(sent > 1000)
        #expect(coordinator.wait(timeout: 240) == 0,
                "\(coordinator.stderr.suffix(3000))\nworker w1 (running: \(worker.process.isRunning)):\n\(worker.stderr.suffix(3000))")
        #expect(coordinator.stderr.contains("dropped malformed message"))
        let summary = try #require(ClusterFixture.summary(of: coordinator))
        #expect(summary["params_digest"] as? String == (try Self.reference.value()))
        print(String(format: "fuzzed run (NaN worker, impostor, %d hostile messages): %.1f s", sent, Date().timeIntervalSince(started)))
    }
    @Test(.timeLimit(.minutes(5))) func workerWithOtherDataIsRefusedWithTheDifference() throws {
        let fixture = try ClusterFixture("data")
        defer { fixture.remove() }
        // A copy of the training set with one label changed (still a valid data set).
        let other = fixture.directory.appendingPathComponent("otherdata")
        try FileManager.default.createDirectory(at: other, withIntermediateDirectories: true)
        let source = URL(fileURLWithPath: FashionMNIST.defaultDirectory)
        try FileManager.default.createSymbolicLink(at: other.appendingPathComponent("train-images-idx3-ubyte.gz"),
                                                   withDestinationURL: source.appendingPathComponent("train-images-idx3-ubyte.gz"))
        let labels = other.appendingPathComponent("train-labels-idx1-ubyte")
        func sh(_ command: String) throws {
            let shell = Process()
            shell.executableURL = URL(fileURLWithPath: "/bin/sh")
            shell.arguments = ["-c", command]
            try shell.run(); shell.waitUntilExit()
        }
        try sh("gzip -dc '\(source.path)/train-labels-idx1-ubyte.gz' > '\(labels.path)'")
        var bytes = try [UInt8](Data(contentsOf: labels))
        bytes[8] = (bytes[8] + 1) % 10
        try Data(bytes).write(to: labels)
        try sh("gzip -n '\(labels.path)'")  // same file name as the coordinator's, other contents

        let coordinator = try fixture.coordinator(["--rounds", "1"])
        defer { coordinator.kill() }
        let endpoint = try #require(ClusterFixture.endpoint(of: coordinator))
        let stranger = try fixture.worker("otherdata", endpoint: endpoint, data: other.path)
        #expect(stranger.wait(timeout: 60) == 3, "\(stranger.stderr)")
        #expect(stranger.stderr.contains("refused by the coordinator: the worker's data differs from the coordinator's: "
                                         + "train-labels-idx1-ubyte.gz has "), "\(stranger.stderr)")
        #expect(!stranger.stderr.contains("train-images"), "\(stranger.stderr)")
        print("refusal: " + (stranger.stderr.split(separator: "\n").first { $0.contains("refused by") } ?? ""))
        #expect(coordinator.stderr.contains("refused worker otherdata"))
        let worker = try fixture.worker("w1", endpoint: endpoint)
        defer { worker.kill() }
        #expect(coordinator.wait(timeout: 120) == 0, "\(coordinator.stderr.suffix(3000))")
    }
}
