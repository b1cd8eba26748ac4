import Foundation

/// A trained (or training) NeuMeta INR on disk, one safetensors file:
///
/// - `heads.*`: the EMA parameters under their names (what sampling uses),
/// - `state.inr`, `state.adam_m`, `state.adam_v`: flat raw parameters and AdamW moments (resume),
/// - `state.progress`: [round, AdamW step] as floats (exact below 2²⁴), so the round state is
///   covered by the data digest like the rest (the metadata copy is for people and tools),
/// - `base.*`: the permuted pretrained network (reconstruction target, pruning baseline),
///
/// with metadata holding the INR size, the round plan, the optimizer settings, the round reached,
/// the family and input normalisation. Saved atomically with a BLAKE2b digest.
public struct INRCheckpoint {
    public var config: INRConfig
    public var plan: RoundPlan
    public var optimizer: OptimizerSettings
    public var family: String
    /// How a scalar width becomes a network, and which tensors the INR generates.
    public var morph: MorphPlan
    public var classCount: Int
    public var mean: [Float], std: [Float]
    public var round: Int
    public var adamStep: Int
    public var recipe: String
    /// EMA, raw, first and second moments: flat buffers of the same length.
    public var ema: FloatStorage, raw: FloatStorage, adamM: FloatStorage, adamV: FloatStorage
    public var base: ParameterSet
    public var extra: [String: String] = [:]

    public enum Failure: Error, CustomStringConvertible {
        case invalid(path: String, problem: String)
        public var description: String {
            switch self { case .invalid(let p, let problem): "\(p): not a usable NeuMeta INR checkpoint: \(problem)" }
        }
    }

    /// The checkpoint of `trainer`'s current state (its EMA must be up to date:
    /// `INRTrainer.checkpoint()` sees to that).
    init(trainer: INRTrainer) {
        precondition(!trainer.emaPending, "checkpoint with the EMA behind the parameters")
        let target = trainer.target
        config = trainer.inr.config; plan = trainer.plan; optimizer = trainer.optimizerSettings
        family = target.family; classCount = target.classCount
        morph = target.morph ?? MorphPlan(family: target.family, baseWidths: [trainer.plan.pretrainedWidth])
        mean = target.mean; std = target.std; round = trainer.round; adamStep = trainer.optimizer.step; recipe = target.recipe
        ema = trainer.ema.average; raw = trainer.inr.parameters.values
        adamM = trainer.optimizer.firstMoment; adamV = trainer.optimizer.secondMoment
        base = target.base
    }

    /// The first of the state's buffers that holds a NaN or an infinity ("parameters", "EMA
    /// parameters", "AdamW moments"), or nil when all are finite.
    public var nonFinitePart: String? {
        func finite(_ s: FloatStorage) -> Bool { UnsafeBufferPointer(s.buffer).allSatisfy(\.isFinite) }
        if !finite(raw) { return "parameters" }
        if !finite(ema) { return "EMA parameters" }
        if !finite(adamM) || !finite(adamV) { return "AdamW moments" }
        return nil
    }

    static func encode<T: Encodable>(_ value: T) -> String {
        let e = JSONEncoder(); e.outputFormatting = [.sortedKeys]
        return String(decoding: try! e.encode(value), as: UTF8.self)
    }

    public func save(to path: String) throws {
        let specs = HyperNetwork.specs(config: config, tensorCount: morph.generated(base.specs).count)
        var tensors = [(String, Tensor)](), offset = 0
        for s in specs { tensors.append((s.name, Tensor(storage: ema, offset: offset, shape: s.shape))); offset += s.count }
        tensors.append(("state.inr", Tensor(storage: raw, offset: 0, shape: [raw.count])))
        tensors.append(("state.adam_m", Tensor(storage: adamM, offset: 0, shape: [adamM.count])))
        tensors.append(("state.adam_v", Tensor(storage: adamV, offset: 0, shape: [adamV.count])))
        tensors.append(("state.progress", Tensor(shape: [2], values: [Float(round), Float(adamStep)])))
        for (i, s) in base.specs.enumerated() { tensors.append(("base." + s.name, base.value(i))) }
        var meta = extra
        meta["format"] = "neumeta-inr/1"
        meta["inr_config"] = Self.encode(config)
        meta["plan"] = Self.encode(plan)
        meta["optimizer"] = Self.encode(optimizer)
        meta["family"] = family
        meta["morph"] = Self.encode(morph)
        meta["class_count"] = String(classCount)
        meta["input_mean"] = Self.encode(mean)
        meta["input_std"] = Self.encode(std)
        meta["round"] = String(round)
        meta["adam_step"] = String(adamStep)
        meta["recipe"] = recipe
        try CheckpointStore.save(tensors, metadata: meta, to: path)
    }

