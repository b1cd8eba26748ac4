import CZeroMQ
import Foundation

/// A 32-byte CURVE key (public or secret), written as 40 characters of Z85 (ZeroMQ RFC 32).
public struct CurveKey: Hashable, Sendable, CustomStringConvertible {
    /// The 32 raw key bytes.
    public let bytes: [UInt8]

    /// Key from raw bytes; nil unless exactly 32.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    /// Key from its Z85 text; nil unless 40 valid Z85 characters.
    public init?(z85: String) {
        guard z85.utf8.count == 40 else { return nil }
        var out = [UInt8](repeating: 0, count: 32)
        guard zmq_z85_decode(&out, z85) != nil else { return nil }
        bytes = out
        guard self.z85 == z85 else { return nil }  // digits that overflow a 32-bit group
    }

    /// Key from a NUL-terminated Z85 buffer filled in by libzmq.
    init?(z85 text: [CChar]) {
        self.init(z85: String(decoding: text.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    /// The 40-character Z85 text.
    public var z85: String {
        var text = [CChar](repeating: 0, count: 41)
        _ = bytes.withUnsafeBufferPointer { zmq_z85_encode(&text, $0.baseAddress, 32) }
        return String(decoding: text.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var description: String { z85 }
}

/// A CURVE key pair.
public struct CurveKeyPair: Sendable, Equatable {
    public let `public`: CurveKey
    public let secret: CurveKey

    /// A fresh random key pair (libzmq's `zmq_curve_keypair`, libsodium underneath).
    public static func generate() throws -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41), sec = [CChar](repeating: 0, count: 41)
        try ZMQ.check(zmq_curve_keypair(&pub, &sec), "zmq_curve_keypair")
        guard let p = CurveKey(z85: pub), let s = CurveKey(z85: sec) else {
            throw ZMQ.Error(operation: "zmq_curve_keypair", code: EINVAL)
        }
        return CurveKeyPair(public: p, secret: s)
    }

    /// The pair of `secret` (the public key is derived from it).
    public init(secret: CurveKey) throws {
        var pub = [CChar](repeating: 0, count: 41)
        try ZMQ.check(zmq_curve_public(&pub, secret.z85), "zmq_curve_public")
        guard let p = CurveKey(z85: pub) else { throw ZMQ.Error(operation: "zmq_curve_public", code: EINVAL) }
        self.public = p; self.secret = secret
    }

    init(public: CurveKey, secret: CurveKey) { self.public = `public`; self.secret = secret }
}

/// Why a key file could not be used.
public enum KeyError: Error, Equatable, CustomStringConvertible {
    case missing(path: String)
    case unreadable(path: String, reason: String)
    case malformed(path: String, line: Int, reason: String)
    /// A secret key readable by group or others: refused, as ssh refuses such private keys.
    case permissionsTooOpen(path: String, mode: Int)
    case exists(path: String)
    case writeFailed(path: String, reason: String)
    /// Worker names become file names: 1…64 of A–Z a–z 0–9 - _ . (not leading), unique, not "coordinator".
    case invalidWorkerName(String)

    public var description: String {
        switch self {
        case let .missing(p): "\(p): no such key file (create keys with `neumeta-coordinator keygen --out DIR`)"
        case let .unreadable(p, r): "\(p): \(r)"
        case let .malformed(p, l, r): "\(p):\(l): \(r)"
        case let .permissionsTooOpen(p, m):
            "\(p): secret key has mode \(String(m, radix: 8)); it must not be readable by group or others (chmod 600 \(p.components(separatedBy: " → ").last ?? p))"
        case let .exists(p): "\(p) already exists; refusing to overwrite a key"
        case let .writeFailed(p, r): "\(p): \(r)"
        case let .invalidWorkerName(n): "invalid or duplicate worker name \"\(n)\" (use 1–64 of A–Z a–z 0–9 - _ .)"
        }
    }
}

/// CURVE key files.
///
/// - `NAME.key`: the Z85 secret key on one line (mode 0600; loading refuses a file that group
///   or others can read — an error, not a warning, since a leaked secret defeats CURVE).
/// - `NAME.pub`: the Z85 public key on one line.
/// - `authorized_workers`: the allow-list, one Z85 public key per line, optionally followed by
///   whitespace and free text (the worker's name); blank lines and lines starting with `#` are
///   comments. (`#` is a Z85 digit, but never the first of a 32-byte key: a 5-character group
///   encodes < 2³², so its first digit is at most `%`.)
public enum KeyStore {
    public static let coordinatorName = "coordinator"
    public static let allowListName = "authorized_workers"

    /// Writes `coordinator.key/.pub`, one `NAME.key/.pub` per worker name, and
    /// `authorized_workers` listing the workers' public keys; creates `directory` (0700) if
    /// needed. Never overwrites an existing file. Returns the worker key pairs by name.
    @discardableResult
    public static func generate(into directory: URL, workers: [String] = ["worker"]) throws -> (coordinator: CurveKeyPair, workers: [String: CurveKeyPair]) {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let names = [coordinatorName] + workers
        for name in workers {
            guard isValidWorkerName(name), Set(names).count == names.count else { throw KeyError.invalidWorkerName(name) }
        }
        for name in names {
            for ext in ["key", "pub"] where FileManager.default.fileExists(atPath: directory.appendingPathComponent("\(name).\(ext)").path) {
                throw KeyError.exists(path: directory.appendingPathComponent("\(name).\(ext)").path)
            }
        }
        let allowList = directory.appendingPathComponent(allowListName)
        if FileManager.default.fileExists(atPath: allowList.path) { throw KeyError.exists(path: allowList.path) }

        func create(_ name: String) throws -> CurveKeyPair {
            let pair = try CurveKeyPair.generate()
            try write(pair.secret.z85 + "\n", to: directory.appendingPathComponent("\(name).key"), mode: 0o600)
            try write(pair.public.z85 + "\n", to: directory.appendingPathComponent("\(name).pub"), mode: 0o644)
            return pair
        }
        let coordinator = try create(coordinatorName)
        var pairs: [String: CurveKeyPair] = [:]
        var text = "# Worker public keys admitted by the coordinator: one Z85 key per line, then an optional name.\n"
        for name in workers {
            let pair = try create(name)
            pairs[name] = pair
            text += "\(pair.public.z85) \(name)\n"
        }
        try write(text, to: allowList, mode: 0o644)
        return (coordinator, pairs)
    }

    /// Adds a worker key pair `NAME.key/.pub` to an existing key directory and appends its
    /// public key to `authorized_workers` (the one step that admits another worker; the
    /// coordinator reads the allow-list when it starts). Never overwrites a key file.
    @discardableResult
    public static func addWorker(_ name: String, to directory: URL) throws -> CurveKeyPair {
        guard isValidWorkerName(name), name != coordinatorName else { throw KeyError.invalidWorkerName(name) }
        let allowList = directory.appendingPathComponent(allowListName)
        guard FileManager.default.fileExists(atPath: allowList.path) else { throw KeyError.missing(path: allowList.path) }
        for ext in ["key", "pub"] where FileManager.default.fileExists(atPath: directory.appendingPathComponent("\(name).\(ext)").path) {
            throw KeyError.exists(path: directory.appendingPathComponent("\(name).\(ext)").path)
        }
        let pair = try CurveKeyPair.generate()
        try write(pair.secret.z85 + "\n", to: directory.appendingPathComponent("\(name).key"), mode: 0o600)
        try write(pair.public.z85 + "\n", to: directory.appendingPathComponent("\(name).pub"), mode: 0o644)
        let existing = try Data(contentsOf: allowList)
        let handle = try FileHandle(forWritingTo: allowList)
        defer { try? handle.close() }
        try handle.seekToEnd()
        // A hand-edited list may lack its final newline; the new key must start its own line.
        let separator = existing.last.map { $0 == UInt8(ascii: "\n") ? "" : "\n" } ?? ""
        try handle.write(contentsOf: Data("\(separator)\(pair.public.z85) \(name)\n".utf8))
        try handle.synchronize()
        return pair
    }

    /// Worker names become file names: 1…64 of A–Z a–z 0–9 - _ . (not leading).
    /// Whether `name` is a safe worker name: 1…64 of A–Z a–z 0–9 - _ . and not starting with
    /// a dot — what key files are named after and what the coordinator admits in a hello (no
    /// control, format, line-separator or bidirectional characters can reach a log).
    public static func isValidWorkerName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64 && !name.hasPrefix(".")
            && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
    }

    /// The key pair of the secret key file at `url`.
    /// A symbolic link (as Kubernetes mounts secrets) is followed: the mode checked is the
    /// target's. When `NAME.pub` lies beside `NAME.key`, the pair must match — a public key
    /// pasted into the secret file is named as such instead of failing later at the handshake.
    public static func loadSecret(_ url: URL) throws -> CurveKeyPair {
        let target = url.resolvingSymlinksInPath()
        let attributes: [FileAttributeKey: Any]
        do { attributes = try FileManager.default.attributesOfItem(atPath: target.path) } catch { throw KeyError.missing(path: url.path) }
        let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue ?? 0
        guard mode & 0o077 == 0 else {
            throw KeyError.permissionsTooOpen(path: target.path == url.path ? url.path : "\(url.path) → \(target.path)", mode: mode)
        }
        let key = try singleKey(url)
        let pair = try CurveKeyPair(secret: key)
        let sibling = url.deletingPathExtension().appendingPathExtension("pub")
        if url.pathExtension == "key", FileManager.default.fileExists(atPath: sibling.path), let published = try? loadPublic(sibling) {
            guard published != key else {
                throw KeyError.malformed(path: url.path, line: 1, reason: "holds the public key (the same as \(sibling.lastPathComponent)), not the secret key")
            }
            guard published == pair.public else {
                throw KeyError.malformed(path: url.path, line: 1, reason: "this secret key does not belong to the public key in \(sibling.lastPathComponent)")
            }
        }
        return pair
    }

    /// The public key in the file at `url`.
    public static func loadPublic(_ url: URL) throws -> CurveKey { try singleKey(url) }

    /// The allow-listed keys of an `authorized_workers` file, each with the rest of its line
    /// (the worker's name, possibly empty).
    public static func loadAllowList(_ url: URL) throws -> [(key: CurveKey, name: String)] {
        var keys: [(CurveKey, String)] = []
        for (number, line) in try lines(url) {
            let words = line.split(whereSeparator: \.isWhitespace)
            guard let first = words.first, !first.hasPrefix("#") else { continue }
            guard let key = CurveKey(z85: String(first)) else {
                throw KeyError.malformed(path: url.path, line: number, reason: "expected a 40-character Z85 key, found \"\(first.prefix(60))\"")
            }
            keys.append((key, words.dropFirst().joined(separator: " ")))
        }
        return keys
    }

    /// The one key in a `.key`/`.pub` file (comment lines allowed, as in the allow-list).
    private static func singleKey(_ url: URL) throws -> CurveKey {
        let list = try loadAllowList(url)
        guard list.count == 1 else {
            throw KeyError.malformed(path: url.path, line: 1, reason: "expected exactly one Z85 key, found \(list.count)")
        }
        return list[0].key
    }

    private static func lines(_ url: URL) throws -> [(Int, String)] {
        guard FileManager.default.fileExists(atPath: url.path) else { throw KeyError.missing(path: url.path) }
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw KeyError.unreadable(path: url.path, reason: "\(error)") }
        guard data.count <= 1 << 20 else { throw KeyError.unreadable(path: url.path, reason: "larger than 1 MiB") }
        let text = String(decoding: data, as: UTF8.self)
        return text.split(separator: "\n", omittingEmptySubsequences: false).enumerated().map { ($0.offset + 1, String($0.element)) }
    }

    /// Creates `url` with `mode` from the start (O_EXCL, so never through an existing file or
    /// link), writes `text` and fsyncs it.
    private static func write(_ text: String, to url: URL, mode: mode_t) throws {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw KeyError.writeFailed(path: url.path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        guard fchmod(fd, mode) == 0 else { throw KeyError.writeFailed(path: url.path, reason: String(cString: strerror(errno))) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(fd) == 0 else {
            throw KeyError.writeFailed(path: url.path, reason: String(cString: strerror(errno)))
        }
    }
}
