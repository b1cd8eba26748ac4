import ArgumentParser
import Foundation
import NeuMeta

/// One point of the `scale` part: a synthetic job of `family`'s INR with N load-generating
/// workers, M configurations per round and gradients in `precision`.
struct ScalePoint: Sendable, CustomStringConvertible {
    let family: String, workers: Int, configurations: Int, precision: String
    /// Configurations per reduction block (`--configs-per-block`): each worker sends one
    /// gradient per block it computes.
    let perBlock: Int

    var description: String { "\(family) N=\(workers) M=\(configurations) \(precision)" + (perBlock > 1 ? " B=\(perBlock)" : "") }
    /// Gradients the coordinator receives per round.
    var blocks: Int { (configurations + perBlock - 1) / perBlock }

    /// "family:N:M:precision[:B]", e.g. "resnet18:64:64:float32" or "resnet18:64:128:float32:2".
    init?(_ text: Substring) {
        let f = text.split(separator: ":").map(String.init)
        guard f.count == 4 || f.count == 5, ["lenet", "resnet18"].contains(f[0]), let n = Int(f[1]), let m = Int(f[2]), n >= 1, m >= 1,
              ["float32", "bfloat16"].contains(f[3]), let b = f.count == 5 ? Int(f[4]) : 1,
              (1...WireProtocol.maxConfigurationsPerBlock).contains(b) else { return nil }
        self.init(family: f[0], workers: n, configurations: m, precision: f[3], perBlock: b)
    }

    init(family: String, workers: Int, configurations: Int, precision: String, perBlock: Int = 1) {
        self.family = family; self.workers = workers; self.configurations = configurations; self.precision = precision
        self.perBlock = perBlock
    }
}

/// What one point measured, over its measured rounds.
struct ScaleMeasurement {
    let point: ScalePoint
    /// INR parameters P and the mean per round of: wall time T, the busiest worker's compute
    /// C, AdamW's time, bytes sent (parameters) and received (gradients).
    let parameters: Int
    let roundSeconds, computeSeconds, stepSeconds, bytesSent, bytesReceived: Double
    let rounds: Int
    /// Workers connected in the measured rounds (mean), and worker processes that did not exit 0.
    let workersMean: Double
    let failedWorkers: Int
    /// Peak resident memory of the coordinator, and the largest and summed RSS of the workers (sampled).
    let coordinatorPeakRSS, workerMaxRSS, workersTotalRSS: Int
    /// Seconds from starting the first worker until all N were connected; drops and refusals logged.
    let joinSeconds: Double?
    let dropped: Int, refused: Int

    /// The gradient bytes of each worker's last configuration: min(M, N) of the M received.
    var criticalBytesReceived: Double { bytesReceived * Double(min(point.blocks, point.workers)) / Double(point.blocks) }
    var configurationsPerSecond: Double { Double(point.configurations) / roundSeconds }
    var notComputingShare: Double { max(0, 1 - computeSeconds / roundSeconds) }
}

/// The round-time model fitted to the measurements:
///     T = C + step + t₀ + (gradient bytes on the critical path + bytes sent) / wire rate,
///     step = P / updateRate + M · P / sumRate,
/// C the configuration time per worker (S · ⌈M/N⌉); of the gradients (M · P · 4 or 2 bytes)
/// only the last configuration of each worker, min(M, N) · P · (4 or 2) bytes, is on the
/// critical path — a worker with several sends each while computing the next; bytes sent
/// N · 4P (the stepped parameters go to every worker as float32). With blocks of B
/// configurations, M counts blocks (one gradient each) and C = S · B · ⌈blocks/N⌉. One rate for
/// both directions: with M = N they carry nearly the same bytes; separate ingress and egress
/// rates (`ingressBytesPerSecond`, `egressBytesPerSecond`, reported beside) are determined only
/// by points whose directions carry different bytes (blocks, bfloat16, M > N). Fits are non-negative least squares (a rate is never negative).
struct ScaleModel {
    let fixedSeconds, wireBytesPerSecond: Double
    /// The same fit with a rate per direction (infinite where the fit gives that direction no cost).
    let ingressBytesPerSecond, egressBytesPerSecond: Double
    /// AdamW: parameters updated per second, and gradient values summed per second.
    let updateParametersPerSecond, sumValuesPerSecond: Double

