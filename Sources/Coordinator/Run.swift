import ArgumentParser
import Foundation
import NeuMeta

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the whole experiment on a cluster: base network, permutation, distributed INR training, evaluation.",
        discussion: """
        Reads the experiment and the cluster from --config (cluster.yaml). Trains the base \
        network unless its checkpoint exists (or --base names one), permutes it, listens for \
        workers (CURVE-encrypted ZeroMQ; only keys in the allow-list are admitted) and starts \
        workers.local worker processes itself. Each round it shards the round's configurations \
        across the connected workers, sums their gradients in configuration order (so any number \
        of workers gives bit-identical parameters), steps AdamW and the EMA, and checkpoints every \
        checkpoints.every_rounds rounds. At the end it saves the EMA INR, evaluates sampled networks \
        and writes the table and plot.

        Output: one log line per round on standard error (round, losses, configurations/s, \
        workers alive, stragglers) and a JSON line per round in the metrics file; with --json, \
        standard output carries one JSON object per round and a final summary with `rounds` and \
        `params_digest` (BLAKE2b of the INR parameters).

        --resume continues from the newest checkpoint that verifies (a corrupt one is reported \
        and the one before it used); with no checkpoint it starts fresh.

        Example: neumeta-coordinator run --config cluster.yaml
        """
    )

    @Option(help: "Experiment and cluster description.")
    var config = "cluster.yaml"

    @Flag(help: "Continue from the newest good checkpoint in the checkpoint directory.")
    var resume = false

    @Option(help: "Endpoint to listen on (overrides coordinator.bind), e.g. tcp://0.0.0.0:5570.")
    var bind: String?

    @Option(help: "Endpoint local workers connect to (overrides coordinator.connect).")
    var connect: String?

    @Option(help: "Key directory (overrides keys.directory).")
    var keys: String?

    @Option(help: "Start from this trained base network (overrides base.checkpoint; never trained).")
    var base: String?

    @Option(help: "Worker processes to start on this machine (overrides workers.local).")
    var localWorkers: Int?

    @Option(help: "Compute threads of each local worker (overrides workers.threads).")
    var workerThreads: Int?

    @Option(help: "Stop after this many rounds of this invocation (smoke runs, tests).")
    var rounds: Int?

    @Option(help: "Experiment seed (overrides experiment.seed).")
    var seed: UInt64?

    @Option(help: "Checkpoint directory (overrides checkpoints.directory).")
    var checkpointDir: String?

    @Option(help: "Checkpoint every this many rounds (overrides checkpoints.every_rounds).")
    var checkpointEvery: Int?

    @Option(help: "Dataset directory (overrides experiment.data).")
    var data: String?

    @Option(help: "INR epochs (overrides experiment.epochs).")
    var epochs: Double?

    @Option(help: "Configurations per round (overrides experiment.configurations_per_round).")
    var configsPerRound: Int?

    @Option(help: "Where to save the INR (overrides output.inr).")
    var out: String?

    @Option(help: "JSON-lines metrics file (overrides output.metrics).")
    var metrics: String?

    @Option(help: "Log a line every this many rounds.")
    var logEvery = 1

    @Flag(help: "Skip the evaluation at the end.")
    var skipEvaluation = false

    @Flag(help: "Stop (as after a crash: resume later) when the parent process ends (for test harnesses and supervisors).")
    var exitWithParent = false

    @Flag(help: "Print one JSON object per round and a summary on standard output.")
    var json = false

    @Option(help: "Gradient wire precision: float32 or bfloat16 (overrides workers.gradients).")
    var gradients: String?

    @Option(help: "Coordinator compute threads (overrides threads; the coordinator itself computes little).")
    var threads: Int?

    func validate() throws {
        if let rounds, rounds < 1 { throw ValidationError("--rounds must be at least 1") }
        if let localWorkers, localWorkers < 0 { throw ValidationError("--local-workers must not be negative") }
        if let workerThreads, workerThreads < 1 { throw ValidationError("--worker-threads must be at least 1") }
        if let checkpointEvery, checkpointEvery < 1 { throw ValidationError("--checkpoint-every must be at least 1") }
        if logEvery < 1 { throw ValidationError("--log-every must be at least 1") }
        if let configsPerRound, !(1...WireProtocol.maxConfigurationsPerRound).contains(configsPerRound) {
            throw ValidationError("--configs-per-round must be in 1…\(WireProtocol.maxConfigurationsPerRound)")
        }
        if let epochs, !(epochs.isFinite && epochs > 0) { throw ValidationError("--epochs must be a positive number") }
    }

    /// cluster.yaml with the command line's overrides applied.
    func settings() throws -> ClusterConfig {
        var c = try ClusterConfig.load(path: config)
        if let bind { c.coordinator.bind = bind }
        if let connect { c.coordinator.connect = connect }
        if let keys { c.keys.directory = keys }
        if let base { c.base.checkpoint = base }
        if let localWorkers { c.workers.local = localWorkers }
        if let workerThreads { c.workers.threads = workerThreads }
        if let seed { c.experiment.seed = seed }
        if let checkpointDir { c.checkpoints.directory = checkpointDir }
        if let checkpointEvery { c.checkpoints.everyRounds = checkpointEvery }
        if let data { c.experiment.data = data }
        if let epochs { c.experiment.epochs = epochs }
        if let configsPerRound { c.experiment.configurationsPerRound = configsPerRound }
        if let out { c.output.inr = out }
        if let metrics { c.output.metrics = metrics }
        if let threads { c.threads = threads }
        if let gradients {
            guard let precision = ClusterConfig.GradientPrecision(rawValue: gradients) else {
                throw ValidationError("--gradients must be float32 or bfloat16, not '\(gradients)'")
            }
            c.workers.gradients = precision
        }
        return c
    }

    func run() throws {
        let c = try settings()
        BLASRuntime.configureThreads(threads: c.threads, blasThreads: nil)
        log(BLASRuntime.summary)
        guard c.experiment.dataset == .fashionMNIST else {
            throw ValidationError("\(config): experiment.dataset \(c.experiment.dataset.rawValue) is not supported by run yet (fashion-mnist is)")
        }
        let (coordinatorKeys, allowed) = try loadKeys(c)
        let basePath = try ensureBase(c)

        var overrides = RecipeOverrides()
        let e = c.experiment
        overrides.configurationsPerRound = e.configurationsPerRound
        overrides.hidden = e.inr.hidden; overrides.layers = e.inr.layers; overrides.frequencies = e.inr.frequencies
        overrides.learningRate = e.optimizer.learningRate; overrides.cosineSchedule = e.optimizer.cosine
        overrides.emaDecay = e.optimizer.emaDecay; overrides.weightDecay = e.optimizer.weightDecay
        overrides.gradientClip = e.optimizer.gradientClip; overrides.reconstruction = e.reconstruction; overrides.noise = e.noise
        let setup = try TrainingSetup(base: basePath, data: e.data, recipe: Recipe(rawValue: e.recipe.rawValue) ?? .default,
                                      overrides: overrides, minWidth: e.widths.min, maxWidth: e.widths.max, epochs: e.epochs,
                                      batchSize: e.batchSize, seed: e.seed, permute: true)
        let trainer = setup.makeTrainer()
        guard (1...WireProtocol.maxConfigurationsPerRound).contains(trainer.plan.configurationsPerRound) else {
            throw ValidationError("\(config): configurations per round must be in 1…\(WireProtocol.maxConfigurationsPerRound)")
        }
        let store = CheckpointStore(directory: c.checkpoints.directory, prefix: "inr")
        if resume {
            try resumeTrainer(trainer, from: store)
        } else if let existing = try store.checkpoints().first {
            // Pruning keeps the highest round numbers: a fresh run here would lose its own.
            throw ValidationError("\(c.checkpoints.directory) holds checkpoints of an earlier run (\(existing.path)): "
                                  + "pass --resume to continue it, or use another --checkpoint-dir")
        }
        let plan = trainer.plan

        var spec = JobSpec(family: setup.checkpoint.network.family, classCount: setup.train.classCount,
                           pretrainedWidth: plan.pretrainedWidth, mean: setup.checkpoint.mean, std: setup.checkpoint.std,
                           inr: setup.config, plan: plan, parameterCount: trainer.inr.parameters.count,
                           baseParameterCount: setup.permuted.count, data: try DataFingerprint.fashionMNIST(directory: e.data))
        spec.gradientEncoding = c.workers.gradients == .bfloat16 ? .bfloat16 : .float32
        let server = try ClusterServer(bind: c.coordinator.bind, keys: coordinatorKeys, allowed: allowed, spec: spec,
                                       base: WireTensor(copying: setup.permuted.values), pieceRanges: trainer.inr.headRanges,
                                       parent: exitWithParent ? getppid() : nil)
        // The bound endpoint has the real port when bind asked for any ("tcp://127.0.0.1:*").
        var bound = c.coordinator
        bound.bind = server.endpoint
        let workerEndpoint = bound.connectEndpoint
        log("listening on \(server.endpoint) (CURVE, \(allowed.count) allow-listed worker key\(allowed.count == 1 ? "" : "s")); "
            + "workers connect to \(workerEndpoint)")
        let local = try LocalWorkers(count: c.workers.local, endpoint: workerEndpoint, keys: c.keys.directory,
                                     data: e.data, threads: c.workers.threads)
        defer { local.stop() }

        let metricsFile = try MetricsFile(path: c.output.metrics)
        let firstRound = trainer.round
        let lastRound = min(plan.rounds, firstRound + (rounds ?? plan.rounds))
        let started = Date()
        var progress = ProgressLine()
        var window = LossTerms(), windowConfigs = 0
        if trainer.round < lastRound { log("training rounds \(firstRound + 1)…\(lastRound) of \(plan.rounds)") }
        while trainer.round < lastRound {
            let round = trainer.round
            // The optimizer steps head by head as the gradient pieces come in (within runRound);
            // `stepSeconds` sums that time, `finishSeconds` is what is left after the round.
            var stepSeconds = 0.0
            let (results, stats) = try server.runRound(round, parameters: trainer.inr.parameters.values,
                                                       broadcastNext: round + 1 < lastRound,
                                                       whileWaiting: { trainer.updatePendingEMA() },
                                                       stepPiece: { range, gradients in
                                                           let start = Date()
                                                           trainer.stepPiece(range, gradients: gradients)
                                                           stepSeconds += Date().timeIntervalSince(start)
                                                       })
            let finishStart = Date()
            let terms = results.reduce(LossTerms()) { $0 + $1.terms }
            let lr = trainer.finishPipelinedRound()
            let finishSeconds = Date().timeIntervalSince(finishStart)
            try server.service()
            // Of the whole round (distribution, computation, collection, the optimizer step), the
            // share that is not the busiest worker computing gradients.
            let overhead = max(0, 1 - stats.computeSeconds / (stats.seconds + finishSeconds))
            let n = Double(max(results.count, 1))
            let record: [String: Any] = [
                "round": trainer.round, "loss": terms.total / n, "cross_entropy": terms.crossEntropy / n,
                "norm_regularizer": terms.normRegularizer / n, "reconstruction": terms.reconstruction / n,
                "batch_accuracy": Double(terms.correct) / Double(max(terms.samples, 1)), "learning_rate": Double(lr),
                "seconds": stats.seconds + finishSeconds, "step_seconds": stepSeconds, "compute_seconds": stats.computeSeconds,
                "overhead_share": overhead, "configurations_per_s": n / max(stats.seconds + finishSeconds, 1e-9), "workers_alive": stats.workersAlive,
                "stragglers": stats.stragglers, "bytes_sent": stats.bytesSent, "bytes_received": stats.bytesReceived,
                "discarded_results": stats.discarded, "malformed_messages": stats.malformed,
            ]
            metricsFile.append(record)
            if json { printJSON(record) }

            window = window + terms; windowConfigs += results.count
            let done = trainer.round - firstRound, elapsed = Date().timeIntervalSince(started)
            let eta = elapsed / Double(done) * Double(lastRound - trainer.round)
            if trainer.round % logEvery == 0 || trainer.round == lastRound {
                let w = Double(max(windowConfigs, 1))
                progress.clear()
                log(String(format: "round %d/%d  loss %.4f  ce %.4f  rec %.5f  acc %.1f%%  %.2f configs/s  overhead %.0f%%  workers %d  stragglers %@  ETA %@",
                           trainer.round, plan.rounds, window.total / w, window.crossEntropy / w, window.reconstruction / w,
                           100 * Double(window.correct) / Double(max(window.samples, 1)), n / max(stats.seconds + finishSeconds, 1e-9),
                           100 * overhead, stats.workersAlive, stats.stragglers.isEmpty ? "-" : stats.stragglers.joined(separator: ","), formatDuration(eta)))
                window = LossTerms(); windowConfigs = 0
            }
            progress.draw(String(format: "[%@] round %d/%d  %@ elapsed, ETA %@", bar(Double(trainer.round) / Double(plan.rounds)),
                                 trainer.round, plan.rounds, formatDuration(elapsed), formatDuration(eta)))
            if trainer.round % c.checkpoints.everyRounds == 0 || trainer.round == lastRound {
                try saveCheckpoint(setup.checkpoint(of: trainer), store: store, keep: c.checkpoints.keep)
                try server.service()
            }
        }
        progress.clear()
        server.finish()
        local.stop()

        var saved = setup.checkpoint(of: trainer)
        saved.extra["train_seconds"] = String(format: "%.1f", Date().timeIntervalSince(started))
        try saved.save(to: c.output.inr)
        let digest = Digest.blake2bHex(UnsafeRawBufferPointer(trainer.inr.parameters.values.buffer))
        let peak = Double(ProcessMemory.peakResidentBytes()) / (1024 * 1024)
        log(String(format: "stopped at round %d of %d in %@; saved %@ (params digest %@); peak resident memory %.0f MiB", trainer.round,
                   plan.rounds, formatDuration(Date().timeIntervalSince(started)), c.output.inr, String(digest.prefix(16)), peak))

        if trainer.round == plan.rounds && !skipEvaluation {
            var arguments = ["--inr", c.output.inr, "--widths", c.evaluation.widths.map(String.init).joined(separator: ","),
                             "--samples", String(c.evaluation.samples), "--out", c.evaluation.out, "--data", e.data,
                             "--baselines", baselineDirectory(c)]
            if json { arguments.append("--json") }
            try Evaluate.parse(arguments).run()
        }
        if json {
            printJSON(["rounds": trainer.round, "params_digest": digest,
                       "ema_digest": Digest.blake2bHex(UnsafeRawBufferPointer(trainer.ema.average.buffer)),
                       "finished": trainer.round == plan.rounds, "out": c.output.inr, "peak_rss_mib": peak])
        }
    }

    // MARK: Steps

    /// Individually trained networks for the evaluation table: `baselines/` beside the
    /// evaluation output (train them with `evaluate --train-baselines --baselines DIR`).
    func baselineDirectory(_ c: ClusterConfig) -> String {
        let directory = (c.evaluation.out as NSString).deletingLastPathComponent
        return ((directory.isEmpty ? "." : directory) as NSString).appendingPathComponent("baselines")
    }

    /// The coordinator's key pair and the allow-list; creates the key directory first when it is
    /// missing and keys.generate is set (local runs).
    func loadKeys(_ c: ClusterConfig) throws -> (CurveKeyPair, Set<CurveKey>) {
        let directory = URL(fileURLWithPath: c.keys.directory)
        let secret = directory.appendingPathComponent(KeyStore.coordinatorName + ".key")
        if !FileManager.default.fileExists(atPath: secret.path) && c.keys.generate {
            try KeyStore.generate(into: directory)
            log("generated CURVE keys in \(c.keys.directory) (keys.generate is on)")
        }
        let pair = try KeyStore.loadSecret(secret)
        let allowed = try KeyStore.loadAllowList(directory.appendingPathComponent(KeyStore.allowListName))
        guard !allowed.isEmpty else {
            throw ValidationError("\(c.keys.directory)/\(KeyStore.allowListName) lists no worker key: no worker could join")
        }
        return (pair, Set(allowed.map(\.key)))
    }

    /// The base checkpoint: --base as given, or base.checkpoint if it exists, else trained now.
    func ensureBase(_ c: ClusterConfig) throws -> String {
        let path = c.base.checkpoint
        if FileManager.default.fileExists(atPath: path) { return path }
        if base != nil { throw ValidationError("--base \(path): no such file") }
        log("no base network at \(path): training \(c.experiment.family) width \(c.base.width) for \(c.base.epochs) epochs")
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        try TrainBase.parse(["--family", c.experiment.family, "--width", String(c.base.width), "--epochs", String(c.base.epochs),
                             "--data", c.experiment.data, "--seed", String(c.experiment.seed), "--out", path]).run()
        return path
    }

    /// Restores the newest checkpoint that loads; a corrupt one is reported and skipped.
    func resumeTrainer(_ trainer: INRTrainer, from store: CheckpointStore) throws {
        for (_, path) in try store.checkpoints() {
            let checkpoint: INRCheckpoint
            do { checkpoint = try INRCheckpoint.load(path: path) } catch {
                // Renamed so that it no longer counts as a checkpoint (pruning keeps the newest).
                let aside = path + ".corrupt"
                let moved = (try? FileManager.default.moveItem(atPath: path, toPath: aside)) != nil
                log("skipping checkpoint \(path): \(error)" + (moved ? " (renamed to \(aside))" : ""))
                continue
            }
            do { try trainer.restore(from: checkpoint) } catch {
                throw ValidationError("\(path) belongs to another run (\(error)); use another --checkpoint-dir or remove it")
            }
            log("resumed from \(path) at round \(trainer.round)")
            return
        }
        log("no usable checkpoint in \(store.directory): starting at round 0")
    }

    func saveCheckpoint(_ checkpoint: INRCheckpoint, store: CheckpointStore, keep: Int) throws {
        try FileManager.default.createDirectory(atPath: store.directory, withIntermediateDirectories: true)
        try checkpoint.save(to: store.path(step: checkpoint.round))
        try store.prune(keep: keep)
    }

    func bar(_ fraction: Double, width: Int = 24) -> String {
        let filled = Int((fraction * Double(width)).rounded(.down))
        return String(repeating: "#", count: min(filled, width)) + String(repeating: ".", count: max(0, width - filled))
    }
}

/// Appends one JSON object per line; a failure to write is logged once, never fatal.
final class MetricsFile {
    private let handle: FileHandle?
    private var warned = false

    init(path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        handle = FileHandle(forWritingAtPath: path)
        _ = try handle?.seekToEnd()
        if handle == nil { log("cannot write metrics to \(path)") }
    }

    func append(_ object: [String: Any]) {
        guard let handle else { return }
        do { try handle.write(contentsOf: Data((jsonLine(object) + "\n").utf8)) } catch {
            if !warned { log("metrics file write failed: \(error)"); warned = true }
        }
    }
}
