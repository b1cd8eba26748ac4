import Foundation

/// Opt-in timing of the training step's kernels (for `neumeta-bench`).
///
/// Profiling is per thread: after `Profile.enable(recorder)` the kernels this thread calls —
/// sgemm, im2col/col2im, the INR's coordinate embedding and its element-wise loops — add their
/// wall time (one clock-read pair per call) to `recorder`, filed under the step phase the thread
/// is in (`Profile.phase`), and parallel loops are counted with the allocations made while they
/// run. Kernels split their work over the compute threads inside the call; what is recorded is
/// the calling thread's wall time of the whole call. Work spread as independent tasks, each
/// calling kernels itself (`Profile.sharing`, e.g. the INR's row chunks), files every thread's
/// kernel time divided by the number of compute threads, so the figures stay shares of the
/// step's wall time. Other threads record nothing, and so does this one after `disable()`: a
/// disabled call costs one thread-local lookup and reads no clock. Results never depend on
/// whether profiling is on.
public enum Profile {
    /// The timed kernels. Their times are disjoint (no timed kernel calls another).
    public enum Kernel: Int, CaseIterable, Sendable {
        /// `Gemm.sgemm` (it also counts 2·m·n·k floating-point operations per call).
        case gemm
        /// `im2col` and `col2im`.
        case im2col
        /// INR coordinates with their noise, and the sinusoidal embedding.
        case embedding
        /// The INR's element-wise loops: bias + ReLU, residual update, output scaling, and in
        /// the backward pass the scaling, ReLU masks and bias-gradient column sums.
        case elementwise
    }

    /// Consecutive parts of one training round.
    public enum Phase: Int, CaseIterable, Sendable {
        /// Drawing the round's configurations (`RoundPlan`).
        case plan
        /// INR forward: the target network's weights generated from coordinates.
        case inrForward
        /// Target network forward and backward on the mini-batch, losses and regularisers.
        case targetNetwork
        /// INR backward: the weight gradients back-propagated into the INR's gradients.
        case inrBackward
        /// Gradient summing and averaging, AdamW and EMA.
        case update
        /// Kernel calls outside any phase.
        case none
    }

    /// Accumulated times of one thread's kernels and phases. Only the thread it is enabled on
    /// writes it; read it after `disable()` (it may be handed to the thread that enables it).
    public final class Recorder: @unchecked Sendable {
        /// Nanoseconds and calls per (phase, kernel), flat [phase · kernels + kernel].
        private var kernelTime: [UInt64], kernelCalls: [Int]
        private var gemmFlopCount: [Int]
        private var phaseTime: [UInt64], phaseCalls: [Int], phaseAllocationCount: [Int]
        /// Per phase: parallel loops dispatched, and the allocations made while they ran.
        private var loopCount: [Int], loopAllocationCount: [Int]
        /// Set while a parallel loop runs (an inner one is counted with it).
        private var inLoop = false
        /// The phase kernel times are filed under now.
        fileprivate var current = Phase.none
        /// Heap allocations so far (any monotonic count); read at phase boundaries.
        private let allocationCount: (() -> Int)?

        /// `allocationCount`, if given, is read at every phase boundary to count allocations per phase.
        public init(allocationCount: (() -> Int)? = nil) {
            let p = Phase.allCases.count, k = Kernel.allCases.count
            kernelTime = Array(repeating: 0, count: p * k); kernelCalls = Array(repeating: 0, count: p * k)
            gemmFlopCount = Array(repeating: 0, count: p)
            phaseTime = Array(repeating: 0, count: p); phaseCalls = Array(repeating: 0, count: p)
            phaseAllocationCount = Array(repeating: 0, count: p)
            loopCount = Array(repeating: 0, count: p); loopAllocationCount = Array(repeating: 0, count: p)
            self.allocationCount = allocationCount
        }

        /// Seconds spent in `kernel` during `phase` (all phases when nil).
        public func seconds(_ kernel: Kernel, in phase: Phase? = nil) -> Double {
            Double(sum(kernelTime, kernel, phase)) / 1e9
        }

        /// Calls of `kernel` during `phase` (all phases when nil).
        public func calls(_ kernel: Kernel, in phase: Phase? = nil) -> Int { sum(kernelCalls, kernel, phase) }

        /// 2·m·n·k summed over the sgemm calls during `phase` (all phases when nil).
        public func gemmFlops(in phase: Phase? = nil) -> Int {
            phase.map { gemmFlopCount[$0.rawValue] } ?? gemmFlopCount.reduce(0, +)
        }

        /// Wall seconds spent in `phase`, and how often it was entered.
        public func seconds(in phase: Phase) -> Double { Double(phaseTime[phase.rawValue]) / 1e9 }
        public func entries(of phase: Phase) -> Int { phaseCalls[phase.rawValue] }
        /// Heap allocations during `phase` (0 without an allocation count).
        public func allocations(in phase: Phase) -> Int { phaseAllocationCount[phase.rawValue] }
        /// Parallel loops (`Parallel.forEach` dispatches) during `phase`, and the allocations made
        /// while they ran: each costs a closure box and libdispatch's bookkeeping, a few small
        /// blocks freed at once. `allocations(in:)` minus these is what the rest of the code allocated.
        public func parallelLoops(in phase: Phase) -> Int { loopCount[phase.rawValue] }
        public func parallelLoopAllocations(in phase: Phase) -> Int { loopAllocationCount[phase.rawValue] }

