import ArgumentParser
import Foundation
import NeuMeta

/// The experiment options `train` and `run` share: the experiment, base, checkpoint and output
/// sections of a cluster.yaml, each overridable on the command line, and how the run goes.
struct ExperimentOptions: ParsableArguments {
    @Option(help: """
        Experiment description (its experiment, base, checkpoints and output sections; run also reads the cluster's). \
        Default: cluster.yaml in the current directory, or the built-in defaults where there is none.
        """)
    var config: String?

    @Option(help: "Start from this trained base network (overrides base.checkpoint; never trained).") var base: String?
    @Option(help: "Dataset directory (overrides experiment.data).") var data: String?
    @Option(help: "What the dataset directory holds: \(DatasetSpec.Kind.allCases.map(\.rawValue).joined(separator: ", ")) (overrides experiment.dataset).")
    var dataset: String?
    @Option(help: "Image folder: side of the square batch images (overrides experiment.image_size).") var imageSize: Int?
    @Option(help: "Image folder: batches decoded ahead on background threads (overrides workers.prefetch; never changes a result).")
    var prefetch: Int?
    @Flag(help: "Image folder: decode it into memory once instead of streaming it (as workers.in_memory; never changes a result).")
    var inMemory = false
    @Option(help: "Recipe: default or paper (overrides experiment.recipe; the options below override the recipe).") var recipe: String?
    @Option(help: "INR epochs, passes over the training set (overrides experiment.epochs).") var epochs: Double?
    @Option(help: "Smallest trained width (overrides experiment.widths.min).") var minWidth: Int?
    @Option(help: "Largest trained width, also the coordinate normaliser (overrides experiment.widths.max).") var maxWidth: Int?
    @Option(help: "Configurations per round (overrides experiment.configurations_per_round).") var configsPerRound: Int?
    @Option(help: "Configurations per reduction block, summed by the worker that computes them (overrides experiment.configurations_per_block).")
    var configsPerBlock: Int?
    @Option(help: "Every configuration of a round uses the round's one mini-batch: true or false (overrides experiment.shared_batch).")
    var sharedBatch: Bool?
    @Option(help: "Mini-batch size (overrides experiment.batch_size).") var batchSize: Int?
    @Option(help: "Seed of widths, batches, noise and INR initialisation (overrides experiment.seed).") var seed: UInt64?
    @Option(help: "Coordinate noise ε (overrides experiment.noise).") var noise: Float?
    @Option(help: "Sinusoidal frequencies F (overrides experiment.inr.frequencies).") var frequencies: Int?
    @Option(help: "INR hidden width (overrides experiment.inr.hidden).") var hidden: Int?
    @Option(help: "INR layers L (overrides experiment.inr.layers).") var layers: Int?
    @Option(help: "What generated weights are the INR's output added to: none, or base (the permuted base network resampled to the width; the INR starts from it) (overrides experiment.inr.prior).")
    var prior: String?
    @Option(help: "AdamW learning rate (overrides experiment.optimizer.learning_rate).") var lr: Float?
    @Option(help: "Cosine learning-rate schedule: true or false (overrides experiment.optimizer.cosine).") var cosine: Bool?
    @Option(help: "Decay of the saved parameter EMA, in [0, 1) (overrides experiment.optimizer.ema_decay).") var emaDecay: Float?
    @Option(help: "AdamW weight decay (overrides experiment.optimizer.weight_decay).") var weightDecay: Float?
    @Option(help: "Clamp every averaged gradient value to ±this (overrides experiment.optimizer.gradient_clip).") var gradientClip: Float?
    @Option(help: "λ_rec at round 0, decaying linearly to 0 (overrides experiment.reconstruction).") var reconstruction: Float?
    @Flag(help: "Skip the channel permutation (ablation).") var noPermute = false
    @Option(help: "What the INR generates: all (every tensor) or last-block (a ResNet's last block; overrides experiment.morph).")
    var morph: String?
    @Option(help: "A ResNet base's batch norm: fold or recalibrate (overrides experiment.batch_norm; default: recalibrate with --morph all, fold with last-block).") var batchNorm: String?

