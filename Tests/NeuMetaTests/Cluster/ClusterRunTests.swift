import Foundation
import NeuMeta
import Testing

/// The parts the cluster run is made of, without sockets: the job spec and data fingerprint,
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
            plan.rounds = 6; plan.configurationsPerRound = 2
        }

        /// A trainer at round 0 and the single-process source of its gradients.
        func trainer() -> (INRTrainer, LocalGradientSource) {
            let inr = HyperNetwork(config: config, targetSpecs: net.trainableSpecs, seed: 2)
            let objective = ConfigurationGradient(inr: inr, family: "lenet", dataset: data, mean: [0.5], std: [0.3], pretrained: base,
                                                  pretrainedWidth: 4)
            var settings = OptimizerSettings()
            settings.cosineSchedule = true
            let target = TrainingTarget(base: base, family: "lenet", classCount: 10, mean: [0.5], std: [0.3], recipe: "test")
            return (INRTrainer(inr: inr, plan: plan, optimizer: settings, target: target), LocalGradientSource(objective: objective, plan: plan))
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

    /// Gradients as cluster workers deliver them: each configuration's gradient head by head
    /// from a `WorkerJob` built from the (JSON round-tripped) job spec, its parameters sent in
    /// heads in reverse order, and every head stepped on its own, last head first.
    final class WorkerHeadsSource: GradientSource {
        let spec: JobSpec, job: Job, parameters: FloatStorage, heads: [Range<Int>]
        init(spec: JobSpec, job: Job, trainer: INRTrainer) {
            self.spec = spec; self.job = job; parameters = trainer.inr.parameters.values; heads = trainer.inr.headRanges
        }

        func computeRound(_ round: Int, more: Bool, idle: () -> Void,
                          step: (Range<Int>, UnsafeBufferPointer<UnsafePointer<Float>>) -> Void) throws -> (terms: [LossTerms], stats: RoundStats) {
            let sent = heads.map { WorkerState.ParameterHead(offset: $0.lowerBound, values: WireTensor(copying: UnsafeBufferPointer(
                start: parameters.base + $0.lowerBound, count: $0.count))) }
            let worker = try WorkerJob(spec: spec, dataset: job.data, localData: job.fingerprint, parameters: sent.reversed(),
                                       base: WireTensor(copying: job.base.values), round: round)
            #expect(worker.heads == heads)
            var gradients: [[Float]] = [], terms: [LossTerms] = []
            for block in 0..<spec.plan.blocksPerRound {
                var gradient = [Float](repeating: .nan, count: parameters.count), offsets: [Int] = []
                let lock = NSLock()  // heads may be reported from several compute threads at once
                terms += try worker.gradient(round: round, block: block) { offset, values in
                    lock.withLock {
                        offsets.append(offset)
                        gradient.replaceSubrange(offset..<(offset + values.count), with: values.array)
                    }
                }
                #expect(offsets.sorted() == heads.map(\.lowerBound))  // each head once (these heads are one piece each)
                gradients.append(gradient)
            }
            idle()
            gradients.withUnsafeBufferPointers { sources in
                sources.withUnsafeBufferPointer { for range in heads.reversed() { step(range, $0) } }
            }
            return (terms, RoundStats())
        }
    }

    /// The round loop with gradients delivered as cluster workers deliver them equals the
    /// single-process round, bit for bit, for blocks of any size (the worker sums a block, the
    /// single process sums it the same way).
    @Test(arguments: [(1, 1), (3, 1), (3, 2), (4, 4)])
    func workerHeadsStepLikeTheSingleProcessTrainer(configurations: Int, perBlock: Int) throws {
        var job = Job()
        job.plan.configurationsPerRound = configurations
        job.plan.configurationsPerBlock = perBlock
        let (single, local) = job.trainer(), (cluster, _) = job.trainer()
        let spec = try JobSpec.decode(job.spec(parameterCount: cluster.inr.parameters.count).json)
        #expect(spec == job.spec(parameterCount: cluster.inr.parameters.count))
        #expect(cluster.inr.headRanges.count == job.net.trainableSpecs.count)
        let heads = WorkerHeadsSource(spec: spec, job: job, trainer: cluster)
        var singleTerms: [Double] = [], clusterTerms: [Double] = []
        for _ in 0..<3 {
            singleTerms.append(try single.runRound(source: local).terms.total)
            clusterTerms.append(try cluster.runRound(source: heads).terms.total)
        }
        single.updatePendingEMA(); cluster.updatePendingEMA()
        #expect(cluster.round == 3 && cluster.optimizer.step == 3)
        #expect(clusterTerms == singleTerms)
        #expect(Self.state(cluster) == Self.state(single))
    }

    /// Blocks of one configuration and one block of all of them are the same left fold
    /// ((g₀ + g₁) + g₂): the same parameters; other blockings are a different sum.
    @Test func oneBlockOfAllSumsLikeSeparateConfigurations() throws {
        func state(perBlock: Int) throws -> [[Float]] {
            var job = Job()
            job.plan.configurationsPerRound = 3
            job.plan.configurationsPerBlock = perBlock
            let (trainer, source) = job.trainer()
            try trainer.train(until: 3, source: source)
            trainer.updatePendingEMA()
            return Self.state(trainer)
        }
        let separate = try state(perBlock: 1)
        #expect(try state(perBlock: 3) == separate)
        #expect(try state(perBlock: 8) == separate, "a block larger than the round is the whole round")
    }

    /// A checkpoint restored into a fresh trainer continues exactly as the uninterrupted run.
    @Test func resumeFromACheckpointContinuesExactly() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-resume-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let job = Job()
        let (straight, straightSource) = job.trainer()
        try straight.train(until: 5, source: straightSource)
        straight.updatePendingEMA()

        let (first, firstSource) = job.trainer()
        let policy = CheckpointPolicy(store: CheckpointStore(directory: dir, prefix: "inr"), every: 2, keep: 1)
        try first.train(until: 3, source: firstSource, checkpoints: policy)  // checkpoints at rounds 2 and 3, keeps 3
        #expect(try policy.store.checkpoints().map(\.step) == [3])
        try first.checkpoint().save(to: dir + "/inr.safetensors")
        let (resumed, resumedSource) = job.trainer()
        try resumed.restore(from: try INRCheckpoint.load(path: dir + "/inr.safetensors"))
        #expect(resumed.round == 3 && resumed.optimizer.step == 3)
        try resumed.train(until: 5, source: resumedSource)
        resumed.updatePendingEMA()
        #expect(Self.state(resumed) == Self.state(straight))

        // `resume` finds the newest checkpoint of the store.
        let (again, againSource) = job.trainer()
        let resumption = try again.resume(from: policy.store)
        #expect(resumption.path == policy.store.path(step: 3) && again.round == 3)
        try again.train(until: 5, source: againSource)
        again.updatePendingEMA()
        #expect(Self.state(again) == Self.state(straight))

        // A checkpoint of another plan is refused rather than silently mixed in.
        var other = Job()
        other.plan.seed = 99
        #expect(throws: INRCheckpoint.Failure.self) { try other.trainer().0.restore(from: try INRCheckpoint.load(path: dir + "/inr.safetensors")) }
    }

    /// A store whose checkpoints are all unusable is refused, not silently restarted; a
    /// checkpoint with non-finite values is never written and never resumed from.
    @Test func unusableCheckpointsAreRefusedAndNonFiniteStateNeverCheckpointed() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-refuse-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let job = Job()
        let policy = CheckpointPolicy(store: CheckpointStore(directory: dir, prefix: "inr"), every: 2, keep: 3)
        let (first, source) = job.trainer()
        try first.train(until: 2, source: source, checkpoints: policy)
        #expect(try policy.store.checkpoints().map(\.step) == [2])

        // Diverged parameters: the checkpoint is refused and the store keeps round 2.
        first.inr.parameters.values.base[5] = .nan
        #expect { try first.saveCheckpoint(policy) } throws: { "\($0)".contains("parameters are not finite") }
        #expect(try policy.store.checkpoints().map(\.step) == [2])
        // One written anyway (by another build, say) is skipped on resume and set aside.
        var poisoned = first.checkpoint()
        poisoned.round = 3
        try poisoned.save(to: policy.store.path(step: 3))
        let (resumed, _) = job.trainer()
        let resumption = try resumed.resume(from: policy.store)
        #expect(resumption.path == policy.store.path(step: 2) && resumed.round == 2)
        #expect(resumption.skipped.map(\.path) == [policy.store.path(step: 3)] && resumption.skipped[0].problem.contains("not finite"))
        #expect(FileManager.default.fileExists(atPath: policy.store.path(step: 3) + ".corrupt"))

        // Every checkpoint unusable: refused, files untouched; setAside moves them, nothing deleted.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: policy.store.path(step: 2)))
        var broken = bytes; broken[broken.count - 1] ^= 0xFF
        try broken.write(to: URL(fileURLWithPath: policy.store.path(step: 2)))
        let (again, _) = job.trainer()
        #expect { try again.resume(from: policy.store) } throws: { error in
            guard case let .noUsableCheckpoint(directory, problems)? = error as? INRTrainer.Refusal else { return false }
            return directory == dir && problems.map(\.path) == [policy.store.path(step: 2)] && "\(error)".contains("--fresh")
        }
        #expect(try policy.store.checkpoints().map(\.step) == [2] && again.round == 0)
        let aside = try #require(try INRTrainer.setAside(policy.store))
        #expect(try policy.store.checkpoints().isEmpty)
        #expect(FileManager.default.fileExists(atPath: (aside as NSString).appendingPathComponent("inr-00000002.safetensors")))
        // An empty store resumes at round 0.
        #expect(try again.resume(from: policy.store).path == nil && again.round == 0)
    }

    /// A checkpoint that fails for want of space does not end the run: training goes on, the
    /// next checkpoint retries, and the last one is retried until it is written. Needs root to
    /// mount a tiny tmpfs (skipped otherwise, as CI and developer machines run as root).
    @Test(.enabled(if: getuid() == 0)) func checkpointsOnAFullDiskAreRetried() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-full-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        func mount(_ options: String) -> Bool {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/mount")
            p.arguments = ["-t", "tmpfs", "-o", options, "tmpfs", dir]
            guard (try? p.run()) != nil else { return false }
            p.waitUntilExit()
            return p.terminationStatus == 0
        }
        guard mount("size=8k") else { Issue.record("cannot mount a tmpfs at \(dir)"); return }
        defer {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/umount"); p.arguments = [dir]
            try? p.run(); p.waitUntilExit()
            try? FileManager.default.removeItem(atPath: dir)
        }
        let job = Job()
        let (straight, straightSource) = job.trainer()
        try straight.train(until: 5, source: straightSource)
        straight.updatePendingEMA()

        let (trainer, source) = job.trainer()
        let policy = CheckpointPolicy(store: CheckpointStore(directory: dir, prefix: "inr"), every: 2, keep: 3)
        var failedAt: [Int] = []
        try trainer.train(until: 5, source: source, checkpoints: policy, checkpointFailed: { error in
            #expect(INRTrainer.isTransient(error), "\(error)")
            failedAt.append(trainer.round)
            if failedAt.count == 3 { #expect(mount("remount,size=4m")) }  // space comes back
        })
        #expect(failedAt == [2, 4, 5], "rounds 2 and 4 go on without a checkpoint; round 5 waits for one")
        #expect(try policy.store.checkpoints().map(\.step) == [5])
        trainer.updatePendingEMA()
        #expect(Self.state(trainer) == Self.state(straight))
        // Not every error is transient: a malformed file is not.
        #expect(!INRTrainer.isTransient(CheckpointError.digestMissing(path: "x")))
    }

    @Test func workerJobRefusesOtherDataAndMismatchedTensors() throws {
        let job = Job()
        let count = job.trainer().0.inr.parameters.count
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
