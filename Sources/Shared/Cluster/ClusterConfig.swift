import Foundation

/// The experiment and cluster description read from `cluster.yaml` (see the file at the
/// repository root, whose comments document every key). Every key is optional (an absent one
/// takes its value from `defaults`), but a file with no settings at all is refused as a
/// likely mistake. Optionals left nil mean "the recipe decides". The fields are `var`s so
/// that command-line options can override a loaded file.
public struct ClusterConfig: Sendable, Equatable {
    /// What is trained, and how.
    public var experiment = Experiment()
    /// The pretrained base network the INR learns from.
    public var base = Base()
    /// The evaluation run after training.
    public var evaluation = Evaluation()
    /// Where the coordinator listens and where workers connect.
    public var coordinator = Coordinator()
    /// CURVE keys of the coordinator and the workers.
    public var keys = Keys()
    /// Workers the coordinator starts itself.
    public var workers = Workers()
    /// Periodic training checkpoints.
    public var checkpoints = Checkpoints()
    /// Result files.
    public var output = Output()
    /// Coordinator compute threads; nil: one per core.
    public var threads: Int?

    /// The defaults (what a file that sets nothing would mean), paths as written.
    public init() {}

    /// The built-in defaults (no --config), relative paths not yet resolved.
    public static let defaults = ClusterConfig()

    /// Datasets by their `experiment.dataset` names.
    public typealias Dataset = DatasetSpec.Kind

    /// INR training recipes by their `experiment.recipe` names: `paper` is the paper's recipe
    /// exactly, `default` ours (see `neumeta-coordinator train --help`).
    public enum Recipe: String, Sendable, CaseIterable {
        case `default`, paper
    }

    public struct Experiment: Sendable, Equatable {
        /// Network family name (one of `NetworkFamily.names`).
        public var family = "lenet"
        /// The dataset trained and evaluated on.
        public var dataset = Dataset.fashionMNIST
        /// Local dataset directory (a worker may override it with `--data`).
        public var data = FashionMNIST.defaultDirectory
        /// Image folder: side of the square batch images, 1…4096 (nil: the base network's, or
        /// 64 when the base network is trained first).
        public var imageSize: Int?
        /// Image folder: random-resized crops and flips for training batches (false: resize and
        /// centre crop).
        public var augment = true
        /// Image folder: the data fingerprint covers every image's bytes, not only the file names
        /// and sizes (reads the whole folder at every start, on every worker).
        public var contentHashes = false
        /// The recipe that fills in every nil below.
        public var recipe = Recipe.default
        /// The trained width range.
        public var widths = Widths()
        /// INR training epochs (passes over the training set); > 0.
        public var epochs: Double = 6
        /// Configurations whose gradients each round averages; ≥ 1.
        public var configurationsPerRound: Int?
        /// Configurations per reduction block (`RoundPlan.configurationsPerBlock`); ≥ 1.
        public var configurationsPerBlock = 1
        /// Every configuration of a round uses the round's one mini-batch (nil: the recipe decides).
        public var sharedBatch: Bool?
        /// Mini-batch size; ≥ 1.
        public var batchSize = 128
        /// Coordinate noise ε; ≥ 0 (nil: the recipe decides).
        public var noise: Float?
        /// Seed of the run (widths, batches, noise, INR initialisation).
        public var seed: UInt64 = 0
        /// INR architecture.
        public var inr = INR()
        /// Optimizer settings.
        public var optimizer = Optimizer()
        /// λ_rec at round 0, the reconstruction weight at the pretrained width; ≥ 0.
        public var reconstruction: Float?
        /// What the INR generates: the whole network, or a ResNet's last block.
        public var morph = MorphScope.all
        /// What happens to a ResNet base's batch norm: folded into its convolutions, or kept and
        /// recalibrated after sampling; nil: as `resolvedBatchNorm` decides by `morph`.
        public var batchNorm: BatchNormHandling?
        public init() {}

        /// The batch-norm handling in effect. By default a whole-network morph recalibrates: every
        /// layer's channel statistics change with the width, and generating folded convolutions
        /// from the resampled base diverged (docs/results.md); a last-block morph folds, so a
        /// sampled network needs no data, at no cost in accuracy there.
        public var resolvedBatchNorm: BatchNormHandling { batchNorm ?? (morph == .all ? .recalibrate : .fold) }
    }

    /// Trained widths, 1 ≤ min ≤ max; max is also the coordinate normaliser.
    public struct Widths: Sendable, Equatable {
        public var min = 8
        public var max = 32
        public init() {}
    }

    public struct INR: Sendable, Equatable {
        /// Hidden width of the INR's MLP; ≥ 1.
        public var hidden: Int?
        /// Layers L of the MLP; ≥ 1.
        public var layers: Int?
        /// Sinusoidal frequencies F of the coordinate encoding; ≥ 1.
        public var frequencies: Int?
        /// What generated values are added to: nothing, or the resampled base network.
        public var prior: WeightPrior?
        public init() {}
    }

    public struct Optimizer: Sendable, Equatable {
        /// AdamW learning rate; > 0.
        public var learningRate: Float?
        /// Cosine learning-rate schedule (false: constant).
        public var cosine: Bool?
        /// Decay of the parameter EMA that is saved; in [0, 1).
        public var emaDecay: Float?
        /// AdamW weight decay; ≥ 0.
        public var weightDecay: Float?
        /// Gradient norm clip; > 0.
        public var gradientClip: Float?
        public init() {}
    }

