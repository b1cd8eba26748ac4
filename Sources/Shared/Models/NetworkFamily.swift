import Foundation

/// The network families by name, and base-network checkpoints that record which one they hold.
public enum NetworkFamily {
    public static let names = ["lenet", "resnet20", "resnet32", "resnet56", "resnet18"]

    public enum Failure: Error, CustomStringConvertible {
        case unknownFamily(String)
        case badWidths(family: String, widths: [Int], expected: String)
        case badImageSize(family: String, size: Int, expected: String)
        case badMetadata(path: String, key: String, problem: String)
        case shapeMismatch(path: String, tensor: String, expected: [Int], found: [Int]?)

        public var description: String {
            switch self {
            case .unknownFamily(let f): "unknown network family '\(f)' (known: \(NetworkFamily.names.joined(separator: ", ")))"
            case .badWidths(let f, let w, let e): "family \(f) takes \(e), got widths \(w)"
            case .badImageSize(let f, let s, let e): "family \(f) takes \(e), got image size \(s)"
            case .badMetadata(let p, let k, let problem): "\(p): metadata '\(k)' \(problem)"
            case .shapeMismatch(let p, let t, let e, let f):
                f == nil ? "\(p): tensor '\(t)' is missing (expected shape \(e))"
                         : "\(p): tensor '\(t)' has shape \(f!), expected \(e)"
            }
        }
    }

    /// A network of `family` with the given widths: LeNet takes one width w; CIFAR ResNets
    /// (`resnetD`, D = 6n + 2) and ResNet-18 take their stage widths, optionally followed by
    /// every block's hidden width. A `-folded` suffix selects the batch-norm-folded form.
    /// `imageSize`: the side of the square RGB input (nil: the family's default input, 3×224×224
    /// for ResNet-18, 3×32×32 for the CIFAR ResNets and greyscale 1×28×28 for LeNet).
    public static func make(_ family: String, widths: [Int], classCount: Int = 10, imageSize: Int? = nil) throws -> Network {
        let name = unfolded(family), folded = name != family
        switch name {
        case "lenet" where !folded:
            guard widths.count == 1, widths[0] >= 1 else { throw Failure.badWidths(family: family, widths: widths, expected: "one width ≥ 1") }
            if let imageSize, imageSize < 8 { throw Failure.badImageSize(family: family, size: imageSize, expected: "RGB images of at least 8×8") }
            return LeNet(width: widths[0], classCount: classCount, inputShape: imageSize.map { [3, $0, $0] } ?? [1, 28, 28])
        case "resnet18":
            guard let net = ResNet18(widths: widths, classCount: classCount, inputSize: imageSize ?? 224, batchNorm: !folded) else {
                throw Failure.badWidths(family: family, widths: widths, expected: "4 stage widths (+ 8 block hidden widths)")
            }
            return net
        case let n where n.hasPrefix("resnet"):
            guard let depth = Int(n.dropFirst("resnet".count)), depth >= 8, (depth - 2) % 6 == 0 else { throw Failure.unknownFamily(family) }
            let size = imageSize ?? 32
            guard let net = CIFARResNet(depth: depth, widths: widths, classCount: classCount, inputShape: [3, size, size],
                                        batchNorm: !folded) else {
                throw Failure.badWidths(family: family, widths: widths, expected: "3 stage widths (+ \(3 * (depth - 2) / 6) block hidden widths)")
            }
            return net
        default:
            throw Failure.unknownFamily(family)
        }
    }

    /// The family with batch norm of a `-folded` family name (`resnet20-folded` → `resnet20`);
    /// any other name as it is.
    public static func unfolded(_ family: String) -> String {
        family.hasSuffix("-folded") ? String(family.dropLast("-folded".count)) : family
    }

    /// The widths of `family` scaled from one base width w: LeNet [w], CIFAR ResNets
    /// [w, 2w, 4w], ResNet-18 [w, 2w, 4w, 8w].
    public static func widths(_ family: String, scaledFrom w: Int) -> [Int] {
        switch unfolded(family) {
        case "lenet": return [w]
        case "resnet18": return [w, 2 * w, 4 * w, 8 * w]
        default: return [w, 2 * w, 4 * w]
        }
    }

