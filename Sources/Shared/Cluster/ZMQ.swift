import CZeroMQ
import Foundation

/// A minimal, safe Swift layer over libzmq: contexts, sockets, frames, poll. Every failing call
/// throws `ZMQ.Error` carrying libzmq's `zmq_strerror` text. CURVE options live in
/// `ZMQ+Curve.swift`.
public enum ZMQ {
    /// A failed libzmq call: which operation, errno, and libzmq's text for it.
    public struct Error: Swift.Error, Equatable, CustomStringConvertible {
        public let operation: String
        public let code: Int32
        public var message: String { String(cString: zmq_strerror(code)) }
        public var description: String { "\(operation): \(message)" }
        /// The call timed out or would block (EAGAIN).
        public var isTimeout: Bool { code == EAGAIN }
    }

    /// Throws the current errno if `rc` is −1.
    static func check(_ rc: Int32, _ operation: @autoclosure () -> String) throws {
        if rc == -1 { throw Error(operation: operation(), code: zmq_errno()) }
    }

    /// A ZeroMQ context (thread-safe; owns the I/O thread). Sockets keep their context alive;
    /// it is terminated when the last socket is gone.
    public final class Context: @unchecked Sendable {
        let handle: UnsafeMutableRawPointer

        /// `ioThreads`: libzmq's I/O threads, which frame, encrypt (CURVE) and decrypt every
        /// message. Each connection lives on one of them, so a coordinator serving several
        /// workers encrypts their gradients and parameters in parallel only with as many.
        public init(ioThreads: Int = 1) throws {
            guard let h = zmq_ctx_new() else { throw Error(operation: "zmq_ctx_new", code: zmq_errno()) }
            handle = h
            if ioThreads != 1 { try check(zmq_ctx_set(h, ZMQ_IO_THREADS, Int32(max(1, ioThreads))), "zmq_ctx_set(ZMQ_IO_THREADS)") }
        }

        deinit {
            while zmq_ctx_term(handle) == -1 && zmq_errno() == EINTR {}
        }
    }

    /// Socket types this project uses.
    public enum SocketType: Sendable {
        /// Coordinator: one socket, many workers, addressed by routing id.
        case router
        /// Worker: talks to the coordinator.
        case dealer
        /// ZAP handler (request/reply).
        case rep
        /// One end of an in-process wake-up channel between two threads.
        case pair

        var raw: Int32 {
            switch self {
            case .router: ZMQ_ROUTER
            case .dealer: ZMQ_DEALER
            case .rep: ZMQ_REP
            case .pair: ZMQ_PAIR
            }
        }
    }

    /// One received frame, owning its `zmq_msg_t` (no copy of the payload on receive).
    public final class Frame: @unchecked Sendable {
        let message: UnsafeMutablePointer<zmq_msg_t>

        /// An empty frame to receive into.
        init() {
            message = .allocate(capacity: 1)
            zmq_msg_init(message)
        }

        /// A frame holding a copy of `bytes` (tests and small control frames).
        public init(bytes: [UInt8]) {
            message = .allocate(capacity: 1)
            zmq_msg_init_size(message, bytes.count)
            if !bytes.isEmpty { bytes.withUnsafeBytes { zmq_msg_data(message).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        }

        deinit {
            zmq_msg_close(message)
            message.deallocate()
        }

        /// The payload; valid while this frame is alive.
        public var bytes: UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(start: zmq_msg_data(message), count: zmq_msg_size(message))
        }

        /// A copy of the payload.
        public var array: [UInt8] { withExtendedLifetime(self) { Array(bytes) } }

        /// Connection metadata of the message, e.g. "User-Id" (set by the ZAP handler to the
        /// peer's Z85 public key) or "Peer-Address".
        public func property(_ name: String) -> String? {
            zmq_msg_gets(message, name).map { String(cString: $0) }
        }
    }

