import Foundation
import Testing
import Yams
#if canImport(Glibc)
import Glibc
#endif

// Checks the files under deploy/ that say how to run on real clusters (systemd, Slurm,
// Kubernetes, Docker) as far as this machine allows: no cluster, no Docker daemon and no
// systemd as PID 1 here. What needs a tool that may be missing (systemd-analyze, kubectl) is
// a test of its own, skipped with the reason when the tool is absent.

// MARK: - Files

/// Paths and readers for the repository's deploy/ directory.
private enum Repo {
    /// This file is Tests/NeuMetaTests/Deploy/DeployFilesTests.swift.
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let deploy = root.appendingPathComponent("deploy")
    static let kubernetes = deploy.appendingPathComponent("kubernetes")
    static let readme = deploy.appendingPathComponent("README.md")

    /// Regular files under `directory` whose names satisfy `keep`, sorted.
    static func files(under directory: URL, _ keep: (String) -> Bool) -> [URL] {
        guard let walk = FileManager.default.enumerator(at: directory, includingPropertiesForKeys: [.isRegularFileKey]) else { return [] }
        var found: [URL] = []
        for case let url as URL in walk where keep(url.lastPathComponent) {
            if (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true { found.append(url.standardizedFileURL) }
        }
        return found.sorted { $0.path < $1.path }
    }

    static func yamlFiles(under directory: URL) -> [URL] {
        files(under: directory) { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }
    }

    static func text(_ url: URL) throws -> String { try String(contentsOf: url, encoding: .utf8) }

    /// `url` relative to the repository root, for messages.
    static func name(_ url: URL) -> String {
        let base = root.standardizedFileURL.path + "/"
        let path = url.standardizedFileURL.path
        return path.hasPrefix(base) ? String(path.dropFirst(base.count)) : path
    }
}

private struct DeployTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: - YAML

private enum YAML {
    /// Every document of a YAML file, mappings as [String: Any]. Yams's document sequence
    /// stores a parse error instead of throwing it, so it is checked after the last document.
    static func documents(_ url: URL) throws -> [Any] {
        try documents(text: Repo.text(url), source: Repo.name(url))
    }

    static func documents(text: String, source: String) throws -> [Any] {
        var sequence = try Yams.load_all(yaml: text)
        var documents: [Any] = []
        while let document = sequence.next() { documents.append(plain(document)) }
        if let error = sequence.error { throw DeployTestError("\(source): \(error)") }
        return documents
    }

    /// Yams builds mappings as [AnyHashable: Any]; the tests read them as [String: Any].
    static func plain(_ value: Any) -> Any {
        switch value {
        case let mapping as [AnyHashable: Any]:
            return Dictionary(uniqueKeysWithValues: mapping.map { ("\($0.key.base)", plain($0.value)) })
        case let list as [Any]:
            return list.map(plain)
        default:
            return value
        }
    }

    /// The value at a path of mapping keys (String) and list indices (Int).
    static func dig(_ value: Any?, _ path: Any...) -> Any? {
        var current = value
        for step in path {
            switch step {
            case let key as String: current = (current as? [String: Any])?[key]
            case let index as Int:
                guard let list = current as? [Any], list.indices.contains(index) else { return nil }
                current = list[index]
            default: return nil
            }
        }
        return current
    }

    static func list(_ value: Any?) -> [Any] { value as? [Any] ?? [] }
    static func map(_ value: Any?) -> [String: Any] { value as? [String: Any] ?? [:] }

    /// A canonical text of a YAML value (keys sorted, scalars with their type), for equality.
    static func canonical(_ value: Any?) -> String {
        switch value {
        case let mapping as [String: Any]:
            return "{" + mapping.keys.sorted().map { "\($0): \(canonical(mapping[$0]))" }.joined(separator: ", ") + "}"
        case let list as [Any]:
            return "[" + list.map { canonical($0) }.joined(separator: ", ") + "]"
        case nil, is NSNull:
            return "null"
        case let scalar?:
            return "\(type(of: scalar))(\(scalar))"
        }
    }

    /// The key paths of the mappings in a value ("a.b.c"); lists count as leaves.
    static func keyPaths(_ value: Any?, prefix: String = "") -> Set<String> {
        guard let mapping = value as? [String: Any] else { return [] }
        var paths = Set<String>()
        for (key, child) in mapping {
            let path = prefix.isEmpty ? key : "\(prefix).\(key)"
            paths.insert(path)
            paths.formUnion(keyPaths(child, prefix: path))
        }
        return paths
    }

    /// Every string scalar in a value, with its key path.
    static func strings(_ value: Any?, prefix: String = "") -> [(path: String, value: String)] {
        switch value {
        case let mapping as [String: Any]:
            return mapping.keys.sorted().flatMap { strings(mapping[$0], prefix: prefix.isEmpty ? $0 : "\(prefix).\($0)") }
        case let list as [Any]:
            return list.enumerated().flatMap { strings($0.element, prefix: "\(prefix)[\($0.offset)]") }
        case let text as String:
            return [(prefix, text)]
        default:
            return []
        }
    }
}

// MARK: - Kubernetes model

/// One object of a manifest.
private struct KubeObject {
    let body: [String: Any]
    let file: String
    var kind: String { body["kind"] as? String ?? "" }
    var name: String { YAML.dig(body, "metadata", "name") as? String ?? "" }
    var id: String { "\(kind)/\(name)" }

    /// The pod template of a workload, if this is one.
    var podSpec: [String: Any]? {
        ["Job", "Deployment", "StatefulSet", "DaemonSet"].contains(kind) ? YAML.dig(body, "spec", "template", "spec") as? [String: Any] : nil
    }
    var podLabels: [String: String] {
        YAML.map(YAML.dig(body, "spec", "template", "metadata", "labels")).compactMapValues { $0 as? String }
    }
    /// Init containers first, then containers.
    var containers: [Container] {
        guard let spec = podSpec else { return [] }
        return (YAML.list(spec["initContainers"]) + YAML.list(spec["containers"])).map { Container(body: YAML.map($0)) }
    }
    var volumes: [[String: Any]] { YAML.list(podSpec?["volumes"]).map { YAML.map($0) } }
}

private struct Container {
    let body: [String: Any]
    var name: String { body["name"] as? String ?? "" }
    var image: String { body["image"] as? String ?? "" }
    var command: [String] { YAML.list(body["command"]).compactMap { $0 as? String } }
    var args: [String] { YAML.list(body["args"]).compactMap { $0 as? String } }
    var envNames: Set<String> { Set(YAML.list(body["env"]).compactMap { YAML.dig($0, "name") as? String }) }
    func envValue(_ name: String) -> String? {
        YAML.list(body["env"]).first { YAML.dig($0, "name") as? String == name }.flatMap { YAML.dig($0, "value") as? String }
    }
    var mounts: [(name: String, path: String)] {
        YAML.list(body["volumeMounts"]).compactMap {
            guard let n = YAML.dig($0, "name") as? String, let p = YAML.dig($0, "mountPath") as? String else { return nil }
            return (n, p)
        }
    }
    var ports: [(name: String?, port: Int)] {
        YAML.list(body["ports"]).compactMap { p in (YAML.dig(p, "containerPort") as? Int).map { (YAML.dig(p, "name") as? String, $0) } }
    }
    /// The value following `option` in command + args.
    func option(_ option: String) -> String? {
        let words = command + args
        guard let i = words.firstIndex(of: option), i + 1 < words.count else { return nil }
        return words[i + 1]
    }
    /// The program: the first word of command (or of args when command is empty).
    var program: String { (command + args).first.map { ($0 as NSString).lastPathComponent } ?? "" }
}

/// A kustomization.yaml (Kustomization or Component) and the files it names.
private struct Kustomization {
    let file: URL
    let body: [String: Any]
    var directory: URL { file.deletingLastPathComponent() }
    var kind: String { body["kind"] as? String ?? "" }
    var resources: [URL] { YAML.list(body["resources"]).compactMap { $0 as? String }.map { directory.appendingPathComponent($0).standardizedFileURL } }
    var components: [URL] { YAML.list(body["components"]).compactMap { $0 as? String }.map { directory.appendingPathComponent($0).standardizedFileURL } }
    var patches: [URL] {
        let entries = YAML.list(body["patches"]).compactMap { YAML.dig($0, "path") as? String }
            + YAML.list(body["patchesStrategicMerge"]).compactMap { $0 as? String }
        return entries.map { directory.appendingPathComponent($0).standardizedFileURL }
    }
    var imageNames: Set<String> { Set(YAML.list(body["images"]).compactMap { YAML.dig($0, "name") as? String }) }
    var namespace: String? { body["namespace"] as? String }