    @Option(help: "Checkpoint directory (overrides checkpoints.directory).") var checkpointDir: String?
    @Option(help: "Checkpoint every this many rounds (overrides checkpoints.every_rounds).") var checkpointEvery: Int?
    @Flag(help: "Continue from the newest good checkpoint in the checkpoint directory (an empty one: start at round 0; only unusable ones: refuse).")
    var resume = false
    @Flag(help: "Start at round 0 although the checkpoint directory holds checkpoints (with --resume: only if none is usable); they are moved into a previous-<time> subdirectory, not deleted.")
    var fresh = false
    @Option(help: "Where to save the trained INR (overrides output.inr).") var out: String?
    @Option(help: "JSON-lines metrics file, one line per round (overrides output.metrics).") var metrics: String?
    @Option(help: "Stop after this many rounds of this invocation (smoke runs, tests; --resume continues).") var rounds: Int?
    @Option(help: "Log a line every this many rounds.") var logEvery = 1
    @Flag(help: "Print one JSON object per round and a summary on standard output.") var json = false

    func validate() throws {
        func check(_ ok: Bool, _ message: String) throws { if !ok { throw ValidationError(message) } }
        if let epochs { try check(epochs.isFinite && epochs > 0, "--epochs must be a positive number") }
        if let minWidth { try check(minWidth >= 1, "--min-width must be at least 1") }
        if let maxWidth { try check(maxWidth >= 1, "--max-width must be at least 1") }
        if let configsPerRound {
            try check((1...WireProtocol.maxConfigurationsPerRound).contains(configsPerRound),
                      "--configs-per-round must be in 1…\(WireProtocol.maxConfigurationsPerRound)")
        }
        if let configsPerBlock {
            try check((1...WireProtocol.maxConfigurationsPerBlock).contains(configsPerBlock),
                      "--configs-per-block must be in 1…\(WireProtocol.maxConfigurationsPerBlock)")
        }
        if let batchSize { try check(batchSize >= 1, "--batch-size must be at least 1") }
        if let noise { try check(noise.isFinite && noise >= 0, "--noise must be ≥ 0") }
        for (value, name) in [(frequencies, "--frequencies"), (hidden, "--hidden"), (layers, "--layers")] {
            if let value { try check(value >= 1, "\(name) must be at least 1") }
        }
        if let lr { try check(lr.isFinite && lr > 0, "--lr must be positive") }
        if let emaDecay { try check(emaDecay >= 0 && emaDecay < 1, "--ema-decay must be in [0, 1)") }
        if let weightDecay { try check(weightDecay.isFinite && weightDecay >= 0, "--weight-decay must be ≥ 0") }
        if let gradientClip { try check(gradientClip.isFinite && gradientClip > 0, "--gradient-clip must be positive") }
        if let reconstruction { try check(reconstruction.isFinite && reconstruction >= 0, "--reconstruction must be ≥ 0") }
        if let checkpointEvery { try check(checkpointEvery >= 1, "--checkpoint-every must be at least 1") }
        if let rounds { try check(rounds >= 1, "--rounds must be at least 1") }
        if let imageSize { try check((1...4096).contains(imageSize), "--image-size must be in 1…4096") }
        if let prefetch { try check(prefetch >= 0, "--prefetch must not be negative") }
        if let dataset {
            try check(DatasetSpec.Kind(rawValue: dataset) != nil,
                      "--dataset must be one of \(DatasetSpec.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        try check(logEvery >= 1, "--log-every must be at least 1")
        if let morph { try check(MorphScope(rawValue: morph) != nil, "--morph must be all or last-block") }
        if let batchNorm { try check(BatchNormHandling(rawValue: batchNorm) != nil, "--batch-norm must be fold or recalibrate") }
        if let prior { try check(WeightPrior(rawValue: prior) != nil, "--prior must be none or base") }
        if let recipe {
            try check(ClusterConfig.Recipe(rawValue: recipe) != nil,
                      "--recipe must be one of \(ClusterConfig.Recipe.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    /// The file named by --config (default ./cluster.yaml, or the built-in defaults where there
    /// is none) with these overrides applied.
    func settings() throws -> ClusterConfig {
        var c: ClusterConfig
        if let config {
            c = try ClusterConfig.load(path: config)
        } else if FileManager.default.fileExists(atPath: "cluster.yaml") {
            c = try ClusterConfig.load(path: "cluster.yaml")
        } else {
            log("no cluster.yaml in the current directory: using the built-in defaults (relative paths from here)")
            c = ClusterConfig.defaults
        }
        if let base { c.base.checkpoint = base }
        if let data { c.experiment.data = data }
        if let dataset, let kind = DatasetSpec.Kind(rawValue: dataset) { c.experiment.dataset = kind }
        if let imageSize { c.experiment.imageSize = imageSize }
        if c.experiment.dataset != .folder, let size = c.experiment.imageSize {
            throw ValidationError("an image size (\(size)) applies to image folders only (experiment.dataset: folder), not to \(c.experiment.dataset.rawValue)")
        }
        if let prefetch { c.workers.prefetch = prefetch }
        if inMemory { c.workers.inMemory = true }
        if let morph, let m = MorphScope(rawValue: morph) { c.experiment.morph = m }
        if let batchNorm, let b = BatchNormHandling(rawValue: batchNorm) { c.experiment.batchNorm = b }
        if let recipe, let r = ClusterConfig.Recipe(rawValue: recipe) { c.experiment.recipe = r }
        if let epochs { c.experiment.epochs = epochs }
        if let minWidth { c.experiment.widths.min = minWidth }
        if let maxWidth { c.experiment.widths.max = maxWidth }
        guard c.experiment.widths.min <= c.experiment.widths.max else {
            throw ValidationError("the smallest trained width (\(c.experiment.widths.min)) exceeds the largest (\(c.experiment.widths.max))")
        }
        if let configsPerRound { c.experiment.configurationsPerRound = configsPerRound }
        if let configsPerBlock { c.experiment.configurationsPerBlock = configsPerBlock }
        if let sharedBatch { c.experiment.sharedBatch = sharedBatch }
        if let batchSize { c.experiment.batchSize = batchSize }
        if let seed { c.experiment.seed = seed }
        if let noise { c.experiment.noise = noise }
        if let frequencies { c.experiment.inr.frequencies = frequencies }
        if let hidden { c.experiment.inr.hidden = hidden }
        if let layers { c.experiment.inr.layers = layers }
        if let prior, let p = WeightPrior(rawValue: prior) { c.experiment.inr.prior = p }
        if let lr { c.experiment.optimizer.learningRate = lr }
        if let cosine { c.experiment.optimizer.cosine = cosine }
        if let emaDecay { c.experiment.optimizer.emaDecay = emaDecay }
        if let weightDecay { c.experiment.optimizer.weightDecay = weightDecay }
        if let gradientClip { c.experiment.optimizer.gradientClip = gradientClip }
        if let reconstruction { c.experiment.reconstruction = reconstruction }
        if let checkpointDir { c.checkpoints.directory = checkpointDir }
        if let checkpointEvery { c.checkpoints.everyRounds = checkpointEvery }
        if let out { c.output.inr = out }
        if let metrics { c.output.metrics = metrics }
        return c
    }
}

/// What INR training starts from, shared by `train` (one process) and `run` (the cluster):
/// the base network (batch norm folded when asked) and its SHP permutation, the morph plan, the
/// training data (what it is, how batches are made of it, its size), and the recipe's INR,
/// round plan and optimizer with the experiment's overrides.
struct TrainingSetup {
    let settings: ClusterConfig
    let checkpoint: NetworkCheckpoint
    /// This process's copy of the training data, and how batches are made of it.
    let data: LocalTrainingData
    let dataset: DatasetSpec
    /// The base network trained toward: the checkpoint's, or its batch-norm-folded form.
    let network: Network
    /// The base network's parameters after folding and the permutation (the reconstruction target).
    let permuted: ParameterSet
    let morph: MorphPlan
    let classCount: Int
    let config: INRConfig, plan: RoundPlan, optimizer: OptimizerSettings
    let recipe: ClusterConfig.Recipe

    /// Reads the base network (training it first when base.checkpoint is missing and was not
    /// named on the command line), folds its batch norm (`experiment.batch_norm: fold`) and
    /// permutes it; the training set is only counted here.
    init(_ c: ClusterConfig, baseGiven: Bool, permute: Bool) throws {
        settings = c
        let e = c.experiment
        let basePath = try Self.ensureBase(c, given: baseGiven)
        checkpoint = try NetworkCheckpoint.load(path: basePath)
        data = LocalTrainingData(kind: e.dataset, directory: e.data, contentHashes: e.contentHashes, prefetch: c.workers.prefetch,
                                 inMemory: c.workers.inMemory)
        dataset = try Self.dataset(e, base: checkpoint.network, path: basePath)
        let examples = try data.count()
        classCount = examples.classes
        guard checkpoint.network.classCount == classCount else {
            throw ValidationError("\(e.data) holds \(classCount) classes; the base network \(basePath) classifies \(checkpoint.network.classCount)")
        }
        var network = checkpoint.network, parameters = checkpoint.parameters
        if e.resolvedBatchNorm == .fold, let folded = NetworkFamily.foldedBatchNorm(network, parameters) {
            (network, parameters) = folded
            log("folded the base network's batch norm into its convolutions (\(network.family))")
            if e.morph == .all {
                log("note: --morph all with folded batch norm starts below the base width from a near-chance network (merged channels "
                    + "break the folded scales) and can diverge; --batch-norm recalibrate, the default for all, starts from a working one (docs/results.md)")
            }
        }
        self.network = network
        do { morph = try MorphPlan(base: network, scope: e.morph) } catch { throw ValidationError("\(error)") }
        let generated = morph.generated(network.parameterSpecs)
        log("base: \(network.family) widths \(network.widths) from \(basePath); morph \(e.morph.rawValue): scalar width \(morph.baseWidth), "
            + "\(generated.count) generated tensors (\(generated.reduce(0) { $0 + network.parameterSpecs[$1].count }) values)")

        recipe = e.recipe
        var config = INRConfig(), plan = RoundPlan(), optimizer = OptimizerSettings()
        recipe.apply(to: &plan, &optimizer, &config)
        if let v = e.configurationsPerRound { plan.configurationsPerRound = v }
        plan.configurationsPerBlock = e.configurationsPerBlock
        if let v = e.sharedBatch { plan.sharedBatch = v }
        if let v = e.noise { plan.noise = v }
        if let v = e.reconstruction { plan.reconstruction = v }
        if let v = e.inr.hidden { config.hidden = v }
        if let v = e.inr.layers { config.layers = v }
        if let v = e.inr.frequencies { config.frequencies = v }
        if let v = e.inr.prior { config.prior = v }
        if let v = e.optimizer.learningRate { optimizer.learningRate = v }
        if let v = e.optimizer.cosine { optimizer.cosineSchedule = v }
        if let v = e.optimizer.emaDecay { optimizer.emaDecay = v }
        if let v = e.optimizer.weightDecay { optimizer.weightDecay = v }
        if let v = e.optimizer.gradientClip { optimizer.gradientClip = v }
        config.norm = Float(e.widths.max)
        config.outputSize = try morph.largestKernelArea(classCount: classCount)
        plan.minWidth = e.widths.min; plan.maxWidth = e.widths.max; plan.pretrainedWidth = morph.baseWidth
        plan.batchSize = e.batchSize; plan.seed = e.seed; plan.datasetCount = examples.examples
        guard plan.datasetCount >= plan.batchSize else {
            throw ValidationError("the training set has \(plan.datasetCount) images, fewer than one batch of \(plan.batchSize)")
        }
        plan.rounds = plan.rounds(forEpochs: e.epochs)
        self.config = config; self.plan = plan; self.optimizer = optimizer

        permuted = parameters
        if permute {
            let report = Permutation.permute(permuted, groups: network.channelGroups, seed: e.seed)
            log(String(format: "permuted %d channel groups: total variation %.1f → %.1f", report.groups.count, report.totalVariationBefore,
                       report.totalVariationAfter))
        }
    }

    /// How batches are made of the experiment's data for `base`, whose input shape they must
    /// have: an image folder at the base network's image size (experiment.image_size, when
    /// given, must agree), the kinds held in memory at their stored size.
    static func dataset(_ e: ClusterConfig.Experiment, base: Network, path: String) throws -> DatasetSpec {
        let input = base.inputShape, described = input.map(String.init).joined(separator: "×")
        switch e.dataset {
        case .folder:
            guard input[0] == 3, input[1] == input[2] else {
                throw ValidationError("\(path): the base network takes \(described) inputs; an image folder gives 3×S×S")
            }
            if let size = e.imageSize, size != input[1] {
                throw ValidationError("experiment.image_size is \(size) but the base network \(path) takes \(described) inputs: "
                                      + "set image_size to \(input[1]), or train a base network at \(size)")
            }
            return DatasetSpec(kind: .folder, imageSize: input[1], augment: e.augment)
        case .fashionMNIST, .cifar10, .cifar100:
            let stored = e.dataset == .fashionMNIST ? [1, 28, 28] : [3, 32, 32]
            guard input == stored else {
                throw ValidationError("\(path): the base network takes \(described) inputs; \(e.dataset.rawValue) images are "
                                      + stored.map(String.init).joined(separator: "×"))
            }
            return DatasetSpec(kind: e.dataset)
        }
    }

    /// The base checkpoint: base.checkpoint if it exists, else trained now (unless it was named
    /// on the command line, where a missing file is an error).
    static func ensureBase(_ c: ClusterConfig, given: Bool) throws -> String {
        let path = c.base.checkpoint
        if FileManager.default.fileExists(atPath: path) { return path }
        if given { throw ValidationError("--base \(path): no such file") }
        log("no base network at \(path): training \(c.experiment.family) width \(c.base.width) for \(c.base.epochs) epochs")
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        var arguments = ["--family", c.experiment.family, "--width", String(c.base.width), "--epochs", String(c.base.epochs),
                         "--dataset", c.experiment.dataset.rawValue, "--data", c.experiment.data, "--seed", String(c.experiment.seed), "--out", path]
        if c.experiment.dataset == .folder {
            arguments += ["--image-size", String(c.experiment.imageSize ?? 64), "--prefetch", String(c.workers.prefetch)]
        }
        try TrainBase.parse(arguments).run()
        return path
    }

    /// A trainer at round 0 (the INR initialised from the seed).
    func makeTrainer() -> INRTrainer {
        let specs = network.parameterSpecs, targetSpecs = morph.generated(specs).map { specs[$0] }
        let inr = HyperNetwork(config: config, targetSpecs: targetSpecs, seed: plan.seed)
        let target = TrainingTarget(base: permuted, family: network.family, morph: morph, classCount: classCount, mean: checkpoint.mean,
                                    std: checkpoint.std, recipe: recipe.rawValue)
        log("INR (\(recipe.rawValue) recipe): \(inr.parameters.count) parameters, hidden \(config.hidden), L \(config.layers), "
            + "F \(config.frequencies), prior \(config.prior.rawValue); \(plan.rounds) rounds × \(plan.configurationsPerRound) configurations "
            + "(\(String(format: "%.2f", plan.epochs)) epochs), widths \(plan.minWidth)…\(plan.maxWidth)")
        return INRTrainer(inr: inr, plan: plan, optimizer: optimizer, target: target)
    }

    /// Gradients computed in this process, over the training set opened now.
    func makeLocalSource(for trainer: INRTrainer) throws -> LocalGradientSource {
        let train = try data.training(dataset, mean: checkpoint.mean, std: checkpoint.std)
        let objective = ConfigurationGradient(inr: trainer.inr, morph: morph, dataset: train, mean: checkpoint.mean, std: checkpoint.std,
                                              pretrained: permuted)
        return LocalGradientSource(objective: objective, plan: plan)
    }
}
