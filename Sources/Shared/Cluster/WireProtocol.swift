/// The coordinator ⇄ worker wire protocol: the one place that defines its version, messages,
/// frame layouts, limits and timing constants.
///
/// ## Frames
/// A message is one ZeroMQ multipart message: a header frame, then the message's large Float
/// tensors (`WireTensor`: raw little-endian IEEE-754, 4·n bytes, nothing else), each cut into
/// frames of `WireProtocol.frameBytes` (the last one shorter; an empty tensor is one empty
/// frame). Frames let CURVE pipeline: libzmq encrypts and decrypts frame by frame, so the
/// receiver opens frame k while the sender seals frame k + 1, instead of
/// waiting for a whole 7 MB gradient to be sealed before opening any of it. A ROUTER adds the
/// peer's routing-id frame in front; `ZMQ.Socket` strips and adds it, never this file.
///
/// Header frame (all integers little-endian):
///
///     offset size  field
///     0      4     magic "NMC1"
///     4      2     protocol version (`WireProtocol.version`)
///     6      1     kind (`MessageKind` raw value)
///     7      1     reserved, 0
///     8      4     body length B (bytes after this 12-byte prefix; must equal frame size − 12)
///     12     B     body, by kind:
///
///     hello       u16 n, n bytes worker name (UTF-8) · u16 n, n bytes data fingerprint (UTF-8)
///     welcome     u64 round · u32 n, n bytes job spec (JSON) · u32 base-weight count
///                 + tensor frames: permuted base weights (may be empty); the round's parameters
///                 follow as parameter heads
///     refuse      u16 n, n bytes reason (UTF-8)
///     work        u64 round · u32 k · k × u32 block index (strictly increasing)
///     result      u64 round · u32 block · u32 k (the block's configurations, in order) ·
///                 k × (f64 cross-entropy · f64 norm regularizer · f64 reconstruction ·
///                 f64 total · u32 correct · u32 samples) · f64 compute seconds (the block's
///                 gradient went ahead in gradient pieces)
///     gradient piece   u64 round · u32 block · u32 offset · u8 encoding (0 binary32,
///                 1 bfloat16) · u32 count + one tensor frame of at most `frameBytes`:
///                 gradient[offset ..< offset + count] of the block (4 or 2 bytes per element)
///     parameter head   u64 round · u32 offset · u32 count + tensor frames:
///                 parameters[offset ..< offset + count] to use for `round`, one INR head's part
///     heartbeat   (empty)
///     goodbye     (empty)
///
/// `hello`'s and `refuse`'s layouts are frozen across versions (a hello's header version is the
/// worker's protocol version), so a coordinator can always tell who is knocking and refuse with
/// a reason the worker can read; every other kind must carry exactly `WireProtocol.version`.
///
/// Decoding checks the frame count, header size, magic, version, kind, reserved byte, body
/// length, every declared count and length against the bytes actually present, the limits
/// below, UTF-8 validity, and that nothing trails; it throws `WireError`, never traps.
/// Float payloads (loss terms, tensors) are carried bit-exactly, NaN included: see
/// `WireTensor.isFinite`.
///
/// ## Bounded messages
/// Everything a worker sends is one header frame and at most one tensor frame of at most
/// `frameBytes`, so the coordinator's socket limits every frame to `maxInboundFrameBytes`
/// (`ZMQ_MAXMSGSIZE`, which libzmq applies per frame) and treats a message of more frames as a
/// protocol violation. libzmq has no limit on a whole multipart message (it delivers one only
/// once every frame is in), so that violation is answered by dropping and quarantining the
/// sender rather than prevented.
///
/// ## Blocks and heads of a round
/// A round's configurations are cut into blocks (`RoundPlan.configurationsPerBlock`); a block
/// is the unit of work: computed whole by one worker, which sums its configurations' gradients
/// in index order and sends that one sum. Gradients and parameters travel by INR head
/// (`HyperNetwork.headRanges`: one head per generated tensor). A worker sends each head's part
/// of a block's gradient, in pieces of at most `frameBytes` and in order, the moment its
/// backward pass has finished it, then the result (loss terms). The coordinator
/// steps the optimizer on a head as soon as every block's gradient of it is in,
/// and sends the new values as a parameter head of the next round to every worker, which
/// assembles them (a worker that joins, or missed some, gets the round's heads at its start). So sending, stepping and receiving overlap the backward pass
/// of the round's slowest configuration, as bucketed all-reduce does in data-parallel training;
/// only the last head's traffic is left between one round's computation and the next.
public enum WireProtocol {
    /// Bumped on any change to the layouts above, or to what a worker computes from the job
    /// spec (7: `INRConfig.prior`, which a worker of version 6 would ignore).
    public static let version: UInt16 = 7
    /// Bytes per tensor frame (the last frame of a tensor may be shorter), and the most a
    /// gradient piece carries.
    public static let frameBytes = 1 << 20
    /// The largest frame a worker sends (a gradient piece's tensor frame; every header frame a
    /// worker sends is smaller).
    public static let maxInboundFrameBytes = frameBytes
    /// The coordinator's `ZMQ_MAXMSGSIZE`: libzmq checks it on the frame as it travels, which
    /// CURVE wraps in a MESSAGE command (name, nonce, MAC: 33 bytes), so a margin is added.
    public static let maxInboundWireFrameBytes = maxInboundFrameBytes + 4096
    /// Frames of the largest message a worker sends (a gradient piece: header and tensor).
    public static let maxInboundFrames = 2

