import Foundation
import NeuMeta

/// What the compute thread runs for the job of a welcome: `WorkerJob` (the real gradient) or
/// `SyntheticJob` (load generation). `WorkerLoop` sends what either hands it the same way.
protocol ConfigurationCompute: AnyObject {
    var spec: JobSpec { get }
    /// Uses the coordinator's parameters for `round` (heads that cover them once).
    func setParameters(_ heads: [WorkerState.ParameterHead], round: Int) throws
    /// Computes block `block` of `round` (its configurations' gradients summed), handing each
    /// gradient piece to `piece(offset, values)` as soon as it is final, and returns the
    /// configurations' loss terms.
    func gradient(round: Int, block: Int, piece: @escaping (_ offset: Int, _ values: WireTensor) -> Void) throws -> [LossTerms]
    /// Starts reading the data of these blocks (the one about to be computed first), if any.
    func prefetch(blocks: [(round: Int, block: Int)])
}

extension ConfigurationCompute {
    func prefetch(blocks: [(round: Int, block: Int)]) {}
}

extension WorkerJob: ConfigurationCompute {
    func prefetch(blocks: [(round: Int, block: Int)]) {
        prefetch(blocks.flatMap { item in spec.plan.configurations(ofBlock: item.block).map { (round: item.round, configuration: $0) } })
    }
}

/// Builds the compute of a welcome from its job spec, parameter heads, pretrained weights and round.
typealias MakeCompute = (_ spec: JobSpec, _ parameters: [WorkerState.ParameterHead], _ base: WireTensor, _ round: Int) throws
    -> any ConfigurationCompute

/// A load generator's "computation" (`neumeta-worker --synthetic SECONDS`): sleeps the given
/// configuration time for each configuration of the block, then hands over the block's
/// gradient heads (`JobSpec.syntheticHeads`), in wire pieces,
/// filled by `SyntheticGradients` — deterministic, finite and of the real sizes — and the
/// loss terms. Nothing is sent while it sleeps, so a round measured with it has no overlap of
/// sending with computing. It reads no data and keeps no copy of the parameters, so many of
/// them fit on one machine.
final class SyntheticJob: ConfigurationCompute {
    let spec: JobSpec
    let seconds: Double
    private let gradients: SyntheticGradients

    init(spec: JobSpec, seconds: Double, parameters: [WorkerState.ParameterHead], round: Int) throws {
        guard let sizes = spec.syntheticHeads else {
            throw JobSpecError.unusable("this worker runs with --synthetic, but the coordinator's job is a real one (no synthetic heads)")
        }
        guard sizes.allSatisfy({ $0 >= 1 }), sizes.reduce(0, +) == spec.parameterCount else {
            throw JobSpecError.unusable("synthetic heads of \(sizes.reduce(0, +)) values for \(spec.parameterCount) parameters")
        }
        self.spec = spec
        self.seconds = seconds
        gradients = SyntheticGradients(headSizes: sizes, seed: spec.plan.seed, encoding: spec.gradientEncoding)
        try setParameters(parameters, round: round)
    }

    func setParameters(_ heads: [WorkerState.ParameterHead], round: Int) throws {
        let total = heads.reduce(0) { $0 + $1.values.count }
        guard total == spec.parameterCount else {
            throw JobSpecError.unusable("parameters of \(total) values in \(heads.count) heads for \(spec.parameterCount)")
        }
    }

    func gradient(round: Int, block: Int, piece: @escaping (_ offset: Int, _ values: WireTensor) -> Void) throws -> [LossTerms] {
        let configurations = spec.plan.configurations(ofBlock: block)
        if seconds > 0 { Thread.sleep(forTimeInterval: seconds * Double(configurations.count)) }
        for t in gradients.heads.indices {
            for (offset, values) in gradients.gradientPieces(t, round: round, configuration: block) { piece(offset, values) }
        }
        return configurations.map { gradients.lossTerms(round: round, configuration: $0) }
    }
}
