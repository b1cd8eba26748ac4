import Foundation
import Logging

/// The executables' log handler: one plain line per message on standard error, as
/// `[name] message` when the logger carries a `name` metadata value (a worker's name) and as
/// the bare message otherwise. No timestamps or levels: the lines read as they did before
/// swift-log, and standard output stays free for results (JSON).
public struct PlainLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public let label: String

    public init(label: String, logLevel: Logger.Level = .info) {
        self.label = label; self.logLevel = logLevel
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let name = event.metadata?["name"] ?? metadata["name"]
        FileHandle.standardError.write(Data(((name.map { "[\($0)] " } ?? "") + event.message.description + "\n").utf8))
    }

    /// Why `--log-level` was not understood.
    public struct LevelError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Levels `--log-level` accepts.
    public static var levelNames: String { Logger.Level.allCases.map(\.rawValue).joined(separator: ", ") }

    /// Removes `--log-level LEVEL` / `--log-level=LEVEL` from `arguments` and returns the last
    /// LEVEL given (nil: none), so that every subcommand accepts the option.
    public static func takeLevelOption(from arguments: inout [String]) throws(LevelError) -> Logger.Level? {
        var level: Logger.Level?, kept: [String] = [], i = 0
        while i < arguments.count {
            let argument = arguments[i]
            if argument == "--" { kept += arguments[i...]; break }
            var value: String?
            if argument == "--log-level" {
                guard i + 1 < arguments.count else { throw LevelError(description: "--log-level needs a value (\(levelNames))") }
                value = arguments[i + 1]; i += 1
            } else if argument.hasPrefix("--log-level=") {
                value = String(argument.dropFirst("--log-level=".count))
            }
            if let value {
                guard let parsed = Logger.Level(rawValue: value.lowercased()) else {
                    throw LevelError(description: "--log-level: '\(value)' is not one of \(levelNames)")
                }
                level = parsed
            } else {
                kept.append(argument)
            }
            i += 1
        }
        arguments = kept
        return level
    }

    /// Sends every `Logger` of this process to a `PlainLogHandler` at `level`.
    public static func bootstrap(level: Logger.Level) {
        LoggingSystem.bootstrap { PlainLogHandler(label: $0, logLevel: level) }
    }
}
