import Foundation
import NeuMeta
import Testing

/// Three hosts on one machine: the coordinator and two workers each in their own network
/// namespace, joined by veth pairs (10.231.1.0/24 and 10.231.2.0/24), so the workers reach the
/// coordinator over real TCP between distinct addresses. Creating namespaces needs root (CI
/// runs as root); elsewhere the test is skipped and says why.
/// Part of `ClusterProcessTests` so that it never runs beside the other process tests.
extension ClusterProcessTests {
    static let ipPath = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let canCreateNamespaces = getuid() == 0 && ipPath != nil

    /// Runs `ip ARGS`; throws with its output on failure.
    @discardableResult
    static func ip(_ arguments: String...) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ipPath!)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        process.waitUntilExit()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard process.terminationStatus == 0 else {
            struct Failed: Error, CustomStringConvertible { let description: String }
            throw Failed(description: "ip \(arguments.joined(separator: " ")): \(output)")
        }
        return output
    }

    @Test(.enabled(if: canCreateNamespaces, "needs root and iproute2 to create network namespaces (run as root, as CI does)"),
          .timeLimit(.minutes(5)))
    func coordinatorAndWorkersInSeparateNamespaces() throws {
        let tag = String(getpid() % 100_000)
        let coordinatorNS = "nmc\(tag)", workerNS = ["nmw1-\(tag)", "nmw2-\(tag)"]
        defer {
            for ns in [coordinatorNS] + workerNS { _ = try? Self.ip("netns", "del", ns) }
        }
        for ns in [coordinatorNS] + workerNS {
            try Self.ip("netns", "add", ns)
            try Self.ip("-n", ns, "link", "set", "lo", "up")
        }
        for (i, ns) in workerNS.enumerated() {
            let near = "nc\(i + 1)-\(tag)", far = "nw\(i + 1)-\(tag)"
            try Self.ip("link", "add", near, "type", "veth", "peer", "name", far)
            try Self.ip("link", "set", near, "netns", coordinatorNS)
            try Self.ip("link", "set", far, "netns", ns)
            try Self.ip("-n", coordinatorNS, "addr", "add", "10.231.\(i + 1).1/24", "dev", near)
            try Self.ip("-n", ns, "addr", "add", "10.231.\(i + 1).2/24", "dev", far)
            try Self.ip("-n", coordinatorNS, "link", "set", near, "up")
            try Self.ip("-n", ns, "link", "set", far, "up")
        }

        let fixture = try ClusterFixture("netns")
        defer { fixture.remove() }
        let started = Date()
        let coordinator = try fixture.coordinator(["--bind", "tcp://0.0.0.0:5570"], wrapper: [Self.ipPath!, "netns", "exec", coordinatorNS])
        defer { coordinator.kill() }
        #expect(coordinator.waitForLog(timeout: 60) { $0.contains("listening on") }, "\(coordinator.stderr)")
        let workers = try workerNS.enumerated().map { i, ns in
            try fixture.worker("w\(i + 1)", endpoint: "tcp://10.231.\(i + 1).1:5570", wrapper: [Self.ipPath!, "netns", "exec", ns])
        }
        defer { workers.forEach { $0.kill() } }
        #expect(coordinator.wait(timeout: 240) == 0, "\(coordinator.stderr.suffix(3000))")
        #expect(coordinator.stderr.contains("worker w1 joined") && coordinator.stderr.contains("worker w2 joined"))
        let summary = try #require(ClusterFixture.summary(of: coordinator))
        #expect(summary["params_digest"] as? String == (try ClusterProcessTests.reference.value()))
        print(String(format: "namespaces (coordinator + 2 workers over veth): %.1f s", Date().timeIntervalSince(started)))
    }
}
