import CZeroMQ

/// CURVE (RFC 26) security options. The coordinator is the CURVE server: it binds, holds the
/// coordinator secret key and, with a `ZAPHandler` running in the same context, admits only
/// allow-listed client keys. Workers are CURVE clients: they must know the coordinator's
/// public key, so no one can impersonate the coordinator either. A socket without these
/// options speaks NULL (plaintext) and cannot complete a handshake with a CURVE peer.
extension ZMQ.Socket {
    /// Makes this socket a CURVE server with `keys.secret`; ZAP requests carry `zapDomain`.
    public func makeCurveServer(keys: CurveKeyPair, zapDomain: String = ZAPHandler.defaultDomain) throws {
        try setOption(ZMQ_ZAP_DOMAIN, bytes: Array(zapDomain.utf8))
        try setOption(ZMQ_CURVE_SERVER, Int32(1))
        try setOption(ZMQ_CURVE_SECRETKEY, bytes: keys.secret.bytes)
    }

    /// Makes this socket a CURVE client of the server whose public key is `server`.
    public func makeCurveClient(server: CurveKey, keys: CurveKeyPair) throws {
        try setOption(ZMQ_CURVE_SERVERKEY, bytes: server.bytes)
        try setOption(ZMQ_CURVE_PUBLICKEY, bytes: keys.public.bytes)
        try setOption(ZMQ_CURVE_SECRETKEY, bytes: keys.secret.bytes)
    }
}
