/// L1-norm channel pruning without fine-tuning (Li et al. 2017, "Pruning Filters for Efficient
/// ConvNets"), the NeuMeta paper's pruning baseline: a wide trained network is cut down to a
/// narrower member of its family by keeping, in every channel group, the channels whose
/// producing filters have the largest L1 norm.
///
/// The method is generic over `Network.channelGroups`. For each group of the wide network:
///
/// * the score of channel c is ‖slice c of the group's first member‖₁, the first member being
///   the producing weight with its output axis (LeNet: `convN.weight`, axis 0);
/// * the narrow network's group of the same name gives the number of channels to keep (for
///   LeNet width W → w that is `size · w / W`); the highest-scoring channels are kept, ties
///   going to the lower index, in their original order;
/// * every member (parameter, axis) of the group is sliced to those channels: the producing
///   weight, its bias (and norm statistics, where a family has them) and the consuming layer's
///   input axis.
///
/// Axes that belong to no group (LeNet's conv kernels, conv1's input, the classifier's rows)
/// are copied whole, and must therefore have the same size in both networks.
public enum L1Pruning {
    /// Why two networks or a parameter set cannot be pruned into one another.
    public enum Failure: Error, CustomStringConvertible {
        /// The networks belong to different families.
        case familyMismatch(from: String, to: String)
        /// The parameter set does not hold the wide network's state dict.
        case parametersDoNotMatch(String)
        /// The networks' channel groups or parameters do not correspond.
        case groupsDoNotLineUp(String)
        /// The target keeps more channels than the source has.
        case widerTarget(group: String, from: Int, to: Int)

        public var description: String {
            switch self {
            case .familyMismatch(let a, let b): "cannot prune a \(a) network into a \(b) network"
            case .parametersDoNotMatch(let why): "parameters do not match the source network: \(why)"
            case .groupsDoNotLineUp(let why): "source and target networks do not line up: \(why)"
            case .widerTarget(let g, let a, let b):
                "target is wider than the source: group \(g) has \(a) channels, target asks for \(b)"
            }
        }
    }

    /// The parameters of `smaller` obtained by L1-pruning `p`, the parameters of `network`.
    ///
    /// Throws if the networks are of different families, `p` is not `network`'s state dict,
    /// `smaller` is wider than `network` in any group, or the groups and ungrouped axes of the
    /// two networks do not correspond.
    public static func prune(_ p: ParameterSet, from network: Network, to smaller: Network) throws -> ParameterSet {
        guard network.family == smaller.family else {
            throw Failure.familyMismatch(from: network.family, to: smaller.family)
        }
        guard p.specs == network.parameterSpecs else {
            let expected = network.parameterSpecs.map { "\($0.name)\($0.shape)" }
            let found = p.specs.map { "\($0.name)\($0.shape)" }
            throw Failure.parametersDoNotMatch("expected \(expected), found \(found)")
        }
        guard smaller.parameterSpecs.map(\.name) == p.specs.map(\.name) else {
            throw Failure.groupsDoNotLineUp("parameters \(p.specs.map(\.name)) vs \(smaller.parameterSpecs.map(\.name))")
        }
        let kept = try keptChannels(p, groups: network.channelGroups, targetGroups: smaller.channelGroups)

        // (parameter, axis) → kept indices along that axis.
        var selection = [String: [Int: [Int]]]()
        for (group, indices) in zip(network.channelGroups, kept) {
            for member in group.members {
                guard let j = p.index(of: member.parameter), member.axis < p.specs[j].shape.count,
                      p.specs[j].shape[member.axis] == group.size else {
                    throw Failure.groupsDoNotLineUp("group \(group.name) lists \(member.parameter) axis \(member.axis), "
                                                    + "which does not have \(group.size) channels")
                }
                guard selection[member.parameter]?[member.axis] == nil else {
                    throw Failure.groupsDoNotLineUp("\(member.parameter) axis \(member.axis) is in two groups")
                }
                selection[member.parameter, default: [:]][member.axis] = indices
            }
        }

        let result = smaller.makeParameters()
        for (i, spec) in result.specs.enumerated() {
            let j = p.index(of: spec.name)!
            let source = p.specs[j]
            guard source.shape.count == spec.shape.count, source.role == spec.role else {
                throw Failure.groupsDoNotLineUp("\(spec.name) is \(source.role) \(source.shape) in the source "
                                                + "but \(spec.role) \(spec.shape) in the target")
            }
            var indices = [[Int]]()
            for axis in spec.shape.indices {
                if let chosen = selection[spec.name]?[axis] {
                    guard chosen.count == spec.shape[axis] else {
                        throw Failure.groupsDoNotLineUp("\(spec.name) axis \(axis) has \(spec.shape[axis]) channels in the target, "
                                                        + "its group keeps \(chosen.count)")
                    }
                    indices.append(chosen)
                } else {
                    guard source.shape[axis] == spec.shape[axis] else {
                        throw Failure.groupsDoNotLineUp("\(spec.name) axis \(axis) is in no channel group but has size "
                                                        + "\(source.shape[axis]) in the source and \(spec.shape[axis]) in the target")
                    }
                    indices.append(Array(0..<spec.shape[axis]))
                }
            }
            gather(p.value(j), indices: indices, into: result.value(i))
        }
        return result
    }

