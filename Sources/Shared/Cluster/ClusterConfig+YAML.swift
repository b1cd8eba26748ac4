import Foundation
import Yams

// Reading cluster.yaml from Yams' node tree (not Codable), so that every error names its line.

extension ClusterConfig {
    /// The configuration in `yaml`, paths as written.
    static func read(yaml: String, file: String) throws -> ClusterConfig {
        let root: Node?
        do { root = try Yams.compose(yaml: yaml) } catch let error as YamlError { throw ConfigError(file: file, yaml: error) }
        var c = ClusterConfig()
        // An empty file is almost always a mistake (a failed copy, a wrong path in a ConfigMap):
        // the built-in defaults are what no --config gives, not what an empty one does.
        guard let root else {
            throw ConfigError(file: file, line: nil, message: "the file holds no settings (empty, or comments only); "
                              + "write the keys to change, or leave out --config to use the built-in defaults")
        }
        try ConfigNode(node: root, path: "", file: file).fields([
            ("experiment", { c.experiment = try .read($0) }),
            ("base", { n in try n.fields([
                ("checkpoint", { c.base.checkpoint = try $0.string() }),
                ("width", { c.base.width = try $0.int(atLeast: 1) }),
                ("epochs", { c.base.epochs = try $0.int(atLeast: 1) }),
            ]) }),
            ("evaluation", { n in try n.fields([
                ("widths", { c.evaluation.widths = try $0.list { try $0.int(atLeast: 1) } }),
                ("samples", { c.evaluation.samples = try $0.int(atLeast: 1) }),
                ("out", { c.evaluation.out = try $0.string() }),
            ]) }),
            ("coordinator", { n in try n.fields([
                ("bind", { c.coordinator.bind = try $0.endpoint() }),
                ("connect", { c.coordinator.connect = try $0.orNull { try $0.endpoint() } }),
            ]) }),
            ("keys", { n in try n.fields([
                ("directory", { c.keys.directory = try $0.string() }),
                ("generate", { c.keys.generate = try $0.bool() }),
            ]) }),
            ("workers", { n in try n.fields([
                ("local", { c.workers.local = try $0.int(atLeast: 0) }),
                ("threads", { c.workers.threads = try $0.int(atLeast: 1) }),
                ("gradients", { c.workers.gradients = try $0.choice() }),
                ("prefetch", { c.workers.prefetch = try $0.int(atLeast: 0) }),
                ("in_memory", { c.workers.inMemory = try $0.bool() }),
            ]) }),
            ("checkpoints", { n in try n.fields([
                ("directory", { c.checkpoints.directory = try $0.string() }),
                ("every_rounds", { c.checkpoints.everyRounds = try $0.int(atLeast: 1) }),
                ("keep", { c.checkpoints.keep = try $0.int(atLeast: 1) }),
            ]) }),
            ("output", { n in try n.fields([
                ("inr", { c.output.inr = try $0.string() }),
                ("metrics", { c.output.metrics = try $0.string() }),
            ]) }),
            ("threads", { c.threads = try $0.orNull { try $0.int(atLeast: 1) } }),
        ])
        return c
    }
}