    init(_ points: [ScaleMeasurement]) {
        let step = Self.nonNegativeLeastSquares(points.map { [Double($0.parameters), Double($0.point.blocks * $0.parameters)] },
                                                points.map(\.stepSeconds))
        updateParametersPerSecond = 1 / step[0]
        sumValuesPerSecond = 1 / step[1]
        let rest = points.map { $0.roundSeconds - $0.computeSeconds - $0.stepSeconds }
        let x = Self.nonNegativeLeastSquares(points.map { [1, $0.criticalBytesReceived + $0.bytesSent] }, rest)
        fixedSeconds = x[0]
        wireBytesPerSecond = 1 / x[1]
        let split = Self.nonNegativeLeastSquares(points.map { [1, $0.criticalBytesReceived, $0.bytesSent] }, rest)
        ingressBytesPerSecond = 1 / split[1]
        egressBytesPerSecond = 1 / split[2]
    }

    /// AdamW's seconds for `m` gradients (blocks) of P parameters.
    func stepSeconds(configurations m: Int, parameters p: Int) -> Double {
        Double(p) / updateParametersPerSecond + Double(m * p) / sumValuesPerSecond
    }

    /// Predicted round seconds for N workers, M configurations of `seconds` each in blocks of
    /// `perBlock` (each worker sums a block and sends one gradient), P parameters, gradients of
    /// `gradientBytes` bytes per value.
    func roundSeconds(workers n: Int, configurations m: Int, perBlock b: Int = 1, parameters p: Int, gradientBytes: Int,
                      seconds: Double) -> Double {
        let blocks = (m + b - 1) / b
        let compute = seconds * Double(b * ((blocks + n - 1) / n))
        return compute + fixedSeconds + stepSeconds(configurations: blocks, parameters: p)
            + Double(min(blocks, n) * p * gradientBytes + n * p * 4) / wireBytesPerSecond
    }

    /// min ‖A x − y‖ over x ≥ 0, for few columns: the best unconstrained least-squares fit over
    /// every subset of the columns (the others held at 0) that comes out non-negative.
    static func nonNegativeLeastSquares(_ a: [[Double]], _ y: [Double]) -> [Double] {
        let k = a.first?.count ?? 0
        var best = Array(repeating: 0.0, count: k), bestResidual = y.reduce(0) { $0 + $1 * $1 }
        for mask in 1..<(1 << k) {
            let columns = (0..<k).filter { mask & (1 << $0) != 0 }
            let fit = leastSquares(a.map { row in columns.map { row[$0] } }, y)
            guard fit.allSatisfy({ $0 >= 0 && $0.isFinite }) else { continue }
            var x = Array(repeating: 0.0, count: k)
            for (i, c) in columns.enumerated() { x[c] = fit[i] }
            let residual = zip(a, y).reduce(0.0) { sum, pair in
                let e = zip(pair.0, x).reduce(0.0) { $0 + $1.0 * $1.1 } - pair.1
                return sum + e * e
            }
            if residual < bestResidual { best = x; bestResidual = residual }
        }
        return best
    }