    /// Frames a tensor of `byteCount` bytes travels in: ⌈bytes / frameBytes⌉, at least 1.
    public static func frameCount(byteCount: Int) -> Int { max(1, (byteCount + frameBytes - 1) / frameBytes) }

    /// The byte ranges of those frames, in order.
    public static func frameRanges(byteCount: Int) -> [Range<Int>] {
        (0..<frameCount(byteCount: byteCount)).map { i in (i * frameBytes)..<min(byteCount, (i + 1) * frameBytes) }
    }
    public static let magic: [UInt8] = Array("NMC1".utf8)
    /// Size of the fixed header prefix in bytes.
    public static let headerPrefixBytes = 12

    // MARK: Limits (decode rejects anything larger)

    /// Longest worker name (bytes of UTF-8).
    public static let maxNameBytes = 256
    /// Longest data fingerprint (bytes of UTF-8; `DataFingerprint.text`): the u16 length's
    /// maximum, room for an image folder of about 1,500 classes (`DataFingerprint.imageFolder`).
    public static let maxFingerprintBytes = 65_535
    /// Longest refusal reason (bytes of UTF-8).
    public static let maxReasonBytes = 4096
    /// Largest job spec (bytes of JSON).
    public static let maxJobSpecBytes = 4 << 20
    /// Configuration and block indices are below this; a work message lists at most this many.
    public static let maxConfigurationsPerRound = 1 << 16
    /// Configurations in one block (a result carries one set of loss terms per configuration).
    public static let maxConfigurationsPerBlock = 4096
    /// Largest round number.
    public static let maxRound = Int(Int32.max)
    /// Largest tensor: 2²⁸ floats = 1 GiB (in `frameBytes` frames). Sockets set
    /// ZMQ_MAXMSGSIZE to one gradient's bytes, so a peer cannot make ZeroMQ buffer more.
    public static let maxTensorElements = 1 << 28
    /// Largest header frame.
    public static let maxHeaderBytes = headerPrefixBytes + maxJobSpecBytes + 64
    /// Largest `samples` in a result's loss terms.
    public static let maxSamples = 1 << 24
    /// Largest compute time a result may report, in seconds (a day).
    public static let maxComputeSeconds = 86_400.0

    // MARK: Timing

