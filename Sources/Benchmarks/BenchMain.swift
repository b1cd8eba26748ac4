import ArgumentParser
import Foundation
import NeuMeta

/// `neumeta-bench`: the benchmarks, outside the product executables (see docs/benchmarks.md).
/// The `cluster` part starts `neumeta-coordinator run` from the same build folder.
@main
enum BenchMain {
    static func main() {
        BLASRuntime.prepareProcess()
        Bench.main()
    }
}

/// The training recipes (`neumeta-coordinator`'s `Recipe` has the same cases and settings).
typealias Recipe = ClusterConfig.Recipe

/// Options every compute command takes (as `neumeta-coordinator`'s).
struct BLASOptions: ParsableArguments {
    @Option(help: "OpenBLAS kernel to force (e.g. Haswell, SkylakeX, Zen); default: detected.")
    var blasCore: String?

    @Option(help: "Compute threads (default: one per core). Kernels split their work across these.")
    var threads: Int?

    @Option(help: "OpenBLAS threads inside each BLAS call (default 1: the compute threads already split products).")
    var blasThreads: Int?

    func apply() {
        BLASRuntime.configureThreads(threads: threads, blasThreads: blasThreads)
    }
}

/// Writes a line to standard error (progress; standard output is for the figures).
func log(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Prints `object` as one line of JSON; non-finite numbers (JSON has none) become null.
func printJSON(_ object: [String: Any]) {
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
        print(#"{"error":"unencodable JSON object"}"#)
        return
    }
    print(String(decoding: data, as: UTF8.self))
}
