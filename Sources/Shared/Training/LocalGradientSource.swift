import Foundation

/// Gradients computed in this process, on its compute threads: each configuration of a round
/// in index order with `ConfigurationGradient` — the same function cluster workers run — then
/// one step over all the parameters.
///
/// The objective's INR must be the trainer's (its parameters are the ones stepped). With one
/// configuration per round AdamW reads the gradient where the backward pass wrote it; with M > 1
/// each block's gradient (`RoundPlan.configurationsPerBlock`: its configurations' gradients
/// summed in index order, as a cluster worker sums them) is kept in its own buffer (allocated
/// once) for AdamW's ordered sum over blocks.
public final class LocalGradientSource: GradientSource {
    public let objective: ConfigurationGradient
    public let plan: RoundPlan
    /// One gradient buffer per block when a round has several configurations (empty otherwise).
    private let buffers: [FloatStorage]
    /// What AdamW sums: the buffers, or the INR's own gradient buffer.
    private let sources: [UnsafePointer<Float>]
    /// The data order of the epoch the last round drew from (shuffled once per epoch).
    private var epochOrder: (epoch: Int, indices: [Int])?

    public init(objective: ConfigurationGradient, plan: RoundPlan) {
        self.objective = objective
        self.plan = plan
        let n = objective.inr.parameters.count, m = plan.configurationsPerRound
        buffers = m > 1 ? (0..<plan.blocksPerRound).map { _ in FloatStorage(count: n) } : []
        sources = m > 1 ? buffers.map { UnsafePointer($0.base) } : [UnsafePointer(objective.inr.parameters.gradients.base)]
    }

    public func computeRound(_ round: Int, more: Bool, idle: () -> Void,
                             step: (Range<Int>, UnsafeBufferPointer<UnsafePointer<Float>>) -> Void) throws -> (terms: [LossTerms], stats: RoundStats) {
        let start = Date()
        idle()
        let configurations = Profile.phase(.plan) { plan.configurations(round: round, reusing: &epochOrder) }
        if more && objective.dataset.prefetchDepth > 0 {  // a streaming source decodes the next round's batches meanwhile
            let next = plan.configurations(round: round + 1, reusing: &epochOrder)
            objective.dataset.prefetch((configurations + next).map { ($0.batch, $0.augmentation) })
        }
        let gradients = objective.inr.parameters.gradients
        var terms: [LossTerms] = []
        terms.reserveCapacity(configurations.count)
        for block in 0..<plan.blocksPerRound {
            let indices = plan.configurations(ofBlock: block)
            for c in indices {
                terms.append(try objective.compute(configurations[c]))
                guard !buffers.isEmpty else { continue }
                let destination = buffers[block].base, source = gradients.base, first = c == indices.lowerBound
                Parallel.forRanges(gradients.count, minimum: 1 << 16) { r in
                    RoundPlan.accumulateBlock(destination + r.lowerBound, source + r.lowerBound, count: r.count, first: first)
                }
            }
        }
        var stats = RoundStats()
        stats.computeSeconds = Date().timeIntervalSince(start)
        sources.withUnsafeBufferPointer { step(0..<gradients.count, $0) }
        stats.seconds = Date().timeIntervalSince(start)
        return (terms, stats)
    }
}