    /// The coordinator sends every worker a heartbeat this often; a worker sends one when it
    /// has sent nothing else for this long (its compute must not block that).
    public static let heartbeatInterval: Duration = .seconds(1)
    /// A peer silent for `liveness` heartbeat intervals is considered gone.
    public static let liveness = 3
    /// `liveness · heartbeatInterval`: 3 s.
    public static var heartbeatTimeout: Duration { heartbeatInterval * liveness }
    /// First reconnect delay of a worker; it doubles after each failed attempt…
    public static let reconnectInitialDelay: Duration = .milliseconds(100)
    /// …up to this cap.
    public static let reconnectMaxDelay: Duration = .seconds(5)
    /// A worker holding configurations with no accepted result for this long is dropped and its
    /// work reassigned, even though its heartbeats keep coming (it is stuck, or its work or
    /// result was lost). Generous: one LeNet configuration takes a fraction of a second.
    public static let progressTimeout: Duration = .seconds(60)
    /// A connection must complete its CURVE handshake within this (`ZMQ_HANDSHAKE_IVL` on the
    /// coordinator's socket), so idle unauthenticated connections are closed quickly.
    public static let handshakeTimeout: Duration = .seconds(5)
    /// A worker whose CURVE handshake with the coordinator fails this many times in a row stops
    /// with an error naming the likely cause (keys), instead of retrying forever.
    public static let maxHandshakeFailures = 5
    /// The coordinator logs a stalled round (naming the workers it waits for) after this long
    /// without an accepted result, and again every such interval.
    public static let stallReportInterval: Duration = .seconds(10)
}

/// The kind byte of the header frame.
public enum MessageKind: UInt8, Sendable, CaseIterable {
    case hello = 1, welcome = 2, refuse = 3, work = 4, result = 5, heartbeat = 7, goodbye = 8, gradientPiece = 9, parameterHead = 10

    /// Tensors that follow the header frame (each in `WireProtocol.frameCount` frames).
    public var tensorCount: Int {
        switch self {
        case .welcome, .gradientPiece, .parameterHead: 1
        case .hello, .refuse, .work, .result, .heartbeat, .goodbye: 0
        }
    }
}

/// One protocol message. Rounds and configuration indices are `Int` in Swift and range-checked
/// against `WireProtocol.maxRound` / `maxConfigurationsPerRound` on both encode and decode.
public enum Message: Sendable, Equatable {
    /// Worker → coordinator, first message after connecting.
    case hello(workerName: String, protocolVersion: UInt16, dataFingerprint: String)
    /// Coordinator → worker: the job, the round in progress, and the permuted pretrained
    /// weights (the reconstruction target; empty if none). The round's parameters follow as
    /// parameter heads.
    case welcome(jobSpec: [UInt8], round: Int, baseWeights: WireTensor)
    /// Coordinator → worker: not admitted (version or data mismatch); the worker stops.
    case refuse(reason: String)
    /// Coordinator → worker: compute these blocks of `round` (added to any already assigned;
    /// indices strictly increasing).
    case work(round: Int, blocks: [Int])
    /// Worker → coordinator: the loss terms of each configuration of one block, in index order,
    /// and the seconds the worker spent computing the block (for the coordinator's overhead
    /// figures), after all its gradient pieces.
    case result(round: Int, block: Int, terms: [LossTerms], seconds: Double)
    /// Worker → coordinator: `values` = gradient[offset ..< offset + values.count] of one block
    /// (a piece of at most `frameBytes` of one INR head's part), ahead of its result. It may be
    /// sent as bfloat16; it is always received as binary32.
    case gradientPiece(round: Int, block: Int, offset: Int, values: WireTensor)
    /// Coordinator → worker: parameters[offset ..< offset + values.count] to use for `round`
    /// (one INR head's part); together the heads of a round are its parameters.
    case parameterHead(round: Int, offset: Int, values: WireTensor)
    /// Either direction: still alive.
    case heartbeat
    /// Either direction: leaving (coordinator: training finished).
    case goodbye

    public var kind: MessageKind {
        switch self {
        case .hello: .hello
        case .welcome: .welcome
        case .refuse: .refuse
        case .work: .work
        case .result: .result
        case .gradientPiece: .gradientPiece
        case .parameterHead: .parameterHead
        case .heartbeat: .heartbeat
        case .goodbye: .goodbye
        }
    }
}

