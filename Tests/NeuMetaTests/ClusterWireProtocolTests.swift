import Foundation
import Testing
@testable import NeuMeta

/// Frames of `message` as byte arrays (header, then tensors).
func wireFrames(_ message: Message) throws -> [[UInt8]] {
    let encoded = try message.encoded()
    return [encoded.header] + encoded.tensors.flatMap { t in
        t.withUnsafeFrameBytes { bytes in t.frameRanges.map { Array(bytes[$0]) } }
    }
}

/// Decodes byte-array frames through real `ZMQ.Frame`s, as a socket would deliver them.
func wireDecode(_ frames: [[UInt8]]) throws(WireError) -> Message {
    try Message.decode(frames.map(ZMQ.Frame.init(bytes:)))
}

@Suite struct ClusterWireProtocolTests {
    static func terms(correct: Int = 17) -> LossTerms {
        var t = LossTerms()
        t.crossEntropy = 2.3; t.normRegularizer = 17.25; t.reconstruction = 0.125; t.total = 2.4; t.correct = correct; t.samples = 128
        return t
    }

    /// One of every kind, with awkward float values (NaN payload, −0, ∞, subnormal).
    static let samples: [Message] = [
        .hello(workerName: "gpu-node-07 ✓", protocolVersion: WireProtocol.version, dataFingerprint: String(repeating: "ab", count: 32)),
        .welcome(jobSpec: Array(#"{"family":"lenet","rounds":3}"#.utf8), round: 12,
                 baseWeights: WireTensor([1, -0.0, .infinity, Float(nan: 0x1234, signaling: false), .leastNonzeroMagnitude])),
        .welcome(jobSpec: [], round: 0, baseWeights: WireTensor([])),
        .refuse(reason: "data fingerprint differs from the coordinator's"),
        .work(round: 3, blocks: [0, 2, 5, 65_535]),
        .work(round: WireProtocol.maxRound, blocks: []),
        .result(round: 7, block: 4, terms: [terms(), terms(correct: 3)], seconds: 0.25),
        .heartbeat,
        .goodbye,
        .gradientPiece(round: 7, block: 1, offset: 4096, values: WireTensor((0..<1000).map { Float($0) * 0.001 - 0.3 })),
        .parameterHead(round: 8, offset: 1 << 20, values: WireTensor([2, 7, 1, 8])),
    ]

    @Test func everyMessageRoundTrips() throws {
        #expect(Set(Self.samples.map(\.kind)).count == MessageKind.allCases.count)
        for message in Self.samples {
            let frames = try wireFrames(message)
            #expect(frames.count == 1 + message.kind.tensorCount)
            #expect(Array(frames[0].prefix(4)) == WireProtocol.magic)
            #expect(try wireDecode(frames) == message)
        }
    }

    /// Tensors over one frame size travel in several frames (2.5 MiB of floats: 1 + 1 + 0.5 MiB)
    /// and come back whole; a missing, extra, short or long frame is rejected with the frame it
    /// concerns. A gradient piece is at most one frame, in float32 or bfloat16, and a worker's
    /// message of more frames than a piece is refused before it is decoded.
    @Test func largeTensorsTravelInFrames() throws {
        let count = 5 * WireProtocol.frameBytes / 8
        let values = (0..<count).map { Float($0 % 128) * 0.25 - 7 }  // 8 significant bits: exact in bfloat16
        let message = Message.parameterHead(round: 1, offset: 0, values: WireTensor(values))
        // (Sizes and equality are computed first: a failed #expect would print megabytes of frames.)
        let frames = try wireFrames(message), sizes = frames.map(\.count)
        #expect(sizes.dropFirst() == [WireProtocol.frameBytes, WireProtocol.frameBytes, WireProtocol.frameBytes / 2])
        let roundTrips = try wireDecode(frames) == message
        #expect(roundTrips)
        let bf16 = values.prefix(WireProtocol.frameBytes / 2).withUnsafeBufferPointer { WireTensor(bfloat16Rounding: $0) }
        let halfFrames = try wireFrames(.gradientPiece(round: 1, block: 0, offset: 0, values: bf16))
        let halfSizes = halfFrames.map(\.count)
        #expect(halfSizes.dropFirst() == [WireProtocol.frameBytes])
        guard case let .gradientPiece(_, _, _, decoded) = try wireDecode(halfFrames) else { Issue.record("not a gradient piece"); return }
        let exact = decoded.array == Array(values.prefix(WireProtocol.frameBytes / 2))  // these values are exact in bfloat16
        #expect(exact)
        #expect(throws: WireError.tooLarge(field: "gradient piece", size: WireProtocol.frameBytes + 4, limit: WireProtocol.frameBytes)) {
            try Message.gradientPiece(round: 1, block: 0, offset: 0, values: WireTensor(Array(values.prefix(WireProtocol.frameBytes / 4 + 1))))
                .encoded()
        }

        #expect(throws: WireError.frameCount(expected: 4, found: 3)) { try wireDecode(Array(frames.dropLast())) }
        #expect(throws: WireError.frameCount(expected: 4, found: 5)) { try wireDecode(frames + [[0, 0, 0, 0]]) }
        var short = frames
        short[2].removeLast(4); short[3] += [0, 0, 0, 0]
        #expect(throws: WireError.tensorSize(frame: 2, declaredElements: count, bytes: WireProtocol.frameBytes - 4)) { try wireDecode(short) }
    }

