import Foundation
import Testing
import Yams
@testable import NeuMeta

@Suite struct ClusterConfigTests {
    /// The repository root (this file is Tests/NeuMetaTests/Cluster/ClusterConfigTests.swift).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    static func parse(_ yaml: String) throws -> ClusterConfig { try ClusterConfig.parse(yaml: yaml, baseDirectory: nil) }

    static let experimentKeys = "family, dataset, data, image_size, augment, content_hashes, recipe, morph, batch_norm, widths, epochs, configurations_per_round, configurations_per_block, shared_batch, batch_size, noise, seed, inr, optimizer, reconstruction"
    static let topKeys = "experiment, base, evaluation, coordinator, keys, workers, checkpoints, output, threads"

    @Test func nullSectionsGiveTheDefaultsAndAnEmptyFileIsRefused() throws {
        #expect(try Self.parse("experiment:\nbase: ~\nthreads: null\n") == ClusterConfig.defaults)
        for yaml in ["", "# nothing but a comment\n"] {
            #expect(throws: ConfigError.self, "\(yaml.debugDescription)") { try Self.parse(yaml) }
            #expect { try Self.parse(yaml) } throws: { "\($0)".contains("holds no settings") && "\($0)".contains("leave out --config") }
        }
        #expect(ClusterConfig.defaults.experiment.widths.min == 8 && ClusterConfig.defaults.evaluation.widths.count == 12)
    }

