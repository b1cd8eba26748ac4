import CAllocationCounter
@testable import Benchmarks
import Foundation
import Testing
@testable import NeuMeta

/// The bench's instruments: FLOP counts, the opt-in profile, allocation counts and the step
/// benchmark on a tiny INR (nothing here asserts a speed).
@Suite struct ProfileTests {
    /// Whether the library is optimised: unoptimised Swift allocates closure contexts and
    /// temporaries freely, so allocation counts mean something only in optimised builds
    /// (`swift test -c release -Xswiftc -enable-testing`).
    #if DEBUG
    static let optimized = false
    #else
    static let optimized = true
    #endif
    static let countsAllocations = optimized && neumeta_allocation_counting() != 0

    /// hidden 4, 1 residual block, 1 frequency (D = 18), 25 outputs.
    static let tinyINR = INRConfig(hidden: 4, layers: 2, frequencies: 1, outputSize: 25, norm: 2)

    static func dataset(count: Int = 8) -> ImageDataset {
        ImageDataset(name: "tiny", channels: 1, height: 28, width: 28, classCount: 10,
                     pixels: (0..<(count * 784)).map { UInt8(truncatingIfNeeded: $0 &* 37) }, labels: (0..<count).map { Int32($0 % 10) })
    }

    static func objective(pretrainedWidth: Int? = nil) -> ConfigurationGradient {
        let network = LeNet(width: pretrainedWidth ?? 1)
        let inr = HyperNetwork(config: tinyINR, targetSpecs: network.trainableSpecs, seed: 1)
        var pretrained: ParameterSet?
        if pretrainedWidth != nil {
            pretrained = network.makeParameters()
            var rng = SeededRandom(2)
            pretrained!.initializeDefault(rng: &rng)
        }
        return ConfigurationGradient(inr: inr, family: "lenet", dataset: dataset(), mean: [0.5], std: [0.25],
                                     pretrained: pretrained, pretrainedWidth: pretrainedWidth)
    }

    static func configuration(width: Int = 1, batch: [Int] = [0, 1]) -> Configuration {
        Configuration(width: width, batch: batch, noiseSeed: 3, noise: 1, lossWeights: LossWeights())
    }

    /// LeNet w=1 has 8 generated tensors of R = 1, 1, 2, 2, 8, 4, 40, 10 rows (68 in all) with
    /// kernel areas 9, 1, 25, 1, 25, 1, 1, 1 (Σ R·area = 316). With H = 4, D = 18, one block:
    ///   INR forward  2·(68·4·18 + 68·4·4 + 316·4)          = 14,496
    ///   INR backward 2·(2·316·4 + 2·68·4·4 + 68·4·18)      = 19,200 (no gradient of the embedding)
    /// Batch 2, output positions 400 (conv1), 64 (conv2), 4 (conv3):
    ///   target forward  2·2·(1·9·400 + 2·25·64 + 4·50·4 + 10·4)            = 30,560
    ///   target backward 2·2·(1·9·400 + 2·2·25·64 + 2·4·50·4 + 2·10·4)      = 46,720 (conv1 needs no dX)
    /// The full-size LeNet (positions 784, 196, 49), forward + backward:
    ///   2·2·(2·1·9·784 + 3·2·25·196 + 3·4·50·49 + 3·10·4)                 = 292,128
    @Test func flopCountMatchesHandCount() throws {
        let flops = StepFlops(lenetWidth: 1, batch: 2, inr: Self.tinyINR)
        #expect(flops.inrForward == 14_496 && flops.inrBackward == 19_200)
        #expect(flops.targetForward == 30_560 && flops.targetBackward == 46_720)
        #expect(flops.total == 110_976)
        #expect(flops.fullTarget == 292_128 && flops.nominal == 14_496 + 19_200 + 292_128)

        // The sgemm calls of a real gradient computation add up to the same, phase by phase.
        let objective = Self.objective()
        let recorder = Profile.Recorder()
        Profile.enable(recorder)
        _ = try objective.compute(Self.configuration())
        Profile.disable()
        #expect(recorder.gemmFlops(in: .inrForward) == flops.inrForward)
        #expect(recorder.gemmFlops(in: .targetNetwork) == flops.targetForward + flops.targetBackward)
        #expect(recorder.gemmFlops(in: .inrBackward) == flops.inrBackward)
        #expect(recorder.gemmFlops() == flops.total)
        #expect(recorder.entries(of: .inrForward) == 1 && recorder.entries(of: .targetNetwork) == 1 && recorder.entries(of: .inrBackward) == 1)
        #expect(recorder.calls(.im2col) == 3 + 2, "im2col per conv, col2im for conv2 and conv3")
        #expect(recorder.calls(.embedding) == 1)
    }

