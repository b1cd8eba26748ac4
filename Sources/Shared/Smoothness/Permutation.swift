/// What `Permutation.permute` did to each channel group and to the network's smoothness.
public struct PermutationReport: Sendable, Equatable {
    public struct Group: Sendable, Equatable {
        public let name: String
        public let size: Int
        /// New channel j is old channel order[j].
        public let order: [Int]
        /// Path length of the identity order and of `order` under the group's L1 distances.
        public let pathLengthBefore: Double
        public let pathLengthAfter: Double
        /// Σ TV of the group's member tensors just before and after its permutation.
        public let totalVariationBefore: Double
        public let totalVariationAfter: Double
    }

    public let groups: [Group]
    /// Σ TV over all trainable tensors before the first and after the last permutation.
    public let totalVariationBefore: Double
    public let totalVariationAfter: Double
}

/// Function-preserving channel permutation for intra-model smoothness (docs/algorithm.md §5).
///
/// Permuting a group's channels by the same order in every member (a layer's output rows, its
/// bias and per-channel terms, the next layer's input columns) leaves the network's function
/// unchanged; choosing the order as a shortest Hamiltonian path through the channels' feature
/// vectors makes neighbouring channels similar, which lowers total variation.
public enum Permutation {
    /// A member tensor as [outer, size, inner] around its channel axis: channel c's slice is
    /// elements (o·size + c)·inner ..< (o·size + c + 1)·inner for each o < outer.
    private struct AxisLayout {
        let tensor: Tensor, outer: Int, size: Int, inner: Int

        init(_ p: ParameterSet, _ member: ChannelGroup.Member, groupSize: Int) {
            tensor = p.value(member.parameter)
            let shape = tensor.shape
            precondition(member.axis >= 0 && member.axis < shape.count && shape[member.axis] == groupSize,
                         "\(member.parameter) \(shape) has no axis \(member.axis) of size \(groupSize)")
            outer = shape[..<member.axis].reduce(1, *)
            size = groupSize
            inner = shape[(member.axis + 1)...].reduce(1, *)
        }
    }

    /// For each channel c of `group`, the concatenation over members (in group order) of the
    /// member's slice at index c along its axis, e.g. conv1.weight[c, :, :, :], conv1.bias[c],
    /// conv2.weight[:, c, :, :] (row-major within each slice).
    public static func features(_ p: ParameterSet, group: ChannelGroup) -> [[Float]] {
        let layouts = group.members.map { AxisLayout(p, $0, groupSize: group.size) }
        return (0..<group.size).map { c in
            var feature = [Float]()
            feature.reserveCapacity(layouts.reduce(0) { $0 + $1.outer * $1.inner })
            for l in layouts {
                for o in 0..<l.outer {
                    let start = l.tensor.data + (o * l.size + c) * l.inner
                    feature.append(contentsOf: UnsafeBufferPointer(start: start, count: l.inner))
                }
            }
            return feature
        }
    }

    /// Reorders every member of `group` along its axis so that new channel j is old channel
    /// order[j]: T'[…, j, …] = T[…, order[j], …]. Values only (gradients are left alone); the
    /// inverse permutation restores the values bit for bit.
    public static func apply(_ p: ParameterSet, group: ChannelGroup, order: [Int]) {
        precondition(order.count == group.size && Set(order) == Set(0..<group.size),
                     "order is not a permutation of 0..<\(group.size)")
        for member in group.members {
            let l = AxisLayout(p, member, groupSize: group.size)
            let old = l.tensor.toArray()
            old.withUnsafeBufferPointer { old in
                for o in 0..<l.outer {
                    for (j, c) in order.enumerated() {
                        (l.tensor.data + (o * l.size + j) * l.inner)
                            .update(from: old.baseAddress! + (o * l.size + c) * l.inner, count: l.inner)
                    }
                }
            }
        }
    }

    /// Permutes each group in turn along a short Hamiltonian path through its channels: the
    /// features above, L1 distances, `HamiltonianPath.search` with seed derived from (`seed`,
    /// group index). The order is applied only when its path is shorter than the identity's,
    /// so a group is never made rougher by a poor search.
    ///
    /// Groups may share tensors (a weight's rows in one group, its columns in the next): L1
    /// distances between slices along one axis do not change when another axis is permuted,
    /// so the groups' order does not affect their paths.
    public static func permute(_ p: ParameterSet, groups: [ChannelGroup], seed: UInt64,
                               budget: SearchBudget = SearchBudget()) -> PermutationReport {
        let trainable = p.specs.indices.filter { p.specs[$0].role.trainable }
        let totalBefore = TotalVariation.of(p, tensors: trainable)
        var reports = [PermutationReport.Group]()
        for (index, group) in groups.enumerated() {
            var names = [String]()
            for m in group.members where !names.contains(m.parameter) { names.append(m.parameter) }
            let tensors = names.map { name in
                guard let i = p.index(of: name) else { preconditionFailure("group \(group.name): no parameter named \(name)") }
                return i
            }
            let tvBefore = TotalVariation.of(p, tensors: tensors)

            let distances = DistanceMatrix.l1(features(p, group: group))
            let identity = Array(0..<group.size)
            let identityLength = HamiltonianPath.length(of: identity, in: distances)
            var rng = SeededRandom(seed, UInt64(index))
            let path = HamiltonianPath.search(distances, seed: rng.next(), budget: budget)
            let order = path.length < identityLength ? path.order : identity
            apply(p, group: group, order: order)

            reports.append(.init(name: group.name, size: group.size, order: order,
                                 pathLengthBefore: identityLength, pathLengthAfter: HamiltonianPath.length(of: order, in: distances),
                                 totalVariationBefore: tvBefore, totalVariationAfter: TotalVariation.of(p, tensors: tensors)))
        }
        return PermutationReport(groups: reports, totalVariationBefore: totalBefore,
                                 totalVariationAfter: TotalVariation.of(p, tensors: trainable))
    }
}
