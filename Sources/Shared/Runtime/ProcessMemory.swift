import Foundation

/// The process's memory as the kernel reports it (/proc), for log lines and the benchmarks.
public enum ProcessMemory {
    /// The process's peak resident set so far (VmHWM), in bytes; 0 where /proc is missing.
    public static func peakResidentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kib = Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") else { return 0 }
        return kib * 1024
    }

    /// This process's resident set size in bytes (/proc/self/statm), or 0 where unavailable.
    public static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Hands memory that malloc holds free back to the system (glibc's `malloc_trim`, looked up
    /// at run time: Swift's Glibc module does not export <malloc.h>), e.g. after an unusually
    /// large message was received and released; a no-op where there is no such function.
    public static func returnFreeMemory() {
        guard let symbol = mallocTrim else { return }
        _ = unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)(0)
    }

    private nonisolated(unsafe) static let mallocTrim = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim")
}