    public struct Base: Sendable, Equatable {
        /// Base checkpoint: used if it exists, otherwise trained and written here.
        public var checkpoint = "runs/lenet-32.safetensors"
        /// Width of the base network; ≥ 1.
        public var width = 32
        /// Epochs to train it when the checkpoint is missing; ≥ 1.
        public var epochs = 5
        public init() {}
    }

    public struct Evaluation: Sendable, Equatable {
        /// Widths evaluated (each ≥ 1).
        public var widths = [4, 6, 8, 12, 16, 20, 24, 28, 32, 36, 40, 48]
        /// K of the K-sample average over coordinate noise; ≥ 1.
        public var samples = 10
        /// Prefix of the .csv, .md and .svg results.
        public var out = "runs/cluster-eval"
        public init() {}
    }

    public struct Coordinator: Sendable, Equatable {
        /// ZeroMQ endpoint the coordinator binds.
        public var bind = "tcp://127.0.0.1:5570"
        /// Endpoint workers connect to; nil: derived from `bind` (see `connectEndpoint`).
        public var connect: String?
        public init() {}

        /// `connect`, or else `bind` with a wildcard host (`tcp://*:P`, `tcp://0.0.0.0:P`)
        /// replaced by `tcp://127.0.0.1:P`, or else `bind` itself.
        public var connectEndpoint: String {
            if let connect { return connect }
            for wildcard in ["tcp://*:", "tcp://0.0.0.0:"] where bind.hasPrefix(wildcard) {
                return "tcp://127.0.0.1:" + bind.dropFirst(wildcard.count)
            }
            return bind
        }
    }

    public struct Keys: Sendable, Equatable {
        /// Key directory in `KeyStore`'s layout.
        public var directory = "runs/keys"
        /// Create the directory with fresh keys when it is missing (false: missing keys are an error).
        public var generate = true
        public init() {}
    }

    public struct Workers: Sendable, Equatable {
        /// Worker processes the coordinator starts on this machine (0: external workers only).
        public var local = 2
        /// Compute threads per local worker; ≥ 1.
        public var threads = 1
        /// How workers send gradients: float32 (exact) or bfloat16 (half the bytes; the sum and
        /// the optimizer stay float32).
        public var gradients = GradientPrecision.float32
        /// Batches of an image folder a worker (or `train`) decodes ahead on background threads;
        /// ≥ 0. It changes when decoding happens, never a result.
        public var prefetch = 8
        /// Decode an image folder into memory once instead of streaming it (same results; 3
        /// bytes a pixel of memory on every worker).
        public var inMemory = false
        public init() {}
    }

    /// Wire precision of gradients (`workers.gradients`).
    public enum GradientPrecision: String, Sendable, CaseIterable {
        case float32, bfloat16
    }

    public struct Checkpoints: Sendable, Equatable {
        /// Directory of the periodic training checkpoints.
        public var directory = "runs/checkpoints"
        /// Rounds between checkpoints; ≥ 1.
        public var everyRounds = 100
        /// Checkpoints kept (older ones are pruned); ≥ 1.
        public var keep = 3
        public init() {}
    }

    public struct Output: Sendable, Equatable {
        /// The trained INR checkpoint.
        public var inr = "runs/inr-cluster.safetensors"
        /// Metrics, one JSON line per round.
        public var metrics = "runs/metrics.jsonl"
        public init() {}
    }

    /// This configuration with every relative path (`experiment.data`, `base.checkpoint`,
    /// `evaluation.out`, `keys.directory`, `checkpoints.directory`, `output.*`) taken relative
    /// to `directory`; absolute paths and `~/…` (expanded) are kept.
    public func resolvingPaths(against directory: URL) -> ClusterConfig {
        func resolve(_ path: inout String) {
            let expanded = (path as NSString).expandingTildeInPath
            path = expanded.hasPrefix("/") ? expanded : directory.appendingPathComponent(expanded).standardizedFileURL.path
        }
        var c = self
        resolve(&c.experiment.data); resolve(&c.base.checkpoint); resolve(&c.evaluation.out)
        resolve(&c.keys.directory); resolve(&c.checkpoints.directory)
        resolve(&c.output.inr); resolve(&c.output.metrics)
        return c
    }

    /// Reads the file at `path`; relative paths in it are resolved against its directory, and
    /// errors name `path` as given.
    public static func load(path: String) throws -> ClusterConfig {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ConfigError(file: path, line: nil, message: "cannot read: \(error.localizedDescription)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(file: path, line: nil, message: "not UTF-8 text")
        }
        return try parse(yaml: text, file: path, baseDirectory: URL(fileURLWithPath: path).deletingLastPathComponent())
    }

    /// Parses YAML text; `file` names it in errors. Relative paths are resolved against
    /// `baseDirectory`, or kept as written when it is nil.
    public static func parse(yaml: String, file: String = "cluster.yaml", baseDirectory: URL?) throws -> ClusterConfig {
        let config = try read(yaml: yaml, file: file)
        return baseDirectory.map(config.resolvingPaths(against:)) ?? config
    }
}

/// A cluster.yaml problem, with the 1-based line it is on (nil when it concerns the whole file).
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var line: Int?
    public var message: String

    public init(file: String, line: Int?, message: String) {
        self.file = file; self.line = line; self.message = message
    }

    /// `file:line: message`, as compilers write it.
    public var description: String { line.map { "\(file):\($0): \(message)" } ?? "\(file): \(message)" }
}
