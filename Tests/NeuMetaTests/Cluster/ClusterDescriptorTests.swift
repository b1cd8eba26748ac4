import Foundation
import NeuMeta
import Testing

/// The coordinator's file descriptors, attacked with connections that need no key.
extension ClusterProcessTests {
    /// 300 TCP connections that never start a handshake, against a coordinator limited to 160
    /// file descriptors: libzmq accepts them until none is left, so the coordinator reaches its
    /// connection cap and says so, closes them after the handshake timeout, keeps training with
    /// the worker it has (a checkpoint that fails for want of a descriptor is logged and retried,
    /// never the end of the run), and ends with the fault-free bits.
    @Test(.timeLimit(.minutes(5))) func idleConnectionsCannotExhaustTheCoordinator() throws {
        let fixture = try ClusterFixture("idle")
        defer { fixture.remove() }
        let coordinator = try fixture.coordinator(wrapper: ["/bin/bash", "-c", "ulimit -n 160 && exec \"$@\"", "bash"])
        defer { coordinator.kill() }
        let endpoint = try #require(ClusterFixture.endpoint(of: coordinator), "coordinator did not start:\n\(coordinator.stderr)")
        let worker = try fixture.worker("w1", endpoint: endpoint)
        defer { worker.kill() }
        #expect(coordinator.waitForLog(timeout: 120) { $0.contains("round 2/\(ClusterFixture.rounds)") }, "\(coordinator.stderr.suffix(3000))")

        let port = try #require(UInt16(endpoint.split(separator: ":").last ?? ""))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var idle: [Int32] = []
        defer { idle.forEach { close($0) } }
        for _ in 0..<300 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { break }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)  // past the listen backlog a connect would block
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            idle.append(fd)
        }
        #expect(idle.count == 300)
        #expect(coordinator.waitForLog(timeout: 30) { $0.contains("connection cap: ") }, "\(coordinator.stderr.suffix(3000))")
        #expect(coordinator.wait(timeout: 240) == 0, "\(coordinator.stderr.suffix(3000))")
        #expect(coordinator.stderr.contains("training goes on and the next checkpoint retries") || !coordinator.stderr.contains("Too many"))
        #expect(ClusterFixture.summary(of: coordinator)?["params_digest"] as? String == (try Self.reference.value()))
        let lines = coordinator.stderr.split(separator: "\n")
        print("idle connections: " + lines.filter { $0.contains("connection cap") || $0.contains("checkpoint") && $0.contains("fail") }
            .prefix(6).joined(separator: " | "))
    }
}
