import Foundation
import NeuMeta
import Testing

/// The non-finite rule against key holders that lie together.
extension ClusterProcessTests {
    /// Two peers holding the shared worker key, under two names, both answer block 0 with a NaN
    /// gradient (and sit on any other work): two identities agree, which alone used to end the
    /// run as diverged.
    /// The coordinator computes the block itself, finds it finite, quarantines both, and an
    /// honest worker that joins later finishes the run with the fault-free bits.
    @Test(.timeLimit(.minutes(5))) func twoLyingKeyHoldersCannotEndTheRun() throws {
        let fixture = try ClusterFixture("liars")
        defer { fixture.remove() }
        let coordinator = try fixture.coordinator()
        defer { coordinator.kill() }
        let endpoint = try #require(ClusterFixture.endpoint(of: coordinator), "coordinator did not start:\n\(coordinator.stderr)")
        let liars = try ["liar1", "liar2"].map { try Self.keyHolder($0, fixture, endpoint: endpoint) }
        var parameterCount = 0, lies = 0
        let deadline = Date().addingTimeInterval(60)
        while !coordinator.stderr.contains("computed round") && Date() < deadline {
            for liar in liars {
                guard let frames = try liar.receive(timeout: .milliseconds(200)) else { try? liar.send(.heartbeat); continue }
                switch try Message.decode(frames) {
                case let .welcome(spec, _, _): parameterCount = try JobSpec.decode(spec).parameterCount
                case let .work(round, blocks):
                    for b in blocks where b == 0 {
                        let head = parameterCount / LeNet(width: 1).trainableSpecs.count  // heads are equal
                        try liar.send(.gradientPiece(round: round, block: b, offset: 0, values: WireTensor([Float](repeating: .nan, count: head))))
                        lies += 1
                    }
                default: break
                }
            }
        }
        #expect(lies >= 2, "the liars got no work")
        #expect(coordinator.waitForLog(timeout: 30) { $0.contains("is finite as the coordinator computes it") }, "\(coordinator.stderr.suffix(3000))")
        let worker = try fixture.worker("honest", endpoint: endpoint)
        defer { worker.kill() }
        #expect(coordinator.wait(timeout: 240) == 0, "\(coordinator.stderr.suffix(3000))")
        #expect(!coordinator.stderr.contains("diverged"))
        #expect(ClusterFixture.summary(of: coordinator)?["params_digest"] as? String == (try Self.reference.value()))
    }
}
