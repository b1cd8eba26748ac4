import Foundation
import NeuMeta
import Testing

/// The pieces the cluster run is made of, without sockets: the job spec and data fingerprint,
/// a worker's gradient, the coordinator's round step, resume, and key management.
@Suite struct ClusterRunTests {
    /// A tiny LeNet job: width 4 base, INR hidden 8, 16 synthetic images, 2 configurations a round.
    struct Job {
        let net = LeNet(width: 4)
        let base: ParameterSet
        let data = syntheticImages(count: 32, seed: 3)
        let config = INRConfig(hidden: 8, layers: 2, frequencies: 2, outputSize: 25, norm: 4)
        var plan = RoundPlan()
        let fingerprint = DataFingerprint(dataset: "synthetic", files: [.init(name: "images", size: 784 * 32, digest: "ab12"),
                                                                        .init(name: "labels", size: 32, digest: "cd34")])

        init() {
            base = net.makeParameters()
            var rng = SeededRandom(5)
            base.initializeDefault(rng: &rng)
            plan.minWidth = 2; plan.maxWidth = 4; plan.pretrainedWidth = 4; plan.batchSize = 8; plan.datasetCount = 32
            plan.rounds = 6; plan.configurationsPerRound = 2; plan.fitPretrainedEveryRound = true
        }

        func trainer() -> INRTrainer {
            let inr = HyperNetwork(config: config, targetSpecs: net.trainableSpecs, seed: 2)
            let objective = ConfigurationGradient(inr: inr, family: "lenet", dataset: data, mean: [0.5], std: [0.3], pretrained: base,
                                                  pretrainedWidth: 4)
            var settings = OptimizerSettings()
            settings.cosineSchedule = true
            return INRTrainer(objective: objective, plan: plan, optimizer: settings)
        }

        func spec(parameterCount: Int) -> JobSpec {
            JobSpec(family: "lenet", classCount: 10, pretrainedWidth: 4, mean: [0.5], std: [0.3], inr: config, plan: plan,
                    parameterCount: parameterCount, baseParameterCount: base.count, data: fingerprint)
        }
    }

    static func state(_ t: INRTrainer) -> [[Float]] {
        [Array(t.inr.parameters.values.buffer), Array(t.ema.average.buffer), Array(t.optimizer.firstMoment.buffer),
         Array(t.optimizer.secondMoment.buffer)]
    }

    /// What a coordinator does with workers' gradient pieces equals the single-process round,
    /// bit for bit: each configuration's gradient comes piece by piece (one per INR head) from a
    /// `WorkerJob` built from the (JSON round-tripped) job spec, the parameters it uses arrive in
    /// pieces too, and the coordinator steps piece by piece (`stepPiece`, here in an order other
    /// than the parameters' own) and finishes with `finishPipelinedRound`.
    @Test(arguments: [1, 3]) func workerPiecesStepLikeTheSingleProcessTrainer(configurations: Int) throws {
        var job = Job()
        job.plan.configurationsPerRound = configurations
        let single = job.trainer(), cluster = job.trainer()
        let spec = try JobSpec.decode(job.spec(parameterCount: cluster.inr.parameters.count).json)
        #expect(spec == job.spec(parameterCount: cluster.inr.parameters.count))
        for _ in 0..<3 { _ = try single.runRound() }
        let ranges = cluster.inr.headRanges, n = cluster.inr.parameters.count
        #expect(ranges.count == job.net.trainableSpecs.count && ranges.first?.lowerBound == 0 && ranges.last?.upperBound == n)
        for round in 0..<3 {
            let pieces = ranges.map { (offset: $0.lowerBound, values: WireTensor(copying: UnsafeBufferPointer(
                start: cluster.inr.parameters.values.base + $0.lowerBound, count: $0.count))) }
            let worker = try WorkerJob(spec: spec, dataset: job.data, localData: job.fingerprint, parameters: pieces.reversed(),
                                       base: WireTensor(copying: job.base.values), round: round)
            #expect(worker.pieceRanges == ranges)
            var gradients: [[Float]] = []
            for index in 0..<configurations {
                var gradient = [Float](repeating: .nan, count: n), offsets: [Int] = []
                _ = try worker.gradient(round: round, configuration: index) { offset, values in
                    offsets.append(offset)
                    gradient.replaceSubrange(offset..<(offset + values.count), with: values.array)
                }
                #expect(offsets.sorted() == ranges.map(\.lowerBound))  // each head once
                gradients.append(gradient)
            }
            gradients.withUnsafeBufferPointers { sources in
                for range in ranges.reversed() { cluster.stepPiece(range, gradients: sources) }
            }
            #expect(cluster.finishPipelinedRound() > 0)
        }
        cluster.updatePendingEMA()
        #expect(cluster.round == 3 && cluster.optimizer.step == 3)
        #expect(Self.state(cluster) == Self.state(single))
    }

