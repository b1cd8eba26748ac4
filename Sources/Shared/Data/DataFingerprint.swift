import Foundation

/// What identifies a data set on disk: the name of each file that is read, its size and the
/// BLAKE2b of its bytes. Workers read the data from their own disks; comparing fingerprints
/// catches a different version, a truncated download or a wrong directory before any gradient
/// is computed from it.
public struct DataFingerprint: Sendable, Equatable, Codable, CustomStringConvertible {
    public struct File: Sendable, Equatable, Codable {
        /// The file's name (no directory: workers keep their data wherever they like).
        public var name: String
        public var size: Int
        /// Lower-case hex of the 32-byte BLAKE2b of the file's bytes.
        public var digest: String

        public init(name: String, size: Int, digest: String) { self.name = name; self.size = size; self.digest = digest }
    }

    /// The data set's name, e.g. "fashion-mnist-train".
    public var dataset: String
    public var files: [File]

    public init(dataset: String, files: [File]) { self.dataset = dataset; self.files = files }

    /// Reads and digests `paths`.
    public static func of(dataset: String, paths: [String]) throws -> DataFingerprint {
        let files = try paths.map { path in
            let bytes = try DataFile.contents(of: path)
            return File(name: URL(fileURLWithPath: path).lastPathComponent, size: bytes.count,
                        digest: bytes.withUnsafeBytes { Digest.blake2bHex($0) })
        }
        return DataFingerprint(dataset: dataset, files: files)
    }

    /// The training split of Fashion-MNIST in `directory`.
    public static func fashionMNIST(directory: String) throws -> DataFingerprint {
        let (images, labels) = try FashionMNIST.files(split: .train, directory: directory)
        return try of(dataset: "fashion-mnist-train", paths: [images, labels])
    }

    /// The training split of an ImageNet-style image folder (`root/train/<class>/…`), one entry
    /// per class: `train/<class>`, the bytes of its images, and the first 16 hex digits of the
    /// BLAKE2b of its manifest — one line per image, its path below the class directory and
    /// its size, and with `contentHashes` the BLAKE2b of its bytes too (reading every image;
    /// without it, names and sizes only, which is quick for 1.28 M files). So a worker whose
    /// folder differs is told which classes differ, and how.
    public static func imageFolder(root: String, contentHashes: Bool = false) throws -> DataFingerprint {
        try imageFolder(try ImageFolderDataset(root: root, split: "train"), contentHashes: contentHashes)
    }

    /// The same for a listing already made. When one entry per class would not fit a hello
    /// (`WireProtocol.maxFingerprintBytes` of `text`: classes beyond about 1,500, or long class
    /// names), runs of k consecutive classes share an entry, `train/<first>..<last>`, whose digest
    /// covers their manifests' digests in order — k the smallest that fits — so differences are
    /// named by the run of classes that holds them.
    public static func imageFolder(_ folder: ImageFolderDataset, contentHashes: Bool = false) throws -> DataFingerprint {
        let dataset = contentHashes ? "image-folder+contents" : "image-folder"
        var classes: [(name: String, size: Int, digest: String)] = []
        for (label, className) in folder.classNames.enumerated() {
            var manifest = "", total = 0
            for index in folder.classStarts[label]..<folder.classStarts[label + 1] {
                let path = folder.path(index)
                var info = stat()
                guard stat(path, &info) == 0 else { throw DataError.unreadable(path: path, reason: String(cString: strerror(errno))) }
                let size = Int(info.st_size)
                total += size
                manifest += String(folder.relativePath(index).utf8.dropFirst(className.utf8.count + 1))! + "\t\(size)"
                if contentHashes {
                    let bytes = try DataFile.contents(of: path)
                    manifest += "\t" + bytes.withUnsafeBytes { Digest.blake2bHex($0) }
                }
                manifest += "\n"
            }
            classes.append((Self.escaped(className), total, Array(manifest.utf8).withUnsafeBytes { Digest.blake2bHex($0) }))
        }
        var perEntry = 1
        while true {
            var entries: [File] = []
            for first in stride(from: 0, to: classes.count, by: perEntry) {
                let run = classes[first..<min(first + perEntry, classes.count)]
                let name = "train/" + run.first!.name + (run.count > 1 ? ".." + run.last!.name : "")
                let digest = run.count == 1 ? run.first!.digest : Array(run.map(\.digest).joined(separator: "\n").utf8).withUnsafeBytes { Digest.blake2bHex($0) }
                entries.append(File(name: name, size: run.reduce(0) { $0 + $1.size }, digest: String(digest.prefix(16))))
            }
            let fingerprint = DataFingerprint(dataset: dataset, files: entries)
            if fingerprint.text.utf8.count <= WireProtocol.maxFingerprintBytes || perEntry >= classes.count { return fingerprint }
            perEntry += max(1, perEntry / 4)
        }
    }

    /// `name` with `%`, spaces, `;` and anything outside printable ASCII percent-encoded, so
    /// that any directory name fits the `text` form.
    static func escaped(_ name: String) -> String {
        var out = ""
        for byte in name.utf8 {
            if byte > 0x20 && byte < 0x7F && byte != UInt8(ascii: "%") && byte != UInt8(ascii: ";") {
                out.append(Character(UnicodeScalar(byte)))
            } else {
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    /// Wire form for the hello message: `dataset;name size digest;name size digest…`.
    public var text: String {
        ([dataset] + files.map { "\($0.name) \($0.size) \($0.digest)" }).joined(separator: ";")
    }

    /// Parses `text`; nil when malformed.
    public init?(text: String) {
        let parts = text.split(separator: ";", omittingEmptySubsequences: false).map(String.init)
        guard let dataset = parts.first, !dataset.isEmpty else { return nil }
        var files: [File] = []
        for part in parts.dropFirst() {
            let fields = part.split(separator: " ").map(String.init)
            guard fields.count == 3, let size = Int(fields[1]), size >= 0 else { return nil }
            files.append(File(name: fields[0], size: size, digest: fields[2]))
        }
        self.init(dataset: dataset, files: files)
    }

    public var description: String {
        "\(dataset) (" + files.map { "\($0.name): \($0.size) bytes, blake2b \($0.digest.prefix(12))…" }.joined(separator: "; ") + ")"
    }

    /// What differs between `self` (expected) and `other` (found), one phrase per difference;
    /// empty when they match.
    public func differences(from other: DataFingerprint) -> [String] {
        var out: [String] = []
        if dataset != other.dataset { out.append("data set is \(other.dataset), expected \(dataset)") }
        let theirs = Dictionary(other.files.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for file in files {
            guard let found = theirs[file.name] else { out.append("\(file.name) is missing"); continue }
            if found.size != file.size {
                out.append("\(file.name) has \(found.size) bytes, expected \(file.size)")
            } else if found.digest != file.digest {
                out.append("\(file.name) has other contents (blake2b \(found.digest.prefix(12))…, expected \(file.digest.prefix(12))…"
                           + (dataset == "image-folder" ? ": other file names or file sizes" : dataset == "image-folder+contents" ? ": other file names, sizes or bytes" : "") + ")")
            }
        }
        let ours = Set(files.map(\.name))
        for file in other.files where !ours.contains(file.name) { out.append("unexpected file \(file.name)") }
        return out
    }
}