    /// Solves min ‖A x − y‖ by the normal equations (A has few columns), Gaussian elimination
    /// with partial pivoting.
    static func leastSquares(_ a: [[Double]], _ y: [Double]) -> [Double] {
        let k = a.first?.count ?? 0
        // Columns scaled to unit size so that seconds and gigabytes mix in one system.
        let scale = (0..<k).map { j in max(a.map { abs($0[j]) }.max() ?? 1, 1e-300) }
        var m = (0..<k).map { i in (0..<k).map { j in zip(a, a).reduce(0.0) { $0 + $1.0[i] / scale[i] * $1.1[j] / scale[j] } } }
        var v = (0..<k).map { i in zip(a, y).reduce(0.0) { $0 + $1.0[i] / scale[i] * $1.1 } }
        for c in 0..<k {
            let pivot = (c..<k).max { abs(m[$0][c]) < abs(m[$1][c]) }!
            m.swapAt(c, pivot); v.swapAt(c, pivot)
            guard abs(m[c][c]) > 1e-12 else { continue }
            for r in (c + 1)..<k {
                let f = m[r][c] / m[c][c]
                for j in c..<k { m[r][j] -= f * m[c][j] }
                v[r] -= f * v[c]
            }
        }
        var x = Array(repeating: 0.0, count: k)
        for r in stride(from: k - 1, through: 0, by: -1) {
            guard abs(m[r][r]) > 1e-12 else { continue }
            x[r] = (v[r] - ((r + 1)..<k).reduce(0.0) { $0 + m[r][$1] * x[$1] }) / m[r][r]
        }
        return (0..<k).map { x[$0] / scale[$0] }
    }
}

/// The `scale` part of `bench`: `neumeta-coordinator synthetic` and N `neumeta-worker
/// --synthetic` processes on 127.0.0.1 per point; the table, the fitted model, predictions for
/// 64 and 256 workers, written as Markdown, CSV and SVG plots into --scale-out.
extension Bench {
    func scalePart(_ out: inout Figures) throws {
        if let scaleFrom { return try refit(from: scaleFrom, &out) }
        let points = try scalePoints()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-bench-scale-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let keys = directory.appendingPathComponent("keys")
        try KeyStore.generate(into: keys, workers: ["worker"])
        let seconds = scaleSeconds, rounds = scaleRounds ?? (quick ? 2 : 3)
        var measured: [ScaleMeasurement] = [], skipped: [String] = []
        var first = true
        for point in points {
            if let reason = Self.memoryShortfall(point) {
                log("bench scale: skipping \(point): \(reason)")
                skipped.append("\(point): \(reason)")
                continue
            }
            log("bench scale: \(point), \(seconds) s per configuration, \(rounds) measured rounds")
            let m: ScaleMeasurement
            do { m = try Self.scaleRun(point, seconds: seconds, rounds: rounds, keys: keys, directory: directory) } catch {
                log("bench scale: \(point) failed: \(error)")
                skipped.append("\(point): failed")
                continue
            }
            log(String(format: "bench scale: %@: %.2f workers, round %.2f s, %.2f configurations/s, %.1f%% not computing, step %.2f s, "
                       + "coordinator %.0f MiB, workers ≤ %.0f MiB each, all connected after %.2f s, %d dropped, %d workers failed",
                       point.description, m.workersMean, m.roundSeconds, m.configurationsPerSecond, 100 * m.notComputingShare, m.stepSeconds,
                       Double(m.coordinatorPeakRSS) / 1048576, Double(m.workerMaxRSS) / 1048576, m.joinSeconds ?? -1, m.dropped,
                       m.failedWorkers))
            measured.append(m)
            let key = "scale_\(point.family)_\(point.workers)w_\(point.configurations)c" + (point.precision == "bfloat16" ? "_bf16" : "")
                + (point.perBlock > 1 ? "_b\(point.perBlock)" : "")
            out.add("\(key)_configurations_per_s", m.configurationsPerSecond, "\(point): configurations/s",
                    String(format: "%.2f (round %.2f s, step %.2f s)", m.configurationsPerSecond, m.roundSeconds, m.stepSeconds),
                    section: first ? "scale (synthetic workers, \(seconds) s per configuration, CURVE on loopback)" : nil)
            out.add("\(key)_not_computing_share", m.notComputingShare, "  share of round time not computing",
                    String(format: "%.1f%%", 100 * m.notComputingShare))
            out.add("\(key)_coordinator_rss_mib", Double(m.coordinatorPeakRSS) / 1048576, "  coordinator peak RSS; largest worker RSS",
                    String(format: "%.0f MiB; %.0f MiB", Double(m.coordinatorPeakRSS) / 1048576, Double(m.workerMaxRSS) / 1048576))
            out.add("\(key)_join_seconds", m.joinSeconds ?? -1, "  all workers connected after; dropped, refused",
                    String(format: "%.2f s; %d, %d", m.joinSeconds ?? -1, m.dropped, m.refused))
            first = false
        }
        guard !measured.isEmpty else { throw ValidationError("bench scale: no point fits in memory (\(skipped.joined(separator: "; ")))") }
        try report(measured, skipped: skipped, seconds: seconds, &out)
    }

