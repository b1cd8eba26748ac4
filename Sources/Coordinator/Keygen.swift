import ArgumentParser
import Foundation
import NeuMeta

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write CURVE key pairs for the coordinator and workers.",
        discussion: """
        Creates DIR (mode 0700) with coordinator.key/.pub, one NAME.key/.pub per worker \
        (secret files mode 0600) and authorized_workers, the coordinator's allow-list of worker \
        public keys. `run --keys DIR` and `neumeta-worker --keys DIR --key-name NAME` then work \
        together as they are. Existing files are never overwritten.

        To admit another worker later: `keygen --out DIR --add-worker NAME` writes NAME.key/.pub \
        and appends the public key to DIR/authorized_workers; copy NAME.key (keep it 0600) and \
        coordinator.pub to that worker. The coordinator reads the allow-list when it starts. (Or \
        append a worker's existing public key, then its name, as one line of authorized_workers.)
        """
    )

    @Option(help: "Directory to create the keys in.")
    var out: String

    @Option(help: "Comma-separated worker names (one key pair each).")
    var workers = "worker"

    @Option(help: "Add one worker key pair to an existing DIR and allow-list it.")
    var addWorker: String?

    func run() throws {
        let names = workers.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let directory = URL(fileURLWithPath: out)
        if let addWorker {
            let pair = try KeyStore.addWorker(addWorker, to: directory)
            print("\(addWorker) \(pair.public.z85)")
            log("wrote \(out)/\(addWorker).key/.pub and allow-listed it in \(out)/\(KeyStore.allowListName)")
            return
        }
        if FileManager.default.fileExists(atPath: directory.appendingPathComponent(KeyStore.coordinatorName + ".key").path) {
            // A second coordinator key would orphan every worker that trusts the first.
            throw ValidationError("\(out) already holds a coordinator key; add a worker with `keygen --out \(out) --add-worker NAME`")
        }
        let (coordinator, pairs) = try KeyStore.generate(into: directory, workers: names)
        print("coordinator \(coordinator.public.z85)")
        for name in names { print("\(name) \(pairs[name]!.public.z85)") }
        log("wrote \(names.count + 1) key pairs and \(KeyStore.allowListName) to \(out) (secret keys mode 0600)")
    }
}
