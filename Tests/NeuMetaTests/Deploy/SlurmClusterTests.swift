import Foundation
import NeuMeta
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// deploy/slurm/neumeta.sbatch on a real Slurm: deploy/slurm/local-cluster.sh starts munged,
/// slurmctld and slurmd on this machine (one node, as root) and submits the script for the
/// fixture's short experiment with a coordinator and 2 worker tasks on that node. The job must
/// end with the parameters of the fault-free local run, bit for bit, and the coordinator's
/// secret key must never reach the shared state directory the workers read.
@Suite struct SlurmClusterTests {
    static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Why Slurm cannot be started here, or nil when it can (root and the programs of the
    /// Debian packages slurm-wlm and munge, which scripts/install-deps.sh installs).
    static let unavailable: String? = {
        guard getuid() == 0 else { return "not root: the Slurm daemons start as root" }
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/sbin:/sbin"
        for program in ["munged", "slurmctld", "slurmd", "sbatch"] where
            !path.split(separator: ":").contains(where: { FileManager.default.isExecutableFile(atPath: "\($0)/\(program)") }) {
            return "\(program) is not installed (Debian packages slurm-wlm and munge)"
        }
        return nil
    }()

    @Test(.disabled(if: unavailable != nil, Comment(rawValue: unavailable ?? "")), .timeLimit(.minutes(3)))
    func sbatchScriptOnARealSlurmMatchesTheLocalRun() throws {
        let reference = try ClusterProcessTests.reference.value()
        let fixture = try ClusterFixture("slurm")
        defer { fixture.remove() }
        // The job makes its own keys: none may be left from the fixture, so that finding no
        // coordinator.key in the state directory afterwards means something.
        try FileManager.default.removeItem(at: fixture.keys)
        let local = fixture.directory.appendingPathComponent("node-local")
        try FileManager.default.createDirectory(at: local, withIntermediateDirectories: true)
        let output = fixture.directory.appendingPathComponent("job.out")
        let port = try Self.freePort()

        var environment = ProcessInfo.processInfo.environment
        environment.merge(["NEUMETA_HOME": Self.repository.path, "NEUMETA_BIN": Products.directory.path,
                           "NEUMETA_STATE": fixture.directory.path, "NEUMETA_DATA": FashionMNIST.defaultDirectory,
                           "NEUMETA_PORT": "\(port)", "NEUMETA_BIND": "tcp://127.0.0.1:\(port)",
                           "NEUMETA_LOCAL": local.path, "NEUMETA_WORKER_GRACE": "20"]) { $1 }
        environment["PATH"] = (environment["PATH"] ?? "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        let started = Date()
        let run = try Self.run(
            Self.repository.appendingPathComponent("deploy/slurm/local-cluster.sh").path,
            ["--nodes=1", "--ntasks=3", "--overcommit", "--output=\(output.path)",
             Self.repository.appendingPathComponent("deploy/slurm/neumeta.sbatch").path,
             "--json", "--skip-evaluation", "--threads", "1"],
            environment: environment, directory: fixture.directory, timeout: 150)
        let seconds = Date().timeIntervalSince(started)
        let job = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        let report = "local-cluster.sh:\n\(run.log.suffix(4000))\njob output:\n\(job.suffix(4000))"
        #expect(run.status != 97, "Slurm did not start although its programs are installed: \(report)")
        #expect(run.status == 0 && !run.timedOut, "the Slurm job failed (status \(run.status)): \(report)")

        // The coordinator's summary (run --json) is the last JSON line of the job's output.
        let summary = job.split(separator: "\n").reversed().lazy
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .first { $0["params_digest"] != nil }
        let digest = try #require(summary?["params_digest"] as? String, "no summary in the job output: \(report)")
        #expect(summary?["rounds"] as? Int == ClusterFixture.rounds)
        #expect(digest == reference, "the Slurm run's parameters differ from the local run's")
        // Both worker tasks took part.
        for task in 0..<2 {
            #expect(job.contains("worker-localhost-\(task)"), "worker task \(task) never joined: \(report)")
        }

        // Workers saw only their key and the coordinator's public key; the coordinator's
        // private directory on the node is gone with the job.
        let state = FileManager.default.enumerator(atPath: fixture.directory.path)?.allObjects as? [String] ?? []
        #expect(!state.contains { $0.hasSuffix("coordinator.key") }, "coordinator.key in the shared state: \(state)")
        let workerKeys = try FileManager.default.contentsOfDirectory(atPath: fixture.directory.appendingPathComponent("worker-keys").path)
        #expect(Set(workerKeys) == ["worker.key", "coordinator.pub"], "worker-keys holds \(workerKeys)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: local.path)
        #expect(leftovers.isEmpty, "the coordinator's private key directory outlived the job: \(leftovers)")
        print(String(format: "Slurm job (1 node, coordinator + 2 worker tasks, %d rounds): %.1f s, digest %@ %@",
                     ClusterFixture.rounds, seconds, digest, digest == reference ? "= local run" : "≠ local run \(reference)"))
    }

    // MARK: Helpers

    /// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed).
    static func freePort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) } }
        let named = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) } }
        guard descriptor >= 0, bound == 0, named == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Runs a program with standard output and error together in a temporary file. After
    /// `timeout` seconds it gets SIGTERM (the script then tears its cluster down) and 30 s more.
    /// No signal is blocked in the child: Swift Testing's threads block nearly all of them and
    /// a child inherits the mask, so the script's own `kill -TERM` would reach nothing.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String], directory: URL,
                    timeout: TimeInterval) throws -> (status: Int32, log: String, timedOut: Bool) {
        let logURL = directory.appendingPathComponent("local-cluster.log")
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let log = try FileHandle(forWritingTo: logURL)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        process.currentDirectoryURL = directory
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        var none = sigset_t(), saved = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        try process.run()
        var deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(100_000) }
        let timedOut = process.isRunning
        if timedOut {
            process.terminate()
            deadline = Date().addingTimeInterval(30)
            while process.isRunning && Date() < deadline { usleep(100_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        try log.close()
        return (process.terminationStatus, (try? String(contentsOf: logURL, encoding: .utf8)) ?? "", timedOut)
    }
}
