import Foundation
import Testing
@testable import NeuMeta

@Suite struct ClusterKeysTests {
    static func temporaryDirectory() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("neumeta-keys-\(UUID().uuidString)")
    }

    static func mode(_ url: URL) throws -> Int {
        try ((FileManager.default.attributesOfItem(atPath: url.path)[.posixPermissions] as? NSNumber)?.intValue) ?? -1
    }

    @Test func z85KeysRoundTripAndRejectGarbage() throws {
        let pair = try CurveKeyPair.generate()
        #expect(pair.public.z85.count == 40 && CurveKey(z85: pair.public.z85) == pair.public)
        #expect(try CurveKeyPair(secret: pair.secret) == pair)
        #expect(CurveKey(z85: String(pair.public.z85.dropLast())) == nil)
        #expect(CurveKey(z85: String(repeating: "~", count: 40)) == nil)  // not a Z85 digit
        #expect(CurveKey(z85: String(repeating: "#", count: 40)) == nil)  // overflows a 32-bit group
        #expect(CurveKey(bytes: [1, 2, 3]) == nil)
    }

    @Test func generateWritesPrivateFilesAndAnAllowList() throws {
        let dir = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (coordinator, workers) = try KeyStore.generate(into: dir)
        for name in ["coordinator", "worker"] {
            #expect(try Self.mode(dir.appendingPathComponent("\(name).key")) == 0o600)
            #expect(try Self.mode(dir.appendingPathComponent("\(name).pub")) == 0o644)
        }
        #expect(try KeyStore.loadSecret(dir.appendingPathComponent("coordinator.key")) == coordinator)
        #expect(try KeyStore.loadPublic(dir.appendingPathComponent("coordinator.pub")) == coordinator.public)
        let worker = try #require(workers["worker"])
        #expect(try KeyStore.loadSecret(dir.appendingPathComponent("worker.key")) == worker)
        let allowed = try KeyStore.loadAllowList(dir.appendingPathComponent("authorized_workers"))
        #expect(allowed.map(\.key) == [worker.public] && allowed.map(\.name) == ["worker"])
        #expect(throws: KeyError.exists(path: dir.appendingPathComponent("coordinator.key").path)) {
            try KeyStore.generate(into: dir)
        }
    }

    @Test func loadingRefusesOpenSecretsAndMalformedFiles() throws {
        let dir = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try KeyStore.generate(into: dir, workers: ["w1", "w2"])
        let secret = dir.appendingPathComponent("w1.key")
        chmod(secret.path, 0o640)
        #expect(throws: KeyError.permissionsTooOpen(path: secret.path, mode: 0o640)) { try KeyStore.loadSecret(secret) }
        let missing = dir.appendingPathComponent("nope.key")
        #expect(throws: KeyError.missing(path: missing.path)) { try KeyStore.loadSecret(missing) }

        let list = dir.appendingPathComponent("list")
        let w2 = try KeyStore.loadPublic(dir.appendingPathComponent("w2.pub"))
        try "# admitted workers\n\n   \(w2.z85)   gpu node 2\n#\(w2.z85) retired\n".write(to: list, atomically: true, encoding: .utf8)
        let parsed = try KeyStore.loadAllowList(list)
        #expect(parsed.map(\.key) == [w2] && parsed.map(\.name) == ["gpu node 2"])
        try "\(w2.z85)\nnot-a-key\n".write(to: list, atomically: true, encoding: .utf8)
        #expect(throws: KeyError.malformed(path: list.path, line: 2, reason: "expected a 40-character Z85 key, found \"not-a-key\"")) {
            try KeyStore.loadAllowList(list)
        }
        #expect(throws: KeyError.invalidWorkerName("../evil")) { try KeyStore.generate(into: dir, workers: ["../evil"]) }
    }

    /// Operator mistakes get errors that name the cause: a secret key behind a symbolic link is
    /// judged by its target's mode; a public key pasted into the secret file, or a secret key
    /// that does not match its .pub, is named as such.
    @Test func secretKeyMistakesAreNamed() throws {
        let dir = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (_, workers) = try KeyStore.generate(into: dir, workers: ["node1", "node2"])
        let key = dir.appendingPathComponent("node1.key"), link = dir.appendingPathComponent("link.key")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: key)
        #expect(try KeyStore.loadSecret(link) == workers["node1"])
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: key.path)
        #expect { try KeyStore.loadSecret(link) } throws: { "\($0)".contains("→ \(key.path)") && "\($0)".contains("chmod 600 \(key.path)") }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: key.path)

        try (workers["node1"]!.public.z85 + "\n").write(to: key, atomically: false, encoding: .utf8)
        #expect { try KeyStore.loadSecret(key) } throws: { "\($0)".contains("holds the public key (the same as node1.pub)") }
        try (workers["node2"]!.secret.z85 + "\n").write(to: key, atomically: false, encoding: .utf8)
        #expect { try KeyStore.loadSecret(key) } throws: { "\($0)".contains("does not belong to the public key in node1.pub") }
    }
}