    @Test func headerLayoutIsLittleEndianAndFixed() throws {
        let header = try wireFrames(.work(round: 0x0102, blocks: [7]))[0]
        // magic · version 7 · kind 4 · reserved · body length 16 · round (u64) · count 1 · block 7
        #expect(header == Array("NMC1".utf8) + [7, 0, 4, 0, 16, 0, 0, 0] + [2, 1, 0, 0, 0, 0, 0, 0] + [1, 0, 0, 0] + [7, 0, 0, 0])
    }

    /// A bfloat16 gradient: half the bytes on the wire, widened to binary32 on receipt, rounded
    /// to nearest with ties to even, NaN kept; a bad encoding byte or compute time is rejected.
    @Test func bfloat16GradientsAndComputeSeconds() throws {
        // bfloat16 keeps 7 mantissa bits: 1 + 2⁻⁷ is representable, 1 + 2⁻⁸ (0x3F808000) is
        // halfway between 1 and 1 + 2⁻⁷, 0x3F818000 halfway between 1 + 2⁻⁷ and 1 + 2·2⁻⁷.
        let values: [Float] = [1, -2.5, 1 + 1.0 / 128, 1 + 3.0 / 128, 1 + 1.0 / 512, Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000),
                               .infinity, -0.0, .nan, 3.14159265, Float(bitPattern: 0x0001_16C2)]  // the last: a subnormal ≈ 1e-40
        let tensor = values.withUnsafeBufferPointer { WireTensor(bfloat16Rounding: $0) }
        let message = Message.gradientPiece(round: 1, block: 2, offset: 64, values: tensor)
        let frames = try wireFrames(message)
        #expect(frames[1].count == 2 * values.count)
        guard case let .gradientPiece(_, _, offset, decoded) = try wireDecode(frames) else { Issue.record("not a gradient piece"); return }
        #expect(offset == 64 && decoded.encoding == .float32 && decoded.count == values.count)
        let back = decoded.array
        // Exactly representable values survive; below half rounds down (1 + 2⁻⁹ → 1); halfway
        // cases go to the even neighbour (0x3F808000 → 0x3F80, 0x3F818000 → 0x3F82).
        #expect(back[0] == 1 && back[1] == -2.5 && back[2] == 1 + 1.0 / 128 && back[3] == 1 + 3.0 / 128 && back[4] == 1)
        #expect(back[5].bitPattern == 0x3F80_0000 && back[6].bitPattern == 0x3F82_0000)
        #expect(back[7] == .infinity && back[8].bitPattern == (-0.0 as Float).bitPattern && back[9].isNaN)
        #expect(abs(back[10] - 3.14159265) < 3.14159265 / 256)
        for i in 0..<values.count where values[i].isNormal {  // relative error ≤ 2⁻⁸ (half a 7-bit ulp)
            #expect(abs(back[i] - values[i]) <= abs(values[i]) / 256, "element \(i): \(values[i]) → \(back[i])")
        }