extension ClusterConfig.Experiment {
    /// The experiment; the image-folder keys (image_size, augment, content_hashes) set to other
    /// than their defaults are refused with another dataset, on their line.
    static func read(_ n: ConfigNode) throws -> Self {
        var e = Self()
        var folderKeys: [(key: String, line: Int?)] = []
        func folderOnly(_ key: String, _ node: ConfigNode) { folderKeys.append((key, node.node.mark?.line)) }
        try n.fields([
            ("family", { e.family = try $0.oneOf(NetworkFamily.names) }),
            ("dataset", { e.dataset = try $0.choice() }),
            ("data", { e.data = try $0.string() }),
            ("image_size", { e.imageSize = try $0.orNull { try $0.int(atLeast: 1, atMost: 4096) }; if e.imageSize != nil { folderOnly("image_size", $0) } }),
            ("augment", { e.augment = try $0.bool(); if !e.augment { folderOnly("augment", $0) } }),
            ("content_hashes", { e.contentHashes = try $0.bool(); if e.contentHashes { folderOnly("content_hashes", $0) } }),
            ("recipe", { e.recipe = try $0.choice() }),
            ("morph", { e.morph = try $0.choice() }),
            ("batch_norm", { e.batchNorm = try $0.orNull { try $0.choice() } }),
            ("widths", { e.widths = try .read($0) }),
            ("epochs", { e.epochs = try $0.number("a positive number") { $0 > 0 } }),
            ("configurations_per_round", {
                e.configurationsPerRound = try $0.orNull { try $0.int(atLeast: 1, atMost: WireProtocol.maxConfigurationsPerRound) }
            }),
            ("configurations_per_block", {
                e.configurationsPerBlock = try $0.int(atLeast: 1, atMost: WireProtocol.maxConfigurationsPerBlock)
            }),
            ("shared_batch", { e.sharedBatch = try $0.orNull { try $0.bool() } }),
            ("batch_size", { e.batchSize = try $0.int(atLeast: 1) }),
            ("noise", { e.noise = try $0.orNull { try $0.number("a number ≥ 0") { $0 >= 0 } } }),
            ("seed", { e.seed = try $0.seed() }),
            ("inr", { n in try n.fields([
                ("hidden", { e.inr.hidden = try $0.orNull { try $0.int(atLeast: 1) } }),
                ("layers", { e.inr.layers = try $0.orNull { try $0.int(atLeast: 1) } }),
                ("frequencies", { e.inr.frequencies = try $0.orNull { try $0.int(atLeast: 1) } }),
                ("prior", { e.inr.prior = try $0.orNull { try $0.choice() } }),
            ]) }),
            ("optimizer", { n in try n.fields([
                ("learning_rate", { e.optimizer.learningRate = try $0.orNull { try $0.number("a positive number") { $0 > 0 } } }),
                ("cosine", { e.optimizer.cosine = try $0.orNull { try $0.bool() } }),
                ("ema_decay", { e.optimizer.emaDecay = try $0.orNull { try $0.number("a number in [0, 1)") { $0 >= 0 && $0 < 1 } } }),
                ("weight_decay", { e.optimizer.weightDecay = try $0.orNull { try $0.number("a number ≥ 0") { $0 >= 0 } } }),
                ("gradient_clip", { e.optimizer.gradientClip = try $0.orNull { try $0.number("a positive number") { $0 > 0 } } }),
            ]) }),
            ("reconstruction", { e.reconstruction = try $0.orNull { try $0.number("a number ≥ 0") { $0 >= 0 } } }),
        ])
        if e.dataset != .folder, let (key, line) = folderKeys.first {
            throw ConfigError(file: n.file, line: line, message: "\(n.path).\(key) applies to image folders only "
                              + "(\(n.path).dataset: folder), not to \(e.dataset.rawValue)")
        }
        return e
    }
}

extension ClusterConfig.Widths {
    /// The range; min > max is reported on the line of min (or of max when min is not given).
    static func read(_ n: ConfigNode) throws -> Self {
        var w = Self(), minLine: Int?, maxLine: Int?
        try n.fields([
            ("min", { w.min = try $0.int(atLeast: 1); minLine = $0.node.mark?.line }),
            ("max", { w.max = try $0.int(atLeast: 1); maxLine = $0.node.mark?.line }),
        ])
        guard w.min <= w.max else {
            throw ConfigError(file: n.file, line: minLine ?? maxLine, message: "\(n.path).min (\(w.min)) must not exceed max (\(w.max))")
        }
        return w
    }
}

/// The YAML node holding the configuration value at `path` (e.g. `experiment.epochs`), with
/// readers that check its type and range.
struct ConfigNode {
    let node: Node
    let path: String
    let file: String

    private var tag: Tag.Name { Tag.Name(rawValue: node.tag.description) }
    private var isNull: Bool { tag == .null }

    /// `path must be <expected>, got <what the file has>`, on this node's line.
    private func mustBe(_ expected: String) -> ConfigError {
        let got = if let s = node.scalar {
            isNull ? "null" : s.style == .plain ? "'\(s.string)'" : "the quoted string \"\(s.string)\""
        } else { node.mapping != nil ? "a mapping" : node.sequence?.isEmpty == true ? "an empty list" : "a list" }
        return ConfigError(file: file, line: node.mark?.line, message: "\(path.isEmpty ? "the top level" : path) must be \(expected), got \(got)")
    }