/// Why a frame sequence was rejected (or why a message could not be encoded).
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    case frameCount(expected: Int, found: Int)
    case headerSize(Int)
    case badMagic
    case unsupportedVersion(UInt16)
    case unknownKind(UInt8)
    case reservedByte(UInt8)
    case bodyLength(declared: Int, actual: Int)
    case truncated(field: String)
    case trailingBytes(Int)
    case tooLarge(field: String, size: Int, limit: Int)
    case outOfRange(field: String, value: Int)
    case invalidUTF8(field: String)
    case controlCharacter(field: String)
    case tensorSize(frame: Int, declaredElements: Int, bytes: Int)

    public var description: String {
        switch self {
        case let .frameCount(e, f): "expected \(e) frames, got \(f)"
        case let .headerSize(n): "header frame of \(n) bytes (must be \(WireProtocol.headerPrefixBytes)…\(WireProtocol.maxHeaderBytes))"
        case .badMagic: "bad magic (not an NMC1 message)"
        case let .unsupportedVersion(v): "protocol version \(v) (this build speaks \(WireProtocol.version))"
        case let .unknownKind(k): "unknown message kind \(k)"
        case let .reservedByte(b): "reserved header byte is \(b), not 0"
        case let .bodyLength(d, a): "header declares a \(d)-byte body, frame holds \(a)"
        case let .truncated(f): "truncated at \(f)"
        case let .trailingBytes(n): "\(n) unexpected trailing bytes"
        case let .tooLarge(f, s, l): "\(f) of \(s) exceeds the limit \(l)"
        case let .outOfRange(f, v): "\(f) = \(v) out of range"
        case let .invalidUTF8(f): "\(f) is not valid UTF-8"
        case let .controlCharacter(f): "\(f) contains control characters"
        case let .tensorSize(i, n, b): "frame \(i) has \(b) bytes for \(n) declared floats"
        }
    }
}

/// A message ready to send: the header frame and the tensor frames that follow it.
public struct EncodedMessage: Sendable {
    public let header: [UInt8]
    public let tensors: [WireTensor]
}

// MARK: - Encoding