    @Test func countersStayZeroWhenDisabled() throws {
        let objective = Self.objective()
        let never = Profile.Recorder(), afterwards = Profile.Recorder()
        Profile.enable(afterwards)
        Profile.disable()
        _ = try objective.compute(Self.configuration())
        // A recorder enabled on another thread does not see this thread's work either.
        let elsewhere = Profile.Recorder()
        let started = DispatchSemaphore(value: 0), finish = DispatchSemaphore(value: 0)
        let thread = Thread {
            Profile.enable(elsewhere)
            started.signal()
            finish.wait()
            Profile.disable()
        }
        thread.start()
        started.wait()
        _ = try objective.compute(Self.configuration())
        finish.signal()
        for r in [never, afterwards, elsewhere] {
            #expect(r.regions == 0 && r.gemmFlops() == 0)
            for k in Profile.Kernel.allCases { #expect(r.calls(k) == 0 && r.seconds(k) == 0) }
            for p in Profile.Phase.allCases { #expect(r.entries(of: p) == 0 && r.seconds(in: p) == 0 && r.parallelLoops(in: p) == 0) }
        }
    }

    @Test func profilingDoesNotChangeTheGradient() throws {
        let plain = Self.objective(pretrainedWidth: 2), profiled = Self.objective(pretrainedWidth: 2)
        for width in [1, 2] {
            let config = Self.configuration(width: width, batch: [3, 1, 4])
            let a = try plain.compute(config)
            Profile.enable(Profile.Recorder())
            let b = try profiled.compute(config)
            Profile.disable()
            #expect(a == b)
            #expect(Array(plain.inr.parameters.gradients.buffer) == Array(profiled.inr.parameters.gradients.buffer))
        }
    }

    /// After every width has been seen, a gradient allocates only inside parallel loops (their
    /// closure boxes and libdispatch bookkeeping). Counted on this thread only, so tests running
    /// beside this one do not disturb it; optimised builds only.
    @Test(.enabled(if: countsAllocations))
    func steadyStateGradientAllocatesOnlyInParallelLoops() throws {
        let objective = Self.objective(pretrainedWidth: 2)
        for width in [1, 2] { _ = try objective.compute(Self.configuration(width: width)) }
        let recorder = Profile.Recorder(allocationCount: { Int(neumeta_allocations_this_thread()) })
        Profile.enable(recorder)
        for width in [2, 1, 2] { _ = try objective.compute(Self.configuration(width: width, batch: [5, 6])) }
        Profile.disable()
        for phase in [Profile.Phase.inrForward, .targetNetwork, .inrBackward] {
            #expect(recorder.allocations(in: phase) == recorder.parallelLoopAllocations(in: phase), "\(phase)")
        }
    }

    /// The benchmark's bookkeeping on a tiny trainer: counts, profile FLOPs against the analytic
    /// count, and (optimised builds) no allocation outside parallel loops in the gradient and update.
    @Test func stepBenchmarkRunsOnATinyTrainer() throws {
        var plan = RoundPlan()
        plan.minWidth = 1; plan.maxWidth = 2; plan.pretrainedWidth = 2; plan.batchSize = 2; plan.datasetCount = 8
        plan.rounds = 10; plan.seed = 5
        let (trainer, source) = makeTrainer(Self.objective(pretrainedWidth: 2), plan: plan)
        let counting = neumeta_allocation_counting() != 0
        let r = try StepBenchmark.run(trainer: trainer, source: source, rounds: 3, profiledRounds: 2, allocations: counting ? {
            (Int(neumeta_allocations_this_thread()), Int(neumeta_allocated_bytes_this_thread()))
        } : nil)
        #expect(trainer.round == 1 + 3 + 2)
        #expect(r.seconds.count == 3 && r.widths.count == 3 && r.profiledSeconds.count == 2 && r.profiledWidths.count == 2)
        #expect(r.widths.allSatisfy { $0.count == 1 && (1...2).contains($0[0]) })
        #expect((r.allocations != nil) == counting && (r.profiledAllocations != nil) == counting)
        let analytic = r.profiledWidths.reduce(0) { $0 + StepFlops(lenetWidth: $1[0], batch: 2, inr: Self.tinyINR).total }
        #expect(r.profile.gemmFlops() == analytic)
        for phase in [Profile.Phase.plan, .inrForward, .targetNetwork, .inrBackward] { #expect(r.profile.entries(of: phase) == 2) }
        if Self.countsAllocations {
            for phase in [Profile.Phase.inrForward, .targetNetwork, .inrBackward, .update] {
                #expect(r.profile.allocations(in: phase) == r.profile.parallelLoopAllocations(in: phase), "\(phase)")
            }
        }
        #expect(StepBenchmark.Result.median([3, 1, 2]) == 2 && StepBenchmark.Result.median([4, 1, 2, 3]) == 2.5)
        #expect(StepBenchmark.profileCost(enabled: false, regions: 10) >= 0)
    }

    /// Carrying the epoch's data order from round to round (the trainer and workers do) gives
    /// the configurations `configuration(round:index:)` names, across epoch boundaries.
    @Test func reusedEpochOrderGivesThePlansConfigurations() {
        var plan = RoundPlan()
        plan.datasetCount = 100; plan.batchSize = 10; plan.configurationsPerRound = 3; plan.seed = 9
        var order: (epoch: Int, indices: [Int])?
        for round in 0..<12 {
            #expect(plan.configurations(round: round, reusing: &order) == (0..<3).map { plan.configuration(round: round, index: $0) })
        }
        #expect(order?.epoch == (11 * 3 + 2) / 10)
    }
}