    /// The model, predictions and report of `measured`.
    func report(_ measured: [ScaleMeasurement], skipped: [String], seconds: Double, _ out: inout Figures) throws {
        let model = ScaleModel(measured)
        out.add("scale_wire_gbytes_per_s", model.wireBytesPerSecond / 1e9, "fitted coordinator traffic rate, gradients in + parameters out",
                String(format: "%.3f GB/s", model.wireBytesPerSecond / 1e9), section: "scale model (least squares over the points above)")
        out.add("scale_ingress_gbytes_per_s", model.ingressBytesPerSecond / 1e9, "  split by direction: ingress; egress",
                String(format: "%.3f GB/s; %.3f GB/s", model.ingressBytesPerSecond / 1e9, model.egressBytesPerSecond / 1e9))
        out.record("scale_egress_gbytes_per_s", model.egressBytesPerSecond / 1e9)
        out.add("scale_step_update_gparameters_per_s", model.updateParametersPerSecond / 1e9, "AdamW: update; sum of M gradients",
                String(format: "%.3f G parameters/s; %.3f G values/s", model.updateParametersPerSecond / 1e9, model.sumValuesPerSecond / 1e9))
        out.record("scale_step_sum_gvalues_per_s", model.sumValuesPerSecond / 1e9)
        out.add("scale_fixed_seconds", model.fixedSeconds, "fixed time per round", String(format: "%.3f s", model.fixedSeconds))
        let predictions = Self.predictions(model, measured: measured, seconds: seconds)
        for p in predictions {
            out.add("scale_predicted_\(p.family)_\(p.workers)w_\(p.precision)_configurations_per_s", p.configurationsPerSecond,
                    "predicted, \(p.workers) workers, M = N, \(p.family)-sized, \(p.precision)",
                    String(format: "%.2f configurations/s, %.1f%% not computing", p.configurationsPerSecond, 100 * p.notComputing))
        }
        let outDirectory = scaleOut
        try FileManager.default.createDirectory(atPath: outDirectory, withIntermediateDirectories: true)
        try Self.writeScaleReport(measured, model: model, predictions: predictions, skipped: skipped, seconds: seconds, to: outDirectory)
        out.record("scale_report", outDirectory)
    }