    static func load(_ file: URL) throws -> Kustomization {
        Kustomization(file: file.standardizedFileURL, body: YAML.map(try YAML.documents(file).first))
    }
    static func all() throws -> [Kustomization] {
        try Repo.files(under: Repo.kubernetes) { $0 == "kustomization.yaml" }.map(load)
    }
    static func base() throws -> Kustomization { try load(Repo.kubernetes.appendingPathComponent("kustomization.yaml")) }

    /// The objects of the resource files (not of sub-kustomizations).
    func objects() throws -> [KubeObject] {
        try resources.filter { !$0.hasDirectoryPath && $0.pathExtension != "" }.flatMap { url in
            try YAML.documents(url).map { KubeObject(body: YAML.map($0), file: Repo.name(url)) }
        }
    }
    func patchObjects() throws -> [KubeObject] {
        try patches.flatMap { url in try YAML.documents(url).map { KubeObject(body: YAML.map($0), file: Repo.name(url)) } }
    }
}

/// The `kubectl create secret generic` commands of deploy/README.md: the way the Secrets are
/// made (they are deliberately not in the manifests, so keys are never committed).
private struct SecretCommand {
    let name: String
    let namespace: String?
    let files: Set<String>

    static func inReadme() throws -> [SecretCommand] {
        // Join continuation lines, then read each command line word by word.
        let text = try Repo.text(Repo.readme).replacingOccurrences(of: "\\\n", with: " ")
        return text.split(separator: "\n").compactMap { line -> SecretCommand? in
            let words = line.split(whereSeparator: \.isWhitespace).map { String($0).trimmingCharacters(in: CharacterSet(charactersIn: "`")) }
            guard let g = words.indices.first(where: { $0 >= 2 && words[$0] == "generic" && words[$0 - 1] == "secret" && words[$0 - 2] == "create" }),
                  let name = words[(g + 1)...].first(where: { !$0.hasPrefix("-") }) else { return nil }
            var namespace: String?
            var files = Set<String>()
            for (i, word) in words.enumerated() {
                if (word == "-n" || word == "--namespace"), i + 1 < words.count { namespace = words[i + 1] }
                if word.hasPrefix("--namespace=") { namespace = String(word.dropFirst("--namespace=".count)) }
                if word.hasPrefix("--from-file=") {
                    let source = String(word.dropFirst("--from-file=".count))
                    // --from-file=KEY=PATH names the key; --from-file=PATH uses the file's name.
                    let parts = source.split(separator: "=", maxSplits: 1).map(String.init)
                    files.insert(parts.count == 2 ? parts[0] : (source as NSString).lastPathComponent)
                }
            }
            return SecretCommand(name: name, namespace: namespace, files: files)
        }
    }
}

// MARK: - Processes and tools

private struct RunResult {
    let status: Int32
    /// Standard output and standard error, kept apart (kubectl's output is parsed).
    let output: String
    let errors: String
    let timedOut: Bool
    var combined: String { output + errors }
}

private enum Tools {
    /// The executable `name` on PATH, if any.
    static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs a program with standard output and error in temporary files (not pipes: a child
    /// left running must not hold the test up), stopping it after `timeout` seconds.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                    directory: URL? = nil, timeout: TimeInterval = 60) throws -> RunResult {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-deploy-\(UUID().uuidString)")
        let outURL = base.appendingPathExtension("out"), errURL = base.appendingPathExtension("err")
        for url in [outURL, errURL] { _ = FileManager.default.createFile(atPath: url.path, contents: nil) }
        defer { for url in [outURL, errURL] { try? FileManager.default.removeItem(at: url) } }
        let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        if let directory { process.currentDirectoryURL = directory }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        try withSignalsUnblocked { try process.run() }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        let timedOut = process.isRunning
        if timedOut { process.terminate() }
        process.waitUntilExit()
        try out.close()
        try err.close()
        return RunResult(status: process.terminationStatus, output: (try? Repo.text(outURL)) ?? "",
                         errors: (try? Repo.text(errURL)) ?? "", timedOut: timedOut)
    }

    /// Runs `body` with no signal blocked in the calling thread. Swift Testing runs tests on
    /// Dispatch threads, which block nearly every signal, and a spawned child inherits that
    /// mask: SIGTERM would stay pending in the script and in everything it starts, so neither
    /// the script's own cleanup (kill -TERM) nor Process.terminate() could stop anything.
    static func withSignalsUnblocked<T>(_ body: () throws -> T) rethrows -> T {
        var none = sigset_t(), saved = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        return try body()
    }

    static var systemdAnalyze: String? { find("systemd-analyze") }

    /// kubectl, when it is a working client (`kubectl kustomize` needs no cluster).
    static var kubectl: String? {
        guard let path = find("kubectl"), let result = try? run(path, ["version", "--client"], timeout: 30),
              result.status == 0 else { return nil }
        return path
    }

    static func temporaryDirectory(_ label: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func writeExecutable(_ text: String, to url: URL) throws {
        try text.write(to: url, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: url.path)
    }
}

/// A TCP socket on an ephemeral 127.0.0.1 port, bound (connections are refused) until
/// `listen()`; then connections complete in the backlog and are never accepted.
private final class LoopbackPort {
    let fd: Int32
    let port: Int

    init() throws {
        #if os(Linux)
        let stream = Int32(SOCK_STREAM.rawValue)
        #else
        let stream = SOCK_STREAM
        #endif
        let descriptor = socket(AF_INET, stream, 0)
        guard descriptor >= 0 else { throw DeployTestError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) } }
        let named = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) } }
        guard bound == 0, named == 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            throw DeployTestError("bind on 127.0.0.1: \(reason)")
        }
        fd = descriptor
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// Starts listening once `file` contains `text` (checked every 20 ms for up to 30 s), as
    /// the coordinator does some time after it was started.
    func startListening(whenFile file: URL, contains text: String) {
        let descriptor = fd
        DispatchQueue.global().async {
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline {
                if let log = try? String(contentsOf: file, encoding: .utf8), log.contains(text) {
                    _ = listen(descriptor, 16)
                    return
                }
                Thread.sleep(forTimeInterval: 0.02)
            }
        }
    }

    deinit { close(fd) }
}

