import Dispatch
import Foundation

/// The process's compute threads. Kernels split their work into `Parallel.threads` tasks and
/// run them with `DispatchQueue.concurrentPerform`; OpenBLAS itself then runs one thread per
/// call (its own threads would spin against ours), so one setting governs all cores.
public enum Parallel {
    nonisolated(unsafe) private static var threadCount = ProcessInfo.processInfo.activeProcessorCount

    /// Threads used by `forEach`; at least 1.
    public static var threads: Int {
        get { threadCount }
        set { threadCount = max(1, newValue) }
    }

    /// Runs `body(i)` for i in 0..<count, concurrently when more than one thread is configured.
    /// Iterations must touch disjoint memory. A concurrent run is a `Profile` parallel loop.
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        if threadCount <= 1 || count <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        Profile.parallelLoop {
            withoutActuallyEscaping(body) { body in
                let shared = UncheckedSendable(body)
                DispatchQueue.concurrentPerform(iterations: count) { shared.value($0) }
            }
        }
    }

    /// Runs `body(i)` for i in 0..<count like `forEach`, for tasks that each call kernels
    /// single-threaded (kernels that would split themselves again must not be called inside):
    /// when profiling is on, every thread's kernels are recorded, at 1/threads of their time.
    public static func forTasks(_ count: Int, _ body: (Int) -> Void) {
        let recorder = Profile.recorder, threads = min(threadCount, count)
        guard recorder != nil else { return forEach(count, body) }
        forEach(count) { i in Profile.sharing(recorder, threads: threads) { body(i) } }
    }

    /// Splits `0..<total` into at most `threads` contiguous, nearly equal ranges, each at least
    /// `minimum` long (fewer ranges when the work is small), and runs them concurrently.
    public static func forRanges(_ total: Int, minimum: Int = 1, _ body: (Range<Int>) -> Void) {
        let tasks = max(1, min(threadCount, total / max(minimum, 1)))
        if tasks == 1 { body(0..<total); return }
        forEach(tasks) { p in body((p * total / tasks)..<((p + 1) * total / tasks)) }
    }
}

/// Carries a value the caller guarantees is used safely across threads.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
