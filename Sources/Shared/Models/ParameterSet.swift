/// What a parameter tensor is, which decides its initialisation and how NeuMeta addresses it.
public enum ParameterRole: String, Sendable, Codable {
    case convWeight, linearWeight, bias, normWeight, normBias, runningMean, runningVar
    /// The learnable scalar s of a residual block h ← s·f(h) + h (NeuMeta's INR), initialised 0.1.
    case residualScale

    /// Learned by gradient descent (running statistics are buffers, not parameters).
    public var trainable: Bool { self != .runningMean && self != .runningVar }
}

/// One entry of a network's state dict: PyTorch key, shape and role.
public struct ParameterSpec: Sendable, Equatable {
    public let name: String
    public let shape: [Int]
    public let role: ParameterRole

    public init(_ name: String, _ shape: [Int], _ role: ParameterRole) {
        self.name = name; self.shape = shape; self.role = role
    }

    public var count: Int { shape.reduce(1, *) }
    /// Output channels (rows of a linear weight, entries of a bias): coordinate `out_size`.
    public var outSize: Int { shape[0] }
    /// Input channels (columns of a linear weight; 1 for a bias): coordinate `in_size`.
    public var inSize: Int { shape.count > 1 ? shape[1] : 1 }
    /// k·k for a conv kernel, 1 otherwise: the values one (out, in) coordinate generates.
    public var kernelArea: Int { shape.count > 2 ? shape[2...].reduce(1, *) : 1 }
}

/// A network's parameters and their gradients in two flat buffers, with one view per spec.
///
/// Because everything lives in `values` and `gradients`, the optimizer, gradient averaging,
/// digests and checkpoints are single loops over a buffer.
public final class ParameterSet: @unchecked Sendable {
    public let specs: [ParameterSpec]
    public let values: FloatStorage
    public let gradients: FloatStorage
    /// Offset of each spec's first element in the flat buffers.
    public let offsets: [Int]
    private let indexByName: [String: Int]

    public init(specs: [ParameterSpec]) {
        var offsets = [Int](), total = 0
        for s in specs { offsets.append(total); total += s.count }
        self.specs = specs
        self.offsets = offsets
        self.values = FloatStorage(count: total)
        self.gradients = FloatStorage(count: total)
        var index = [String: Int]()
        for (i, s) in specs.enumerated() {
            precondition(index[s.name] == nil, "duplicate parameter name \(s.name)")
            index[s.name] = i
        }
        self.indexByName = index
    }

    public var count: Int { values.count }

    public func index(of name: String) -> Int? { indexByName[name] }

    /// The value view of spec `i`.
    public func value(_ i: Int) -> Tensor { Tensor(storage: values, offset: offsets[i], shape: specs[i].shape) }
    /// The gradient view of spec `i`.
    public func gradient(_ i: Int) -> Tensor { Tensor(storage: gradients, offset: offsets[i], shape: specs[i].shape) }

    public func value(_ name: String) -> Tensor {
        guard let i = indexByName[name] else { preconditionFailure("no parameter named \(name)") }
        return value(i)
    }

    public func gradient(_ name: String) -> Tensor {
        guard let i = indexByName[name] else { preconditionFailure("no parameter named \(name)") }
        return gradient(i)
    }

    public func zeroGradients() { gradients.base.update(repeating: 0, count: gradients.count) }

    /// PyTorch's default initialisation: conv and linear weights Kaiming-uniform with a = √5,
    /// i.e. U(−1/√fan_in, 1/√fan_in); biases U(−1/√fan_in, 1/√fan_in) with the fan-in of the
    /// weight they belong to (the preceding spec); norm weights 1, norm biases 0, running mean 0,
    /// running variance 1, residual scales 0.1.
    public func initializeDefault(rng: inout SeededRandom) {
        var fanIn = 1
        for (i, s) in specs.enumerated() {
            let v = value(i)
            switch s.role {
            case .convWeight, .linearWeight:
                fanIn = s.count / s.outSize
                let bound = 1 / Float(fanIn).squareRoot()
                for j in 0..<v.count { v[j] = rng.uniform(-bound, bound) }
            case .bias:
                let bound = 1 / Float(fanIn).squareRoot()
                for j in 0..<v.count { v[j] = rng.uniform(-bound, bound) }
            case .normWeight, .runningVar: v.fill(1)
            case .residualScale: v.fill(0.1)
            case .normBias, .runningMean: v.fill(0)
            }
        }
    }
}