// MARK: - systemd unit files

/// A unit file as [section: [key: values]] (a key may repeat).
private func unitFile(_ url: URL) throws -> [String: [String: [String]]] {
    var sections: [String: [String: [String]]] = [:]
    var section = ""
    for raw in try Repo.text(url).split(separator: "\n") {
        let line = raw.trimmingCharacters(in: .whitespaces)
        if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
        if line.hasPrefix("[") && line.hasSuffix("]") {
            section = String(line.dropFirst().dropLast())
            if sections[section] == nil { sections[section] = [:] }
            continue
        }
        guard let eq = line.firstIndex(of: "=") else { throw DeployTestError("\(Repo.name(url)): not key=value: \(line)") }
        let key = line[..<eq].trimmingCharacters(in: .whitespaces), value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
        sections[section, default: [:]][key, default: []].append(value)
    }
    return sections
}

// MARK: - Tests

@Suite struct DeployFilesTests {
    /// The coordinator's port everywhere: cluster.yaml, the Service, the Slurm script, the image.
    static let port = 5570

    @Test func theDeliverablesExist() {
        for path in ["deploy/README.md", "deploy/cluster.yaml", "deploy/Dockerfile",
                     "deploy/systemd/neumeta-coordinator.service", "deploy/systemd/neumeta-worker@.service", "deploy/systemd/worker.env",
                     "deploy/slurm/neumeta.sbatch", "deploy/kubernetes/kustomization.yaml"] {
            #expect(FileManager.default.fileExists(atPath: Repo.root.appendingPathComponent(path).path), "\(path) is missing")
        }
    }

    @Test func everyYAMLFileParses() throws {
        let files = Repo.yamlFiles(under: Repo.deploy)
        #expect(files.count >= 10, "found only \(files.map(Repo.name)) under deploy/")
        for url in files {
            do {
                let documents = try YAML.documents(url)
                #expect(!documents.isEmpty, "\(Repo.name(url)) has no YAML document")
            } catch {
                Issue.record("\(error)")
            }
        }
    }

    @Test func kubernetesDocumentsHaveApiVersionKindAndName() throws {
        for url in Repo.yamlFiles(under: Repo.kubernetes) {
            for (i, document) in try YAML.documents(url).enumerated() {
                let place = "\(Repo.name(url)) document \(i + 1)"
                #expect(!((YAML.dig(document, "apiVersion") as? String) ?? "").isEmpty, "\(place): no apiVersion")
                #expect(!((YAML.dig(document, "kind") as? String) ?? "").isEmpty, "\(place): no kind")
                #expect(!((YAML.dig(document, "metadata", "name") as? String) ?? "").isEmpty, "\(place): no metadata.name")
            }
        }
    }

    /// Every manifest is used by a kustomization, and every file a kustomization names exists,
    /// so `kubectl apply -k` deploys exactly what is in the directory.
    @Test func kustomizationsNameEveryManifest() throws {
        let kustomizations = try Kustomization.all()
        #expect(kustomizations.contains { $0.kind == "Kustomization" }, "no Kustomization under deploy/kubernetes")
        var named = Set<String>()
        for k in kustomizations {
            for url in k.resources + k.patches + k.components {
                named.insert(url.path)
                #expect(FileManager.default.fileExists(atPath: url.path), "\(Repo.name(k.file)) names \(Repo.name(url)), which does not exist")
            }
        }
        for url in Repo.yamlFiles(under: Repo.kubernetes) where url.lastPathComponent != "kustomization.yaml" {
            #expect(named.contains(url.path), "\(Repo.name(url)) is not listed in any kustomization.yaml")
        }
    }