extension Message {
    /// The header frame and tensor frames. Throws when a field exceeds a limit the peer's
    /// decoder would enforce, so nothing is ever sent that the other side must reject.
    public func encoded() throws(WireError) -> EncodedMessage {
        var w = WireWriter()
        w.raw(WireProtocol.magic)
        if case let .hello(_, version, _) = self { w.u16(version) } else { w.u16(WireProtocol.version) }
        w.u8(kind.rawValue)
        w.u8(0)
        w.u32(0)  // body length, patched below
        var tensors: [WireTensor] = []
        switch self {
        case let .hello(name, _, fingerprint):
            try Self.string(name, "worker name", WireProtocol.maxNameBytes, &w)
            try Self.string(fingerprint, "data fingerprint", WireProtocol.maxFingerprintBytes, &w)
        case let .welcome(spec, round, base):
            try w.u64(UInt64(Self.checkRound(round)))
            guard spec.count <= WireProtocol.maxJobSpecBytes else {
                throw .tooLarge(field: "job spec", size: spec.count, limit: WireProtocol.maxJobSpecBytes)
            }
            w.u32(UInt32(spec.count)); w.raw(spec)
            try w.u32(Self.checkTensor(base, "base weights"))
            tensors = [base]
        case let .refuse(reason):
            try Self.string(reason, "reason", WireProtocol.maxReasonBytes, &w)
        case let .work(round, blocks):
            try w.u64(UInt64(Self.checkRound(round)))
            guard blocks.count <= WireProtocol.maxConfigurationsPerRound else {
                throw .tooLarge(field: "block list", size: blocks.count, limit: WireProtocol.maxConfigurationsPerRound)
            }
            w.u32(UInt32(blocks.count))
            var previous = -1
            for b in blocks {
                guard b > previous, b < WireProtocol.maxConfigurationsPerRound else { throw .outOfRange(field: "block", value: b) }
                w.u32(UInt32(b)); previous = b
            }
        case let .result(round, block, terms, seconds):
            try w.u64(UInt64(Self.checkRound(round)))
            guard (0..<WireProtocol.maxConfigurationsPerRound).contains(block) else { throw .outOfRange(field: "block", value: block) }
            w.u32(UInt32(block))
            guard (1...WireProtocol.maxConfigurationsPerBlock).contains(terms.count) else {
                throw .outOfRange(field: "configurations in a block", value: terms.count)
            }
            w.u32(UInt32(terms.count))
            for t in terms {
                w.f64(t.crossEntropy); w.f64(t.normRegularizer); w.f64(t.reconstruction); w.f64(t.total)
                guard (0...WireProtocol.maxSamples).contains(t.samples) else { throw .outOfRange(field: "samples", value: t.samples) }
                guard (0...t.samples).contains(t.correct) else { throw .outOfRange(field: "correct", value: t.correct) }
                w.u32(UInt32(t.correct)); w.u32(UInt32(t.samples))
            }
            guard (0...WireProtocol.maxComputeSeconds).contains(seconds) else {
                throw .outOfRange(field: "compute seconds", value: Int(exactly: seconds.rounded(.towardZero)) ?? -1)
            }
            w.f64(seconds)
        case let .gradientPiece(round, block, offset, values):
            try w.u64(UInt64(Self.checkRound(round)))
            guard (0..<WireProtocol.maxConfigurationsPerRound).contains(block) else { throw .outOfRange(field: "block", value: block) }
            w.u32(UInt32(block))
            try w.u32(Self.checkOffset(offset, values))
            w.u8(values.encoding.rawValue)
            guard values.byteCount <= WireProtocol.frameBytes else {
                throw .tooLarge(field: "gradient piece", size: values.byteCount, limit: WireProtocol.frameBytes)
            }
            try w.u32(Self.checkTensor(values, "gradient piece"))
            tensors = [values]
        case let .parameterHead(round, offset, values):
            try w.u64(UInt64(Self.checkRound(round)))
            try w.u32(Self.checkOffset(offset, values))
            try w.u32(Self.checkTensor(values, "parameter head"))
            tensors = [values]
        case .heartbeat, .goodbye:
            break
        }
        w.patchU32(at: 8, UInt32(w.bytes.count - WireProtocol.headerPrefixBytes))
        return EncodedMessage(header: w.bytes, tensors: tensors)
    }

    private static func string(_ s: String, _ field: String, _ limit: Int, _ w: inout WireWriter) throws(WireError) {
        let bytes = Array(s.utf8)
        guard bytes.count <= limit else { throw .tooLarge(field: field, size: bytes.count, limit: limit) }
        guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { throw .controlCharacter(field: field) }
        w.u16(UInt16(bytes.count)); w.raw(bytes)
    }

    private static func checkRound(_ round: Int) throws(WireError) -> Int {
        guard (0...WireProtocol.maxRound).contains(round) else { throw .outOfRange(field: "round", value: round) }
        return round
    }

    /// A head's offset: the head must end within a largest tensor.
    private static func checkOffset(_ offset: Int, _ t: WireTensor) throws(WireError) -> UInt32 {
        guard offset >= 0, offset <= WireProtocol.maxTensorElements - min(t.count, WireProtocol.maxTensorElements) else {
            throw .outOfRange(field: "head offset", value: offset)
        }
        return UInt32(offset)
    }

    private static func checkTensor(_ t: WireTensor, _ field: String) throws(WireError) -> UInt32 {
        guard t.count <= WireProtocol.maxTensorElements else {
            throw .tooLarge(field: field, size: t.count, limit: WireProtocol.maxTensorElements)
        }
        return UInt32(t.count)
    }
}

// MARK: - Decoding

extension Message {
    /// Decodes received frames (routing-id frame already removed).
    public static func decode(_ frames: [ZMQ.Frame]) throws(WireError) -> Message {
        defer { withExtendedLifetime(frames) {} }  // the buffers point into the frames
        return try decode(buffers: frames.map(\.bytes))
    }

    /// Decodes frames given as raw buffers (valid for the duration of the call).
    static func decode(buffers frames: [UnsafeRawBufferPointer]) throws(WireError) -> Message {
        guard case let .message(message) = try decode(buffers: frames, deferringGradient: false) else {
            preconditionFailure("a gradient piece is decoded whole unless deferred")
        }
        return message
    }

