import ArgumentParser
import Foundation
import Logging
import NeuMeta

@main
struct Coordinator: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "neumeta-coordinator",
        abstract: "NeuMeta Cluster coordinator: trains base networks and Neural Metamorphosis hypernetworks.",
        discussion: """
        OpenBLAS kernel: on start-up the process checks which kernel OpenBLAS loaded; if it is \
        below what the CPU supports (Debian's OpenBLAS 0.3.21 does not recognise some AVX-512 \
        CPUs) it re-executes itself once with OPENBLAS_CORETYPE set. Set OPENBLAS_CORETYPE \
        yourself, or pass --blas-core NAME, to choose; --blas-threads N sets the thread count.

        Logs go to standard error, results to standard output. --log-level LEVEL, accepted \
        by every command, filters the log (trace, debug, info (default), notice, warning, error, \
        critical); e.g. --log-level warning leaves only warnings and errors.
        """,
        subcommands: [Run.self, Keygen.self, TrainBase.self, Permute.self, Train.self, Evaluate.self, Sample.self, ExportFolder.self]
    )

    static func main() {
        BLASRuntime.prepareProcess()
        do {
            var arguments = Array(CommandLine.arguments.dropFirst())
            PlainLogHandler.bootstrap(level: try PlainLogHandler.takeLevelOption(from: &arguments) ?? .info)
            var command = try parseAsRoot(arguments)
            try command.run()
        } catch let error as PlainLogHandler.LevelError {
            exit(withError: ValidationError(error.description))
        } catch {
            exit(withError: error)
        }
    }
}

/// Options every compute command takes.
struct BLASOptions: ParsableArguments {
    @Option(help: "OpenBLAS kernel to force (e.g. Haswell, SkylakeX, Zen); default: detected.")
    var blasCore: String?

    @Option(help: "Compute threads (default: one per core). Kernels split their work across these.")
    var threads: Int?

    @Option(help: "OpenBLAS threads inside each BLAS call (default 1: the compute threads already split products).")
    var blasThreads: Int?

    func apply() {
        BLASRuntime.configureThreads(threads: threads, blasThreads: blasThreads)
    }
}

/// Logs a line at `.info`: through swift-log to standard error (`PlainLogHandler`, bootstrapped
/// in `main`; standard output is for results).
func log(_ text: String) {
    logger.info("\(text)")
}

/// The coordinator's logger (see `log`).
let logger = Logger(label: "neumeta-coordinator")

/// Progress for long work: a live, redrawn line on a terminal (at most 4 redraws a second);
/// when standard error is a log file or pipe, a plain line every 30 seconds instead.
struct ProgressLine {
    private let terminal = isatty(2) == 1
    private var lastDraw = Date()

    mutating func draw(_ text: @autoclosure () -> String) {
        let interval: TimeInterval = terminal ? 0.25 : 30
        guard Date().timeIntervalSince(lastDraw) > interval else { return }
        lastDraw = Date()
        FileHandle.standardError.write(Data(((terminal ? "\r\u{1B}[K" : "") + text() + (terminal ? "" : "\n")).utf8))
    }

    /// Erases the live line before a permanent log line (and restarts the quiet interval).
    mutating func clear() {
        if terminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) } else { lastDraw = Date() }
    }
}

/// A comma-separated list of positive widths, e.g. "4,8,16"; `option` names the flag in errors.
func parseWidths(_ text: String, option: String) throws -> [Int] {
    try text.split(separator: ",").map { part in
        guard let w = Int(part.trimmingCharacters(in: .whitespaces)), w >= 1 else {
            throw ValidationError("\(option): '\(part)' is not a positive width")
        }
        return w
    }
}

func formatDuration(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%dh%02dm", s / 3600, (s % 3600) / 60)
        : s >= 60 ? String(format: "%dm%02ds", s / 60, s % 60) : "\(s)s"
}

/// Prints `object` as one line of JSON; non-finite numbers (JSON has none) become null.
func printJSON(_ object: [String: Any]) {
    print(jsonLine(object))
}

/// `object` as one line of JSON, non-finite numbers as null.
func jsonLine(_ object: [String: Any]) -> String {
    func clean(_ value: Any) -> Any {
        switch value {
        case let d as Double: d.isFinite ? d : NSNull()
        case let f as Float: f.isFinite ? Double(f) : NSNull()
        case let dictionary as [String: Any]: dictionary.mapValues(clean)
        case let array as [Any]: array.map(clean)
        default: value
        }
    }
    guard let data = try? JSONSerialization.data(withJSONObject: clean(object), options: [.sortedKeys]) else {
        return #"{"error":"unencodable JSON object"}"#
    }
    return String(decoding: data, as: UTF8.self)
}