    /// Readiness of several sockets: `readable[i]` for `sockets[i]`. Waits at most `timeout`.
    public static func poll(_ sockets: [Socket], timeout: Duration) throws -> [Bool] {
        var items = sockets.map { zmq_pollitem_t(socket: $0.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0) }
        let ms = Int(Socket.milliseconds(timeout))
        while true {
            let rc = zmq_poll(&items, Int32(items.count), ms)
            if rc >= 0 { break }
            if zmq_errno() != EINTR { throw Error(operation: "zmq_poll", code: zmq_errno()) }
        }
        return withExtendedLifetime(sockets) { items.map { $0.revents & Int16(ZMQ_POLLIN) != 0 } }
    }

    /// Whether this libzmq was built with `capability` ("curve", "ipc", …).
    public static func has(_ capability: String) -> Bool { zmq_has(capability) == 1 }
}

extension ZMQ {
    /// A ZeroMQ socket. Not thread-safe: use it from one thread at a time (handing it to
    /// another thread is fine, as ZeroMQ allows with a memory barrier such as a thread start).
    ///
    /// Defaults: linger 0, so closing never blocks on unsent messages; sends wait at most
    /// `defaultSendTimeout`, then throw an error whose `isTimeout` is true. (A DEALER blocks in
    /// send while it has no usable peer — e.g. its coordinator is down or refused the CURVE
    /// handshake — so without a bound a worker could hang there forever. A ROUTER never blocks:
    /// it drops messages for unknown peers unless `setRouterMandatory`.)
    public final class Socket: @unchecked Sendable {
        let handle: UnsafeMutableRawPointer
        public let context: Context
        public let type: SocketType
        private var closed = false

        public init(_ context: Context, _ type: SocketType) throws {
            guard let h = zmq_socket(context.handle, type.raw) else { throw Error(operation: "zmq_socket", code: zmq_errno()) }
            handle = h; self.context = context; self.type = type
            try setOption(ZMQ_LINGER, Int32(0))
            try setSendTimeout(Self.defaultSendTimeout)
        }

        /// How long a send may block by default: one heartbeat timeout (3 s).
        public static let defaultSendTimeout = WireProtocol.heartbeatTimeout

        deinit { close() }

        /// Closes the socket (idempotent).
        public func close() {
            guard !closed else { return }
            closed = true
            zmq_close(handle)
        }

        // MARK: Options

        public func setOption(_ option: Int32, _ value: Int32) throws {
            var v = value
            try check(zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size), "zmq_setsockopt(\(option))")
        }

        public func setOption(_ option: Int32, _ value: Int64) throws {
            var v = value
            try check(zmq_setsockopt(handle, option, &v, MemoryLayout<Int64>.size), "zmq_setsockopt(\(option))")
        }

        public func setOption(_ option: Int32, bytes: [UInt8]) throws {
            try bytes.withUnsafeBytes { try check(zmq_setsockopt(handle, option, $0.baseAddress, $0.count), "zmq_setsockopt(\(option))") }
        }

        /// A string option, e.g. `ZMQ_LAST_ENDPOINT`.
        public func stringOption(_ option: Int32) throws -> String {
            var buffer = [CChar](repeating: 0, count: 1024)
            var size = buffer.count
            try check(zmq_getsockopt(handle, option, &buffer, &size), "zmq_getsockopt(\(option))")
            return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }

        /// How long a blocked send waits before failing with EAGAIN (nil: forever).
        public func setSendTimeout(_ timeout: Duration?) throws { try setOption(ZMQ_SNDTIMEO, Self.milliseconds(timeout)) }

        /// The identity a DEALER presents to a ROUTER (1…255 bytes).
        public func setRoutingID(_ id: [UInt8]) throws { try setOption(ZMQ_ROUTING_ID, bytes: id) }

        /// Largest inbound frame accepted; a peer sending more is disconnected by libzmq.
        public func setMaxMessageSize(_ bytes: Int) throws { try setOption(ZMQ_MAXMSGSIZE, Int64(bytes)) }

        /// ROUTER: fail (EHOSTUNREACH) instead of silently dropping messages to unknown peers.
        public func setRouterMandatory(_ on: Bool) throws { try setOption(ZMQ_ROUTER_MANDATORY, Int32(on ? 1 : 0)) }

