import ArgumentParser
import Foundation
import CommandLineSupport
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
        and the one before it used); with no checkpoint it starts at round 0; when every \
        checkpoint is unusable it refuses, naming them (--fresh sets them aside and starts again).

        Example: neumeta-coordinator run --config cluster.yaml
        """
    )

    @OptionGroup var experiment: ExperimentOptions

    @Option(help: "Endpoint to listen on (overrides coordinator.bind), e.g. tcp://0.0.0.0:5570.")
    var bind: String?

    @Option(help: "Endpoint local workers connect to (overrides coordinator.connect).")
    var connect: String?

    @Option(help: "Key directory (overrides keys.directory).")
    var keys: String?

    @Option(help: "Worker processes to start on this machine (overrides workers.local).")
    var localWorkers: Int?

    @Option(help: "Compute threads of each local worker (overrides workers.threads).")
    var workerThreads: Int?

    @Option(help: "Gradient wire precision: float32 or bfloat16 (overrides workers.gradients).")
    var gradients: String?

    @Option(help: "Coordinator compute threads (overrides threads; the coordinator itself computes little).")
    var threads: Int?

    @Flag(help: "Skip the evaluation at the end.")
    var skipEvaluation = false

    @Flag(help: "Stop (as after a crash: resume later) when the parent process ends (for test harnesses and supervisors).")
    var exitWithParent = false

    func validate() throws {
        if let localWorkers, localWorkers < 0 { throw ValidationError("--local-workers must not be negative") }
        if let workerThreads, workerThreads < 1 { throw ValidationError("--worker-threads must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    /// cluster.yaml with the command line's overrides applied.
    func settings() throws -> ClusterConfig {
        var c = try experiment.settings()
        if let bind { c.coordinator.bind = bind }
        if let connect { c.coordinator.connect = connect }
        if let keys { c.keys.directory = keys }
        if let localWorkers { c.workers.local = localWorkers }
        if let workerThreads { c.workers.threads = workerThreads }
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
        let (coordinatorKeys, allowed) = try loadKeys(c)
        let setup = try TrainingSetup(c, baseGiven: experiment.base != nil, permute: !experiment.noPermute)
        let training = try TrainingRun(options: experiment, setup: setup)
        let trainer = training.trainer, plan = trainer.plan
        let e = c.experiment

        var spec = JobSpec(family: setup.network.family, classCount: setup.classCount,
                           pretrainedWidth: plan.pretrainedWidth, mean: setup.checkpoint.mean, std: setup.checkpoint.std,
                           inr: setup.config, plan: plan, parameterCount: trainer.inr.parameters.count,
                           baseParameterCount: setup.permuted.count, data: try setup.data.fingerprint())
        spec.dataset = setup.dataset
        if setup.morph != spec.morphPlan { spec.morph = setup.morph }
        spec.gradientEncoding = c.workers.gradients == .bfloat16 ? .bfloat16 : .float32
        let server = try ClusterServer(bind: c.coordinator.bind, keys: coordinatorKeys, allowed: allowed, spec: spec,
                                       base: WireTensor(copying: setup.permuted.values), parameters: trainer.inr.parameters.values,
                                       heads: trainer.inr.headRanges, parent: exitWithParent ? getppid() : nil) {
            (try FashionMNIST.load(split: .train, directory: e.data), try DataFingerprint.fashionMNIST(directory: e.data))
        }
        // The bound endpoint has the real port when bind asked for any ("tcp://127.0.0.1:*").
        var bound = c.coordinator
        bound.bind = server.endpoint
        let workerEndpoint = bound.connectEndpoint
        log("listening on \(server.endpoint) (CURVE, \(allowed.count) allow-listed worker key\(allowed.count == 1 ? "" : "s")); "
            + "workers connect to \(workerEndpoint)")
        let local = try LocalWorkers(count: c.workers.local, endpoint: workerEndpoint, keys: c.keys.directory, data: setup.data,
                                     threads: c.workers.threads)
        defer { local.stop() }

        _ = try training.train(with: server)
        server.finish()
        local.stop()

        if trainer.round == plan.rounds && !skipEvaluation {
            var arguments = ["--inr", c.output.inr, "--widths", c.evaluation.widths.map(String.init).joined(separator: ","),
                             "--samples", String(c.evaluation.samples), "--out", c.evaluation.out, "--data", e.data,
                             "--dataset", e.dataset.rawValue, "--baselines", baselineDirectory(c)]
            if experiment.json { arguments.append("--json") }
            try Evaluate.parse(arguments).run()
        }
        if experiment.json { printJSON(training.summary()) }
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
}
