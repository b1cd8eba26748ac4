import ArgumentParser
import Foundation
import Logging
import NeuMeta

@main
struct Worker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "neumeta-worker",
        abstract: "NeuMeta Cluster worker: computes INR gradients for the configurations the coordinator sends.",
        discussion: """
        Connects to the coordinator over ZeroMQ with CURVE encryption, proves its identity with \
        its key pair (DIR/<key-name>.key, whose public key must be in the coordinator's \
        authorized_workers) and checks the coordinator's identity (DIR/coordinator.pub). It reads \
        the training data from its own --data directory — Fashion-MNIST IDX files, CIFAR binary \
        batches, or an image folder DIR/train/<class>/*.{jpg,png} streamed from disk, decoded on \
        background threads --prefetch batches ahead (--in-memory: decoded once) — and makes each \
        batch as the coordinator's job says (image size, augmentation); the coordinator refuses a \
        worker whose data differs from its own (the refusal says which file, or which classes \
        of a folder, differ).

        The worker decides nothing: it computes the gradient of each configuration it is sent \
        (a pure function of the parameters, the round and the configuration index) and returns \
        it. It sends a heartbeat every \(WireProtocol.heartbeatInterval) and reconnects after \
        \(WireProtocol.heartbeatTimeout) of silence, backing off from \
        \(WireProtocol.reconnectInitialDelay) to \(WireProtocol.reconnectMaxDelay). It exits 0 when \
        the coordinator says training is finished, 3 when it is refused (the reason is printed), \
        1 on a local error.

        With --config, the endpoint (coordinator.connect, or coordinator.bind read from this \
        side), key directory, data directory and kind, thread count, prefetch depth and folder \
        loading come from that cluster.yaml; the options override them.

        Logs go to standard error as [name] lines; --log-level LEVEL filters them (trace, debug, \
        info (default), notice, warning, error, critical).

        Example: neumeta-worker --connect tcp://coordinator.example:5570 --keys /etc/neumeta/keys
        """
    )

    @Option(help: "cluster.yaml to take the endpoint, keys, data and threads from.")
    var config: String?

    @Option(help: "Coordinator endpoint, e.g. tcp://10.0.0.1:5570.")
    var connect: String?

    @Option(help: "Key directory: <key-name>.key (this worker's secret, mode 0600) and coordinator.pub.")
    var keys: String?

    @Option(help: "Which key pair of --keys to use (file stem).")
    var keyName = "worker"

    @Option(help: "Name in the coordinator's logs (default: host-pid). Unique per worker.")
    var name: String?

    @Option(help: "Local dataset directory (default \(FashionMNIST.defaultDirectory)).")
    var data: String?

    @Option(help: "What --data holds: \(DatasetSpec.Kind.allCases.map(\.rawValue).joined(separator: ", ")) (default: experiment.dataset of --config, else told by its contents: a train/ subdirectory is a folder).")
    var dataset: String?

    @Option(help: "Batches of an image folder decoded ahead on background threads (default: workers.prefetch, else 8).")
    var prefetch: Int?

    @Flag(help: "Decode an image folder into memory once instead of streaming it (default: workers.in_memory).")
    var inMemory = false

    @Flag(help: "Fingerprint an image folder's bytes, not just its file names and sizes (default: experiment.content_hashes; must match the coordinator).")
    var contentHashes = false

    @Option(help: "Compute threads (default: one per core).")
    var threads: Int?

    @Option(help: "OpenBLAS threads inside each BLAS call.")
    var blasThreads: Int?

    @Flag(help: "Log every configuration computed.")
    var verbose = false

    @Flag(help: "Exit when the parent process ends (set by a coordinator that starts local workers).")
    var exitWithParent = false

    @Option(help: ArgumentHelp("Load generator: read no data, sleep SECONDS per configuration and send stand-in gradients of the job's sizes "
                               + "(for a coordinator's synthetic job, e.g. neumeta-bench --parts scale).", valueName: "seconds"))
    var synthetic: Double?

    func validate() throws {
        if let synthetic, !(synthetic >= 0 && synthetic <= WireProtocol.maxComputeSeconds) {
            throw ValidationError("--synthetic must be between 0 and \(Int(WireProtocol.maxComputeSeconds)) seconds")
        }
    }

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

    /// host-pid, with any character outside the worker-name alphabet replaced by "-".
    static func defaultName() -> String {
        let host = String(ProcessInfo.processInfo.hostName.map { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) ? $0 : "-" })
        let name = String(host.drop { $0 == "." }.prefix(50)) + "-\(getpid())"
        return KeyStore.isValidWorkerName(name) ? name : "worker-\(getpid())"
    }

    func run() throws {
        let file = try config.map { try ClusterConfig.load(path: $0) }
        guard let connect = connect ?? file?.coordinator.connectEndpoint else {
            throw ValidationError("give --connect tcp://HOST:PORT (or --config cluster.yaml)")
        }
        guard let keys = keys ?? file?.keys.directory else { throw ValidationError("give --keys DIR (or --config cluster.yaml)") }
        let data = data ?? file?.experiment.data ?? FashionMNIST.defaultDirectory
        let kind: DatasetSpec.Kind
        if let dataset {
            guard let given = DatasetSpec.Kind(rawValue: dataset) else {
                throw ValidationError("--dataset must be one of \(DatasetSpec.Kind.allCases.map(\.rawValue).joined(separator: ", ")), not '\(dataset)'")
            }
            kind = given
        } else {
            kind = file?.experiment.dataset ?? DatasetSpec.Kind.detect(directory: data)
        }
        if let prefetch, prefetch < 0 { throw ValidationError("--prefetch must not be negative") }
        BLASRuntime.configureThreads(threads: threads ?? file?.workers.threads, blasThreads: blasThreads)
        let name = try self.name.map { given in
            guard KeyStore.isValidWorkerName(given) else {
                throw ValidationError("--name \"\(given)\": use 1–64 of A–Z a–z 0–9 - _ . (not starting with a dot)")
            }
            return given
        } ?? Self.defaultName()
        let directory = URL(fileURLWithPath: keys)
        let pair = try KeyStore.loadSecret(directory.appendingPathComponent("\(keyName).key"))
        let server = try KeyStore.loadPublic(directory.appendingPathComponent("\(KeyStore.coordinatorName).pub"))
        let fingerprint: DataFingerprint, makeCompute: MakeCompute
        if let synthetic {
            fingerprint = SyntheticGradients.fingerprint
            makeCompute = { spec, parameters, _, round in try SyntheticJob(spec: spec, seconds: synthetic, parameters: parameters, round: round) }
        } else {
            let local = LocalTrainingData(kind: kind, directory: data, contentHashes: contentHashes || file?.experiment.contentHashes == true,
                                          prefetch: prefetch ?? file?.workers.prefetch ?? 8, inMemory: inMemory || file?.workers.inMemory == true)
            fingerprint = try local.fingerprint()
            makeCompute = { spec, parameters, base, round in
                try WorkerJob(spec: spec, data: local, parameters: parameters, base: base, round: round)
            }
        }
        let loop = try WorkerLoop(name: name, endpoint: connect, keys: pair, server: server, fingerprint: fingerprint,
                                  makeCompute: makeCompute, verbose: verbose, parent: exitWithParent ? getppid() : nil)
        switch loop.run() {
        case .finished:
            loop.log(String(format: "coordinator finished training; exiting (peak resident memory %.0f MiB)",
                            Double(ProcessMemory.peakResidentBytes()) / (1024 * 1024)))
        case .refused(let reason):
            loop.log("refused by the coordinator: \(reason)")
            throw ExitCode(3)
        case .failed(let reason):
            loop.log("stopping: \(reason)")
            throw ExitCode(1)
        }
    }
}
