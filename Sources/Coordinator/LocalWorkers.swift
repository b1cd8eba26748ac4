import ArgumentParser
import Foundation
import NeuMeta

/// Worker processes the coordinator starts on its own machine (`workers.local` in
/// cluster.yaml). They are ordinary `neumeta-worker` processes that connect over TCP with
/// CURVE like remote ones; `--exit-with-parent` makes them stop if the coordinator dies.
final class LocalWorkers {
    private var processes: [(name: String, process: Process)] = []

    /// The `neumeta-worker` executable next to this one.
    static func workerExecutable() throws -> URL {
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let candidate = me.deletingLastPathComponent().appendingPathComponent("neumeta-worker")
        guard FileManager.default.isExecutableFile(atPath: candidate.path) else {
            throw ValidationError("neumeta-worker not found at \(candidate.path): build both products (swift build -c release)")
        }
        return candidate
    }

    /// Starts `count` workers named `local-1…` connecting to `endpoint`, reading `data` as this
    /// process does (same directory, kind, fingerprint, prefetch depth and loading).
    init(count: Int, endpoint: String, keys: String, data: LocalTrainingData, threads: Int) throws {
        let executable = try Self.workerExecutable()
        for i in 0..<count {
            let name = "local-\(i + 1)"
            let process = Process()
            process.executableURL = executable
            process.arguments = ["--connect", endpoint, "--keys", keys, "--name", name, "--data", data.directory, "--dataset", data.kind.rawValue,
                                 "--prefetch", String(data.prefetch), "--threads", String(threads), "--exit-with-parent"]
                + (data.inMemory ? ["--in-memory"] : []) + (data.contentHashes ? ["--content-hashes"] : [])
            process.terminationHandler = { p in
                if p.terminationStatus != 0 { log("local worker \(name) exited with status \(p.terminationStatus)") }
            }
            try process.run()
            processes.append((name, process))
        }
        if count > 0 { log("started \(count) local worker\(count == 1 ? "" : "s") (\(threads) thread\(threads == 1 ? "" : "s") each)") }
    }

    /// Waits up to `timeout` for the workers to leave (after the coordinator's goodbye), then
    /// asks the rest to stop (SIGCONT first: a stopped process ignores SIGTERM until resumed)
    /// and kills what is still there two seconds later.
    func stop(timeout: TimeInterval = 5) {
        func wait(_ seconds: TimeInterval) {
            let deadline = Date().addingTimeInterval(seconds)
            while processes.contains(where: { $0.process.isRunning }) && Date() < deadline { usleep(50_000) }
        }
        wait(timeout)
        for (_, process) in processes where process.isRunning {
            kill(process.processIdentifier, SIGCONT)
            process.terminate()
        }
        wait(2)
        for (_, process) in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for (_, process) in processes { process.waitUntilExit() }
    }
}
