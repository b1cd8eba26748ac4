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
        subcommands: [Run.self, Keygen.self, TrainBase.self, Permute.self, Train.self, Evaluate.self, Sample.self, ExportFolder.self,
                      Study.self, Synthetic.self]
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

/// Logs a line at `.info`: through swift-log to standard error (`PlainLogHandler`, bootstrapped
/// in `main`; standard output is for results).
func log(_ text: String) {
    logger.info("\(text)")
}

/// The coordinator's logger (see `log`).
let logger = Logger(label: "neumeta-coordinator")
