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

/// Writes a line to standard error (progress; standard output is for the figures).
func log(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