    /// Names that pods use (ConfigMaps, PVCs, Secrets, volumes, env variables, images, the
    /// Service) exist. Secrets are the exception by design: they hold keys, so they are made
    /// with `kubectl create secret` as deploy/README.md says, never kept in a manifest.
    @Test func kubernetesObjectsReferToEachOther() throws {
        let base = try Kustomization.base()
        let objects = try base.objects()
        var ids = Set<String>()
        for object in objects {
            #expect(ids.insert(object.id).inserted, "\(object.id) is defined twice")
            #expect(object.kind != "Secret", "\(object.file): \(object.id): key Secrets must not be committed (README creates them)")
        }
        let secretCommands = try SecretCommand.inReadme()
        let workloads = objects.filter { $0.podSpec != nil }
        #expect(workloads.count >= 2, "expected the coordinator and worker workloads, found \(workloads.map(\.id))")

        for pod in workloads {
            let volumes = Dictionary(pod.volumes.compactMap { v in (v["name"] as? String).map { ($0, v) } }, uniquingKeysWith: { a, _ in a })
            #expect(YAML.dig(pod.podSpec, "securityContext", "runAsNonRoot") as? Bool == true, "\(pod.id): pods run as non-root")
            for container in pod.containers {
                let who = "\(pod.id) container \(container.name)"
                for mount in container.mounts {
                    #expect(volumes[mount.name] != nil, "\(who) mounts volume \(mount.name), which the pod does not define")
                }
                // $(VAR) in command/args expands only from the container's own env.
                for word in container.command + container.args {
                    for variable in Self.dollarParenVariables(word) {
                        #expect(container.envNames.contains(variable), "\(who) uses $(\(variable)) but has no env \(variable)")
                    }
                }
                #expect(base.imageNames.contains(container.image), "\(who): image \(container.image) is not under images: in kustomization.yaml")
            }
            for (name, volume) in volumes {
                if let map = YAML.dig(volume, "configMap", "name") as? String {
                    #expect(ids.contains("ConfigMap/\(map)"), "\(pod.id) volume \(name): ConfigMap \(map) is not defined")
                }
                if let claim = YAML.dig(volume, "persistentVolumeClaim", "claimName") as? String {
                    #expect(ids.contains("PersistentVolumeClaim/\(claim)"), "\(pod.id) volume \(name): PVC \(claim) is not defined")
                }
                if let secret = YAML.dig(volume, "secret", "secretName") as? String {
                    #expect(YAML.dig(volume, "secret", "defaultMode") as? Int == 0o400, "\(pod.id) volume \(name): Secret mounted with defaultMode 0400")
                    #expect(secretCommands.contains { $0.name == secret }, "\(pod.id) mounts Secret \(secret): deploy/README.md has no `kubectl create secret generic \(secret)`")
                }
            }
        }

        // The coordinator and the workers, by program.
        let coordinatorPod = try #require(workloads.first { $0.containers.contains { $0.program == "neumeta-coordinator" } }, "no pod runs neumeta-coordinator")
        let workerPod = try #require(workloads.first { $0.containers.contains { $0.program == "neumeta-worker" } }, "no pod runs neumeta-worker")
        let coordinator = try #require(coordinatorPod.containers.first { $0.program == "neumeta-coordinator" })
        let worker = try #require(workerPod.containers.first { $0.program == "neumeta-worker" })
        #expect(coordinator.args.contains("--resume"), "the coordinator must run with --resume so that restarts continue")
        #expect(coordinator.args.first == "run" || coordinator.command.dropFirst().first == "run", "the coordinator runs `run`")

        // The Service selects the coordinator pod and forwards 5570 to a port it declares.
        let services = objects.filter { $0.kind == "Service" }
        let service = try #require(services.first { s in
            let selector = YAML.map(YAML.dig(s.body, "spec", "selector")).compactMapValues { $0 as? String }
            return !selector.isEmpty && selector.allSatisfy { coordinatorPod.podLabels[$0.key] == $0.value }
        }, "no Service selects the coordinator pod (labels \(coordinatorPod.podLabels))")
        #expect(((YAML.dig(service.body, "spec", "type") as? String) ?? "ClusterIP") == "ClusterIP", "\(service.id) is a ClusterIP Service")
        let servicePort = try #require(YAML.list(YAML.dig(service.body, "spec", "ports")).first)
        #expect(YAML.dig(servicePort, "port") as? Int == Self.port, "\(service.id) port")
        switch YAML.dig(servicePort, "targetPort") {
        case let name as String: #expect(coordinator.ports.contains { $0.name == name && $0.port == Self.port }, "\(service.id) targetPort \(name) is not a coordinator port named so")
        case let number as Int: #expect(coordinator.ports.contains { $0.port == number }, "\(service.id) targetPort \(number)")
        default: Issue.record("\(service.id) has no targetPort")
        }
        // The workers connect to that Service by its DNS name in the namespace.
        #expect(worker.option("--connect") == "tcp://\(service.name):\(Self.port)", "workers must connect to the Service \(service.name):\(Self.port)")
        let workerKeys = try #require(worker.option("--keys"), "workers need --keys")
        #expect(worker.mounts.contains { $0.path == workerKeys }, "the workers' --keys \(workerKeys) is not a mount")

        // Every selector in a NetworkPolicy picks at least one pod (peers in other namespaces,
        // such as the cluster DNS, excepted).
        let policies = objects.filter { $0.kind == "NetworkPolicy" }
        for policy in policies {
            var selectors = [YAML.dig(policy.body, "spec", "podSelector", "matchLabels")]
            for rule in YAML.list(YAML.dig(policy.body, "spec", "ingress")) {
                selectors += YAML.list(YAML.dig(rule, "from")).filter { YAML.dig($0, "namespaceSelector") == nil }.map { YAML.dig($0, "podSelector", "matchLabels") }
            }
            for rule in YAML.list(YAML.dig(policy.body, "spec", "egress")) {
                selectors += YAML.list(YAML.dig(rule, "to")).filter { YAML.dig($0, "namespaceSelector") == nil }.map { YAML.dig($0, "podSelector", "matchLabels") }
            }
            for selector in selectors.map({ YAML.map($0).compactMapValues { $0 as? String } }) {
                #expect(workloads.contains { pod in selector.allSatisfy { pod.podLabels[$0.key] == $0.value } },
                        "\(policy.id): selector \(selector) matches no pod")
            }
        }
        // Every pod: no API token, and ingress and egress both restricted by a policy.
        for pod in workloads {
            #expect(YAML.dig(pod.podSpec, "automountServiceAccountToken") as? Bool == false, "\(pod.id): automountServiceAccountToken: false")
            let covering = policies.filter { policy in
                YAML.map(YAML.dig(policy.body, "spec", "podSelector", "matchLabels")).compactMapValues { $0 as? String }
                    .allSatisfy { pod.podLabels[$0.key] == $0.value }
            }
            let types = Set(covering.flatMap { YAML.list(YAML.dig($0.body, "spec", "policyTypes")).compactMap { $0 as? String } })
            #expect(types.isSuperset(of: ["Ingress", "Egress"]), "\(pod.id): no NetworkPolicy restricts its \(Set(["Ingress", "Egress"]).subtracting(types).sorted())")
        }
        // The workers may reach the coordinator's port.
        let workerEgress = policies.filter { policy in
            YAML.map(YAML.dig(policy.body, "spec", "podSelector", "matchLabels")).compactMapValues { $0 as? String }
                .allSatisfy { workerPod.podLabels[$0.key] == $0.value }
        }.flatMap { YAML.list(YAML.dig($0.body, "spec", "egress")) }
        #expect(workerEgress.contains { rule in
            YAML.list(YAML.dig(rule, "ports")).contains { YAML.dig($0, "port") as? Int == Self.port }
                && YAML.list(YAML.dig(rule, "to")).contains { peer in
                    YAML.map(YAML.dig(peer, "podSelector", "matchLabels")).compactMapValues { $0 as? String }
                        .allSatisfy { coordinatorPod.podLabels[$0.key] == $0.value }
                }
        }, "the workers' egress policy does not let them reach the coordinator on \(Self.port)/tcp")

        // The Secrets the README creates hold the files each program reads from its keys
        // directory, in the kustomization's namespace. Every command for a Secret counts, since
        // each (create, or create | apply to update) replaces the whole Secret.
        // Worker keys: one per index of the Indexed Job (--key-name worker-$(WORKER_INDEX), the
        // index from the completion-index annotation), or one shared name.
        let keyName = worker.option("--key-name") ?? "worker"
        let completions = YAML.dig(workerPod.body, "spec", "completions") as? Int ?? 1
        let workerKeyFiles: Set<String>
        if keyName.contains("$(WORKER_INDEX)") {
            #expect(YAML.dig(workerPod.body, "spec", "completionMode") as? String == "Indexed", "per-index keys need an Indexed Job")
            workerKeyFiles = Set((0..<completions).map { keyName.replacingOccurrences(of: "$(WORKER_INDEX)", with: "\($0)") + ".key" })
            let index = try #require(YAML.list(worker.body["env"]).first { YAML.dig($0, "name") as? String == "WORKER_INDEX" })
            #expect(YAML.dig(index, "valueFrom", "fieldRef", "fieldPath") as? String == "metadata.annotations['batch.kubernetes.io/job-completion-index']")
            // The init container copies only its own key out of the Secret, which no other
            // container mounts.
            let copier = try #require(workerPod.containers.first { $0.mounts.contains { $0.path == "/secret" } })
            let copy = (copier.command + copier.args).joined(separator: " ")
            #expect(copier.envNames.contains("WORKER_INDEX") && copy.contains("worker-$WORKER_INDEX.key") && !copy.contains("/secret/*"),
                    "\(workerPod.id): the init container must copy worker-$WORKER_INDEX.key only: \(copy)")
            let secretVolumes = Set(workerPod.volumes.filter { $0["secret"] != nil }.compactMap { $0["name"] as? String })
            for container in workerPod.containers where container.name != copier.name {
                #expect(!container.mounts.contains { secretVolumes.contains($0.name) }, "\(workerPod.id) container \(container.name) mounts every worker's keys")
            }
        } else {
            workerKeyFiles = ["\(keyName).key"]
        }
        let needs: [(KubeObject, Set<String>)] = [(coordinatorPod, ["coordinator.key", "authorized_workers"]),
                                                  (workerPod, workerKeyFiles.union(["coordinator.pub"]))]
        for (pod, files) in needs {
            let secrets = pod.volumes.compactMap { YAML.dig($0, "secret", "secretName") as? String }
            #expect(!secrets.isEmpty, "\(pod.id) mounts no key Secret")
            for secret in secrets {
                for command in secretCommands where command.name == secret {
                    #expect(files.isSubset(of: command.files), "README: a `create secret generic \(secret)` lacks \(files.subtracting(command.files).sorted())")
                    #expect(command.namespace == base.namespace, "README: `create secret generic \(secret)` must use -n \(base.namespace ?? "?")")
                }
            }
        }
    }

    /// The coordinator's cluster.yaml in the ConfigMap is deploy/cluster.yaml, and its paths
    /// are where the pod mounts the keys and the state volume.
    @Test func kubernetesConfigIsDeployClusterYAML() throws {
        let objects = try Kustomization.base().objects()
        let pod = try #require(objects.first { $0.containers.contains { $0.program == "neumeta-coordinator" } })
        let coordinator = try #require(pod.containers.first { $0.program == "neumeta-coordinator" })
        let configPath = try #require(coordinator.option("--config"), "the coordinator gets --config")
        let directory = (configPath as NSString).deletingLastPathComponent, key = (configPath as NSString).lastPathComponent
        let mount = try #require(coordinator.mounts.first { $0.path == directory }, "--config \(configPath): nothing is mounted at \(directory)")
        let volume = try #require(pod.volumes.first { $0["name"] as? String == mount.name })
        let mapName = try #require(YAML.dig(volume, "configMap", "name") as? String, "\(directory) is not a ConfigMap volume")
        let map = try #require(objects.first { $0.kind == "ConfigMap" && $0.name == mapName })
        let embedded = try #require(YAML.dig(map.body, "data", key) as? String, "ConfigMap \(mapName) has no \(key)")
        let config = try #require(try YAML.documents(text: embedded, source: "ConfigMap \(mapName)").first)
        let deployConfig = try #require(try YAML.documents(Repo.deploy.appendingPathComponent("cluster.yaml")).first)
        #expect(YAML.canonical(config) == YAML.canonical(deployConfig), "ConfigMap \(mapName) differs from deploy/cluster.yaml: copy it again")

        let keys = try #require(YAML.dig(config, "keys", "directory") as? String)
        #expect(coordinator.mounts.contains { $0.path == keys }, "keys.directory \(keys) is not mounted in the coordinator")
        let statePVC = pod.volumes.first { $0["persistentVolumeClaim"] != nil }.flatMap { $0["name"] as? String }
        let state = try #require(coordinator.mounts.first { $0.name == statePVC }?.path, "the coordinator mounts no PVC")
        for path in [YAML.dig(config, "checkpoints", "directory"), YAML.dig(config, "output", "inr"), YAML.dig(config, "output", "metrics")] {
            let p = (path as? String) ?? "(missing)"
            #expect(p.hasPrefix(state + "/"), "\(p) is not on the state volume mounted at \(state)")
        }
    }

    /// The settings a real cluster needs, and paths only under the two roots that the systemd
    /// units sandbox and the Slurm script rewrites.
    @Test func deployClusterYAMLIsForARealCluster() throws {
        let config = try #require(try YAML.documents(Repo.deploy.appendingPathComponent("cluster.yaml")).first)
        #expect(YAML.dig(config, "workers", "local") as? Int == 0, "workers.local must be 0 on a cluster")
        #expect(YAML.dig(config, "keys", "generate") as? Bool == false, "keys.generate must be false on a cluster")
        #expect(YAML.dig(config, "keys", "directory") as? String == "/etc/neumeta/keys")
        #expect((YAML.dig(config, "coordinator", "bind") as? String)?.hasSuffix(":\(Self.port)") == true, "coordinator.bind on port \(Self.port)")
        #expect((YAML.dig(config, "checkpoints", "directory") as? String)?.hasPrefix("/var/lib/neumeta/") == true)
        for (path, value) in YAML.strings(config) where value.hasPrefix("/") && path != "experiment.data" {
            #expect(value == "/etc/neumeta/keys" || value.hasPrefix("/var/lib/neumeta/"),
                    "\(path): \(value) is outside /etc/neumeta/keys and /var/lib/neumeta (read-only under systemd, not moved by the Slurm script)")
        }
    }

    /// deploy/cluster.yaml has exactly the keys of the repository's cluster.yaml (values differ).
    @Test(.enabled(if: FileManager.default.fileExists(atPath: Repo.root.appendingPathComponent("cluster.yaml").path),
                   "no cluster.yaml at the repository root yet: deploy/cluster.yaml's keys cannot be compared"))
    func deployClusterYAMLHasTheRepositoryKeys() throws {
        let mine = YAML.keyPaths(try YAML.documents(Repo.deploy.appendingPathComponent("cluster.yaml")).first)
        let theirs = YAML.keyPaths(try YAML.documents(Repo.root.appendingPathComponent("cluster.yaml")).first)
        #expect(mine.subtracting(theirs).isEmpty, "deploy/cluster.yaml has keys the repository's cluster.yaml lacks: \(mine.subtracting(theirs).sorted())")
        #expect(theirs.subtracting(mine).isEmpty, "deploy/cluster.yaml lacks keys of the repository's cluster.yaml: \(theirs.subtracting(mine).sorted())")
    }

    /// Components patch objects the base defines, and the claims they add exist.
    @Test func componentsPatchBaseObjects() throws {
        let baseObjects = try Kustomization.base().objects()
        let components = try Kustomization.all().filter { $0.kind == "Component" }
        #expect(!components.isEmpty, "expected the datasets component")
        for component in components {
            let defined = Set((baseObjects + (try component.objects())).map(\.id))
            for patch in try component.patchObjects() {
                #expect(baseObjects.contains { $0.id == patch.id }, "\(patch.file) patches \(patch.id), which the base does not define")
                for volume in patch.volumes {
                    if let claim = YAML.dig(volume, "persistentVolumeClaim", "claimName") as? String {
                        #expect(defined.contains("PersistentVolumeClaim/\(claim)"), "\(patch.file): PVC \(claim) is not defined")
                    }
                }
            }
        }
    }

    @Test(.enabled(if: Tools.kubectl != nil, "kubectl is not installed (or not a working client): kustomize rendering not checked"))
    func kubectlKustomizeRenders() throws {
        let kubectl = try #require(Tools.kubectl)
        let base = try Kustomization.base()
        let expected = Set(try base.objects().map(\.id))

        let rendered = try Tools.run(kubectl, ["kustomize", Repo.kubernetes.path])
        #expect(rendered.status == 0, "kubectl kustomize deploy/kubernetes: \(rendered.errors)")
        let objects = try YAML.documents(text: rendered.output, source: "kubectl kustomize").map { KubeObject(body: YAML.map($0), file: "rendered") }
        #expect(Set(objects.map(\.id)) == expected, "rendered objects differ from the resource files")
        for object in objects where object.kind != "Namespace" {
            #expect(YAML.dig(object.body, "metadata", "namespace") as? String == base.namespace, "\(object.id) is not in namespace \(base.namespace ?? "?")")
        }

        // Base plus each component, through a throw-away overlay (kustomize takes only
        // relative paths, so the overlay names the repository relative to itself).
        for component in try Kustomization.all().filter({ $0.kind == "Component" }) {
            let overlay = try Tools.temporaryDirectory("overlay")
            defer { try? FileManager.default.removeItem(at: overlay) }
            let up = String(repeating: "../", count: overlay.standardizedFileURL.pathComponents.count - 1)
            let text = """
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            resources: ["\(up)\(Repo.kubernetes.standardizedFileURL.path.dropFirst())"]
            components: ["\(up)\(component.directory.standardizedFileURL.path.dropFirst())"]
            """
            try text.write(to: overlay.appendingPathComponent("kustomization.yaml"), atomically: true, encoding: .utf8)
            let result = try Tools.run(kubectl, ["kustomize", overlay.path])
            #expect(result.status == 0, "kubectl kustomize with \(Repo.name(component.directory)): \(result.errors)")
        }
    }

    // MARK: Shell

    @Test func shellScriptsPassBashN() throws {
        let scripts = Repo.files(under: Repo.deploy) { $0.hasSuffix(".sh") || $0.hasSuffix(".sbatch") }
        #expect(!scripts.isEmpty, "no *.sh or *.sbatch under deploy/")
        for script in scripts {
            let result = try Tools.run("/bin/bash", ["-n", script.path])
            #expect(result.status == 0, "bash -n \(Repo.name(script)): \(result.combined)")
        }
    }

    /// Runs neumeta.sbatch with stand-ins for srun, scontrol and the two programs that log
    /// their arguments; the Swift test plays the coordinator's socket, which starts listening
    /// only after the stand-in coordinator has run (or never, with `listening: false`).
    private static func runSlurmScript(coordinatorSeconds: Double = 3, coordinatorStatus: Int = 0, workerSeconds: Double = 0,
                                       listening: Bool = true, state existing: URL? = nil) throws -> (result: RunResult, log: [String], state: URL, local: URL, seconds: Double, directory: URL) {
        let dir = try Tools.temporaryDirectory("slurm")
        let bin = dir.appendingPathComponent("bin"), log = dir.appendingPathComponent("calls.log")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        // One line per call (newlines inside arguments, as in the worker step's script, become spaces).
        let record = #"{ printf '%s' "$(basename "$0")"; printf ' %s' "${@//$'\n'/ }"; echo; } >> "$FAKE_LOG""#
        // srun: record, skip the options (all written --opt=value), run the command here.
        try Tools.writeExecutable("""
            #!/usr/bin/env bash
            \(record)
            while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
            export SLURMD_NODENAME=fakenode SLURM_CPUS_PER_TASK=2
            exec "$@"
            """, to: bin.appendingPathComponent("srun"))
        try Tools.writeExecutable("""
            #!/usr/bin/env bash
            \(record)
            if [ "$1 ${2-}" = "show hostnames" ]; then printf '%s\\n' 127.0.0.1 nodeb nodec; fi
            """, to: bin.appendingPathComponent("scontrol"))
        try Tools.writeExecutable("""
            #!/usr/bin/env bash
            \(record)
            case "$1" in
              keygen) mkdir -p "$3" && for f in coordinator.key coordinator.pub worker.key worker.pub authorized_workers; do : > "$3/$f"; done ;;
              run) sleep "$FAKE_COORDINATOR_SECONDS"; exit "$FAKE_COORDINATOR_STATUS" ;;
            esac
            """, to: bin.appendingPathComponent("neumeta-coordinator"))
        try Tools.writeExecutable("""
            #!/usr/bin/env bash
            \(record)
            echo $$ > "$FAKE_LOG.worker-pid"
            exec sleep "$FAKE_WORKER_SECONDS"
            """, to: bin.appendingPathComponent("neumeta-worker"))

        let socket = try LoopbackPort()
        if listening { socket.startListening(whenFile: log, contains: "neumeta-coordinator run") }
        let state = existing ?? dir.appendingPathComponent("state")
        let local = dir.appendingPathComponent("node-local")
        try FileManager.default.createDirectory(at: local, withIntermediateDirectories: true)
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = bin.path + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        environment.merge([
            "SLURM_JOB_NODELIST": "fake[1-3]", "SLURM_JOB_ID": "42", "SLURM_CPUS_ON_NODE": "2",
            "SLURM_SUBMIT_DIR": Repo.root.path, "NEUMETA_HOME": Repo.root.path, "NEUMETA_BIN": bin.path,
            "NEUMETA_STATE": state.path, "NEUMETA_PORT": "\(socket.port)", "NEUMETA_WORKER_GRACE": "1", "NEUMETA_LOCAL": local.path,
            "FAKE_LOG": log.path, "FAKE_COORDINATOR_SECONDS": "\(coordinatorSeconds)",
            "FAKE_COORDINATOR_STATUS": "\(coordinatorStatus)", "FAKE_WORKER_SECONDS": "\(workerSeconds)",
        ]) { $1 }
        let start = Date()
        let result = try Tools.run("/bin/bash", [Repo.deploy.appendingPathComponent("slurm/neumeta.sbatch").path, "--rounds", "7", "--skip-evaluation"],
                                   environment: environment, directory: dir, timeout: 60)
        let seconds = Date().timeIntervalSince(start)
        let calls = ((try? Repo.text(log)) ?? "").split(separator: "\n").map(String.init)
        if let pid = (try? Repo.text(URL(fileURLWithPath: log.path + ".worker-pid")))?.trimmingCharacters(in: .whitespacesAndNewlines),
           let worker = Int32(pid) {
            // A worker still alive after the script ended was not cleaned up.
            Thread.sleep(forTimeInterval: 0.2)
            #expect(kill(worker, 0) != 0, "the worker (pid \(worker)) outlived the job script")
            kill(worker, SIGKILL)
        }
        return (result, calls, state, local, seconds, dir)
    }

    @Test(.timeLimit(.minutes(2))) func slurmScriptStartsCoordinatorThenWorkers() throws {
        let run = try Self.runSlurmScript()
        defer { try? FileManager.default.removeItem(at: run.directory) }
        #expect(run.result.status == 0 && !run.result.timedOut, "the job should succeed: \(run.result.combined)")
        let state = run.state.path
        // Keys: made once per run in a private directory on the node (NEUMETA_LOCAL), not in the
        // shared state; the coordinator reads them there, the workers get a copy of worker.key and
        // coordinator.pub only.
        let keygen = run.log.filter { $0.hasPrefix("neumeta-coordinator keygen --out \(run.local.path)/neumeta-coordinator.") }
        #expect(keygen.count == 1, "keys generated once, under NEUMETA_LOCAL: \(run.log)")
        let privateKeys = try #require(keygen.first?.split(separator: " ").dropFirst(3).first.map(String.init))
        let coordinator = try #require(run.log.first { $0.hasPrefix("neumeta-coordinator run") }, "coordinator not started: \(run.log)")
        #expect(coordinator.contains("--resume") && coordinator.contains("--config \(state)/cluster.yaml"), "\(coordinator)")
        #expect(coordinator.contains("--keys \(privateKeys)"), "the coordinator reads the private keys: \(coordinator)")
        #expect(coordinator.hasSuffix("--rounds 7 --skip-evaluation"), "the script's arguments go to the coordinator: \(coordinator)")
        let workerKeys = try FileManager.default.contentsOfDirectory(atPath: "\(state)/worker-keys")
        #expect(Set(workerKeys) == ["worker.key", "coordinator.pub"], "the workers' key directory holds \(workerKeys)")
        #expect(!FileManager.default.fileExists(atPath: privateKeys), "the private key directory outlived the job")
        let coordinatorStep = try #require(run.log.first { $0.hasPrefix("srun") && $0.contains("neumeta-coordinator") })
        #expect(coordinatorStep.contains("--nodelist=127.0.0.1") && coordinatorStep.contains("--nodes=1"), "\(coordinatorStep)")
        let workerStep = try #require(run.log.first { $0.hasPrefix("srun") && $0.contains("neumeta-worker") }, "workers not started: \(run.log)")
        for option in ["--nodes=2", "--ntasks-per-node=1", "--exclude=127.0.0.1"] {
            #expect(workerStep.contains(option), "worker step lacks \(option): \(workerStep)")
        }
        let worker = try #require(run.log.first { $0.hasPrefix("neumeta-worker") })
        #expect(worker.contains("--connect tcp://127.0.0.1:") && worker.contains("--keys \(state)/worker-keys") && worker.contains("--name worker-fakenode"), "\(worker)")
        // Workers start only after the coordinator.
        let order = run.log.map { $0.hasPrefix("neumeta-coordinator run") ? 1 : $0.hasPrefix("neumeta-worker") ? 2 : 0 }.filter { $0 > 0 }
        #expect(order.first == 1, "workers started before the coordinator: \(run.log)")

        // The job's cluster.yaml is deploy/cluster.yaml moved into the state directory.
        let config = try #require(try YAML.documents(run.state.appendingPathComponent("cluster.yaml")).first)
        #expect(YAML.dig(config, "checkpoints", "directory") as? String == "\(state)/checkpoints")
        #expect(YAML.dig(config, "keys", "directory") as? String == "\(state)/keys")
        #expect(!YAML.strings(config).contains { $0.value.hasPrefix("/var/lib/neumeta") || $0.value.hasPrefix("/etc/neumeta") },
                "system paths left in the job's cluster.yaml")

        // A requeued job (same state) makes fresh keys and keeps the job's cluster.yaml.
        try "# edited\n".write(to: run.state.appendingPathComponent("cluster.yaml"), atomically: true, encoding: .utf8)
        let again = try Self.runSlurmScript(state: run.state)
        defer { try? FileManager.default.removeItem(at: again.directory) }
        #expect(again.result.status == 0, "\(again.result.combined)")
        #expect(again.log.filter { $0.contains("keygen") }.count == 1, "keys not made afresh on requeue: \(again.log)")
        #expect(try Repo.text(run.state.appendingPathComponent("cluster.yaml")) == "# edited\n", "the job's cluster.yaml was rewritten")
    }

    @Test(.timeLimit(.minutes(2))) func slurmScriptFailsWhenTheCoordinatorDiesBeforeListening() throws {
        let run = try Self.runSlurmScript(coordinatorSeconds: 0, coordinatorStatus: 1, listening: false)
        defer { try? FileManager.default.removeItem(at: run.directory) }
        #expect(run.result.status != 0 && !run.result.timedOut, "the job should fail: \(run.result.combined)")
        #expect(!run.log.contains { $0.hasPrefix("neumeta-worker") }, "workers started without a coordinator: \(run.log)")
    }

    @Test(.timeLimit(.minutes(2))) func slurmScriptStopsWorkersThatOutliveTheCoordinator() throws {
        let run = try Self.runSlurmScript(workerSeconds: 120)
        defer { try? FileManager.default.removeItem(at: run.directory) }
        #expect(run.result.status == 0 && !run.result.timedOut, "\(run.result.combined)")
        #expect(run.seconds < 30, "the script waited \(run.seconds) s for a hung worker (grace 1 s)")
    }

    // MARK: systemd

    @Test func systemdUnitsHaveTheRequiredSettings() throws {
        let coordinator = try unitFile(Repo.deploy.appendingPathComponent("systemd/neumeta-coordinator.service"))
        let worker = try unitFile(Repo.deploy.appendingPathComponent("systemd/neumeta-worker@.service"))
        for (name, unit) in [("coordinator", coordinator), ("worker", worker)] {
            for section in ["Unit", "Service", "Install"] { #expect(unit[section] != nil, "\(name): no [\(section)]") }
            let service = unit["Service"] ?? [:]
            let required: [(String, String)] = [("User", "neumeta"), ("Restart", "on-failure"), ("ProtectSystem", "strict"),
                                                ("PrivateTmp", "yes"), ("NoNewPrivileges", "yes"), ("ReadWritePaths", "/var/lib/neumeta"),
                                                ("IPAddressDeny", "any"), ("ProtectProc", "invisible"), ("PrivateUsers", "yes"),
                                                ("SystemCallFilter", "@system-service"), ("MemoryDenyWriteExecute", "yes")]
            for (key, value) in required {
                #expect(service[key]?.contains(value) == true, "\(name): [Service] \(key)=\(value) (have \(service[key] ?? []))")
            }
            // Limits: descriptors for ZeroMQ's connections, a memory ceiling below the machine's.
            #expect((service["LimitNOFILE"]?.last).flatMap { Int($0) }.map { $0 >= 4096 } == true, "\(name): LimitNOFILE ≥ 4096")
            #expect(service["MemoryMax"]?.last?.hasSuffix("G") == true, "\(name): MemoryMax in GiB (have \(service["MemoryMax"] ?? []))")
            #expect(unit["Install"]?["WantedBy"]?.contains("multi-user.target") == true, "\(name): WantedBy=multi-user.target")
            #expect(service["ExecStart"]?.count == 1, "\(name): one ExecStart")
        }
        let coordinatorStart = coordinator["Service"]?["ExecStart"]?.first ?? ""
        #expect(coordinatorStart.hasPrefix("/usr/local/bin/neumeta-coordinator run "), "\(coordinatorStart)")
        for part in ["--resume", "--config /etc/neumeta/cluster.yaml"] {
            #expect(coordinatorStart.contains(part), "coordinator ExecStart lacks \(part)")
        }
        let workerStart = worker["Service"]?["ExecStart"]?.first ?? ""
        #expect(workerStart.hasPrefix("/usr/local/bin/neumeta-worker "), "\(workerStart)")
        for part in ["--connect ${NEUMETA_CONNECT}", "--keys /etc/neumeta/keys", "--key-name %i", "--name %i"] {
            #expect(workerStart.contains(part), "worker ExecStart lacks \(part)")
        }
        #expect(worker["Service"]?["EnvironmentFile"] == ["/etc/neumeta/worker.env"])
        #expect(worker["Service"]?["RestartPreventExitStatus"]?.contains("3") == true, "a refused worker (exit 3) must not be restarted")

        // ${VAR} expands to one (possibly empty) word, so worker.env must define each one.
        let environment = try Repo.text(Repo.deploy.appendingPathComponent("systemd/worker.env"))
        let defined = Set(environment.split(separator: "\n").compactMap { line -> String? in
            line.hasPrefix("#") ? nil : line.split(separator: "=", maxSplits: 1).first.map(String.init)
        })
        for variable in Self.bracedVariables(workerStart) {
            #expect(defined.contains(variable), "worker ExecStart uses ${\(variable)}, which worker.env does not set")
        }
    }

    /// `systemd-analyze verify` on copies of the units whose ExecStart points at stand-in
    /// executables (verify refuses a unit whose binary does not exist, and /usr/local/bin has
    /// none here); every other setting is verified as written. Any message about the units,
    /// e.g. an unknown or misplaced key (only a warning, exit 0), fails the test. Then the
    /// offline security score keeps the hardening from being dropped by accident.
    @Test(.enabled(if: Tools.systemdAnalyze != nil, "systemd-analyze is not installed: unit files checked as INI only"))
    func systemdAnalyzeVerifiesTheUnits() throws {
        let analyze = try #require(Tools.systemdAnalyze)
        let dir = try Tools.temporaryDirectory("systemd")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bin = dir.appendingPathComponent("bin")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        for program in ["neumeta-coordinator", "neumeta-worker"] {
            try Tools.writeExecutable("#!/bin/sh\nexit 0\n", to: bin.appendingPathComponent(program))
        }
        for unit in ["neumeta-coordinator.service", "neumeta-worker@.service"] {
            let text = try Repo.text(Repo.deploy.appendingPathComponent("systemd/\(unit)"))
            #expect(text.contains("/usr/local/bin/"), "\(unit): ExecStart expected under /usr/local/bin")
            try text.replacingOccurrences(of: "/usr/local/bin/", with: bin.path + "/")
                .write(to: dir.appendingPathComponent(unit), atomically: true, encoding: .utf8)
        }
        let units = ["neumeta-coordinator.service", "neumeta-worker@node1.service"].map { dir.appendingPathComponent($0).path }
        let verify = try Tools.run(analyze, ["verify"] + units, timeout: 60)
        #expect(verify.status == 0, "systemd-analyze verify: \(verify.combined)")
        let complaints = verify.combined.split(separator: "\n").filter { $0.contains("neumeta-") }
        #expect(complaints.isEmpty, "systemd-analyze verify: \(complaints.joined(separator: "\n"))")

        // Exposure 0–10 (shown ×10 as the threshold); these units score 1.1 with systemd 252.
        for unit in units {
            let security = try Tools.run(analyze, ["security", "--offline=yes", "--threshold=15", unit], timeout: 60)
            #expect(security.status == 0, "systemd-analyze security: exposure above 1.5 for \(unit):\n\(security.combined.split(separator: "\n").suffix(3).joined(separator: "\n"))")
        }
    }

    // MARK: Docker image

    /// The build stage installs every system library Package.swift links; the runtime stage
    /// the matching runtime packages and the dataset; the binaries are copied over; the user
    /// is the one the Kubernetes pods run as.
    @Test func dockerfileBuildsAndShipsWhatThePackageNeeds() throws {
        let text = try Repo.text(Repo.deploy.appendingPathComponent("Dockerfile")).replacingOccurrences(of: "\\\n", with: " ")
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        var stages: [[String]] = []
        for line in lines {
            if line.uppercased().hasPrefix("FROM ") { stages.append([line]) } else if !stages.isEmpty { stages[stages.count - 1].append(line) }
        }
        #expect(stages.count == 2, "expected a build stage and a runtime stage")
        guard stages.count >= 2 else { return }
        let build = stages[0], runtime = stages[stages.count - 1]
        #expect(build[0].lowercased().hasPrefix("from swift:6.0-bookworm as "), "build stage: \(build[0])")
        let buildAlias = build[0].split(separator: " ").last.map(String.init) ?? ""
        #expect(runtime[0].lowercased().hasPrefix("from debian:bookworm"), "runtime stage: \(runtime[0])")
        let buildRuns = build.filter { $0.hasPrefix("RUN ") }.joined(separator: " ")
        let runtimeRuns = runtime.filter { $0.hasPrefix("RUN ") }.joined(separator: " ")
        #expect(buildRuns.contains("swift build -c release --static-swift-stdlib"), "build with --static-swift-stdlib: the runtime stage has no Swift runtime")

        // Package.swift's apt providers, and what each needs at run time.
        let runtimeOf = ["libzmq3-dev": "libzmq5", "libsodium-dev": "libsodium23", "libopenblas-dev": "libopenblas0",
                         "libjpeg-dev": "libjpeg62-turbo", "libpng-dev": "libpng16-16", "zlib1g-dev": "zlib1g"]
        let manifest = try Repo.text(Repo.root.appendingPathComponent("Package.swift"))
        let providers = try Regex(#"\.apt\(\[([^\]]*)\]\)"#)
        let devPackages = manifest.matches(of: providers).flatMap { match in
            (match.output[1].substring.map(String.init) ?? "").split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: " \"")) }
        }
        #expect(devPackages.count >= 6, "found \(devPackages) in Package.swift")
        let words = { (s: String) in Set(s.split(whereSeparator: { $0.isWhitespace }).map(String.init)) }
        let readme = try Repo.text(Repo.readme)
        for dev in devPackages {
            #expect(words(buildRuns).contains(dev), "build stage does not install \(dev)")
            let lib = try #require(runtimeOf[dev], "Package.swift needs \(dev): add its runtime package to the Dockerfile and this table")
            #expect(words(runtimeRuns).contains(lib), "runtime stage does not install \(lib)")
            #expect(!words(runtimeRuns).contains(dev), "runtime stage installs the build package \(dev)")
            #expect(readme.contains(lib), "deploy/README.md does not list the runtime package \(lib)")
        }
        #expect(words(runtimeRuns).contains("dataset-fashion-mnist"), "runtime stage installs dataset-fashion-mnist")
        for program in ["neumeta-coordinator", "neumeta-worker"] {
            #expect(runtime.contains { $0.hasPrefix("COPY --from=\(buildAlias) ") && $0.contains(program) }, "runtime stage copies \(program) from \(buildAlias)")
        }
        #expect(runtime.contains("EXPOSE \(Self.port)/tcp"), "EXPOSE \(Self.port)/tcp")
        let user = try #require(runtime.last { $0.hasPrefix("USER ") }, "the runtime stage sets a USER")
        let uid = Int(user.dropFirst(5).split(separator: ":").first ?? "")
        #expect(uid != nil && uid != 0, "USER must be a numeric non-root uid (runAsNonRoot can only check numbers): \(user)")
        for pod in try Kustomization.base().objects() where pod.podSpec != nil {
            #expect(YAML.dig(pod.podSpec, "securityContext", "runAsUser") as? Int == uid, "\(pod.id) runs as a different uid than the image's USER")
        }
    }

    // MARK: README

    @Test func readmeCoversEveryTarget() throws {
        let readme = try Repo.text(Repo.readme)
        for heading in ["## systemd", "## Slurm", "## Kubernetes", "## Docker image"] {
            #expect(readme.contains("\n\(heading)\n"), "deploy/README.md has no section \(heading)")
        }
        #expect(readme.contains("\(Self.port)/tcp"), "deploy/README.md states the firewall rule (\(Self.port)/tcp)")
        for command in ["keygen", "--resume", "authorized_workers", "docker build -f deploy/Dockerfile", "sbatch", "kubectl apply -k deploy/kubernetes",
                        "systemctl enable --now neumeta-coordinator", "metrics.jsonl"] {
            #expect(readme.contains(command), "deploy/README.md does not mention \(command)")
        }
        // The port the Slurm script defaults to.
        let sbatch = try Repo.text(Repo.deploy.appendingPathComponent("slurm/neumeta.sbatch"))
        #expect(sbatch.contains("NEUMETA_PORT:-\(Self.port)"), "neumeta.sbatch's default port")
    }

    // MARK: Helpers

    /// The names in $(NAME) references (Kubernetes expansion in command and args).
    static func dollarParenVariables(_ word: String) -> [String] {
        word.matches(of: /\$\(([A-Za-z_][A-Za-z0-9_]*)\)/).map { String($0.output.1) }
    }

    /// The names in ${NAME} references (systemd expansion to exactly one word).
    static func bracedVariables(_ line: String) -> [String] {
        line.matches(of: /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/).map { String($0.output.1) }
    }
}