        var bad = frames
        let encodingOffset = bad[0].count - 5  // u8 encoding, then u32 count, end of the header frame
        bad[0][encodingOffset] = 7
        #expect(throws: WireError.outOfRange(field: "gradient encoding", value: 7)) { try wireDecode(bad) }
        bad = frames
        bad[1].removeLast(2)
        #expect(throws: WireError.self) { try wireDecode(bad) }
        #expect(throws: WireError.self) {
            try Message.result(round: 1, block: 2, terms: [Self.terms()], seconds: -1).encoded()
        }
        #expect(throws: WireError.outOfRange(field: "configurations in a block", value: 0)) {
            try Message.result(round: 1, block: 2, terms: [], seconds: 1).encoded()
        }
        var nanSeconds = try wireFrames(.result(round: 1, block: 2, terms: [Self.terms()], seconds: 1))
        #expect(try wireDecode(nanSeconds) == .result(round: 1, block: 2, terms: [Self.terms()], seconds: 1))
        let secondsOffset = nanSeconds[0].count - 8
        for (k, byte) in withUnsafeBytes(of: Double.nan.bitPattern.littleEndian, Array.init).enumerated() { nanSeconds[0][secondsOffset + k] = byte }
        #expect(throws: WireError.self) { try wireDecode(nanSeconds) }
    }

    @Test func helloFromAnotherVersionDecodesSoItCanBeRefused() throws {
        var frames = try wireFrames(.hello(workerName: "old", protocolVersion: 6, dataFingerprint: "x"))
        #expect(try wireDecode(frames) == .hello(workerName: "old", protocolVersion: 6, dataFingerprint: "x"))
        frames = try wireFrames(.heartbeat)
        frames[0][4] = 9
        #expect(throws: WireError.unsupportedVersion(9)) { try wireDecode(frames) }
    }

    @Test func rejectsMalformedFrames() throws {
        let result = try wireFrames(Self.samples[6])
        func expectError(_ expected: WireError, _ frames: [[UInt8]], sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(throws: expected, sourceLocation: sourceLocation) { try wireDecode(frames) }
        }
        expectError(.frameCount(expected: 1, found: 0), [])
        expectError(.headerSize(3), [[1, 2, 3]])
        var bad = result; bad[0][0] = UInt8(ascii: "X")
        expectError(.badMagic, bad)
        bad = result; bad[0][6] = 99
        expectError(.unknownKind(99), bad)
        bad = result; bad[0][7] = 1
        expectError(.reservedByte(1), bad)
        bad = result; bad[0].append(0)
        expectError(.bodyLength(declared: result[0].count - 12, actual: result[0].count - 11), bad)
        expectError(.frameCount(expected: 1, found: 2), result + [[]])
        let head = try wireFrames(Self.samples[9])  // a gradient piece of 1000 floats
        expectError(.frameCount(expected: 2, found: 1), [head[0]])
        expectError(.frameCount(expected: 2, found: 3), head + [[]])
        bad = head; bad[1].removeLast()
        expectError(.tensorSize(frame: 1, declaredElements: 1000, bytes: 3999), bad)
        // correct > samples (first loss terms: after round, block and count)
        bad = result; bad[0][12 + 8 + 4 + 4 + 32] = 200
        expectError(.outOfRange(field: "correct", value: 200), bad)

        var work = try wireFrames(.work(round: 1, blocks: [3, 4]))
        work[0][24] = 4  // first index 4, second 4: not increasing
        expectError(.outOfRange(field: "block", value: 4), work)
        work = try wireFrames(.work(round: 1, blocks: [3]))
        work[0][12 ..< 16] = [0, 0, 0, 0x80]  // round 2³¹ > Int32.max
        expectError(.outOfRange(field: "round", value: 1 << 31), work)

        var hello = try wireFrames(.hello(workerName: "ab", protocolVersion: 1, dataFingerprint: ""))
        hello[0][14] = 0xFF
        expectError(.invalidUTF8(field: "worker name"), hello)
        hello[0][14] = 0x0A
        expectError(.controlCharacter(field: "worker name"), hello)

        // A piece or head must end within the largest tensor (offset at header bytes 24…27 / 20…23).
        var farHead = try wireFrames(.gradientPiece(round: 1, block: 0, offset: 0, values: WireTensor([1, 2])))
        farHead[0][24 ..< 28] = [0xFF, 0xFF, 0xFF, 0x0F]  // 2²⁸ − 1 + 2 elements
        expectError(.outOfRange(field: "piece offset", value: (1 << 28) - 1), farHead)
        farHead = try wireFrames(.parameterHead(round: 1, offset: 0, values: WireTensor([1])))
        farHead[0][20 ..< 24] = [0, 0, 0, 0x10]
        expectError(.outOfRange(field: "head offset", value: 1 << 28), farHead)

        // A huge declared job spec is refused by its length, before any read or allocation.

        var welcome = try wireFrames(.welcome(jobSpec: [1], round: 0, baseWeights: WireTensor([])))
        welcome[0][20 ..< 24] = [0, 0, 0, 0x10]
        expectError(.tooLarge(field: "job spec", size: 0x1000_0000, limit: WireProtocol.maxJobSpecBytes), welcome)
    }

    @Test func encodingRefusesWhatThePeerWouldReject() {
        #expect(throws: WireError.tooLarge(field: "worker name", size: 300, limit: WireProtocol.maxNameBytes)) {
            try Message.hello(workerName: String(repeating: "n", count: 300), protocolVersion: 1, dataFingerprint: "").encoded()
        }
        #expect(throws: WireError.controlCharacter(field: "reason")) { try Message.refuse(reason: "a\nb").encoded() }
        #expect(throws: WireError.outOfRange(field: "block", value: 2)) {
            try Message.work(round: 0, blocks: [3, 2]).encoded()
        }
        #expect(throws: WireError.outOfRange(field: "round", value: -1)) { try Message.work(round: -1, blocks: []).encoded() }
        #expect(throws: WireError.outOfRange(field: "head offset", value: -1)) {
            try Message.parameterHead(round: 0, offset: -1, values: WireTensor([1])).encoded()
        }
    }

    @Test func tensorsAreBitExactAndShareStorage() {
        let t = WireTensor([Float(nan: 7, signaling: false), -0.0])
        #expect(t == t && t != WireTensor([Float(nan: 8, signaling: false), -0.0]) && t != WireTensor([.nan, 0]))
        #expect(!t.isFinite && WireTensor([1, 2]).isFinite)
        let storage = FloatStorage(count: 3)
        storage.base[1] = 5
        let snapshot = WireTensor(copying: storage)
        storage.base[1] = 6
        #expect(snapshot.array == [0, 5, 0])
    }

    /// 20,000 seeded mutations of valid messages and random frame sets: decoding never traps,
    /// and whatever it accepts re-encodes to a message that decodes to the same value.
    @Test func decoderFuzz() throws {
        var rng = SeededRandom(0xF022)
        let valid = try Self.samples.map(wireFrames)
        var accepted = 0, rejected = 0
        for _ in 0..<20_000 {
            var frames = valid[rng.index(below: valid.count)]
            switch rng.index(below: 8) {
            case 0:  // flip bytes anywhere
                for _ in 0...rng.index(below: 4) {
                    let f = rng.index(below: frames.count)
                    guard !frames[f].isEmpty else { continue }
                    frames[f][rng.index(below: frames[f].count)] ^= UInt8.random(in: 1...255, using: &rng)
                }
            case 1:  // overwrite a header field (version…counts) with a random byte
                let i = 4 + rng.index(below: min(frames[0].count - 4, 40))
                frames[0][i] = UInt8.random(in: 0...255, using: &rng)
            case 2:  // truncate a frame
                let f = rng.index(below: frames.count)
                frames[f] = Array(frames[f].prefix(rng.index(below: frames[f].count + 1)))
            case 3:  // extend a frame
                let f = rng.index(below: frames.count)
                frames[f] += (0..<rng.index(below: 9)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 4:  // drop or duplicate a frame
                let f = rng.index(below: frames.count)
                if rng.index(below: 2) == 0 { frames.remove(at: f) } else { frames.insert(frames[f], at: f) }
            case 5:  // a valid header with another message's tensor frames
                frames = [frames[0]] + Array(valid[rng.index(below: valid.count)].dropFirst())
            case 6:  // random frames with a valid magic and version
                frames = (0..<rng.index(below: 4)).map { _ in
                    Array("NMC1".utf8) + [1, 0] + (0..<rng.index(below: 48)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                }
            default:  // entirely random frames
                frames = (0..<rng.index(below: 5)).map { _ in (0..<rng.index(below: 64)).map { _ in UInt8.random(in: 0...255, using: &rng) } }
            }
            do {
                let message = try wireDecode(frames)
                #expect(try wireDecode(wireFrames(message)) == message)
                accepted += 1
            } catch {
                rejected += 1
            }
        }
        #expect(accepted + rejected == 20_000)
        #expect(accepted > 100 && rejected > 10_000, "accepted \(accepted), rejected \(rejected)")
    }
}
