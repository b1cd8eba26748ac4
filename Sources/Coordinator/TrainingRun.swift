import ArgumentParser
import Foundation
import CommandLineSupport
import NeuMeta

/// What `train` and `run` do once their gradient source exists: resume (or refuse a checkpoint
/// directory that holds another run), the trainer's round loop with checkpoints, a log line
/// every --log-every rounds, one metrics line per round (also on standard output with --json),
/// a progress line, and the final save of the EMA INR.
struct TrainingRun {
    let options: ExperimentOptions
    let setup: TrainingSetup
    let trainer: INRTrainer
    let checkpoints: CheckpointPolicy

    /// A trainer at round 0, or at the round of the newest good checkpoint with --resume.
    init(options: ExperimentOptions, setup: TrainingSetup) throws {
        self.options = options
        self.setup = setup
        trainer = setup.makeTrainer()
        let c = setup.settings.checkpoints
        checkpoints = CheckpointPolicy(store: CheckpointStore(directory: c.directory, prefix: "inr"), every: c.everyRounds, keep: c.keep)
        let store = checkpoints.store
        if options.resume {
            let resumption: INRTrainer.Resumption
            do { resumption = try trainer.resume(from: store) } catch let refusal as INRTrainer.Refusal where options.fresh {
                log("\(refusal)")
                if let aside = try INRTrainer.setAside(store) { log("--fresh: moved the unusable checkpoints to \(aside); starting at round 0") }
                return
            } catch let refusal as INRTrainer.Refusal {
                throw ValidationError("\(refusal)")
            } catch let error as INRCheckpoint.Failure {
                throw ValidationError("\(error); use another --checkpoint-dir or remove it")
            }
            for skipped in resumption.skipped { log("skipping checkpoint \(skipped.path): \(skipped.problem)") }
            if let path = resumption.path { log("resumed from \(path) at round \(trainer.round)") } else {
                log("no checkpoint in \(store.directory) yet: starting at round 0")
            }
        } else if let existing = try store.checkpoints().first {
            guard options.fresh else {
                // Pruning keeps the highest round numbers: a fresh run here would lose its own.
                throw ValidationError("\(store.directory) holds checkpoints of an earlier run (\(existing.path)): pass --resume to "
                                      + "continue it, --fresh to set them aside and start again, or use another --checkpoint-dir")
            }
            if let aside = try INRTrainer.setAside(store) { log("--fresh: moved the earlier run's checkpoints to \(aside)") }
        }
    }

    /// The INR parameters' and their EMA's BLAKE2b digests (hex).
    var digests: (parameters: String, ema: String) {
        (Digest.blake2bHex(UnsafeRawBufferPointer(trainer.inr.parameters.values.buffer)),
         Digest.blake2bHex(UnsafeRawBufferPointer(trainer.ema.average.buffer)))
    }