    /// The batch-norm-folded form of `network` and its parameters (same inference logits), or
    /// nil when the network has no batch norm.
    public static func foldedBatchNorm(_ network: Network, _ parameters: ParameterSet) -> (Network, ParameterSet)? {
        switch network {
        case let n as CIFARResNet where n.batchNorm: return n.foldedBatchNorm(parameters)
        case let n as ResNet18 where n.batchNorm: return n.foldedBatchNorm(parameters)
        default: return nil
        }
    }

    /// Default widths of a family (the paper's base networks).
    public static func defaultWidths(_ family: String) -> [Int]? {
        switch family {
        case "lenet": [32]
        case "resnet18": [64, 128, 256, 512]
        case let f where f.hasPrefix("resnet"): [16, 32, 64]
        default: nil
        }
    }
}

/// A trained base network on disk: a safetensors file with PyTorch key names whose metadata
/// records `family`, `widths`, `class_count`, `image_size` (RGB families) and the input
/// normalisation `input_mean`/`input_std` (JSON lists), plus whatever the caller adds
/// (accuracy, epochs, ...).
public struct NetworkCheckpoint {
    public let network: Network
    public let parameters: ParameterSet
    public let mean: [Float], std: [Float]
    public let metadata: [String: String]

    public init(network: Network, parameters: ParameterSet, mean: [Float], std: [Float], metadata: [String: String] = [:]) {
        self.network = network; self.parameters = parameters; self.mean = mean; self.std = std; self.metadata = metadata
    }

    static func json(_ value: Any) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]), as: UTF8.self)
    }

    /// Writes atomically with a BLAKE2b digest of the tensor data in the metadata.
    public func save(to path: String) throws {
        var meta = metadata
        meta["family"] = network.family
        meta["widths"] = Self.json(network.widths)
        meta["class_count"] = String(network.classCount)
        if network.inputShape[0] == 3 { meta["image_size"] = String(network.inputShape[1]) }
        meta["input_mean"] = Self.json(mean.map(Double.init))
        meta["input_std"] = Self.json(std.map(Double.init))
        meta["format"] = "neumeta-network/1"
        let tensors = parameters.specs.indices.map { (parameters.specs[$0].name, parameters.value($0)) }
        try CheckpointStore.save(tensors, metadata: meta, to: path)
    }

    /// Reads and verifies a checkpoint, rebuilding its network from the metadata.
    public static func load(path: String) throws -> NetworkCheckpoint {
        let file = try CheckpointStore.read(path: path, verify: true)
        let meta = file.metadata
        func list(_ key: String) throws -> [Double] {
            guard let text = meta[key] else { throw NetworkFamily.Failure.badMetadata(path: path, key: key, problem: "is missing") }
            guard let value = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [NSNumber] else {
                throw NetworkFamily.Failure.badMetadata(path: path, key: key, problem: "is not a JSON list of numbers: \(text)")
            }
            return value.map(\.doubleValue)
        }
        guard let family = meta["family"] else { throw NetworkFamily.Failure.badMetadata(path: path, key: "family", problem: "is missing") }
        let widths = try list("widths").map { Int($0) }
        let classCount = Int(meta["class_count"] ?? "10") ?? 10
        var imageSize: Int?
        if let text = meta["image_size"] {
            guard let size = Int(text), (1...4096).contains(size) else {
                throw NetworkFamily.Failure.badMetadata(path: path, key: "image_size", problem: "is not a side length in 1…4096: \(text)")
            }
            imageSize = size
        }
        let network = try NetworkFamily.make(family, widths: widths, classCount: classCount, imageSize: imageSize)
        let parameters = network.makeParameters()
        let byName = Dictionary(file.tensors.map { ($0.name, $0.tensor) }, uniquingKeysWith: { a, _ in a })
        for (i, spec) in parameters.specs.enumerated() {
            guard let t = byName[spec.name], t.shape == spec.shape else {
                throw NetworkFamily.Failure.shapeMismatch(path: path, tensor: spec.name, expected: spec.shape, found: byName[spec.name]?.shape)
            }
            parameters.value(i).copy(from: t)
        }
        let mean = try list("input_mean").map(Float.init), std = try list("input_std").map(Float.init)
        guard mean.count == network.inputShape[0], std.count == mean.count else {
            throw NetworkFamily.Failure.badMetadata(path: path, key: "input_mean", problem: "needs \(network.inputShape[0]) values")
        }
        return NetworkCheckpoint(network: network, parameters: parameters, mean: mean, std: std, metadata: meta)
    }
}