    /// Decodes what a worker sent like `decode`, except that a gradient piece's values stay in
    /// their frame, checked for size but not copied, so the coordinator can decode them straight
    /// into the round's gradient buffer once it knows the piece is wanted. A message of more
    /// frames than any a worker sends is rejected before anything is decoded.
    public static func decodeInbound(_ frames: [ZMQ.Frame]) throws(WireError) -> Inbound {
        defer { withExtendedLifetime(frames) {} }
        guard frames.count <= WireProtocol.maxInboundFrames else {
            throw .frameCount(expected: WireProtocol.maxInboundFrames, found: frames.count)
        }
        switch try decode(buffers: frames.map(\.bytes), deferringGradient: true) {
        case let .message(message): return .message(message)
        case let .gradientPiece(piece): return .gradientPiece(ReceivedGradientPiece(piece, frames: frames))
        }
    }

    /// A gradient piece's header, its values still in frame `tensorFrame` of the message.
    struct GradientPieceHeader {
        let round: Int, block: Int, offset: Int, count: Int
        let encoding: WireTensor.Encoding
        let tensorFrame: Int
    }

    enum Decoded { case message(Message), gradientPiece(GradientPieceHeader) }

    static func decode(buffers frames: [UnsafeRawBufferPointer], deferringGradient: Bool) throws(WireError) -> Decoded {
        guard let headerFrame = frames.first else { throw .frameCount(expected: 1, found: 0) }
        guard (WireProtocol.headerPrefixBytes...WireProtocol.maxHeaderBytes).contains(headerFrame.count) else {
            throw .headerSize(headerFrame.count)
        }
        var r = WireReader(headerFrame)
        guard try r.bytes(4, "magic") == WireProtocol.magic else { throw .badMagic }
        let version = try r.u16("version")
        let rawKind = try r.u8("kind")
        guard let kind = MessageKind(rawValue: rawKind) else { throw .unknownKind(rawKind) }
        guard kind == .hello || kind == .refuse || version == WireProtocol.version else { throw .unsupportedVersion(version) }
        let reserved = try r.u8("reserved")
        guard reserved == 0 else { throw .reservedByte(reserved) }
        let bodyLength = Int(try r.u32("body length"))
        guard bodyLength == r.remaining else { throw .bodyLength(declared: bodyLength, actual: r.remaining) }
        // Tensor kinds: at least one frame per tensor now; the exact count once the sizes are read.
        guard kind.tensorCount == 0 ? frames.count == 1 : frames.count > kind.tensorCount else {
            throw .frameCount(expected: 1 + kind.tensorCount, found: frames.count)
        }
        var nextFrame = 1

        let message: Message
        switch kind {
        case .hello:
            let name = try r.string("worker name", limit: WireProtocol.maxNameBytes)
            let fingerprint = try r.string("data fingerprint", limit: WireProtocol.maxFingerprintBytes)
            message = .hello(workerName: name, protocolVersion: version, dataFingerprint: fingerprint)
        case .welcome:
            let round = try readRound(&r)
            let specLength = Int(try r.u32("job spec length"))
            guard specLength <= WireProtocol.maxJobSpecBytes else {
                throw .tooLarge(field: "job spec", size: specLength, limit: WireProtocol.maxJobSpecBytes)
            }
            let spec = try r.bytes(specLength, "job spec")
            let baseCount = try readCount(&r, "base-weight count")
            try expectFrames(frames, for: [(baseCount, .float32)])
            message = .welcome(jobSpec: spec, round: round, baseWeights: try tensor(frames, &nextFrame, baseCount))
        case .refuse:
            message = .refuse(reason: try r.string("reason", limit: WireProtocol.maxReasonBytes))
        case .work:
            let round = try readRound(&r)
            let k = Int(try r.u32("block count"))
            guard k <= WireProtocol.maxConfigurationsPerRound else {
                throw .tooLarge(field: "block list", size: k, limit: WireProtocol.maxConfigurationsPerRound)
            }
            guard r.remaining == 4 * k else { throw .truncated(field: "block list") }
            var blocks: [Int] = []
            blocks.reserveCapacity(k)
            for _ in 0..<k {
                let b = Int(try r.u32("block"))
                let previous = blocks.last ?? -1
                guard b > previous, b < WireProtocol.maxConfigurationsPerRound else { throw .outOfRange(field: "block", value: b) }
                blocks.append(b)
            }
            message = .work(round: round, blocks: blocks)
        case .result:
            let round = try readRound(&r)
            let block = Int(try r.u32("block"))
            guard block < WireProtocol.maxConfigurationsPerRound else { throw .outOfRange(field: "block", value: block) }
            let k = Int(try r.u32("configurations in a block"))
            guard (1...WireProtocol.maxConfigurationsPerBlock).contains(k) else { throw .outOfRange(field: "configurations in a block", value: k) }
            guard r.remaining == 40 * k + 8 else { throw .truncated(field: "loss terms") }
            var terms: [LossTerms] = []
            terms.reserveCapacity(k)
            for _ in 0..<k {
                var t = LossTerms()
                t.crossEntropy = try r.f64("cross-entropy"); t.normRegularizer = try r.f64("norm regularizer")
                t.reconstruction = try r.f64("reconstruction"); t.total = try r.f64("total")
                t.correct = Int(try r.u32("correct")); t.samples = Int(try r.u32("samples"))
                guard t.samples <= WireProtocol.maxSamples else { throw .outOfRange(field: "samples", value: t.samples) }
                guard t.correct <= t.samples else { throw .outOfRange(field: "correct", value: t.correct) }
                terms.append(t)
            }
            let seconds = try r.f64("compute seconds")
            guard (0...WireProtocol.maxComputeSeconds).contains(seconds) else {
                throw .outOfRange(field: "compute seconds", value: Int(exactly: seconds.rounded(.towardZero)) ?? -1)
            }
            message = .result(round: round, block: block, terms: terms, seconds: seconds)
        case .gradientPiece:
            let round = try readRound(&r)
            let block = Int(try r.u32("block"))
            guard block < WireProtocol.maxConfigurationsPerRound else { throw .outOfRange(field: "block", value: block) }
            let offset = Int(try r.u32("piece offset"))
            let rawEncoding = try r.u8("gradient encoding")
            guard let encoding = WireTensor.Encoding(rawValue: rawEncoding) else {
                throw .outOfRange(field: "gradient encoding", value: Int(rawEncoding))
            }
            let count = try readCount(&r, "gradient piece count")
            guard count * encoding.bytesPerElement <= WireProtocol.frameBytes else {
                throw .tooLarge(field: "gradient piece", size: count * encoding.bytesPerElement, limit: WireProtocol.frameBytes)
            }
            guard offset + count <= WireProtocol.maxTensorElements else { throw .outOfRange(field: "piece offset", value: offset) }
            try expectFrames(frames, for: [(count, encoding)])
            if deferringGradient {
                try checkTensorFrames(frames, nextFrame, count, encoding)
                try r.finish()
                return .gradientPiece(GradientPieceHeader(round: round, block: block, offset: offset, count: count,
                                                          encoding: encoding, tensorFrame: nextFrame))
            }
            message = .gradientPiece(round: round, block: block, offset: offset,
                                     values: try tensor(frames, &nextFrame, count, encoding))
        case .parameterHead:
            let round = try readRound(&r)
            let offset = Int(try r.u32("head offset"))
            let count = try readCount(&r, "parameter head count")
            guard offset + count <= WireProtocol.maxTensorElements else { throw .outOfRange(field: "head offset", value: offset) }
            try expectFrames(frames, for: [(count, .float32)])
            message = .parameterHead(round: round, offset: offset, values: try tensor(frames, &nextFrame, count))
        case .heartbeat:
            message = .heartbeat
        case .goodbye:
            message = .goodbye
        }
        try r.finish()
        return .message(message)
    }

