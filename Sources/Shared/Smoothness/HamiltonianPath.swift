/// A symmetric n × n matrix of non-negative distances between "cities", row-major, in Double.
public struct DistanceMatrix: Sendable, Equatable {
    public let count: Int
    /// values[i·count + j] = d(i, j).
    public let values: [Double]

    public init(count: Int, values: [Double]) {
        precondition(values.count == count * count, "\(values.count) distances for \(count) cities")
        self.count = count
        self.values = values
    }

    /// From rows of Double distances (a square array).
    public init(_ rows: [[Double]]) {
        precondition(rows.allSatisfy { $0.count == rows.count }, "distance rows must form a square matrix")
        self.init(count: rows.count, values: rows.flatMap { $0 })
    }

    /// From rows of Float distances (a square array), widened to Double.
    public init(_ rows: [[Float]]) {
        self.init(rows.map { $0.map(Double.init) })
    }

    @inline(__always) public subscript(i: Int, j: Int) -> Double { values[i * count + j] }

    /// d(i, j) = ‖f_i − f_j‖₁ = Σ_e |f_i[e] − f_j[e]| over equally long feature vectors, each
    /// difference and the sum taken in Double; rows are computed on `Parallel.threads` threads.
    public static func l1(_ features: [[Float]]) -> DistanceMatrix {
        let n = features.count
        let dim = features.first?.count ?? 0
        precondition(features.allSatisfy { $0.count == dim }, "feature vectors of different lengths")
        var values = [Double](repeating: 0, count: n * n)
        values.withUnsafeMutableBufferPointer { out in
            let out = UncheckedSendable(out)
            Parallel.forEach(n) { i in
                features[i].withUnsafeBufferPointer { a in
                    for j in (i + 1)..<n {
                        let sum = features[j].withUnsafeBufferPointer { b in
                            var s = 0.0
                            for e in 0..<dim { s += abs(Double(a[e]) - Double(b[e])) }
                            return s
                        }
                        out.value[i * n + j] = sum
                        out.value[j * n + i] = sum
                    }
                }
            }
        }
        return DistanceMatrix(count: n, values: values)
    }
}

/// How long the heuristic solver may search.
public struct SearchBudget: Sendable, Equatable {
    /// Local-search descents: the first from the constructive start, each further one from a
    /// random perturbation of the best tour so far (iterated local search).
    public var maxIterations: Int
    /// Wall-clock seconds after which no further descent starts; nil for none. A search that
    /// stops on time is no longer a pure function of its seed.
    public var timeLimit: Double?

    public init(maxIterations: Int = 1000, timeLimit: Double? = nil) {
        precondition(maxIterations >= 1, "at least one descent is needed")
        self.maxIterations = maxIterations
        self.timeLimit = timeLimit
    }
}

/// A Hamiltonian path: every city once, in `order`, with `length` = Σ_t d(order[t], order[t+1])
/// (an open path: no edge back to the start).
public struct HamiltonianPath: Sendable, Equatable {
    public let order: [Int]
    public let length: Double

    public init(order: [Int], length: Double) {
        self.order = order
        self.length = length
    }

    /// Σ_t d(order[t], order[t+1]), summed in order.
    public static func length(of order: [Int], in d: DistanceMatrix) -> Double {
        var sum = 0.0
        for t in 0..<max(order.count - 1, 0) { sum += d[order[t], order[t + 1]] }
        return sum
    }

    /// The shortest Hamiltonian path by Held–Karp dynamic programming over subsets:
    ///
    ///     D({j}, j) = 0,   D(S ∪ {k}, k) = min_{j ∈ S} D(S, j) + d(j, k)   (k ∉ S),
    ///
    /// and the optimum is min_j D(all, j). O(2ⁿ·n²) time, O(2ⁿ·n) memory, so n ≤ 16.
    public static func exact(_ d: DistanceMatrix) -> HamiltonianPath {
        let n = d.count
        precondition(n <= 16, "Held–Karp is for n ≤ 16 cities, got \(n)")
        guard n > 1 else { return HamiltonianPath(order: Array(0..<n), length: 0) }
        let full = (1 << n) - 1
        var cost = [Double](repeating: .infinity, count: (full + 1) * n)
        var previous = [Int8](repeating: -1, count: (full + 1) * n)
        for j in 0..<n { cost[(1 << j) * n + j] = 0 }
        for mask in 1...full {
            for j in 0..<n where mask & (1 << j) != 0 && cost[mask * n + j] < .infinity {
                let base = cost[mask * n + j]
                for k in 0..<n where mask & (1 << k) == 0 {
                    let next = (mask | 1 << k) * n + k
                    let candidate = base + d[j, k]
                    if candidate < cost[next] { cost[next] = candidate; previous[next] = Int8(j) }
                }
            }
        }
        var last = 0
        for j in 1..<n where cost[full * n + j] < cost[full * n + last] { last = j }
        var order = [last], mask = full
        while previous[mask * n + last] >= 0 {
            let before = Int(previous[mask * n + last])
            mask &= ~(1 << last)
            last = before
            order.append(last)
        }
        order.reverse()
        return HamiltonianPath(order: order, length: length(of: order, in: d))
    }

    /// A short Hamiltonian path by the dummy-city reduction (docs/algorithm.md §5): add city n with
    /// d(n, i) = 0 for all i, find a short tour over the n + 1 cities, cut it at the dummy.
    /// Every tour through the dummy has the length of the path that remains, so the shortest
    /// tour gives the shortest path.
    ///
    /// The tour starts as the nearest-neighbour walk from the dummy (every city ties at 0, so the
    /// walk starts at city 0) and is improved by 2-opt and Or-opt local search over neighbour
    /// lists; further descents start from random double-bridge perturbations of the best tour
    /// (iterated local search) until `budget` is spent. The result depends only on `d`, `seed`
    /// and `budget` (unless the time limit stops it). The path is oriented so that
    /// order.first < order.last.
    public static func search(_ d: DistanceMatrix, seed: UInt64, budget: SearchBudget = SearchBudget()) -> HamiltonianPath {
        let n = d.count
        guard n > 2 else { return HamiltonianPath(order: Array(0..<n), length: length(of: Array(0..<n), in: d)) }
        var search = TourSearch(withDummy: d)
        var rng = SeededRandom(seed)
        let clock = ContinuousClock(), start = clock.now
        search.descend()
        var best = search.tour, bestLength = search.length()
        for _ in 1..<budget.maxIterations {
            if let limit = budget.timeLimit, start.duration(to: clock.now) >= .seconds(limit) { break }
            search.perturb(rng: &rng)
            search.descend()
            let candidate = search.length()
            if candidate < bestLength - search.epsilon {
                best = search.tour
                bestLength = candidate
            } else {
                search.restore(best)
            }
        }
        // Rotate the tour so the dummy comes first; the rest is the path.
        let cut = best.firstIndex(of: n)!
        var order = Array(best[(cut + 1)...] + best[..<cut])
        if order[0] > order[n - 1] { order.reverse() }
        return HamiltonianPath(order: order, length: length(of: order, in: d))
    }
}
