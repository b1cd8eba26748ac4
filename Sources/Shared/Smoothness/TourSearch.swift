/// Local search for a short tour (closed cycle) over m cities: 2-opt and Or-opt moves over
/// neighbour lists, driven by a stack of "active" cities (Bentley's don't-look bits: a city is
/// re-examined only after an edge at it changed).
///
/// The tour is an array: `tour` lists the cities in cyclic order and `position` inverts it. A
/// 2-opt move reverses one of the two arcs between its edges (the shorter one, so a move costs
/// O(min(arc, m − arc))); an Or-opt move is composed of two or three 2-opt moves.
///
/// Every accepted move shortens the tour by more than `epsilon` (a Double-rounding margin
/// relative to the longest distance), so a descent terminates and never cycles on ties.
struct TourSearch {
    let m: Int
    private let distance: [Double]
    /// Row a: the `k` cities nearest a (a excluded), by increasing distance, ties by index.
    private let neighbours: [Int]
    private let k: Int
    private(set) var tour: [Int]
    private var position: [Int]
    private var active: [Int]
    private var isActive: [Bool]
    let epsilon: Double

    /// Cities 0..<n of `d` plus the dummy city n at distance 0 from all of them; the tour starts
    /// as the nearest-neighbour walk from the dummy (ties to the lowest index).
    init(withDummy d: DistanceMatrix) {
        let n = d.count
        m = n + 1
        var distance = [Double](repeating: 0, count: m * m)
        for i in 0..<n { for j in 0..<n { distance[i * m + j] = d[i, j] } }
        self.distance = distance
        epsilon = 1e-10 * (d.values.max() ?? 0)

        k = min(m - 1, 16)
        var neighbours = [Int](), row = [(Double, Int)]()
        neighbours.reserveCapacity(m * k)
        for a in 0..<m {
            // Insertion into a sorted list of at most k: O(m·k) worst case, O(m) typically.
            row.removeAll(keepingCapacity: true)
            for c in 0..<m where c != a {
                let dc = distance[a * m + c]
                if row.count == k && dc >= row[k - 1].0 { continue }
                var t = row.count
                while t > 0 && row[t - 1].0 > dc { t -= 1 }
                row.insert((dc, c), at: t)
                if row.count > k { row.removeLast() }
            }
            neighbours += row.map(\.1)
        }
        self.neighbours = neighbours

        var tour = [n], visited = [Bool](repeating: false, count: m)
        visited[n] = true
        for _ in 0..<n {
            let here = tour[tour.count - 1]
            var nearest = -1
            for c in 0..<n where !visited[c] && (nearest < 0 || distance[here * m + c] < distance[here * m + nearest]) { nearest = c }
            visited[nearest] = true
            tour.append(nearest)
        }
        self.tour = tour
        position = [Int](repeating: 0, count: m)
        for (i, c) in tour.enumerated() { position[c] = i }
        active = Array((0..<m).reversed())
        isActive = [Bool](repeating: true, count: m)
    }

    @inline(__always) private func d(_ a: Int, _ b: Int) -> Double { distance[a * m + b] }
    @inline(__always) private func next(_ a: Int) -> Int { let i = position[a] + 1; return i == m ? tour[0] : tour[i] }
    @inline(__always) private func prev(_ a: Int) -> Int { let i = position[a]; return i == 0 ? tour[m - 1] : tour[i - 1] }
    @inline(__always) private func step(_ a: Int, _ forward: Bool) -> Int { forward ? next(a) : prev(a) }

    /// Σ d over the tour's m edges.
    func length() -> Double {
        var sum = 0.0
        for i in 0..<m { sum += d(tour[i], tour[i + 1 == m ? 0 : i + 1]) }
        return sum
    }

    /// Applies improving moves until no active city has one.
    mutating func descend() {
        while let a = active.popLast() {
            isActive[a] = false
            _ = twoOpt(a) || orOpt(a)
        }
    }

    /// Double bridge: cuts the tour into A B C D at three random points and reconnects it as
    /// A C B D, a change 2-opt and Or-opt cannot undo in one move. Activates the six cities
    /// at the new edges.
    mutating func perturb(rng: inout SeededRandom) {
        var cuts = Set<Int>()
        while cuts.count < 3 { cuts.insert(1 + rng.index(below: m - 1)) }
        let c = cuts.sorted(), (x, y, z) = (c[0], c[1], c[2])
        tour = Array(tour[..<x] + tour[y..<z] + tour[x..<y] + tour[z...])
        for (i, city) in tour.enumerated() { position[city] = i }
        for j in [x - 1, x - 1 + z - y, z - 1] { activate(tour[j], tour[j + 1]) }
    }