        /// Profiled regions: kernel calls and phase entries (a clock-read pair each) and parallel
        /// loops (two reads of the allocation count).
        public var regions: Int { kernelCalls.reduce(0, +) + phaseCalls.reduce(0, +) + loopCount.reduce(0, +) }

        private func sum<T: BinaryInteger>(_ table: [T], _ kernel: Kernel, _ phase: Phase?) -> T {
            let k = Kernel.allCases.count
            if let phase { return table[phase.rawValue * k + kernel.rawValue] }
            return Phase.allCases.reduce(0) { $0 + table[$1.rawValue * k + kernel.rawValue] }
        }

        fileprivate func add(_ kernel: Kernel, nanoseconds: UInt64, flops: Int) {
            lock.lock()
            defer { lock.unlock() }
            let i = current.rawValue * Kernel.allCases.count + kernel.rawValue
            kernelTime[i] &+= nanoseconds; kernelCalls[i] += 1
            gemmFlopCount[current.rawValue] += flops
        }

        /// Kernels of `Profile.sharing` tasks add from several threads.
        private let lock = NSLock()

        fileprivate func add(_ phase: Phase, nanoseconds: UInt64, allocations: Int) {
            phaseTime[phase.rawValue] &+= nanoseconds; phaseCalls[phase.rawValue] += 1
            phaseAllocationCount[phase.rawValue] += allocations
        }

        fileprivate var allocations: Int { allocationCount?() ?? 0 }

        fileprivate func loop(_ body: () -> Void) {
            guard !inLoop else { return body() }
            let a0 = allocations
            inLoop = true
            body()
            inLoop = false
            loopCount[current.rawValue] += 1
            loopAllocationCount[current.rawValue] += allocations - a0
        }
    }

    private static let key = makeKey()

    /// A new thread-specific-data key (created outside any `precondition`: release builds,
    /// -Ounchecked, do not evaluate them).
    private static func makeKey() -> pthread_key_t {
        var key = pthread_key_t()
        let created = pthread_key_create(&key, nil)
        if created != 0 { fatalError("pthread_key_create failed (\(created))") }
        return key
    }

    /// The recorder of the calling thread, if profiling is on for it.
    static var recorder: Recorder? {
        pthread_getspecific(key).map { Unmanaged<Recorder>.fromOpaque($0).takeUnretainedValue() }
    }

    /// Turns profiling on for the calling thread, recording into `recorder` (kept alive until
    /// `disable`).
    public static func enable(_ recorder: Recorder) {
        disable()
        pthread_setspecific(key, Unmanaged.passRetained(recorder).toOpaque())
    }

    /// Turns profiling off for the calling thread.
    public static func disable() {
        guard let p = pthread_getspecific(key) else { return }
        pthread_setspecific(key, nil)
        Unmanaged<Recorder>.fromOpaque(p).release()
    }

    /// Monotonic nanoseconds.
    public static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
    }

    /// A kernel call being timed; `stop()` files its wall time (divided by `share`).
    public struct Timing {
        let recorder: Recorder, kernel: Kernel, flops: Int, start: UInt64, share: UInt64

        public func stop() { recorder.add(kernel, nanoseconds: (Profile.now() &- start) / share, flops: flops) }
    }

    /// Starts timing a call of `kernel` (`flops`: its operation count, for sgemm), or returns nil
    /// when profiling is off for this thread. Use as `let t = Profile.start(.gemm); defer { t?.stop() }`.
    public static func start(_ kernel: Kernel, flops: Int = 0) -> Timing? {
        guard let r = recorder else { return nil }
        let share = pthread_getspecific(shareKey).map { UInt64(UInt(bitPattern: $0)) } ?? 1
        return Timing(recorder: r, kernel: kernel, flops: flops, start: now(), share: max(share, 1))
    }

    /// Threads sharing the wall time of the calling thread's kernels (unset: 1).
    private static let shareKey = makeKey()

    /// Runs `body` — one task of a parallel loop whose tasks call kernels themselves — with
    /// `recorder` (the loop's caller's) recording this thread's kernels, each at 1/`threads` of
    /// its wall time. Without a recorder it just runs `body`.
    static func sharing(_ recorder: Recorder?, threads: Int, _ body: () -> Void) {
        guard let recorder else { return body() }
        let previous = pthread_getspecific(key), previousShare = pthread_getspecific(shareKey)
        pthread_setspecific(key, Unmanaged.passUnretained(recorder).toOpaque())
        pthread_setspecific(shareKey, UnsafeRawPointer(bitPattern: UInt(max(threads, 1))))
        body()
        pthread_setspecific(key, previous); pthread_setspecific(shareKey, previousShare)
    }

    /// Runs `body`, a parallel loop's dispatch, counting it and its allocations when profiling is
    /// on for this thread (no clock read).
    static func parallelLoop(_ body: () -> Void) {
        guard let r = recorder else { return body() }
        r.loop(body)
    }

    /// Runs `body` as `phase` of the step: its kernels are filed under `phase`, and its wall time
    /// (and allocations, where the recorder counts them) are added to the phase's.
    public static func phase<T>(_ phase: Phase, _ body: () throws -> T) rethrows -> T {
        guard let r = recorder else { return try body() }
        let previous = r.current, a0 = r.allocations, t0 = now()
        r.current = phase
        defer {
            let t = now() &- t0
            r.current = previous
            r.add(phase, nanoseconds: t, allocations: r.allocations - a0)
        }
        return try body()
    }
}