    /// Reads a mapping (null counts as empty) whose keys must be among `readers`, calling each
    /// key's reader with its value.
    func fields(_ readers: [(key: String, read: (ConfigNode) throws -> Void)]) throws {
        if isNull { return }
        let known = readers.map(\.key)
        guard let mapping = node.mapping else { throw mustBe("a mapping of \(known.joined(separator: ", "))") }
        for (keyNode, value) in mapping {
            let key = keyNode.scalar?.string
            guard let reader = readers.first(where: { $0.key == key }) else {
                throw ConfigError(file: file, line: keyNode.mark?.line,
                                  message: "unknown key \(key.map { "'\($0)'" } ?? "(not a name)") \(path.isEmpty ? "at the top level" : "in \(path)") (known: \(known.joined(separator: ", ")))")
            }
            try reader.read(ConfigNode(node: value, path: path.isEmpty ? reader.key : "\(path).\(reader.key)", file: file))
        }
    }

    /// nil for null, else `read(self)`.
    func orNull<T>(_ read: (ConfigNode) throws -> T) throws -> T? { isNull ? nil : try read(self) }

    func int(atLeast minimum: Int, atMost maximum: Int = .max) throws -> Int {
        guard tag == .int, let s = node.scalar, let v = Int.construct(from: s), v >= minimum, v <= maximum else {
            throw mustBe(maximum == .max ? "an integer ≥ \(minimum)" : "an integer in \(minimum)…\(maximum)")
        }
        return v
    }

    func seed() throws -> UInt64 {
        guard tag == .int, let s = node.scalar, let v = UInt64.construct(from: s) else { throw mustBe("an integer from 0 to \(UInt64.max)") }
        return v
    }

    /// A finite integer or float satisfying `valid`, described by `expected`.
    func number<T: BinaryFloatingPoint>(_ expected: String, _ valid: (T) -> Bool) throws -> T {
        let value: Double? = switch tag {
        case .int: node.scalar.flatMap(Int.construct).map(Double.init)
        case .float: node.scalar.flatMap(Double.construct)
        default: nil
        }
        guard let value, T(value).isFinite, valid(T(value)) else { throw mustBe(expected) }
        return T(value)
    }

    func bool() throws -> Bool {
        guard tag == .bool, let v = node.scalar.flatMap(Bool.construct) else { throw mustBe("true or false") }
        return v
    }

    /// Any non-null, non-empty scalar's text.
    func string() throws -> String {
        guard !isNull, let s = node.scalar?.string, !s.isEmpty else { throw mustBe("a non-empty string") }
        return s
    }

    func oneOf(_ allowed: [String]) throws -> String {
        guard !isNull, let s = node.scalar?.string, allowed.contains(s) else { throw mustBe("one of \(allowed.joined(separator: ", "))") }
        return s
    }

    func choice<E: RawRepresentable & CaseIterable>() throws -> E where E.RawValue == String {
        try E(rawValue: oneOf(E.allCases.map(\.rawValue)))!
    }

    /// A ZeroMQ endpoint, `transport://address`.
    func endpoint() throws -> String {
        guard !isNull, let s = node.scalar?.string, s.range(of: "^[a-z]+://.+$", options: .regularExpression) != nil else {
            throw mustBe("a ZeroMQ endpoint such as tcp://127.0.0.1:5570")
        }
        return s
    }

    /// A non-empty list, each element read by `read` (paths `list[i]`).
    func list<T>(_ read: (ConfigNode) throws -> T) throws -> [T] {
        guard let items = node.sequence, !items.isEmpty else { throw mustBe("a non-empty list") }
        return try items.enumerated().map { try read(ConfigNode(node: $1, path: "\(path)[\($0)]", file: file)) }
    }
}

extension ConfigError {
    /// A Yams parse error, on the line libyaml reports (Yams' marks are 1-based). Yams reports a
    /// duplicate key at its first occurrence only.
    init(file: String, yaml error: YamlError) {
        switch error {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _), let .composer(context, problem, mark, _):
            let during = context.map { "\($0.text)\($0.mark.line == mark.line ? "" : " (from line \($0.mark.line))"), " } ?? ""
            self.init(file: file, line: mark.line, message: "YAML syntax error: \(during)\(problem)")
        case let .duplicatedKeysInMapping(duplicates, context):
            self.init(file: file, line: context.mark.line,
                      message: "duplicate key\(duplicates.count == 1 ? "" : "s") \(duplicates.map { "'\($0)'" }.joined(separator: ", ")): set here and again later in the same mapping")
        case let .reader(problem, offset, _, yaml):
            self.init(file: file, line: offset.map { yaml.prefix($0).filter(\.isNewline).count + 1 }, message: "YAML reader error: \(problem)")
        default:
            self.init(file: file, line: nil, message: "YAML error: \(error)")
        }
    }
}