    public static func load(path: String) throws -> INRCheckpoint {
        let file = try CheckpointStore.read(path: path, verify: true)
        let meta = file.metadata
        func decode<T: Decodable>(_ key: String, as: T.Type) throws -> T {
            guard let text = meta[key] else { throw Failure.invalid(path: path, problem: "metadata '\(key)' is missing") }
            do { return try JSONDecoder().decode(T.self, from: Data(text.utf8)) } catch {
                throw Failure.invalid(path: path, problem: "metadata '\(key)' does not parse: \(error)")
            }
        }
        guard meta["format"] == "neumeta-inr/1" else { throw Failure.invalid(path: path, problem: "format is \(meta["format"] ?? "missing")") }
        let config = try decode("inr_config", as: INRConfig.self)
        let plan = try decode("plan", as: RoundPlan.self), optimizer = try decode("optimizer", as: OptimizerSettings.self)
        guard let family = meta["family"], let classCount = Int(meta["class_count"] ?? ""), let round = Int(meta["round"] ?? ""),
              let adamStep = Int(meta["adam_step"] ?? "") else {
            throw Failure.invalid(path: path, problem: "family, class_count, round or adam_step missing")
        }
        if let progress = file["state.progress"] {
            guard progress.count == 2, progress.data[0] == Float(round), progress.data[1] == Float(adamStep) else {
                throw Failure.invalid(path: path, problem: "state.progress disagrees with the metadata's round \(round) / adam_step \(adamStep)")
            }
        }
        let morph = meta["morph"] == nil ? MorphPlan(family: family, baseWidths: [plan.pretrainedWidth]) : try decode("morph", as: MorphPlan.self)
        guard morph.family == family, morph.baseWidth == plan.pretrainedWidth else {
            throw Failure.invalid(path: path, problem: "morph plan \(morph.family) at width \(morph.baseWidth) disagrees with family \(family) "
                                  + "at pretrained width \(plan.pretrainedWidth)")
        }
        let network = try morph.network(width: morph.baseWidth, classCount: classCount)
        let base = network.makeParameters()
        for (i, s) in base.specs.enumerated() {
            guard let t = file["base." + s.name], t.shape == s.shape else {
                throw Failure.invalid(path: path, problem: "base tensor \(s.name) missing or of another shape")
            }
            base.value(i).copy(from: t)
        }
        let specs = HyperNetwork.specs(config: config, tensorCount: morph.generated(base.specs).count)
        let total = specs.reduce(0) { $0 + $1.count }
        func flat(_ name: String) throws -> FloatStorage {
            guard let t = file[name], t.count == total else { throw Failure.invalid(path: path, problem: "\(name) missing or not \(total) values") }
            let s = FloatStorage(count: total)
            s.base.update(from: t.data, count: total)
            return s
        }
        let ema = FloatStorage(count: total)
        var offset = 0
        for s in specs {
            guard let t = file[s.name], t.shape == s.shape else { throw Failure.invalid(path: path, problem: "INR tensor \(s.name) missing or misshapen") }
            (ema.base + offset).update(from: t.data, count: s.count)
            offset += s.count
        }
        var c = INRCheckpoint(config: config, plan: plan, optimizer: optimizer, family: family, morph: morph, classCount: classCount,
                              mean: try decode("input_mean", as: [Float].self), std: try decode("input_std", as: [Float].self),
                              round: round, adamStep: adamStep, recipe: meta["recipe"] ?? "", ema: ema, raw: try flat("state.inr"),
                              adamM: try flat("state.adam_m"), adamV: try flat("state.adam_v"), base: base)
        c.extra = meta.filter { !["format", "inr_config", "plan", "optimizer", "family", "morph", "class_count", "input_mean", "input_std",
                                   "round", "adam_step", "recipe", CheckpointStore.digestKey].contains($0.key) }
        return c
    }

    init(config: INRConfig, plan: RoundPlan, optimizer: OptimizerSettings, family: String, morph: MorphPlan, classCount: Int, mean: [Float],
         std: [Float], round: Int, adamStep: Int, recipe: String, ema: FloatStorage, raw: FloatStorage, adamM: FloatStorage,
         adamV: FloatStorage, base: ParameterSet) {
        self.config = config; self.plan = plan; self.optimizer = optimizer; self.family = family; self.morph = morph; self.classCount = classCount
        self.mean = mean; self.std = std; self.round = round; self.adamStep = adamStep; self.recipe = recipe
        self.ema = ema; self.raw = raw; self.adamM = adamM; self.adamV = adamV; self.base = base
    }

    /// A generator over the EMA parameters (or the raw, last-step parameters).
    public func makeGenerator(ema useEMA: Bool = true) -> NetworkGenerator {
        let generated = morph.generated(base.specs).map { base.specs[$0] }
        let inr = HyperNetwork(config: config, targetSpecs: generated, seed: 0)
        inr.parameters.values.base.update(from: (useEMA ? ema : raw).base, count: ema.count)
        return NetworkGenerator(inr: inr, morph: morph, classCount: classCount, base: base)
    }
}