    private static func readRound(_ r: inout WireReader) throws(WireError) -> Int {
        let round = try r.u64("round")
        guard round <= UInt64(WireProtocol.maxRound) else { throw .outOfRange(field: "round", value: Int(truncatingIfNeeded: round)) }
        return Int(round)
    }

    private static func readCount(_ r: inout WireReader, _ field: String) throws(WireError) -> Int {
        let n = Int(try r.u32(field))
        guard n <= WireProtocol.maxTensorElements else { throw .tooLarge(field: field, size: n, limit: WireProtocol.maxTensorElements) }
        return n
    }

    /// Checks that the message has exactly the frames its declared tensors travel in.
    private static func expectFrames(_ frames: [UnsafeRawBufferPointer],
                                     for tensors: [(count: Int, encoding: WireTensor.Encoding)]) throws(WireError) {
        let expected = 1 + tensors.reduce(0) { $0 + WireProtocol.frameCount(byteCount: $1.count * $1.encoding.bytesPerElement) }
        guard frames.count == expected else { throw .frameCount(expected: expected, found: frames.count) }
    }

    /// The tensor of exactly `count` elements stored as `encoding` in the frames from `index` on
    /// (advanced past them), as binary32; every frame must have its exact size.
    private static func tensor(_ frames: [UnsafeRawBufferPointer], _ index: inout Int, _ count: Int,
                               _ encoding: WireTensor.Encoding = .float32) throws(WireError) -> WireTensor {
        let ranges = try checkTensorFrames(frames, index, count, encoding)
        let tensorFrames = Array(frames[index..<(index + ranges.count)])
        index += ranges.count
        return WireTensor(littleEndianFrames: tensorFrames, count: count, encoding: encoding)
    }

