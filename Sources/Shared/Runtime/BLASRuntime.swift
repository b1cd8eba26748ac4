import COpenBLAS
import Foundation

/// Which OpenBLAS kernel the process runs on, and the means to choose a better one.
///
/// Debian's OpenBLAS 0.3.21 does not recognise some newer CPUs (AVX-512 server parts) and falls
/// back to a generic kernel at about a fifth of the speed. The kernel is chosen when the library
/// loads, from `OPENBLAS_CORETYPE`, so the fix is to set that variable and re-execute the
/// process once, before any work starts (`prepareProcess`).
public enum BLASRuntime {
    /// Kernel families in increasing order of the instruction sets they need.
    public enum Tier: Int, Comparable, Sendable {
        case generic = 0, avx2 = 1, avx512 = 2, avx512bf16 = 3

        public static func < (a: Tier, b: Tier) -> Bool { a.rawValue < b.rawValue }

        /// The `OPENBLAS_CORETYPE` value that selects this tier's kernels in OpenBLAS 0.3.21.
        public var coreType: String? {
            switch self {
            case .generic: nil
            case .avx2: "Haswell"
            case .avx512: "SkylakeX"
            case .avx512bf16: "Cooperlake"
            }
        }
    }

    /// Environment variable that marks a process as already re-executed (stops loops).
    static let reexecMarker = "NEUMETA_BLAS_REEXEC"

    /// The kernel OpenBLAS chose, e.g. "Haswell", "Zen", "SkylakeX", "Prescott".
    public static var coreName: String { String(cString: openblas_get_corename()) }
    public static var threads: Int { Int(openblas_get_num_threads()) }
    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }

    /// The tier a named OpenBLAS core belongs to.
    public static func tier(ofCore name: String) -> Tier {
        switch name.lowercased() {
        case "cooperlake", "sapphirerapids": .avx512bf16
        case "skylakex": .avx512
        case "haswell", "zen", "skylake": .avx2
        default: .generic
        }
    }

    /// The best tier the CPU supports, from its feature flags (`/proc/cpuinfo` names).
    public static func tier(ofCPUFlags flags: Set<String>) -> Tier {
        let avx512 = ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy(flags.contains)
        if avx512 && flags.contains("avx512_bf16") { return .avx512bf16 }
        if avx512 { return .avx512 }
        if flags.contains("avx2") && flags.contains("fma") { return .avx2 }
        return .generic
    }

    /// The CPU flags of the first processor in /proc/cpuinfo (empty where there is none).
    public static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }

    /// The core type to force, or nil when the loaded kernel already matches the CPU.
    public static func recommendedCoreType(loadedCore: String, cpuFlags: Set<String>) -> String? {
        let want = tier(ofCPUFlags: cpuFlags)
        return tier(ofCore: loadedCore) < want ? want.coreType : nil
    }

    /// Call first in `main`. Re-executes the process once with `OPENBLAS_CORETYPE` set when
    /// (a) `--blas-core NAME` is among the arguments and differs from the loaded core, or
    /// (b) the user set no `OPENBLAS_CORETYPE` and OpenBLAS picked a kernel below what the CPU
    /// supports. Returns normally when no re-execution is needed or possible.
    public static func prepareProcess(arguments: [String] = CommandLine.arguments) {
        let env = ProcessInfo.processInfo.environment
        guard env[reexecMarker] == nil else { return }
        var target: String?
        if let i = arguments.firstIndex(of: "--blas-core"), i + 1 < arguments.count {
            let requested = arguments[i + 1]
            if requested.lowercased() != coreName.lowercased() { target = requested }
        } else if env["OPENBLAS_CORETYPE"] == nil {
            target = recommendedCoreType(loadedCore: coreName, cpuFlags: cpuFlags())
        }
        guard let target else { return }
        setenv("OPENBLAS_CORETYPE", target, 1)
        setenv(reexecMarker, "1", 1)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        execv("/proc/self/exe", argv)
        // execv returned: keep running on the kernel we have.
        unsetenv(reexecMarker)
    }

    /// Compute-thread set-up for a process: `threads` kernel threads (default: one per core) and
    /// `blasThreads` OpenBLAS threads per call (default 1, since kernels split work themselves).
    public static func configureThreads(threads: Int?, blasThreads: Int?) {
        Parallel.threads = threads ?? ProcessInfo.processInfo.activeProcessorCount
        setThreads(blasThreads ?? 1)
    }

    /// One line for start-up logs, e.g. "OpenBLAS core Haswell, 2 threads (CPU tier avx2)".
    public static var summary: String {
        "OpenBLAS core \(coreName) (CPU tier \(tier(ofCPUFlags: cpuFlags()))), \(Parallel.threads) compute thread\(Parallel.threads == 1 ? "" : "s") × \(threads) BLAS thread\(threads == 1 ? "" : "s")"
    }
}