    @Test func shippedClusterYAMLIsTheDefaultsWithACommentOnEveryKey() throws {
        let file = Self.root.appendingPathComponent("cluster.yaml")
        #expect(try ClusterConfig.load(path: file.path) == ClusterConfig.defaults.resolvingPaths(against: Self.root))
        let text = try String(contentsOf: file, encoding: .utf8)
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            #expect(line.contains("#"), "cluster.yaml:\(i + 1) has no comment: \(line)")
        }
    }

    @Test func paperYAMLIsThePaperRecipeOtherwiseDefaults() throws {
        let directory = Self.root.appendingPathComponent("configs")
        var expected = ClusterConfig.defaults
        expected.experiment.recipe = .paper
        expected.experiment.epochs = 200
        expected.base.checkpoint = "../runs/lenet-32.safetensors"
        expected.evaluation.out = "../runs/paper-eval"
        expected.keys.directory = "../runs/keys"
        expected.checkpoints.directory = "../runs/paper-checkpoints"
        expected.output.inr = "../runs/inr-paper.safetensors"
        expected.output.metrics = "../runs/paper-metrics.jsonl"
        let paper = try ClusterConfig.load(path: directory.appendingPathComponent("paper.yaml").path)
        #expect(paper == expected.resolvingPaths(against: directory))
        #expect(paper.base.checkpoint == Self.root.appendingPathComponent("runs/lenet-32.safetensors").path)
        let runs = Self.root.appendingPathComponent("runs").path + "/"
        for path in [paper.evaluation.out, paper.keys.directory, paper.checkpoints.directory, paper.output.inr, paper.output.metrics] {
            #expect(path.hasPrefix(runs), "\(path) is not under \(runs)")
        }
    }

    @Test func everyKeySetToANonDefaultValue() throws {
        let yaml = """
        experiment:
          family: resnet20
          dataset: cifar100
          data: data/cifar-100
          recipe: paper
          morph: last-block
          batch_norm: recalibrate
          widths:
            min: 4
            max: 64
          epochs: 12.5
          configurations_per_round: 3
          configurations_per_block: 2
          batch_size: 64
          noise: 0.25
          seed: 18446744073709551615
          inr: { hidden: 128, layers: 5, frequencies: 10, prior: base }
          optimizer: { learning_rate: 2e-3, cosine: false, ema_decay: 0.99, weight_decay: 0.0001, gradient_clip: 1 }
          reconstruction: 0.5
        base: { checkpoint: /abs/base.safetensors, width: 48, epochs: 9 }
        evaluation: { widths: [16, 64], samples: 3, out: out/eval }
        coordinator: { bind: 'tcp://*:6000', connect: tcp://head.example:6000 }
        keys: { directory: k, generate: no }
        workers: { local: 0, threads: 4 }
        checkpoints: { directory: ck, every_rounds: 25, keep: 1 }
        output: { inr: o/inr.safetensors, metrics: o/m.jsonl }
        threads: 12
        """
        var e = ClusterConfig()
        e.experiment.family = "resnet20"; e.experiment.dataset = .cifar100; e.experiment.data = "data/cifar-100"
        e.experiment.recipe = .paper; e.experiment.widths.min = 4; e.experiment.widths.max = 64
        e.experiment.morph = .lastBlock; e.experiment.batchNorm = .recalibrate
        e.experiment.epochs = 12.5; e.experiment.configurationsPerRound = 3; e.experiment.configurationsPerBlock = 2; e.experiment.batchSize = 64
        e.experiment.noise = 0.25; e.experiment.seed = .max
        e.experiment.inr.hidden = 128; e.experiment.inr.layers = 5; e.experiment.inr.frequencies = 10; e.experiment.inr.prior = .base
        e.experiment.optimizer.learningRate = 2e-3; e.experiment.optimizer.cosine = false; e.experiment.optimizer.emaDecay = 0.99
        e.experiment.optimizer.weightDecay = 0.0001; e.experiment.optimizer.gradientClip = 1
        e.experiment.reconstruction = 0.5
        e.base.checkpoint = "/abs/base.safetensors"; e.base.width = 48; e.base.epochs = 9
        e.evaluation.widths = [16, 64]; e.evaluation.samples = 3; e.evaluation.out = "out/eval"
        e.coordinator.bind = "tcp://*:6000"; e.coordinator.connect = "tcp://head.example:6000"
        e.keys.directory = "k"; e.keys.generate = false
        e.workers.local = 0; e.workers.threads = 4
        e.checkpoints.directory = "ck"; e.checkpoints.everyRounds = 25; e.checkpoints.keep = 1
        e.output.inr = "o/inr.safetensors"; e.output.metrics = "o/m.jsonl"
        e.threads = 12
        #expect(try Self.parse(yaml) == e)
        #expect(e != ClusterConfig.defaults)
    }

    /// batch_norm null (the default) follows the morph: recalibrate for the whole network, fold
    /// for the last block; a value given wins over either.
    @Test func batchNormDefaultFollowsTheMorph() throws {
        #expect(ClusterConfig.defaults.experiment.batchNorm == nil)
        let all = try Self.parse("experiment:\n  morph: all\n  batch_norm: null\n")
        #expect(all.experiment.batchNorm == nil && all.experiment.resolvedBatchNorm == .recalibrate)
        let last = try Self.parse("experiment:\n  morph: last-block\n")
        #expect(last.experiment.resolvedBatchNorm == .fold)
        let folded = try Self.parse("experiment:\n  morph: all\n  batch_norm: fold\n")
        #expect(folded.experiment.resolvedBatchNorm == .fold)
        let kept = try Self.parse("experiment:\n  morph: last-block\n  batch_norm: recalibrate\n")
        #expect(kept.experiment.resolvedBatchNorm == .recalibrate)
    }

    /// The image-folder keys: read with `dataset: folder`; set to other than their defaults
    /// with another dataset they are refused on their line (the defaults may stay, as in the
    /// shipped cluster.yaml).
    @Test func imageFolderKeys() throws {
        let folder = try Self.parse("""
        experiment:
          dataset: folder
          data: /data/imagenet
          image_size: 224
          augment: false
          content_hashes: true
        workers: { prefetch: 0, in_memory: true }
        """)
        #expect(folder.experiment.dataset == .folder && folder.experiment.imageSize == 224)
        #expect(!folder.experiment.augment && folder.experiment.contentHashes)
        #expect(folder.workers.prefetch == 0 && folder.workers.inMemory)
        #expect(ClusterConfig.defaults.workers.prefetch == 8 && !ClusterConfig.defaults.workers.inMemory)
        #expect(try Self.parse("experiment: { image_size: null, augment: true, content_hashes: false }\n") == ClusterConfig.defaults)
        for (key, value) in [("image_size", "64"), ("augment", "false"), ("content_hashes", "true")] {
            #expect(throws: ConfigError(file: "cluster.yaml", line: 3, message: "experiment.\(key) applies to image folders only "
                                        + "(experiment.dataset: folder), not to cifar10")) {
                try Self.parse("experiment:\n  dataset: cifar10\n  \(key): \(value)\n")
            }
        }
        #expect(throws: ConfigError(file: "cluster.yaml", line: 1, message: "experiment.image_size must be an integer in 1…4096, got '0'")) {
            try Self.parse("experiment: { dataset: folder, image_size: 0 }\n")
        }
        #expect(throws: ConfigError(file: "cluster.yaml", line: 1, message: "workers.prefetch must be an integer ≥ 0, got '-1'")) {
            try Self.parse("workers: { prefetch: -1 }\n")
        }
    }

    /// configs/resnet18-folder.yaml: ResNet-18 on a 64-pixel image folder.
    @Test func resnet18FolderYAML() throws {
        let directory = Self.root.appendingPathComponent("configs")
        let c = try ClusterConfig.load(path: directory.appendingPathComponent("resnet18-folder.yaml").path)
        #expect(c.experiment.family == "resnet18" && c.experiment.dataset == .folder && c.experiment.imageSize == 64)
        #expect(c.experiment.data == Self.root.appendingPathComponent("runs/fmnist-64").path)
        #expect(c.base.checkpoint == Self.root.appendingPathComponent("runs/resnet18-16.safetensors").path && c.base.width == 16)
    }

    @Test func relativePathsResolveAgainstTheConfigDirectory() throws {
        let yaml = "experiment: { data: ../data/fmnist }\nbase: { checkpoint: /abs/b.safetensors }\nevaluation: { out: ~/eval }\n"
            + "keys: { directory: ./k }\ncheckpoints: { directory: ck }\noutput: { inr: o/i.safetensors, metrics: m.jsonl }\n"
        let c = try ClusterConfig.parse(yaml: yaml, baseDirectory: URL(fileURLWithPath: "/srv/exp/configs", isDirectory: true))
        #expect(c.experiment.data == "/srv/exp/data/fmnist")
        #expect(c.base.checkpoint == "/abs/b.safetensors")
        #expect(c.evaluation.out == NSHomeDirectory() + "/eval")
        #expect(c.keys.directory == "/srv/exp/configs/k")
        #expect(c.checkpoints.directory == "/srv/exp/configs/ck")
        #expect(c.output.inr == "/srv/exp/configs/o/i.safetensors" && c.output.metrics == "/srv/exp/configs/m.jsonl")
        #expect(try ClusterConfig.parse(yaml: yaml, baseDirectory: nil).experiment.data == "../data/fmnist")

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cluster-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("c.yaml").path
        try "output: { inr: inr.safetensors }\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try ClusterConfig.load(path: file).output.inr == directory.appendingPathComponent("inr.safetensors").standardizedFileURL.path)
        #expect(try ClusterConfig.load(path: file).keys.directory == directory.appendingPathComponent("runs/keys").standardizedFileURL.path)
        let missing = directory.appendingPathComponent("missing.yaml").path
        let unreadable = #expect(throws: ConfigError.self) { try ClusterConfig.load(path: missing) }
        #expect(unreadable?.file == missing && unreadable?.line == nil)
        try Data([0x65, 0x3A, 0xFF]).write(to: URL(fileURLWithPath: file))
        #expect(throws: ConfigError(file: file, line: nil, message: "not UTF-8 text")) { try ClusterConfig.load(path: file) }
    }

    @Test(arguments: [
        ("tcp://127.0.0.1:5570", nil, "tcp://127.0.0.1:5570"),
        ("tcp://*:6000", nil, "tcp://127.0.0.1:6000"),
        ("tcp://0.0.0.0:7000", nil, "tcp://127.0.0.1:7000"),
        ("tcp://eth0:7000", nil, "tcp://eth0:7000"),
        ("ipc:///tmp/neumeta", nil, "ipc:///tmp/neumeta"),
        ("tcp://*:6000", "tcp://head:6000", "tcp://head:6000"),
    ] as [(String, String?, String)])
    func connectEndpointIsConnectOrDerivedFromBind(bind: String, connect: String?, expected: String) {
        var c = ClusterConfig.Coordinator()
        c.bind = bind; c.connect = connect
        #expect(c.connectEndpoint == expected)
    }

    @Test func yamsMarksAre1Based() throws {
        let node = try #require(try Yams.compose(yaml: "a: 1\nb: 2\n"))
        #expect(node["b"]?.mark?.line == 2)
    }

    /// Every error kind, with the exact line and message.
    @Test(arguments: [
        // unknown keys
        ("experiment:\n  family: lenet\n\n  epoch: 3\n", 4, "unknown key 'epoch' in experiment (known: \(experimentKeys))"),
        ("# comment\n\nexperiments: {}\n", 3, "unknown key 'experiments' at the top level (known: \(topKeys))"),
        ("experiment:\n  optimizer:\n    lr: 0.1\n", 3,
         "unknown key 'lr' in experiment.optimizer (known: learning_rate, cosine, ema_decay, weight_decay, gradient_clip)"),
        ("? [a]\n: 1\n", 1, "unknown key (not a name) at the top level (known: \(topKeys))"),
        // wrong types
        ("experiment:\n  epochs: six\n", 2, "experiment.epochs must be a positive number, got 'six'"),
        ("experiment:\n  batch_size: 12.5\n", 2, "experiment.batch_size must be an integer ≥ 1, got '12.5'"),
        ("experiment:\n  batch_size: \"12\"\n", 2, "experiment.batch_size must be an integer ≥ 1, got the quoted string \"12\""),
        ("base:\n  width: wide\n", 2, "base.width must be an integer ≥ 1, got 'wide'"),
        ("experiment:\n  inr: [1]\n", 2, "experiment.inr must be a mapping of hidden, layers, frequencies, prior, got a list"),
        ("experiment: [1, 2]\n", 1, "experiment must be a mapping of \(experimentKeys), got a list"),
        ("evaluation:\n  widths: 8\n", 2, "evaluation.widths must be a non-empty list, got '8'"),
        ("evaluation:\n  widths: [4, 8,\n    x]\n", 3, "evaluation.widths[2] must be an integer ≥ 1, got 'x'"),
        ("experiment:\n  optimizer: {cosine: 1}\n", 2, "experiment.optimizer.cosine must be true or false, got '1'"),
        ("keys:\n  directory: {a: 1}\n", 2, "keys.directory must be a non-empty string, got a mapping"),
        ("experiment:\n  epochs:\n", 2, "experiment.epochs must be a positive number, got null"),
        ("coordinator: {bind: '5570'}\n", 1, "coordinator.bind must be a ZeroMQ endpoint such as tcp://127.0.0.1:5570, got the quoted string \"5570\""),
        // ranges
        ("experiment:\n  seed: -1\n", 2, "experiment.seed must be an integer from 0 to 18446744073709551615, got '-1'"),
        ("experiment:\n  seed: 18446744073709551616\n", 2, "experiment.seed must be an integer from 0 to 18446744073709551615, got '18446744073709551616'"),
        ("experiment:\n  batch_size: 0\n", 2, "experiment.batch_size must be an integer ≥ 1, got '0'"),
        ("workers:\n  local: -1\n", 2, "workers.local must be an integer ≥ 0, got '-1'"),
        ("experiment:\n  noise: -0.5\n", 2, "experiment.noise must be a number ≥ 0, got '-0.5'"),
        ("experiment:\n  noise: .inf\n", 2, "experiment.noise must be a number ≥ 0, got '.inf'"),
        ("experiment:\n  optimizer:\n    ema_decay: 1\n", 3, "experiment.optimizer.ema_decay must be a number in [0, 1), got '1'"),
        ("evaluation:\n  widths: []\n", 2, "evaluation.widths must be a non-empty list, got an empty list"),
        ("experiment:\n  widths: { min: 40, max: 32 }\n", 2, "experiment.widths.min (40) must not exceed max (32)"),
        ("experiment:\n  widths:\n    max: 32\n    min: 40\n", 4, "experiment.widths.min (40) must not exceed max (32)"),
        ("experiment:\n  widths:\n\n    max: 4\n", 4, "experiment.widths.min (8) must not exceed max (4)"),
        // enumerations
        ("experiment:\n  recipe: fancy\n", 2, "experiment.recipe must be one of default, paper, got 'fancy'"),
        ("experiment:\n  family: resnet20\n  morph: first-block\n", 3, "experiment.morph must be one of all, last-block, got 'first-block'"),
        ("experiment:\n  inr: { prior: pretrained }\n", 2, "experiment.inr.prior must be one of none, base, got 'pretrained'"),
        ("experiment:\n  batch_norm: drop\n", 2, "experiment.batch_norm must be one of fold, recalibrate, got 'drop'"),
        ("experiment:\n  dataset: mnist\n", 2, "experiment.dataset must be one of fashion-mnist, cifar10, cifar100, folder, got 'mnist'"),
        ("experiment:\n  family: lenet5\n", 2, "experiment.family must be one of lenet, resnet20, resnet32, resnet56, resnet18, got 'lenet5'"),
        // the document as a whole
        ("- 1\n- 2\n", 1, "the top level must be a mapping of \(topKeys), got a list"),
        ("hello\n", 1, "the top level must be a mapping of \(topKeys), got 'hello'"),
        ("experiment:\n  epochs: 3\n  batch_size: 12\n  epochs: 4\n", 2, "duplicate key 'epochs': set here and again later in the same mapping"),
        ("base: {}\nexperiment: {widths: {min: 1, min: 2}}\n", 2, "duplicate key 'min': set here and again later in the same mapping"),
        ("keys:\n  generate: no\n  directory: a\n  generate: yes\n  directory: b\n", 3,
         "duplicate keys 'directory', 'generate': set here and again later in the same mapping"),
        ("coordinator:\n  bind: 5570\n", 2, "coordinator.bind must be a ZeroMQ endpoint such as tcp://127.0.0.1:5570, got '5570'"),
        // YAML syntax
        ("experiment:\n  family: lenet\n   dataset: x\n", 3, "YAML syntax error: mapping values are not allowed in this context"),
        ("experiment:\n  family: [lenet\n\nbase: {}\n", 4,
         "YAML syntax error: while parsing a flow sequence (from line 2), did not find expected ',' or ']'"),
        ("base: {}\n---\nbase: {}\n", 2, "YAML syntax error: expected a single document in the stream (from line 1), but found another document"),
        ("base: {}\nkeys: \u{1}\n", 2, "YAML reader error: control characters are not allowed"),
    ] as [(String, Int, String)])
    func errorsNameTheLine(yaml: String, line: Int, message: String) {
        #expect(throws: ConfigError(file: "cluster.yaml", line: line, message: message)) { try Self.parse(yaml) }
    }

    @Test func errorDescriptionIsFileLineMessage() throws {
        let error = ConfigError(file: "configs/x.yaml", line: 9, message: "experiment.epochs must be a positive number, got 'six'")
        #expect(error.description == "configs/x.yaml:9: experiment.epochs must be a positive number, got 'six'")
        #expect(ConfigError(file: "x.yaml", line: nil, message: "not UTF-8 text").description == "x.yaml: not UTF-8 text")
        #expect(throws: ConfigError(file: "lab.yaml", line: 1, message: "unknown key 'x' at the top level (known: \(Self.topKeys))")) {
            try ClusterConfig.parse(yaml: "x: 1", file: "lab.yaml", baseDirectory: nil)
        }
    }
}