    /// Returns to a previously saved `tour`.
    mutating func restore(_ saved: [Int]) {
        tour = saved
        for (i, city) in tour.enumerated() { position[city] = i }
    }

    private mutating func activate(_ cities: Int...) {
        for c in cities where !isActive[c] { isActive[c] = true; active.append(c) }
    }

    /// Reverses the cyclic arc of positions i, i+1, …, j, or, when shorter, the complementary
    /// arc j+1, …, i−1, which gives the same cycle.
    private mutating func reverse(_ from: Int, _ to: Int) {
        var (i, j) = (from, to)
        var count = (j - i + m) % m + 1
        if 2 * count > m { (i, j) = ((j + 1) % m, (i - 1 + m) % m); count = m - count }
        for _ in 0..<(count / 2) {
            let (x, y) = (tour[i], tour[j])
            tour[i] = y; position[y] = i
            tour[j] = x; position[x] = j
            i = i + 1 == m ? 0 : i + 1
            j = j == 0 ? m - 1 : j - 1
        }
    }

    /// The 2-opt move that replaces edges {a, b} and {c, e} by {a, c} and {b, e}; b and e must
    /// follow a and c in the same direction of travel.
    private mutating func exchange(_ a: Int, _ b: Int, _ c: Int, _ e: Int) {
        if next(a) == b { reverse(position[b], position[c]) } else { reverse(position[a], position[e]) }
    }

    /// 2-opt from `a`: for each neighbour b of a on the tour and each c with d(a, c) < d(a, b),
    /// e the neighbour of c on the same side, gain d(a, b) + d(c, e) − d(a, c) − d(b, e).
    private mutating func twoOpt(_ a: Int) -> Bool {
        for forward in [true, false] {
            let b = step(a, forward), dab = d(a, b)
            for t in 0..<k {
                let c = neighbours[a * k + t], dac = d(a, c)
                if dac >= dab { break }
                let e = step(c, forward)
                if c == b || e == a { continue }
                if dac + d(b, e) - dab - d(c, e) < -epsilon {
                    exchange(a, b, c, e)
                    activate(a, b, c, e)
                    return true
                }
            }
        }
        return false
    }

    /// Or-opt from `a`: moves the segment a = s₁ … s_L (L ≤ 3 cities, in either direction) from
    /// between p and q to between a neighbour c of a and c's tour neighbour e, as c s₁ … s_L e.
    /// Removal gains g = d(p, s₁) + d(s_L, q) − d(p, q); insertion costs
    /// d(c, s₁) + d(s_L, e) − d(c, e); only c with d(c, s₁) < g are tried.
    private mutating func orOpt(_ a: Int) -> Bool {
        for forward in [true, false] {
            var last = a
            for length in 1...3 where m >= length + 4 && (forward || length > 1) {  // one city: same move both ways
                if length > 1 { last = step(last, forward) }
                let p = step(a, !forward), q = step(last, forward)
                let gain = d(p, a) + d(last, q) - d(p, q)
                if gain <= epsilon { continue }
                func outside(_ c: Int) -> Bool {
                    let offset = forward ? (position[c] - position[a] + m) % m : (position[a] - position[c] + m) % m
                    return offset >= length && c != p && c != q
                }
                for t in 0..<k {
                    let c = neighbours[a * k + t], dc = d(c, a)
                    if dc >= gain { break }
                    guard outside(c) else { continue }
                    for side in 0..<2 {
                        let e = side == 0 ? next(c) : prev(c)
                        if outside(e) && dc + d(last, e) - d(c, e) - gain < -epsilon {
                            moveSegment(a, last, forward: forward, between: c, e)
                            return true
                        }
                    }
                }
            }
        }
        return false
    }

    /// Moves the segment from `first` to `last` (in direction `forward`) between the adjacent
    /// cities c and e, leaving edges {c, first} and {last, e}. With (f … l) the segment in
    /// forward order, P before it, Q after it and (u, v) the edge {c, e} in forward order:
    /// exchange {P, f}, {u, v} → {P, u}, {f, v}; then {P, u}, {Q, l} → {P, Q}, {u, l}; the
    /// segment now sits reversed between u and v, and a third exchange flips it if needed.
    private mutating func moveSegment(_ first: Int, _ last: Int, forward: Bool, between c: Int, _ e: Int) {
        let (f, l) = forward ? (first, last) : (last, first)
        let (pBefore, qAfter) = (prev(f), next(l))
        let (u, v) = next(c) == e ? (c, e) : (e, c)
        exchange(pBefore, f, u, v)
        exchange(pBefore, u, qAfter, l)
        if f != l && (l == first) != (u == c) { exchange(u, l, f, v) }
        activate(pBefore, qAfter, f, l, u, v)
    }
}