        /// ROUTER: a new connection presenting a routing id already in use takes it over (a worker
        /// that reconnects keeps its name) instead of being refused.
        public func setRouterHandover(_ on: Bool) throws { try setOption(ZMQ_ROUTER_HANDOVER, Int32(on ? 1 : 0)) }

        /// Messages each peer may queue for this socket to receive (ZMQ_RCVHWM; libzmq then stops
        /// reading that connection). A multipart message counts once, whatever its size.
        public func setReceiveHighWaterMark(_ messages: Int) throws { try setOption(ZMQ_RCVHWM, Int32(messages)) }

        /// How long `close` may wait to flush unsent messages (default 0).
        public func setLinger(_ duration: Duration) throws { try setOption(ZMQ_LINGER, Self.milliseconds(duration)) }
        /// Closes a connection whose security handshake has not finished within `duration` (ZMQ_HANDSHAKE_IVL).
        public func setHandshakeTimeout(_ duration: Duration) throws { try setOption(ZMQ_HANDSHAKE_IVL, Self.milliseconds(duration)) }
        /// Connections the kernel queues for a listening socket before they are accepted
        /// (ZMQ_BACKLOG, listen(2)'s backlog; libzmq's default is 100, the kernel caps it at
        /// net.core.somaxconn). Set before `bind`.
        public func setBacklog(_ connections: Int) throws { try setOption(ZMQ_BACKLOG, Int32(clamping: connections)) }

        /// `d` in whole milliseconds, clamped to 0…Int32.max; nil → −1 (libzmq's "forever").
        static func milliseconds(_ d: Duration?) -> Int32 {
            guard let d else { return -1 }
            let ms = d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
            return Int32(clamping: max(0, ms))
        }

        // MARK: Connections

        public func bind(_ endpoint: String) throws { try check(zmq_bind(handle, endpoint), "zmq_bind(\(endpoint))") }
        public func connect(_ endpoint: String) throws { try check(zmq_connect(handle, endpoint), "zmq_connect(\(endpoint))") }
        public func disconnect(_ endpoint: String) throws { try check(zmq_disconnect(handle, endpoint), "zmq_disconnect(\(endpoint))") }

        /// Connection events of this socket, as its monitor reports them.
        public enum Event: Equatable, Sendable {
            /// The transport connected (TCP); the security handshake follows.
            case connected
            case handshakeSucceeded
            /// The handshake failed: `reason` says how (for an authentication failure, the
            /// ZAP status code the peer sent, e.g. 400).
            case handshakeFailed(reason: String)
            /// The peer refused the handshake for now (ZAP status 300, a temporary error): try later.
            case handshakeDeferred
            case disconnected
        }

        /// Starts a monitor of this socket's connection events (call before `connect`) and
        /// returns the PAIR socket they arrive on; read them with `receiveEvent`.
        public func monitor() throws -> Socket {
            let endpoint = "inproc://monitor-\(UInt(bitPattern: handle))-\(UInt32.random(in: 0...UInt32.max))"
            let events = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED
                | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
            try check(zmq_socket_monitor(handle, endpoint, events), "zmq_socket_monitor")
            let pair = try Socket(context, .pair)
            try pair.connect(endpoint)
            return pair
        }

        /// The next event on a monitor socket (from `monitor`), waiting at most `timeout`.
        public func receiveEvent(timeout: Duration) throws -> Event? {
            while let frames = try receive(timeout: timeout) {
                // Frame 1: u16 event, u32 value (native byte order); frame 2: the endpoint.
                guard let first = frames.first, first.bytes.count >= 6 else { continue }
                let event = Int32(first.bytes.loadUnaligned(as: UInt16.self)), value = first.bytes.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
                switch event {
                case ZMQ_EVENT_CONNECTED: return .connected
                case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: return .handshakeSucceeded
                case ZMQ_EVENT_DISCONNECTED: return .disconnected
                case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH where value == 300: return .handshakeDeferred
                case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: return .handshakeFailed(reason: "authentication refused (status \(value))")
                case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: return .handshakeFailed(reason: "protocol error (code \(value))")
                case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: return .handshakeFailed(reason: "no detail (errno \(value))")
                default: continue
                }
            }
            return nil
        }

