/// Channels that must be permuted together (docs/algorithm.md §5): one entry per (parameter, axis)
/// whose index along `axis` is a channel of this group.
public struct ChannelGroup: Sendable, Equatable {
    public struct Member: Sendable, Equatable {
        public let parameter: String
        public let axis: Int
        public init(_ parameter: String, axis: Int) { self.parameter = parameter; self.axis = axis }
    }

    public let name: String
    public let size: Int
    public let members: [Member]

    public init(name: String, size: Int, members: [Member]) {
        self.name = name; self.size = size; self.members = members
    }
}

/// Whether a forward pass trains (batch statistics, activations kept for backward) or infers.
public enum ForwardMode: Sendable { case training, inference }

/// A target network family at one width assignment: its state dict, its permutation groups,
/// and forward/backward over a batch.
///
/// A network instance owns its activation buffers (grown to the largest batch seen, never
/// inside the steady-state step), so one instance serves one thread.
public protocol Network: AnyObject {
    /// Family name recorded in checkpoints ("lenet", "resnet20", ...).
    var family: String { get }
    /// The widths that define this instance, recorded in checkpoints.
    var widths: [Int] { get }
    /// [channels, height, width] of one input image.
    var inputShape: [Int] { get }
    var classCount: Int { get }
    /// State-dict entries, PyTorch key names and order.
    var parameterSpecs: [ParameterSpec] { get }
    /// Groups of channels that permute together without changing the function.
    var channelGroups: [ChannelGroup] { get }

    /// Runs the batch `input` [N, C, H, W]; returns the logits [N, classCount] (a view into the
    /// network's own buffers, valid until the next call).
    func forward(_ parameters: ParameterSet, input: Tensor, mode: ForwardMode) -> Tensor

    /// Back-propagates `dLogits` through the last training-mode forward of the same input,
    /// accumulating parameter gradients into `parameters.gradients`.
    func backward(_ parameters: ParameterSet, input: Tensor, dLogits: Tensor)

    /// `backward`, but only as far as the gradients of parameters `firstParameter...` need: a
    /// network may leave the gradients of earlier parameters unaccumulated (a ResNet stops after
    /// the first residual block that holds such a parameter).
    func backward(_ parameters: ParameterSet, input: Tensor, dLogits: Tensor, from firstParameter: Int)
}

extension Network {
    public func makeParameters() -> ParameterSet { ParameterSet(specs: parameterSpecs) }

    public func backward(_ parameters: ParameterSet, input: Tensor, dLogits: Tensor, from firstParameter: Int) {
        backward(parameters, input: input, dLogits: dLogits)
    }

    /// Trainable tensors only (the ones an INR generates and an optimizer updates).
    public var trainableSpecs: [ParameterSpec] { parameterSpecs.filter { $0.role.trainable } }
}

/// Growable activation memory: named regions carved from one storage that is re-made only when
/// a larger batch arrives.
final class ActivationArena {
    private var storage = FloatStorage(count: 0)
    private var batch = -1
    private var tensors: [Tensor] = []

    /// Views of the given per-sample shapes for a batch of `n`, reusing memory when possible.
    func views(batch n: Int, shapes: [[Int]]) -> [Tensor] {
        if n == batch { return tensors }
        let total = shapes.reduce(0) { $0 + n * $1.reduce(1, *) }
        if total > storage.count { storage = FloatStorage(count: total) }
        var offset = 0
        tensors = shapes.map { s in
            defer { offset += n * s.reduce(1, *) }
            return Tensor(storage: storage, offset: offset, shape: [n] + s)
        }
        batch = n
        return tensors
    }
}
