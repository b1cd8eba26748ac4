import Logging
import Testing
@testable import NeuMeta

/// `--log-level`, taken out of the arguments before the command line is parsed.
@Suite struct LoggingTests {
    @Test func levelOptionIsTakenOutOfTheArguments() throws {
        var arguments = ["run", "--log-level", "warning", "--rounds", "3", "--log-level=DEBUG", "--json"]
        #expect(try PlainLogHandler.takeLevelOption(from: &arguments) == .debug)
        #expect(arguments == ["run", "--rounds", "3", "--json"])

        var none = ["keygen", "--out", "keys", "--", "--log-level", "x"]
        #expect(try PlainLogHandler.takeLevelOption(from: &none) == nil)
        #expect(none == ["keygen", "--out", "keys", "--", "--log-level", "x"])

        for bad in [["--log-level"], ["--log-level", "loud"], ["--log-level="]] {
            var arguments = bad
            #expect(throws: PlainLogHandler.LevelError.self) { try PlainLogHandler.takeLevelOption(from: &arguments) }
        }
    }

    @Test func handlerKeepsLevelAndMetadataPerLogger() {
        var handler = PlainLogHandler(label: "test", logLevel: .warning)
        handler[metadataKey: "name"] = "w1"
        #expect(handler.logLevel == .warning && handler[metadataKey: "name"] == "w1" && handler.label == "test")
    }
}
