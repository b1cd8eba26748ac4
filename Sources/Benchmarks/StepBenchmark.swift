import Foundation
import NeuMeta

/// Measures INR training rounds (`INRTrainer.runRound` with a `LocalGradientSource`:
/// configurations drawn, gradients, AdamW and EMA) for `neumeta-bench`: wall time, heap
/// allocations and resident memory of
/// the steady state, and a `Profile` of further rounds.
///
/// Warm-up first: one round, then one gradient at every width the measured rounds will use, so
/// that per-width networks and buffers exist (they are built once per width, by design) and the
/// measured rounds show the steady state. Warm-up gradients do not change the INR.
public enum StepBenchmark {
    public struct Result {
        /// Widths (one per configuration) and wall seconds of each timed round, profiling off.
        public var widths: [[Int]] = [], seconds: [Double] = []
        /// Heap allocations and requested bytes over the timed rounds, and allocations over the
        /// profiled rounds (nil: not counted).
        public var allocations: Int?, allocatedBytes: Int?, profiledAllocations: Int?
        /// Resident set size before and after all measured rounds (0 where /proc is missing).
        public var residentBytesBefore = 0, residentBytesAfter = 0
        /// Widths and wall seconds of the profiled rounds, and what the profile recorded.
        public var profiledWidths: [[Int]] = [], profiledSeconds: [Double] = []
        public var profile: Profile.Recorder
        /// The reference measurements taken among the rounds.
        public var references: [Double] = []

        /// Median wall seconds of a timed round.
        public var medianSeconds: Double { Self.median(seconds) }

        /// The median of `values` (NaN when empty).
        public static func median(_ values: [Double]) -> Double {
            guard !values.isEmpty else { return .nan }
            let s = values.sorted(), n = s.count
            return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
        }
    }

    /// Warms up, then runs `rounds` timed rounds of `trainer` and `profiledRounds` profiled ones,
    /// spread evenly among them (so that both see the same machine load), and takes
    /// `referenceSamples` measurements with `reference` (e.g. a sgemm rate) spread among the rounds
    /// too, so that figures can be compared under the same load. `allocations`, where given,
    /// returns the process's heap allocation calls and bytes so far.
    public static func run(trainer: INRTrainer, source: LocalGradientSource, rounds: Int, profiledRounds: Int, referenceSamples: Int = 0,
                           reference: () -> Double = { .nan }, allocations: (() -> (count: Int, bytes: Int))? = nil) throws -> Result {
        _ = try trainer.runRound(source: source)
        var order: (epoch: Int, indices: [Int])?, warmed = Set<Int>()
        var widths: [Int: [Int]] = [:]
        for round in trainer.round..<(trainer.round + rounds + profiledRounds) {
            let configurations = trainer.plan.configurations(round: round, reusing: &order)
            widths[round] = configurations.map(\.width)
            for config in configurations where warmed.insert(config.width).inserted {
                _ = try source.objective.compute(config)
            }
        }
        var result = Result(profile: Profile.Recorder(allocationCount: allocations.map { count in { count().count } }))
        result.widths.reserveCapacity(rounds); result.seconds.reserveCapacity(rounds)
        result.profiledWidths.reserveCapacity(profiledRounds); result.profiledSeconds.reserveCapacity(profiledRounds)
        var allocated = allocations.map { _ in (count: 0, bytes: 0, profiled: 0) }
        result.residentBytesBefore = ProcessMemory.residentBytes()
        let total = rounds + profiledRounds
        /// Whether `count` events spread evenly over `total` slots fall in slot `i`.
        func spread(_ count: Int, _ i: Int) -> Bool { (i + 1) * count / total > i * count / total }
        for i in 0..<total {
            if spread(referenceSamples, i) { result.references.append(reference()) }
            let profiled = spread(profiledRounds, i)
            if profiled { Profile.enable(result.profile) }
            let before = allocations?(), t0 = Profile.now()
            let report = try trainer.runRound(source: source)
            let seconds = Double(Profile.now() - t0) / 1e9
            let after = allocations?()
            if profiled {
                Profile.disable()
                result.profiledSeconds.append(seconds); result.profiledWidths.append(widths[report.round] ?? [])
                if let before, let after { allocated!.profiled += after.count - before.count }
            } else {
                result.seconds.append(seconds); result.widths.append(widths[report.round] ?? [])
                if let before, let after { allocated!.count += after.count - before.count; allocated!.bytes += after.bytes - before.bytes }
            }
        }
        result.residentBytesAfter = ProcessMemory.residentBytes()
        result.allocations = allocated?.count; result.allocatedBytes = allocated?.bytes; result.profiledAllocations = allocated?.profiled
        return result
    }

    /// Seconds per timed region (one `Profile.start` … `stop()` pair) with profiling on for this
    /// thread (`enabled`: two clock reads and the bookkeeping) or off (one thread-local lookup).
    public static func profileCost(enabled: Bool, regions: Int = 200_000) -> Double {
        if enabled { Profile.enable(Profile.Recorder()) }
        defer { Profile.disable() }
        let t0 = Profile.now()
        for _ in 0..<regions { Profile.start(.elementwise)?.stop() }
        return Double(Profile.now() - t0) / 1e9 / Double(regions)
    }
}
