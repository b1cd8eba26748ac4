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
    /// The same for the configurations whose batches are prefetched (another epoch, at times).
    private var prefetchOrder: (epoch: Int, indices: [Int])?
    /// The configurations of the newest round this worker was given (see `prefetch`).
    private var given: (round: Int, configurations: Set<Int>)?
    private let headRanges: [Range<Int>]
    /// A block's running gradient sum (allocated with the first block of several configurations).
    private var blockSum: FloatStorage?

    /// Checks the spec against this build and the local data, opens the training set as the
    /// spec describes it, then sets up the INR.
    public convenience init(spec: JobSpec, data: LocalTrainingData, parameters: [WorkerState.ParameterHead], base: WireTensor,
                            round: Int) throws {
        let local = try data.fingerprint()
        let differences = spec.data.differences(from: local)
        guard differences.isEmpty else {
            throw JobSpecError.unusable("this worker's data differs from the coordinator's: " + differences.joined(separator: "; "))
        }
        let dataset: any TrainingImages
        do { dataset = try data.training(spec.dataset, mean: spec.mean, std: spec.std) } catch {
            throw JobSpecError.unusable("\(error)")
        }
        try self.init(spec: spec, dataset: dataset, localData: local, parameters: parameters, base: base, round: round)
    }

    /// Checks the spec against this build and the local data, then sets up the INR.
    /// `dataset` must be the training split the fingerprint describes.
    public convenience init(spec: JobSpec, dataset: any TrainingImages, localData: DataFingerprint, parameters: WireTensor, base: WireTensor,
                            round: Int) throws {
        try self.init(spec: spec, dataset: dataset, localData: localData, parameters: [.init(offset: 0, values: parameters)], base: base,
                      round: round)
    }

    /// As above, with the parameters in heads that cover them once (see `setParameters`).
    public init(spec: JobSpec, dataset: any TrainingImages, localData: DataFingerprint, parameters: [WorkerState.ParameterHead],
                base: WireTensor, round: Int) throws {
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
        if let problem = spec.dataset.problem { throw JobSpecError.unusable("data: \(problem)") }
        let shape = dataset.batchImageShape
        let morph = spec.morphPlan, network: Network
        guard !morph.baseWidths.isEmpty, morph.baseWidths.allSatisfy({ $0 >= 1 }), morph.family == spec.family,
              morph.baseWidth == spec.pretrainedWidth else {
            throw JobSpecError.unusable("the morph plan (\(morph.family), base width \(morph.baseWidth)) disagrees with the family "
                                        + "\(spec.family) at pretrained width \(spec.pretrainedWidth)")
        }
        do { network = try morph.network(width: morph.baseWidth, classCount: spec.classCount) } catch {
            throw JobSpecError.unusable("\(error)")
        }
        guard network.inputShape == [shape.channels, shape.height, shape.width] else {
            throw JobSpecError.unusable("\(spec.family) takes \(network.inputShape) inputs, the data gives "
                                        + "\([shape.channels, shape.height, shape.width])")
        }
        guard dataset.classCount == spec.classCount, dataset.count == spec.plan.datasetCount else {
            throw JobSpecError.unusable("the local data set has \(dataset.count) images in \(dataset.classCount) classes; the job expects "
                                        + "\(spec.plan.datasetCount) in \(spec.classCount)")
        }
        guard spec.mean.count == dataset.batchImageShape.channels, spec.std.count == dataset.batchImageShape.channels else {
            throw JobSpecError.unusable("input normalisation has \(spec.mean.count) channels, the data \(dataset.batchImageShape.channels)")
        }
        let generated = morph.generated(network.parameterSpecs).map { network.parameterSpecs[$0] }
        guard !generated.isEmpty else { throw JobSpecError.unusable("the morph plan generates no tensor of \(spec.family)") }
        let inr = HyperNetwork(config: spec.inr, targetSpecs: generated, seed: 0)
        let pretrained = network.makeParameters()
        let sent = parameters.reduce(0) { $0 + $1.values.count }
        guard inr.parameters.count == spec.parameterCount, sent == spec.parameterCount else {
            throw JobSpecError.unusable("INR of \(inr.parameters.count) parameters here, \(spec.parameterCount) in the spec, "
                                        + "\(sent) sent")
        }
        guard pretrained.count == spec.baseParameterCount, base.count == spec.baseParameterCount else {
            throw JobSpecError.unusable("pretrained network of \(pretrained.count) parameters here, \(spec.baseParameterCount) in the spec, "
                                        + "\(base.count) sent")
        }
        base.copy(into: pretrained.values.buffer)
        self.spec = spec
        objective = ConfigurationGradient(inr: inr, morph: morph, dataset: dataset, mean: spec.mean, std: spec.std, pretrained: pretrained)
        parameterRound = round
        headRanges = inr.headRanges
        try setParameters(parameters, round: round)
    }

    /// The ranges a gradient is sent in and parameters arrive in: the INR's heads, in order.
    public var heads: [Range<Int>] { headRanges }

    /// Uses the coordinator's parameters for `round` from now on: `heads` that together cover
    /// the parameters once (one head at offset 0: all of them).
    public func setParameters(_ heads: [WorkerState.ParameterHead], round: Int) throws {
        let n = objective.inr.parameters.count
        var end = 0
        for head in heads.sorted(by: { $0.offset < $1.offset }) where head.offset == end { end += head.values.count }
        let total = heads.reduce(0) { $0 + $1.values.count }
        guard end == n, total == n else {
            throw JobSpecError.unusable("parameters of \(total) values in \(heads.count) heads for an INR of \(n)")
        }
        let values = objective.inr.parameters.values.buffer
        for head in heads {
            head.values.copy(into: UnsafeMutableBufferPointer(rebasing: values[head.offset..<(head.offset + head.values.count)]))
        }
        parameterRound = round
    }

    /// Computes block `block` of `round` (with the parameters of `parameterRound`, which the
    /// caller has matched to `round`): its configurations (`RoundPlan.configurations(ofBlock:)`)
    /// in index order, their gradients summed ((g₀ + g₁) + g₂)… in Float, exactly as the
    /// single-process trainer sums a block. Returns their loss terms, in order. Each head's part
    /// of the sum goes to `piece(offset, values)` — in pieces of at most
    /// `WireProtocol.frameBytes`, in order, encoded for the wire as the job asks — as soon as the
    /// last configuration's backward pass has finished it (possibly on a compute thread,
    /// concurrently with other heads when the job has several threads).
    public func gradient(round: Int, block: Int,
                         piece: @escaping (_ offset: Int, _ values: WireTensor) -> Void) throws -> [LossTerms] {
        let indices = spec.plan.configurations(ofBlock: block)
        let g = objective.inr.parameters.gradients.base, ranges = headRanges, encoding = spec.gradientEncoding
        if indices.count > 1 && blockSum == nil { blockSum = FloatStorage(count: objective.inr.parameters.count) }
        let sum = blockSum?.base
        var terms: [LossTerms] = []
        for index in indices {
            let config = spec.plan.configuration(round: round, index: index, reusing: &epochOrder)
            let first = index == indices.lowerBound, last = index == indices.upperBound - 1
            terms.append(try objective.compute(config) { t in
                let r = ranges[t]
                var values = UnsafePointer(g + r.lowerBound)
                if let sum, !(first && last) {  // a block of several: its running sum
                    RoundPlan.accumulateBlock(sum + r.lowerBound, values, count: r.count, first: first)
                    values = UnsafePointer(sum + r.lowerBound)
                }
                guard last else { return }
                let perPiece = WireProtocol.frameBytes / encoding.bytesPerElement
                for start in stride(from: 0, to: max(r.count, 1), by: perPiece) {
                    let part = UnsafeBufferPointer(start: values + start, count: min(perPiece, r.count - start))
                    piece(r.lowerBound + start, encoding == .float32 ? WireTensor(copying: part) : WireTensor(bfloat16Rounding: part))
                }
            })
        }
        return terms
    }

    /// Says which configurations this worker computes next, in order (the one about to be
    /// computed first, then those queued), so that a streaming data source decodes their
    /// batches ahead, up to its prefetch depth. Since the coordinator tends to give a worker the
    /// same configurations round after round, the rest of the depth goes to those of the next
    /// round (a wrong guess costs a decoded batch, never a result).
    public func prefetch(_ upcoming: [(round: Int, configuration: Int)]) {
        let depth = objective.dataset.prefetchDepth
        guard depth > 0, let last = upcoming.last else { return }
        if given?.round != last.round { given = (last.round, []) }
        for item in upcoming where item.round == last.round { given!.configurations.insert(item.configuration) }
        var wanted = Array(upcoming.prefix(depth))
        if wanted.count < depth, last.round + 1 < spec.plan.rounds {
            let next = given!.configurations.sorted().map { (round: last.round + 1, configuration: $0) }
            wanted += next.prefix(depth - wanted.count)
        }
        let batches = wanted.map { item in
            let c = spec.plan.configuration(round: item.round, index: item.configuration, reusing: &prefetchOrder)
            return (indices: c.batch, augmentation: c.augmentation)
        }
        objective.dataset.prefetch(batches)
    }
}
