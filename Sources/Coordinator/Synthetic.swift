import ArgumentParser
import Foundation
import CommandLineSupport
import NeuMeta

/// `neumeta-coordinator synthetic`: the coordinator's real round — `ClusterServer` admitting,
/// scheduling and receiving, `INRTrainer` stepping AdamW on the INR of a chosen family — for
/// workers started with `neumeta-worker --synthetic SECONDS`, which skip the computation and
/// send stand-in gradients of the real sizes. It measures what a round costs besides computing:
/// ingress, step and egress at a given number of workers (`neumeta-bench --parts scale`).
struct Synthetic: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a synthetic job to load-generating workers (neumeta-worker --synthetic) and report each round.",
        discussion: """
        Builds the INR of --family with the default recipe (its head layout and size are the real \
        ones; nothing is trained toward a target), listens on --bind with the keys of --keys \
        (coordinator.key and authorized_workers) and runs rounds of --configurations \
        configurations. Workers join at any time; once --workers are connected and one further \
        round has passed (their welcomes), --rounds rounds are measured (with those connected after \
        --join-timeout if fewer). Standard output carries \
        one JSON object with the endpoint, then one per round (measured: true for the measured \
        ones), then a summary with the coordinator's resident memory.

        Example: neumeta-coordinator synthetic --keys keys --family resnet18 --workers 64 --configurations 64
        """,
        shouldDisplay: false
    )

    @Option(help: "Endpoint to listen on.")
    var bind = "tcp://127.0.0.1:*"

    @Option(help: "Key directory: coordinator.key and authorized_workers.")
    var keys: String

    @Option(help: "Target family whose INR is served: lenet (8 heads) or resnet18 (62 heads).")
    var family = "lenet"

    @Option(help: "Configurations per round (M).")
    var configurations = 4

    @Option(help: "Configurations per reduction block: each worker sums a block's gradients and sends one (experiment.configurations_per_block).")
    var configsPerBlock = 1

    @Option(help: "Workers to wait for before measuring (N).")
    var workers = 1

    @Option(help: "Rounds to measure once N workers are connected.")
    var rounds = 3

    @Option(help: "Gradient wire precision: float32 or bfloat16.")
    var gradients = "float32"

    @Option(help: "Hidden width of the INR's heads (default: the default recipe's, 256); smaller for quick tests.")
    var hidden: Int?

    @Option(help: "Seed of the INR initialisation and the stand-in gradients.")
    var seed: UInt64 = 0

    @Option(help: "Measure with the workers connected by then when N have not connected within this many seconds.")
    var joinTimeout = 120.0

    @Flag(help: "Stop when the parent process ends.")
    var exitWithParent = false

    func validate() throws {
        guard ["lenet", "resnet18"].contains(family) else { throw ValidationError("--family must be lenet or resnet18, not '\(family)'") }
        guard (1...WireProtocol.maxConfigurationsPerRound).contains(configurations) else {
            throw ValidationError("--configurations must be in 1…\(WireProtocol.maxConfigurationsPerRound)")
        }
        guard (1...WireProtocol.maxConfigurationsPerBlock).contains(configsPerBlock) else {
            throw ValidationError("--configs-per-block must be in 1…\(WireProtocol.maxConfigurationsPerBlock)")
        }
        guard workers >= 1, rounds >= 1, (hidden ?? 1) >= 1 else { throw ValidationError("--workers, --rounds and --hidden must be at least 1") }
        guard ["float32", "bfloat16"].contains(gradients) else { throw ValidationError("--gradients must be float32 or bfloat16") }
    }

    func run() throws {
        var config = INRConfig(), plan = RoundPlan(), optimizer = OptimizerSettings()
        ClusterConfig.Recipe.default.apply(to: &plan, &optimizer, &config)
        let network = try NetworkFamily.make(family, widths: NetworkFamily.widths(family, scaledFrom: family == "lenet" ? 32 : 64))
        config.norm = 32
        if let hidden { config.hidden = hidden }
        plan.configurationsPerRound = configurations
        plan.configurationsPerBlock = configsPerBlock
        plan.rounds = 1 << 30  // a constant learning rate: the run ends by --rounds
        plan.seed = seed
        plan.datasetCount = plan.batchSize
        let inr = HyperNetwork(config: config, targetSpecs: network.trainableSpecs, seed: seed)
        let target = TrainingTarget(base: ParameterSet(specs: []), family: family, classCount: 10, mean: [0], std: [1], recipe: "synthetic")
        let trainer = INRTrainer(inr: inr, plan: plan, optimizer: optimizer, target: target)

        var spec = JobSpec(family: family, classCount: 10, pretrainedWidth: plan.pretrainedWidth, mean: [0], std: [1], inr: config,
                           plan: plan, parameterCount: inr.parameters.count, baseParameterCount: 0, data: SyntheticGradients.fingerprint)
        spec.gradientEncoding = gradients == "bfloat16" ? .bfloat16 : .float32
        spec.syntheticHeads = inr.headRanges.map(\.count)
        let directory = URL(fileURLWithPath: keys)
        let pair = try KeyStore.loadSecret(directory.appendingPathComponent(KeyStore.coordinatorName + ".key"))
        let allowed = Set(try KeyStore.loadAllowList(directory.appendingPathComponent(KeyStore.allowListName)).map(\.key))
        let server = try ClusterServer(bind: bind, keys: pair, allowed: allowed, spec: spec, base: WireTensor([]),
                                       parameters: inr.parameters.values, heads: inr.headRanges, parent: exitWithParent ? getppid() : nil) {
            throw ValidationError("a synthetic job has no data: a block cannot be computed here")
        }
        let parameterBytes = 4 * inr.parameters.count
        log("synthetic \(family) job: \(inr.headRanges.count) heads, \(inr.parameters.count) parameters (\(parameterBytes) bytes); "
            + "\(configurations) configurations per round, \(gradients) gradients; listening on \(server.endpoint)")
        emit(["endpoint": server.endpoint, "heads": inr.headRanges.count, "parameters": inr.parameters.count])

        let start = Date()
        var joinedAfter: Double?, warm = false, measured = 0, previousAlive = 0, expected = workers
        while measured < rounds {
            let report = try trainer.runRound(source: server, more: true)
            try server.keepAlive()
            let alive = report.stats.workersAlive
            if joinedAfter == nil, alive < expected, Date().timeIntervalSince(start) > joinTimeout, alive >= 1 {
                log("only \(alive) of \(workers) workers connected within \(Int(joinTimeout)) s; measuring with them")
                expected = alive
            }
            // A round is measured when the workers were there from its start to its end, after
            // one such round for the welcomes and parameters of the last to join.
            let full = alive >= expected && previousAlive >= expected
            if alive >= expected && joinedAfter == nil { joinedAfter = Date().timeIntervalSince(start) }
            let counted = full && warm
            if full { warm = true }
            if counted { measured += 1 }
            previousAlive = alive
            let s = report.stats
            emit(["round": report.round, "measured": counted, "seconds": report.seconds, "step_seconds": report.stepSeconds,
                  "compute_seconds": s.computeSeconds, "workers": alive, "configurations": report.configurations,
                  "bytes_sent": s.bytesSent, "bytes_received": s.bytesReceived, "discarded": s.discarded, "stragglers": s.stragglers.count,
                  "rss_bytes": ProcessMemory.residentBytes()])
        }
        server.finish()
        emit(["summary": true, "joined_after_seconds": joinedAfter ?? -1, "rss_bytes": ProcessMemory.residentBytes(),
              "peak_rss_bytes": ProcessMemory.peakResidentBytes(), "parameter_bytes": parameterBytes, "heads": inr.headRanges.count])
    }

    /// One JSON line on standard output, flushed (a bench reads it while this runs).
    private func emit(_ object: [String: Any]) {
        FileHandle.standardOutput.write(Data((jsonLine(object) + "\n").utf8))
    }
}
