extension Array where Element == String {
    /// The first `limit` elements joined by `separator`, then "… and K more": a list of worker
    /// names that keeps a log line short with hundreds of workers.
    public func abbreviated(limit: Int = 8, separator: String = ", ") -> String {
        count <= limit ? joined(separator: separator) : prefix(limit).joined(separator: separator) + " … and \(count - limit) more"
    }
}