    /// Fits the model again to the points of an earlier run's scale.csv (its configuration
    /// time is --scale-seconds) and writes the report.
    func refit(from path: String, _ out: inout Figures) throws {
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",").map(String.init) }
        guard let header = lines.first else { throw ValidationError("--scale-from \(path): empty") }
        let column = Dictionary(uniqueKeysWithValues: header.enumerated().map { ($1, $0) })
        let measured = try lines.dropFirst().map { f -> ScaleMeasurement in
            func v(_ key: String) throws -> String {
                guard let i = column[key], i < f.count else { throw ValidationError("--scale-from \(path): no \(key) in a row") }
                return f[i]
            }
            func d(_ key: String) throws -> Double { Double(try v(key)) ?? .nan }
            func mib(_ key: String) throws -> Int { Int(try d(key) * 1048576) }
            let point = ScalePoint(family: try v("family"), workers: Int(try d("workers")), configurations: Int(try d("configurations")),
                                   precision: try v("precision"), perBlock: column["per_block"] == nil ? 1 : Int(try d("per_block")))
            return ScaleMeasurement(point: point, parameters: Int(try d("parameters")), roundSeconds: try d("round_s"),
                                    computeSeconds: try d("compute_s"), stepSeconds: try d("step_s"), bytesSent: try d("bytes_sent"),
                                    bytesReceived: try d("bytes_received"), rounds: Int(try d("rounds")),
                                    workersMean: Double(point.workers), failedWorkers: 0,
                                    coordinatorPeakRSS: try mib("coordinator_peak_rss_mib"), workerMaxRSS: try mib("worker_max_rss_mib"),
                                    workersTotalRSS: try mib("workers_total_rss_mib"), joinSeconds: try d("join_s"),
                                    dropped: Int(try d("dropped")), refused: Int(try d("refused")))
        }
        try report(measured, skipped: [], seconds: scaleSeconds, &out)
    }

    /// --scale-points, or the default sweep: each family at N = 1, 4, 16, 64 (--quick: 1, 4)
    /// with M = N in float32, and two points that tell ingress from egress (M = 4N; bfloat16).
    func scalePoints() throws -> [ScalePoint] {
        if let scalePointsOption {
            return try scalePointsOption.split(separator: ",").map {
                guard let p = ScalePoint($0) else {
                    throw ValidationError("--scale-points: '\($0)' is not family:N:M:precision (family lenet or resnet18, "
                                          + "precision float32 or bfloat16)")
                }
                return p
            }
        }
        let ns = quick ? [1, 4] : [1, 4, 16, 64]
        return ["lenet", "resnet18"].flatMap { family in
            ns.map { ScalePoint(family: family, workers: $0, configurations: $0, precision: "float32") }
                + [ScalePoint(family: family, workers: 4, configurations: 16, precision: "float32"),
                   ScalePoint(family: family, workers: 4, configurations: 4, precision: "bfloat16")]
        }
    }

    /// INR parameters of `family` with the default recipe (8 and 62 heads of 224,028).
    static func parameterCount(_ family: String) -> Int { (family == "lenet" ? 8 : 62) * 224_028 }

    /// Why `point` would not fit in the memory available now (nil when it should): the
    /// coordinator holds ≈ (M + 7) parameter copies, each worker ≈ 3 plus 40 MiB; at most 85 %
    /// of the memory available.
    static func memoryShortfall(_ point: ScalePoint) -> String? {
        let bytes = 4 * parameterCount(point.family)
        let need = (point.blocks + 7) * bytes + point.workers * (3 * bytes + 40 << 20)  // the coordinator holds a gradient per block
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
              let kib = Int(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
        let available = kib * 1024
        return need < available * 85 / 100 ? nil
            : String(format: "needs ≈ %.1f GiB, %.1f GiB available", Double(need) / 1073741824, Double(available) / 1073741824)
    }

    /// Runs one point: the coordinator, then N workers started as fast as possible; samples
    /// RSS every 0.5 s; returns the means over the measured rounds.
    static func scaleRun(_ point: ScalePoint, seconds: Double, rounds: Int, keys: URL, directory: URL) throws -> ScaleMeasurement {
        let executables = try coordinatorExecutable().deletingLastPathComponent()
        let stdoutURL = directory.appendingPathComponent("coordinator.out"), stderrURL = directory.appendingPathComponent("coordinator.err")
        try Data().write(to: stdoutURL); try Data().write(to: stderrURL)
        let coordinator = Process()
        coordinator.executableURL = executables.appendingPathComponent("neumeta-coordinator")
        coordinator.arguments = ["synthetic", "--keys", keys.path, "--family", point.family, "--workers", String(point.workers),
                                 "--configurations", String(point.configurations), "--configs-per-block", String(point.perBlock),
                                 "--rounds", String(rounds),
                                 "--gradients", point.precision, "--exit-with-parent"]
        coordinator.standardOutput = try FileHandle(forWritingTo: stdoutURL)
        coordinator.standardError = try FileHandle(forWritingTo: stderrURL)
        try coordinator.run()
        var workers: [Process] = []
        defer {
            for w in workers where w.isRunning { kill(w.processIdentifier, SIGKILL) }
            if coordinator.isRunning { kill(coordinator.processIdentifier, SIGKILL) }
        }
        func lines() -> [[String: Any]] {
            ((try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? "").split(separator: "\n")
                .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        }
        var endpoint: String?
        let deadline = Date().addingTimeInterval(60)
        while endpoint == nil && Date() < deadline && coordinator.isRunning {
            endpoint = lines().first?["endpoint"] as? String
            if endpoint == nil { usleep(50_000) }
        }
        guard let endpoint else { throw ValidationError("bench scale: the coordinator did not start:\n" + tail(stderrURL)) }

        let launched = Date()
        for i in 0..<point.workers {
            let w = Process()
            w.executableURL = executables.appendingPathComponent("neumeta-worker")
            w.arguments = ["--synthetic", String(seconds), "--connect", endpoint, "--keys", keys.path, "--name", String(format: "synthetic-%03d", i),
                           "--threads", "1", "--blas-threads", "1", "--exit-with-parent", "--log-level", "warning"]
            w.standardOutput = FileHandle.nullDevice
            let errURL = directory.appendingPathComponent("worker-\(i).err")
            try Data().write(to: errURL)
            w.standardError = try FileHandle(forWritingTo: errURL)
            try w.run()
            workers.append(w)
        }
        // Polls the log every 50 ms for the line of the N-th connection, samples RSS every 0.5 s.
        var workerMax = 0, workersTotal = 0, joinSeconds: Double?, turn = 0
        let limit = Date().addingTimeInterval(1800), allJoined = "(\(point.workers) connected)"
        while coordinator.isRunning && Date() < limit {
            if joinSeconds == nil, ((try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "").contains(allJoined) {
                joinSeconds = Date().timeIntervalSince(launched)
            }
            if turn % 10 == 0 {
                let rss = workers.map { residentBytes(of: $0.processIdentifier) }
                workerMax = max(workerMax, rss.max() ?? 0)
                workersTotal = max(workersTotal, rss.reduce(0, +))
            }
            turn += 1
            usleep(50_000)
        }
        if coordinator.isRunning { throw ValidationError("bench scale: \(point) did not finish within 30 minutes") }
        coordinator.waitUntilExit()
        guard coordinator.terminationStatus == 0 else {
            throw ValidationError("bench scale: the coordinator of \(point) exited \(coordinator.terminationStatus):\n" + tail(stderrURL))
        }
        let records = lines()
        let rows = records.filter { ($0["measured"] as? Bool) == true }
        guard !rows.isEmpty, let summary = records.last, summary["summary"] != nil else {
            throw ValidationError("bench scale: \(point) reported no measured round:\n" + tail(stderrURL))
        }
        func mean(_ key: String) -> Double { rows.reduce(0.0) { $0 + (($1[key] as? NSNumber)?.doubleValue ?? 0) } / Double(rows.count) }
        let coordinatorLog = (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? ""
        let goodbye = Date().addingTimeInterval(30)
        while workers.contains(where: \.isRunning) && Date() < goodbye { usleep(50_000) }
        let failed = workers.indices.filter { workers[$0].isRunning || workers[$0].terminationStatus != 0 }
        if let first = failed.first {
            log("bench scale: \(failed.count) workers did not exit 0; worker \(first): "
                + tail(directory.appendingPathComponent("worker-\(first).err")).suffix(400))
        }
        return ScaleMeasurement(point: point, parameters: (summary["parameter_bytes"] as? Int ?? 0) / 4,
                                roundSeconds: mean("seconds"), computeSeconds: mean("compute_seconds"), stepSeconds: mean("step_seconds"),
                                bytesSent: mean("bytes_sent"), bytesReceived: mean("bytes_received"), rounds: rows.count,
                                workersMean: mean("workers"), failedWorkers: failed.count,
                                coordinatorPeakRSS: summary["peak_rss_bytes"] as? Int ?? 0, workerMaxRSS: workerMax,
                                workersTotalRSS: workersTotal,
                                joinSeconds: joinSeconds,
                                dropped: coordinatorLog.components(separatedBy: "dropped worker").count - 1,
                                refused: coordinatorLog.components(separatedBy: "refused worker").count - 1)
    }

    static func tail(_ url: URL) -> String { String(((try? String(contentsOf: url, encoding: .utf8)) ?? "").suffix(3000)) }

    /// Resident bytes of process `pid` (/proc/PID/statm), 0 when it is gone.
    static func residentBytes(of pid: Int32) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    struct ScalePrediction {
        let family: String, workers: Int, precision: String
        let roundSeconds, configurationsPerSecond, notComputing: Double
    }

    /// The model at N = 64 and 256 workers, one configuration each (M = N), for each measured
    /// family and precision, at `seconds` per configuration.
    static func predictions(_ model: ScaleModel, measured: [ScaleMeasurement], seconds: Double) -> [ScalePrediction] {
        let families = Array(Set(measured.map(\.point.family))).sorted()
        return families.flatMap { family in
            [64, 256].flatMap { n in
                ["float32", "bfloat16"].map { precision in
                    let t = model.roundSeconds(workers: n, configurations: n, parameters: parameterCount(family),
                                               gradientBytes: precision == "float32" ? 4 : 2, seconds: seconds)
                    return ScalePrediction(family: family, workers: n, precision: precision, roundSeconds: t,
                                           configurationsPerSecond: Double(n) / t, notComputing: max(0, 1 - seconds / t))
                }
            }
        }
    }
}

extension Bench {
    /// scale.md (the table, the model, the predictions), scale.csv, and two plots against the
    /// worker count: configurations/s and the share not computing, measured (M = N, float32)
    /// beside the model.
    static func writeScaleReport(_ measured: [ScaleMeasurement], model: ScaleModel, predictions: [ScalePrediction], skipped: [String],
                                 seconds: Double, to directory: String) throws {
        func mib(_ b: Int) -> String { String(format: "%.0f", Double(b) / 1048576) }
        var csv = "family,workers,configurations,precision,parameters,rounds,round_s,compute_s,step_s,bytes_received,bytes_sent,"
            + "configurations_per_s,not_computing_share,coordinator_peak_rss_mib,worker_max_rss_mib,workers_total_rss_mib,"
            + "join_s,dropped,refused,model_round_s,per_block\n"
        var md = "| INR | N | M | wire | round s | configs/s | not computing | model round s | step s | in MB | out MB "
            + "| coordinator RSS MiB | worker RSS MiB (max / all) | all joined after s | dropped |\n"
            + "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        for m in measured {
            let p = m.point
            let modelled = model.roundSeconds(workers: p.workers, configurations: p.configurations, perBlock: p.perBlock, parameters: m.parameters,
                                              gradientBytes: p.precision == "float32" ? 4 : 2, seconds: seconds)
            csv += [p.family, "\(p.workers)", "\(p.configurations)", p.precision, "\(m.parameters)", "\(m.rounds)",
                    String(format: "%.4f", m.roundSeconds), String(format: "%.4f", m.computeSeconds), String(format: "%.4f", m.stepSeconds),
                    String(format: "%.0f", m.bytesReceived), String(format: "%.0f", m.bytesSent), String(format: "%.4f", m.configurationsPerSecond),
                    String(format: "%.4f", m.notComputingShare), mib(m.coordinatorPeakRSS), mib(m.workerMaxRSS), mib(m.workersTotalRSS),
                    String(format: "%.2f", m.joinSeconds ?? -1), "\(m.dropped)", "\(m.refused)", String(format: "%.4f", modelled), "\(p.perBlock)"]
                .joined(separator: ",") + "\n"
            md += "| \(p.family) | \(p.workers)" + (m.workersMean < Double(p.workers) ? String(format: " (%.0f)", m.workersMean) : "")
                + " | \(p.configurations)" + (p.perBlock > 1 ? " in blocks of \(p.perBlock)" : "") + " | \(p.precision) | " + String(format: "%.2f | %.2f | %.1f%% | %.2f | %.2f | %.0f | %.0f",
                m.roundSeconds, m.configurationsPerSecond, 100 * m.notComputingShare, modelled, m.stepSeconds, m.bytesReceived / 1e6, m.bytesSent / 1e6)
                + " | \(mib(m.coordinatorPeakRSS)) | \(mib(m.workerMaxRSS)) / \(mib(m.workersTotalRSS)) | "
                + (m.joinSeconds.map { String(format: "%.2f", $0) } ?? "–") + " | \(m.dropped) |\n"
        }
        md += String(format: "\nModel (non-negative least squares over %d points): T = C + %.3f s + (min(M, N)·gradient + N·4P) / %.3f GB/s "
                     + "+ step, step = P / %.3f G/s + M·P / %.3f G/s (AdamW: update, sum), C = %.2f s × ⌈M/N⌉. Split by direction: "
                     + "ingress %.3f GB/s, egress %.3f GB/s.\n", measured.count, model.fixedSeconds, model.wireBytesPerSecond / 1e9,
                     model.updateParametersPerSecond / 1e9, model.sumValuesPerSecond / 1e9, seconds,
                     model.ingressBytesPerSecond / 1e9, model.egressBytesPerSecond / 1e9)
        md += "\n| predicted | N = M | wire | round s | configs/s | not computing |\n|---|---:|---|---:|---:|---:|\n"
        for p in predictions {
            md += "| \(p.family) | \(p.workers) | \(p.precision) | " + String(format: "%.2f | %.2f | %.1f%% |\n", p.roundSeconds,
                                                                            p.configurationsPerSecond, 100 * p.notComputing)
        }
        if !skipped.isEmpty { md += "\nSkipped (memory): " + skipped.joined(separator: "; ") + "\n" }
        try md.write(toFile: directory + "/scale.md", atomically: true, encoding: .utf8)
        try csv.write(toFile: directory + "/scale.csv", atomically: true, encoding: .utf8)

        var rate = LinePlot(title: "Synthetic rounds: configurations/s (M = N, float32, \(seconds) s per configuration)",
                            xLabel: "workers N", yLabel: "configurations/s")
        var share = LinePlot(title: "Share of the round not computing (M = N, float32)", xLabel: "workers N", yLabel: "% not computing")
        let ns = [1, 2, 4, 8, 16, 32, 64, 128, 256]
        for family in Array(Set(measured.map(\.point.family))).sorted() {
            let points = measured.filter { $0.point.family == family && $0.point.precision == "float32" && $0.point.workers == $0.point.configurations }
            guard let p = points.first?.parameters else { continue }
            rate.add(series: "\(family) measured", points: points.map { (Double($0.point.workers), $0.configurationsPerSecond) })
            share.add(series: "\(family) measured", points: points.map { (Double($0.point.workers), 100 * $0.notComputingShare) })
            let t = ns.map { n in model.roundSeconds(workers: n, configurations: n, parameters: p, gradientBytes: 4, seconds: seconds) }
            rate.add(series: "\(family) model", points: zip(ns, t).map { (Double($0), Double($0) / $1) })
            share.add(series: "\(family) model", points: zip(ns, t).map { (Double($0), 100 * max(0, 1 - seconds / $1)) })
        }
        try rate.writeSVG(to: directory + "/scale-configurations.svg")
        try share.writeSVG(to: directory + "/scale-not-computing.svg")
    }
}
