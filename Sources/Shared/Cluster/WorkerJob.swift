import Foundation

/// A worker's side of a run: the INR and the per-configuration gradient built from the
/// welcome (job spec, parameters, pretrained weights) over the worker's own copy of the data.
///
/// It calls the same `ConfigurationGradient.compute` as the single-process trainer, on the
/// configuration `plan.configuration(round:index:)` names, so a gradient does not depend on
/// which worker computed it. Not thread-safe: one compute thread owns it.
public final class WorkerJob {
    public let spec: JobSpec
    let objective: ConfigurationGradient
    /// The round whose parameters the INR holds.
    public private(set) var parameterRound: Int
    /// The data order of the epoch the last configuration came from (shuffled once per epoch).
    private var epochOrder: (epoch: Int, indices: [Int])?

    /// Checks the spec against this build and the local data, then sets up the INR.
    /// `dataset` must be the training split the fingerprint describes.
    public init(spec: JobSpec, dataset: ImageDataset, localData: DataFingerprint, parameters: WireTensor, base: WireTensor,
                round: Int) throws {
        let differences = spec.data.differences(from: localData)
        guard differences.isEmpty else {
            throw JobSpecError.unusable("this worker's data differs from the coordinator's: " + differences.joined(separator: "; "))
        }
        // RoundPlan's own checks are preconditions (not evaluated in -Ounchecked builds): a
        // spec from the wire is checked here for real.
        let plan = spec.plan
        guard plan.minWidth >= 1, plan.minWidth <= plan.maxWidth, plan.pretrainedWidth >= 1, plan.batchSize >= 1,
              plan.batchSize <= plan.datasetCount, (1...WireProtocol.maxConfigurationsPerRound).contains(plan.configurationsPerRound),
              plan.rounds >= 1, plan.noise.isFinite else {
            throw JobSpecError.unusable("the round plan is out of range (widths \(plan.minWidth)…\(plan.maxWidth), batch \(plan.batchSize) "
                                        + "of \(plan.datasetCount), \(plan.configurationsPerRound) configurations per round)")
        }
        let network: Network
        do { network = try NetworkFamily.make(spec.family, widths: [spec.pretrainedWidth], classCount: spec.classCount) } catch {
            throw JobSpecError.unusable("\(error)")
        }
        guard dataset.classCount == spec.classCount, dataset.count == spec.plan.datasetCount else {
            throw JobSpecError.unusable("the local data set has \(dataset.count) images in \(dataset.classCount) classes; the job expects "
                                        + "\(spec.plan.datasetCount) in \(spec.classCount)")
        }
        guard spec.mean.count == dataset.channels, spec.std.count == dataset.channels else {
            throw JobSpecError.unusable("input normalisation has \(spec.mean.count) channels, the data \(dataset.channels)")
        }
        let inr = HyperNetwork(config: spec.inr, targetSpecs: network.trainableSpecs, seed: 0)
        let pretrained = network.makeParameters()
        guard inr.parameters.count == spec.parameterCount, parameters.count == spec.parameterCount else {
            throw JobSpecError.unusable("INR of \(inr.parameters.count) parameters here, \(spec.parameterCount) in the spec, "
                                        + "\(parameters.count) sent")
        }
        guard pretrained.count == spec.baseParameterCount, base.count == spec.baseParameterCount else {
            throw JobSpecError.unusable("pretrained network of \(pretrained.count) parameters here, \(spec.baseParameterCount) in the spec, "
                                        + "\(base.count) sent")
        }
        base.copy(into: pretrained.values.buffer)
        self.spec = spec
        objective = ConfigurationGradient(inr: inr, family: spec.family, dataset: dataset, mean: spec.mean, std: spec.std,
                                          pretrained: pretrained, pretrainedWidth: spec.pretrainedWidth)
        parameterRound = round
        parameters.copy(into: inr.parameters.values.buffer)
    }

    /// Uses `values` (the coordinator's parameters for `round`) from now on.
    public func setParameters(_ values: WireTensor, round: Int) throws {
        guard values.count == objective.inr.parameters.count else {
            throw JobSpecError.unusable("parameters of \(values.count) values for an INR of \(objective.inr.parameters.count)")
        }
        values.copy(into: objective.inr.parameters.values.buffer)
        parameterRound = round
    }

    /// The gradient and loss terms of configuration `index` of `round` (with the parameters of
    /// `parameterRound`, which the caller has matched to `round`), the gradient encoded for the
    /// wire as the job asks.
    public func gradient(round: Int, configuration index: Int) throws -> (terms: LossTerms, gradient: WireTensor) {
        let config = spec.plan.configuration(round: round, index: index, reusing: &epochOrder)
        let terms = try objective.compute(config)
        let g = objective.inr.parameters.gradients
        switch spec.gradientEncoding {
        case .float32: return (terms, WireTensor(copying: g))
        case .bfloat16: return (terms, WireTensor(bfloat16Rounding: UnsafeBufferPointer(g.buffer)))
        }
    }
}
