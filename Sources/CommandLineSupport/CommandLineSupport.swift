import ArgumentParser
import Foundation
import NeuMeta

/// Options every compute command takes.
public struct BLASOptions: ParsableArguments {
    @Option(help: "OpenBLAS kernel to force (e.g. Haswell, SkylakeX, Zen); default: detected.")
    public var blasCore: String?

    @Option(help: "Compute threads (default: one per core). Kernels split their work across these.")
    public var threads: Int?

    @Option(help: "OpenBLAS threads inside each BLAS call (default 1: the compute threads already split products).")
    public var blasThreads: Int?

    public init() {}

    public func apply() {
        BLASRuntime.configureThreads(threads: threads, blasThreads: blasThreads)
    }
}

/// Progress for long work: a live, redrawn line on a terminal (at most 4 redraws a second);
/// when standard error is a log file or pipe, a plain line every 30 seconds instead.
public struct ProgressLine {
    private let terminal = isatty(2) == 1
    private var lastDraw = Date()

    public init() {}

    public mutating func draw(_ text: @autoclosure () -> String) {
        let interval: TimeInterval = terminal ? 0.25 : 30
        guard Date().timeIntervalSince(lastDraw) > interval else { return }
        lastDraw = Date()
        FileHandle.standardError.write(Data(((terminal ? "\r\u{1B}[K" : "") + text() + (terminal ? "" : "\n")).utf8))
    }

    /// Erases the live line before a permanent log line (and restarts the quiet interval).
    public mutating func clear() {
        if terminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) } else { lastDraw = Date() }
    }
}

/// A comma-separated list of positive widths, e.g. "4,8,16"; `option` names the flag in errors.
public func parseWidths(_ text: String, option: String) throws -> [Int] {
    try text.split(separator: ",").map { part in
        guard let w = Int(part.trimmingCharacters(in: .whitespaces)), w >= 1 else {
            throw ValidationError("\(option): '\(part)' is not a positive width")
        }
        return w
    }
}

/// 42s, 3m05s, 1h02m.
public func formatDuration(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%dh%02dm", s / 3600, (s % 3600) / 60)
        : s >= 60 ? String(format: "%dm%02ds", s / 60, s % 60) : "\(s)s"
}

/// Prints `object` as one line of JSON; non-finite numbers (JSON has none) become null.
public func printJSON(_ object: [String: Any]) {
    print(jsonLine(object))
}

/// `object` as one line of JSON, non-finite numbers as null.
public func jsonLine(_ object: [String: Any]) -> String {
    func clean(_ value: Any) -> Any {
        switch value {
        case let d as Double: d.isFinite ? d : NSNull()
        case let f as Float: f.isFinite ? Double(f) : NSNull()
        case let dictionary as [String: Any]: dictionary.mapValues(clean)
        case let array as [Any]: array.map(clean)
        default: value
        }
    }
    guard let data = try? JSONSerialization.data(withJSONObject: clean(object), options: [.sortedKeys]) else {
        return #"{"error":"unencodable JSON object"}"#
    }
    return String(decoding: data, as: UTF8.self)
}