    /// Trains with `source` until the plan's last round or --rounds more, then saves the INR to
    /// output.inr. Returns the wall seconds of the training.
    func train(with source: GradientSource) throws -> Double {
        let plan = trainer.plan, firstRound = trainer.round
        let lastRound = min(plan.rounds, firstRound + (options.rounds ?? plan.rounds))
        let metrics = try MetricsFile(path: setup.settings.output.metrics)
        let started = Date()
        var progress = ProgressLine()
        var window = LossTerms(), windowConfigurations = 0
        if trainer.round < lastRound { log("training rounds \(firstRound + 1)…\(lastRound) of \(plan.rounds)") }
        try trainer.train(until: lastRound, source: source, checkpoints: checkpoints, checkpointFailed: { error in
            progress.clear()
            log("checkpoint at round \(trainer.round) failed: \(error); training goes on and the next checkpoint retries")
        }) { report in
            let record = Self.record(report, round: trainer.round)
            metrics.append(record)
            if options.json { printJSON(record) }
            window = window + report.terms; windowConfigurations += report.configurations
            let done = trainer.round - firstRound, elapsed = Date().timeIntervalSince(started)
            let eta = elapsed / Double(done) * Double(lastRound - trainer.round)
            if trainer.round % options.logEvery == 0 || trainer.round == lastRound {
                progress.clear()
                log(Self.line(report, window: window, configurations: windowConfigurations, rounds: plan.rounds, round: trainer.round, eta: eta))
                window = LossTerms(); windowConfigurations = 0
            }
            progress.draw(String(format: "[%@] round %d/%d  %@ elapsed, ETA %@", bar(Double(trainer.round) / Double(plan.rounds)),
                                 trainer.round, plan.rounds, formatDuration(elapsed), formatDuration(eta)))
        }
        progress.clear()
        let seconds = Date().timeIntervalSince(started)
        var saved = trainer.checkpoint()
        saved.extra["base_checkpoint"] = setup.settings.base.checkpoint
        saved.extra["dataset"] = setup.dataset.kind.rawValue
        saved.extra["batch_norm"] = setup.settings.experiment.resolvedBatchNorm.rawValue
        saved.extra["train_seconds"] = String(format: "%.1f", seconds)
        let out = setup.settings.output.inr
        let directory = (out as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        try saved.save(to: out)
        log(String(format: "stopped at round %d of %d in %@; saved %@ (params digest %@); peak resident memory %.0f MiB", trainer.round,
                   plan.rounds, formatDuration(seconds), out, String(digests.parameters.prefix(16)), peakResidentMiB()))
        return seconds
    }

    /// The summary `--json` prints last.
    func summary(_ extra: [String: Any] = [:]) -> [String: Any] {
        var s: [String: Any] = ["rounds": trainer.round, "params_digest": digests.parameters, "ema_digest": digests.ema,
                                "finished": trainer.round == trainer.plan.rounds, "out": setup.settings.output.inr,
                                "peak_rss_mib": peakResidentMiB()]
        s.merge(extra) { $1 }
        return s
    }

    /// One round's metrics line.
    static func record(_ r: RoundReport, round: Int) -> [String: Any] {
        let n = Double(max(r.configurations, 1)), t = r.terms
        return [
            "round": round, "loss": t.total / n, "cross_entropy": t.crossEntropy / n, "norm_regularizer": t.normRegularizer / n,
            "reconstruction": t.reconstruction / n, "batch_accuracy": Double(t.correct) / Double(max(t.samples, 1)),
            "learning_rate": Double(r.learningRate), "seconds": r.seconds, "step_seconds": r.stepSeconds,
            "compute_seconds": r.stats.computeSeconds, "overhead_share": r.overheadShare, "configurations_per_s": n / max(r.seconds, 1e-9),
            "workers_alive": r.stats.workersAlive, "stragglers": r.stats.stragglers, "bytes_sent": r.stats.bytesSent,
            "bytes_received": r.stats.bytesReceived, "discarded_results": r.stats.discarded, "malformed_messages": r.stats.malformed,
            "rejected_gradients": r.stats.rejected,
        ]
    }

    /// The log line: losses over the rounds since the last line; the cluster's figures of the
    /// last round when workers computed it.
    static func line(_ r: RoundReport, window: LossTerms, configurations: Int, rounds: Int, round: Int, eta: Double) -> String {
        let w = Double(max(configurations, 1))
        var text = String(format: "round %d/%d  loss %.4f  ce %.4f  reg %.2f  rec %.5f  acc %.1f%%  lr %.2e  %.2f configs/s", round, rounds,
                          window.total / w, window.crossEntropy / w, window.normRegularizer / w, window.reconstruction / w,
                          100 * Double(window.correct) / Double(max(window.samples, 1)), r.learningRate,
                          Double(r.configurations) / max(r.seconds, 1e-9))
        if r.stats.workersAlive > 0 {
            text += String(format: "  overhead %.0f%%  workers %d  stragglers %@", 100 * r.overheadShare, r.stats.workersAlive,
                           r.stats.stragglers.isEmpty ? "-" : r.stats.stragglers.abbreviated(limit: 3, separator: ","))
        }
        return text + "  ETA " + formatDuration(eta)
    }

    func bar(_ fraction: Double, width: Int = 24) -> String {
        let filled = Int((fraction * Double(width)).rounded(.down))
        return String(repeating: "#", count: min(filled, width)) + String(repeating: ".", count: max(0, width - filled))
    }
}

/// Peak resident memory of this process in MiB.
func peakResidentMiB() -> Double { Double(ProcessMemory.peakResidentBytes()) / (1024 * 1024) }

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