    /// For each source group, the channels to keep (ascending), after checking that the target
    /// has the same groups with the same members and no more channels.
    static func keptChannels(_ p: ParameterSet, groups: [ChannelGroup], targetGroups: [ChannelGroup]) throws -> [[Int]] {
        guard groups.map(\.name) == targetGroups.map(\.name) else {
            throw Failure.groupsDoNotLineUp("groups \(groups.map(\.name)) vs \(targetGroups.map(\.name))")
        }
        return try zip(groups, targetGroups).map { group, target in
            guard group.members == target.members else {
                throw Failure.groupsDoNotLineUp("group \(group.name) has different members in the two networks")
            }
            guard target.size <= group.size else {
                throw Failure.widerTarget(group: group.name, from: group.size, to: target.size)
            }
            guard let first = group.members.first, let i = p.index(of: first.parameter),
                  first.axis < p.specs[i].shape.count, p.specs[i].shape[first.axis] == group.size else {
                throw Failure.groupsDoNotLineUp("group \(group.name) has no producing parameter with \(group.size) channels")
            }
            let scores = l1Norms(p.value(i), axis: first.axis)
            let ranked = scores.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
            return ranked.prefix(target.size).sorted()
        }
    }

    /// ‖t[…, c, …]‖₁ for every index c along `axis`, accumulated in Double.
    static func l1Norms(_ t: Tensor, axis: Int) -> [Double] {
        let size = t.shape[axis], inner = t.shape[(axis + 1)...].reduce(1, *)
        var norms = [Double](repeating: 0, count: size)
        for i in 0..<t.count { norms[(i / inner) % size] += Double(abs(t[i])) }
        return norms
    }

    /// target[i₀, i₁, …] = source[indices[0][i₀], indices[1][i₁], …].
    static func gather(_ source: Tensor, indices: [[Int]], into target: Tensor) {
        var strides = [Int](repeating: 1, count: source.rank)
        for axis in stride(from: source.rank - 2, through: 0, by: -1) { strides[axis] = strides[axis + 1] * source.shape[axis + 1] }
        var position = [Int](repeating: 0, count: indices.count)
        for out in 0..<target.count {
            var from = 0
            for axis in position.indices { from += indices[axis][position[axis]] * strides[axis] }
            target[out] = source[from]
            var axis = position.count - 1
            while axis >= 0 {
                position[axis] += 1
                if position[axis] < indices[axis].count { break }
                position[axis] = 0
                axis -= 1
            }
        }
    }
}