    /// Checks that frames from `index` on have exactly the sizes of a tensor of `count`
    /// elements stored as `encoding`; returns their byte ranges.
    @discardableResult
    private static func checkTensorFrames(_ frames: [UnsafeRawBufferPointer], _ index: Int, _ count: Int,
                                          _ encoding: WireTensor.Encoding) throws(WireError) -> [Range<Int>] {
        let ranges = WireProtocol.frameRanges(byteCount: encoding.bytesPerElement * count)
        for (i, range) in ranges.enumerated() where frames[index + i].count != range.count {
            throw .tensorSize(frame: index + i, declaredElements: count, bytes: frames[index + i].count)
        }
        return ranges
    }
}

/// A received message as the coordinator takes it: a gradient piece is left in its frame.
public enum Inbound {
    case message(Message)
    case gradientPiece(ReceivedGradientPiece)
}

/// A gradient piece whose header is decoded and checked and whose values are still in the
/// received frame: `decode(into:)` writes them (as binary32) where the caller wants them.
public struct ReceivedGradientPiece {
    public let round: Int, block: Int, offset: Int, count: Int
    let encoding: WireTensor.Encoding
    private let frames: [ZMQ.Frame]
    private let tensorFrame: Int

    init(_ header: Message.GradientPieceHeader, frames: [ZMQ.Frame]) {
        round = header.round; block = header.block; offset = header.offset; count = header.count
        encoding = header.encoding; tensorFrame = header.tensorFrame; self.frames = frames
    }

    /// The values in the frame.
    public var byteCount: Int { count * encoding.bytesPerElement }

    /// Writes the `count` values to `destination` (exactly `count` long); returns the sum of
    /// their squares (accumulated in Double; NaN or infinite when a value is not finite), from
    /// which the receiver builds a head's L2 norm piece by piece.
    public func decode(into destination: UnsafeMutableBufferPointer<Float>) -> Double {
        precondition(destination.count == count, "decoding \(count) values into a buffer of \(destination.count)")
        guard let out = destination.baseAddress else { return 0 }
        withExtendedLifetime(frames) {
            WireTensor.decode([frames[tensorFrame].bytes], encoding, into: out)
        }
        var squares = 0.0
        for v in UnsafeBufferPointer(destination) {
            guard v.isFinite else { return v.isNaN ? .nan : .infinity }
            squares += Double(v) * Double(v)
        }
        return squares
    }
}
