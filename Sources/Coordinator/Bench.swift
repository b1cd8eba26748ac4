import ArgumentParser
import Foundation
import NeuMeta

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure sgemm throughput and the base-network training step (build with -c release).",
        discussion: """
        Prints GFLOP/s of cblas_sgemm at 2048³ and at INR-like shapes (e.g. 5000×256×256), \
        checked against the naive product on a sample of entries, with the OpenBLAS core in \
        use, and the LeNet training step time. Figures are best-of-N over repeated runs.
        """
    )

    @Option(help: "Repetitions per measurement (the best is reported).")
    var repeats = 5

    @Option(help: "Comma-separated parts to run: sgemm, lenet.")
    var parts = "sgemm,lenet"

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @OptionGroup var blas: BLASOptions

    func run() throws {
        blas.apply()
        log(BLASRuntime.summary)
        var results: [String: Any] = ["blas_core": BLASRuntime.coreName, "blas_threads": BLASRuntime.threads]
        let shapes = [(2048, 2048, 2048), (5000, 256, 256), (5000, 256, 102), (256, 5000, 256)]
        var rows: [[String: Any]] = []
        let selected = Set(parts.split(separator: ",").map(String.init))
        for (m, n, k) in shapes where selected.contains("sgemm") {
            let gflops = Self.sgemmGFLOPS(m: m, n: n, k: k, repeats: repeats)
            rows.append(["m": m, "n": n, "k": k, "gflops": gflops])
            if !json { print(String(format: "sgemm %5d×%5d×%5d  %7.1f GFLOP/s  (core %@)", m, n, k, gflops, BLASRuntime.coreName)) }
        }
        results["sgemm"] = rows
        results["sgemm_gflops"] = rows.first?["gflops"]
        if selected.contains("lenet") {
            let step = Self.lenetStepSeconds(width: 32, batch: 128, repeats: max(repeats, 10))
            results["lenet_base_step_ms"] = step * 1000
            if !json { print(String(format: "LeNet w=32 training step (batch 128): %.2f ms  (%.0f images/s)", step * 1000, 128 / step)) }
        }
        if json { printJSON(results) }
    }

    /// Best-of-`repeats` GFLOP/s of C[M×N] = A[M×K]·B[K×N], verified on sampled entries.
    static func sgemmGFLOPS(m: Int, n: Int, k: Int, repeats: Int) -> Double {
        var rng = SeededRandom(7)
        let a = Tensor(zeros: [m, k]), b = Tensor(zeros: [k, n]), c = Tensor(zeros: [m, n])
        for i in 0..<a.count { a[i] = rng.uniform(-1, 1) }
        for i in 0..<b.count { b[i] = rng.uniform(-1, 1) }
        var best = Double.infinity
        for _ in 0...repeats {  // the first run warms up threads and caches
            let t0 = DispatchTime.now().uptimeNanoseconds
            Gemm.sgemm(m: m, n: n, k: k, a: a.data, lda: k, b: b.data, ldb: n, beta: 0, c: c.data, ldc: n)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        for _ in 0..<16 {  // spot-check against a Double dot product
            let i = rng.index(below: m), j = rng.index(below: n)
            var s = 0.0
            for p in 0..<k { s += Double(a[i * k + p]) * Double(b[p * n + j]) }
            precondition(abs(s - Double(c[i * n + j])) <= 1e-3 * Double(k).squareRoot(), "sgemm result wrong at (\(i), \(j))")
        }
        return 2 * Double(m) * Double(n) * Double(k) / best / 1e9
    }

    /// Median seconds of one LeNet forward + backward + Adam step on random data.
    static func lenetStepSeconds(width: Int, batch: Int, repeats: Int) -> Double {
        let net = LeNet(width: width)
        let p = net.makeParameters()
        var rng = SeededRandom(1)
        p.initializeDefault(rng: &rng)
        var adam = AdamW(parameterCount: p.count)
        let x = Tensor(zeros: [batch, 1, 28, 28])
        for i in 0..<x.count { x[i] = rng.normal() }
        let labels = (0..<batch).map { Int32($0 % 10) }
        let dz = Tensor(zeros: [batch, 10])
        var times: [Double] = []
        for _ in 0...repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds
            p.zeroGradients()
            let logits = net.forward(p, input: x, mode: .training)
            labels.withUnsafeBufferPointer { _ = SoftmaxCrossEntropy.forwardBackward(logits: logits, labels: $0.baseAddress!, dLogits: dz) }
            net.backward(p, input: x, dLogits: dz)
            adam.update(values: p.values, gradients: p.gradients)
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        return times.dropFirst().sorted()[times.count / 2 - 1]
    }
}