        /// The endpoint actually bound last (resolves "tcp://127.0.0.1:*" to the chosen port).
        public func lastEndpoint() throws -> String { try stringOption(ZMQ_LAST_ENDPOINT) }

        // MARK: Sending

        /// Sends `frames` as one multipart message (each frame copied by libzmq).
        public func send(frames: [[UInt8]]) throws {
            for (i, frame) in frames.enumerated() {
                let flags = i + 1 < frames.count ? ZMQ_SNDMORE : 0
                try sendCopy(frame, flags: flags)
            }
        }

        /// Sends a protocol message, prefixed by `routingID` on a ROUTER.
        ///
        /// The header frame is small and copied. Tensor frames are handed to libzmq without a
        /// copy (`zmq_msg_init_data`): the message retains the tensor's immutable storage and
        /// libzmq's free callback releases it once the bytes are on the wire (or dropped). A
        /// broadcast to N workers therefore shares one buffer, and the caller may change its own
        /// parameters immediately — the tensor is a snapshot, never the live buffer.
        public func send(_ message: Message, to routingID: [UInt8]? = nil) throws {
            let encoded = try message.encoded()
            if let routingID { try sendCopy(routingID, flags: ZMQ_SNDMORE) }
            try sendCopy(encoded.header, flags: encoded.tensors.isEmpty ? 0 : ZMQ_SNDMORE)
            for (i, tensor) in encoded.tensors.enumerated() {
                let frames = tensor.frameRanges
                for (j, range) in frames.enumerated() {
                    let last = i + 1 == encoded.tensors.count && j + 1 == frames.count
                    try sendZeroCopy(tensor, bytes: range, flags: last ? 0 : ZMQ_SNDMORE)
                }
            }
        }

        private func sendCopy(_ bytes: [UInt8], flags: Int32) throws {
            while true {
                let rc = bytes.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
                if rc >= 0 { return }
                if zmq_errno() != EINTR { throw Error(operation: "zmq_send", code: zmq_errno()) }
            }
        }

        /// Sends bytes `bytes` of `tensor`'s frame as one frame, without a copy (each frame
        /// retains the storage until libzmq is done with it).
        private func sendZeroCopy(_ tensor: WireTensor, bytes: Range<Int>, flags: Int32) throws {
            var msg = zmq_msg_t()
            if bytes.isEmpty {
                zmq_msg_init(&msg)
            } else {
                let hint = Unmanaged.passRetained(tensor.storage).toOpaque()
                let start = UnsafeMutableRawPointer(tensor.storage.base) + bytes.lowerBound
                let rc = zmq_msg_init_data(&msg, start, bytes.count, { _, hint in
                    if let hint { Unmanaged<WireTensor.Storage>.fromOpaque(hint).release() }
                }, hint)
                if rc == -1 {
                    Unmanaged<WireTensor.Storage>.fromOpaque(hint).release()
                    throw Error(operation: "zmq_msg_init_data", code: zmq_errno())
                }
            }
            while true {
                if zmq_msg_send(&msg, handle, flags) >= 0 { return }  // libzmq owns msg now
                let code = zmq_errno()
                if code != EINTR {
                    zmq_msg_close(&msg)  // runs the free callback
                    throw Error(operation: "zmq_msg_send", code: code)
                }
            }
        }

        // MARK: Receiving

        /// The next multipart message, or nil if none arrives within `timeout`.
        /// All parts of a multipart message arrive together, so only the wait is bounded.
        public func receive(timeout: Duration) throws -> [Frame]? {
            guard try ZMQ.poll([self], timeout: timeout)[0] else { return nil }
            var frames: [Frame] = []
            repeat {
                let frame = Frame()
                while zmq_msg_recv(frame.message, handle, ZMQ_DONTWAIT) == -1 {
                    let code = zmq_errno()
                    if code == EAGAIN && frames.isEmpty { return nil }  // poll raced with another reader
                    if code != EINTR { throw Error(operation: "zmq_msg_recv", code: code) }
                }
                frames.append(frame)
            } while zmq_msg_more(frames[frames.count - 1].message) == 1
            return frames
        }
    }
}