    /// A checkpoint restored into a fresh trainer continues exactly as the uninterrupted run.
    @Test func resumeFromACheckpointContinuesExactly() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-resume-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let job = Job()
        let straight = job.trainer()
        for _ in 0..<5 { _ = try straight.runRound() }

        let first = job.trainer()
        for _ in 0..<2 { _ = try first.runRound() }
        try INRCheckpoint(trainer: first, base: job.base, family: "lenet", mean: [0.5], std: [0.3], recipe: "test")
            .save(to: dir + "/inr.safetensors")
        let resumed = job.trainer()
        try resumed.restore(from: try INRCheckpoint.load(path: dir + "/inr.safetensors"))
        #expect(resumed.round == 2 && resumed.optimizer.step == 2)
        for _ in 0..<3 { _ = try resumed.runRound() }
        #expect(Self.state(resumed) == Self.state(straight))

        // A checkpoint of another plan is refused rather than silently mixed in.
        var other = Job()
        other.plan.seed = 99
        #expect(throws: INRCheckpoint.Failure.self) { try other.trainer().restore(from: try INRCheckpoint.load(path: dir + "/inr.safetensors")) }
    }

    @Test func workerJobRefusesOtherDataAndMismatchedTensors() throws {
        let job = Job()
        let count = job.trainer().inr.parameters.count
        let spec = job.spec(parameterCount: count)
        var otherData = job.fingerprint
        otherData.files[1].digest = "ffff"
        #expect {
            try WorkerJob(spec: spec, dataset: job.data, localData: otherData, parameters: WireTensor([Float](repeating: 0, count: count)),
                          base: WireTensor(copying: job.base.values), round: 0)
        } throws: { "\($0)".contains("labels has other contents") }
        #expect {
            try WorkerJob(spec: spec, dataset: job.data, localData: job.fingerprint, parameters: WireTensor([1, 2, 3]),
                          base: WireTensor(copying: job.base.values), round: 0)
        } throws: { "\($0)".contains("3 sent") }
        var wrongFamily = spec
        wrongFamily.family = "alexnet"
        #expect(throws: JobSpecError.self) {
            try WorkerJob(spec: wrongFamily, dataset: job.data, localData: job.fingerprint,
                          parameters: WireTensor([Float](repeating: 0, count: count)), base: WireTensor(copying: job.base.values), round: 0)
        }
        #expect(throws: JobSpecError.self) { try JobSpec.decode(Array("{\"family\": 3}".utf8)) }
    }

    @Test func dataFingerprintTextAndDifferences() throws {
        let job = Job()
        #expect(DataFingerprint(text: job.fingerprint.text) == job.fingerprint)
        #expect(DataFingerprint(text: "") == nil && DataFingerprint(text: "x;a b") == nil && DataFingerprint(text: "x;a -1 d") == nil)
        var other = job.fingerprint
        other.files[0].size += 1
        other.files.remove(at: 1)
        other.files.append(.init(name: "extra", size: 1, digest: "00"))
        #expect(job.fingerprint.differences(from: job.fingerprint).isEmpty)
        #expect(job.fingerprint.differences(from: other) == ["images has 25089 bytes, expected 25088", "labels is missing",
                                                              "unexpected file extra"])
        // The real training files: two, named as on disk, digests of their bytes.
        let real = try DataFingerprint.fashionMNIST(directory: FashionMNIST.defaultDirectory)
        #expect(real.files.map(\.name) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"])
        #expect(real.files.allSatisfy { $0.digest.count == 64 && $0.size > 0 })
        #expect(real.text.utf8.count <= WireProtocol.maxFingerprintBytes)
    }

    @Test func addingAWorkerKeyAllowListsIt() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-keys-\(UUID())")
        defer { try? FileManager.default.removeItem(at: dir) }
        try KeyStore.generate(into: dir, workers: ["worker"])
        let added = try KeyStore.addWorker("node7", to: dir)
        let list = try KeyStore.loadAllowList(dir.appendingPathComponent(KeyStore.allowListName))
        #expect(list.map(\.name) == ["worker", "node7"] && list[1].key == added.public)
        #expect(try KeyStore.loadSecret(dir.appendingPathComponent("node7.key")) == added)
        let mode = try FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent("node7.key").path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(throws: KeyError.self) { try KeyStore.addWorker("node7", to: dir) }
        #expect(throws: KeyError.self) { try KeyStore.addWorker("coordinator", to: dir) }
    }
}

extension Array where Element == [Float] {
    /// Base addresses of every array, valid inside `body`.
    func withUnsafeBufferPointers<R>(_ body: ([UnsafePointer<Float>]) throws -> R) rethrows -> R {
        func nest(_ i: Int, _ collected: [UnsafePointer<Float>]) throws -> R {
            guard i < count else { return try body(collected) }
            return try self[i].withUnsafeBufferPointer { try nest(i + 1, collected + [$0.baseAddress!]) }
        }
        return try nest(0, [])
    }
}
