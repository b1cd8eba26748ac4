import Testing
@testable import NeuMeta

/// L1 distances between `n` random points of `dim` N(0, 1) coordinates: the kind of instance
/// channel permutation produces.
private func randomL1Instance(_ n: Int, dim: Int = 4, seed: UInt64) -> DistanceMatrix {
    var rng = SeededRandom(seed)
    return DistanceMatrix.l1((0..<n).map { _ in (0..<dim).map { _ in rng.normal() } })
}

/// A symmetric matrix of U(0, 1) distances (no triangle inequality).
private func randomSymmetricInstance(_ n: Int, seed: UInt64) -> DistanceMatrix {
    var rng = SeededRandom(seed)
    var rows = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
    for i in 0..<n { for j in (i + 1)..<n { rows[i][j] = Double(rng.uniform()); rows[j][i] = rows[i][j] } }
    return DistanceMatrix(rows)
}

/// The shortest Hamiltonian path length by trying every order (Heap's algorithm).
private func bruteForceLength(_ d: DistanceMatrix) -> Double {
    var order = Array(0..<d.count), best = HamiltonianPath.length(of: order, in: d)
    func permute(_ k: Int) {
        if k <= 1 { best = min(best, HamiltonianPath.length(of: order, in: d)); return }
        for i in 0..<k {
            permute(k - 1)
            if i < k - 1 { order.swapAt(k % 2 == 0 ? i : 0, k - 1) }
        }
    }
    permute(d.count)
    return best
}

private func isPermutation(_ order: [Int], _ n: Int) -> Bool { order.sorted() == Array(0..<n) }

private func inverse(_ order: [Int]) -> [Int] {
    var inv = order
    for (j, c) in order.enumerated() { inv[c] = j }
    return inv
}

/// A LeNet with PyTorch-default random weights.
private func randomLeNet(width: Int, seed: UInt64) -> (LeNet, ParameterSet) {
    let net = LeNet(width: width)
    let p = net.makeParameters()
    var rng = SeededRandom(seed)
    p.initializeDefault(rng: &rng)
    return (net, p)
}

@Suite struct SmoothnessTests {
    // MARK: Total variation

    @Test func totalVariationOfKnownTensors() {
        // |3−1| + |2−3| + |2−2| + |5−2| = 6
        #expect(TotalVariation.of(Tensor(shape: [5], values: [1, 3, 2, 2, 5])) == 6)
        // out axis: |0−1| + |2−2| + |7−4| = 4; in axis: (1 + 2) + (2 + 5) = 10
        #expect(TotalVariation.of(Tensor(shape: [2, 3], values: [1, 2, 4, 0, 2, 7])) == 14)
        // W[o, i, k] of shape 2×2×(1×2): W[0,0]=(1,2) W[0,1]=(3,5) W[1,0]=(0,2) W[1,1]=(4,4).
        // out axis: |0−1| + |2−2| + |4−3| + |4−5| = 3; in axis: (2 + 3) + (4 + 2) = 11
        #expect(TotalVariation.of(Tensor(shape: [2, 2, 1, 2], values: [1, 2, 3, 5, 0, 2, 4, 4])) == 14)
        #expect(TotalVariation.of(Tensor(shape: [1], values: [7])) == 0)
        #expect(TotalVariation.of(Tensor(shape: [], values: [7])) == 0)
    }

    @Test func totalVariationOfParameterSetSumsTensors() {
        let p = ParameterSet(specs: [ParameterSpec("a", [5], .bias), ParameterSpec("b", [2, 3], .linearWeight),
                                     ParameterSpec("c", [3], .bias)])
        p.value("a").copy(from: Tensor(shape: [5], values: [1, 3, 2, 2, 5]))
        p.value("b").copy(from: Tensor(shape: [2, 3], values: [1, 2, 4, 0, 2, 7]))
        p.value("c").copy(from: Tensor(shape: [3], values: [0, 100, 0]))
        #expect(TotalVariation.of(p, tensors: [0, 1]) == 20)
        #expect(TotalVariation.of(p, tensors: [0, 1, 2]) == 220)
    }

    // MARK: Shortest Hamiltonian path

    @Test func heldKarpEqualsBruteForce() {
        for n in 1...7 {
            for seed in 0..<4 as Range<UInt64> {
                for d in [randomL1Instance(n, seed: seed), randomSymmetricInstance(n, seed: 100 + seed)] {
                    let exact = HamiltonianPath.exact(d)
                    #expect(isPermutation(exact.order, n))
                    #expect(abs(exact.length - HamiltonianPath.length(of: exact.order, in: d)) <= 1e-12)
                    let brute = bruteForceLength(d)
                    #expect(abs(exact.length - brute) <= 1e-12 * max(brute, 1), "n \(n) seed \(seed): \(exact.length) vs \(brute)")
                }
            }
        }
    }

    /// 100 descents (a single one misses the optimum on about a quarter of these instances, 50
    /// missed none of 600). The default budget's first 100 descents are these same ones and the
    /// best tour only improves, so it finds the optimum as well.
    @Test func searchFindsTheOptimumOnSmallInstances() {
        for instance in 0..<30 {
            let n = 6 + instance % 6, seed = UInt64(1000 + instance)
            for d in [randomL1Instance(n, seed: seed), randomSymmetricInstance(n, seed: seed)] {
                let exact = HamiltonianPath.exact(d)
                let found = HamiltonianPath.search(d, seed: seed, budget: SearchBudget(maxIterations: 100))
                #expect(isPermutation(found.order, n))
                #expect(found.length == HamiltonianPath.length(of: found.order, in: d))
                #expect(abs(found.length - exact.length) <= 1e-9 * exact.length,
                        "n \(n) instance \(instance): search \(found.length), optimum \(exact.length)")
            }
        }
    }

    @Test func searchHandlesTinyInstances() {
        for n in 0...3 {
            let d = randomL1Instance(n, seed: 7)
            let found = HamiltonianPath.search(d, seed: 1)
            #expect(isPermutation(found.order, n))
            #expect(abs(found.length - HamiltonianPath.exact(d).length) <= 1e-12)
        }
    }

    @Test func searchIsDeterministicForASeed() {
        let d = randomL1Instance(80, seed: 5)
        let budget = SearchBudget(maxIterations: 200)
        let a = HamiltonianPath.search(d, seed: 9, budget: budget)
        let b = HamiltonianPath.search(d, seed: 9, budget: budget)
        #expect(a == b)
        #expect(isPermutation(a.order, 80))
        #expect(a.order.first! < a.order.last!)
    }

    /// A ResNet-width instance: valid, shorter than the identity order, and quick (the test's
    /// duration is the timing).
    @Test func searchOn512Cities() {
        let d = randomL1Instance(512, dim: 3, seed: 11)
        let found = HamiltonianPath.search(d, seed: 3)
        #expect(isPermutation(found.order, 512))
        #expect(found.length == HamiltonianPath.length(of: found.order, in: d))
        #expect(found.length < 0.5 * HamiltonianPath.length(of: Array(0..<512), in: d))
    }

    // MARK: Permutation

    /// Members along axis 0 of a matrix and a vector and axis 1 of a rank-3 tensor.
    private func smallGroupParameters() -> (ParameterSet, ChannelGroup) {
        let p = ParameterSet(specs: [ParameterSpec("a", [3, 2], .linearWeight), ParameterSpec("b", [3], .bias),
                                     ParameterSpec("c", [2, 3, 2], .convWeight)])
        for i in 0..<p.count { p.values.base[i] = Float(i) }
        let group = ChannelGroup(name: "g", size: 3, members: [.init("a", axis: 0), .init("b", axis: 0), .init("c", axis: 1)])
        return (p, group)
    }

    @Test func featuresConcatenateMemberSlices() {
        let (p, group) = smallGroupParameters()
        // a = [[0,1],[2,3],[4,5]], b = [6,7,8], c[0] = [[9,10],[11,12],[13,14]], c[1] = [[15,16],[17,18],[19,20]]
        #expect(Permutation.features(p, group: group) == [
            [0, 1, 6, 9, 10, 15, 16], [2, 3, 7, 11, 12, 17, 18], [4, 5, 8, 13, 14, 19, 20],
        ])
    }

    @Test func applyReordersEveryAxisAndInverts() {
        let (p, group) = smallGroupParameters()
        let original = p.values.buffer.map { $0 }
        let order = [2, 0, 1]
        Permutation.apply(p, group: group, order: order)
        #expect(p.value("a").toArray() == [4, 5, 0, 1, 2, 3])
        #expect(p.value("b").toArray() == [8, 6, 7])
        #expect(p.value("c").toArray() == [13, 14, 9, 10, 11, 12, 19, 20, 15, 16, 17, 18])
        Permutation.apply(p, group: group, order: inverse(order))
        #expect(p.values.buffer.map { $0 } == original)
    }

    @Test func inversePermutationRestoresLeNetBitExactly() {
        let (net, p) = randomLeNet(width: 4, seed: 21)
        let original = p.values.buffer.map { $0 }
        var rng = SeededRandom(22)
        let orders = net.channelGroups.map { rng.permutation($0.size) }
        for (group, order) in zip(net.channelGroups, orders) { Permutation.apply(p, group: group, order: order) }
        #expect(p.values.buffer.map { $0 } != original)
        for (group, order) in zip(net.channelGroups, orders).reversed() { Permutation.apply(p, group: group, order: inverse(order)) }
        #expect(p.values.buffer.map { $0 } == original)
    }

    @Test func permutingLeNetKeepsItsLogits() {
        let (net, p) = randomLeNet(width: 4, seed: 31)
        let x = randomTensor([3, 1, 28, 28], seed: 32)
        let before = net.forward(p, input: x, mode: .inference).toArray()
        let report = Permutation.permute(p, groups: net.channelGroups, seed: 33)
        #expect(report.groups.contains { $0.order != Array(0..<$0.size) })
        let after = net.forward(p, input: x, mode: .inference).toArray()
        expectClose(after, before, atol: 1e-5, rtol: 0, "LeNet logits after channel permutation")
    }

    /// Shuffled channels of a 32/64/128 LeNet, then SHP permutation. Every TV term that a
    /// group's permutation changes is an L1 distance between consecutive channels' slices, so
    /// each group's TV falls by exactly its path-length gain.
    @Test func permutationLowersTotalVariationOfShuffledLeNet() {
        let (net, p) = randomLeNet(width: 32, seed: 41)
        var rng = SeededRandom(42)
        for group in net.channelGroups { Permutation.apply(p, group: group, order: rng.permutation(group.size)) }
        let trainable = p.specs.indices.filter { p.specs[$0].role.trainable }
        let tvBefore = TotalVariation.of(p, tensors: trainable)

        let report = Permutation.permute(p, groups: net.channelGroups, seed: 43)
        #expect(report.totalVariationBefore == tvBefore)
        #expect(report.totalVariationAfter == TotalVariation.of(p, tensors: trainable))
        #expect(report.totalVariationAfter < report.totalVariationBefore)
        #expect(report.groups.map(\.size) == [32, 64, 128])
        var gains = 0.0
        for g in report.groups {
            let pathGain = g.pathLengthBefore - g.pathLengthAfter, tvGain = g.totalVariationBefore - g.totalVariationAfter
            #expect(pathGain > 0, "\(g.name): path \(g.pathLengthBefore) → \(g.pathLengthAfter)")
            #expect(abs(tvGain - pathGain) <= 1e-9 * g.totalVariationBefore, "\(g.name): TV gain \(tvGain), path gain \(pathGain)")
            gains += pathGain
        }
        #expect(abs((report.totalVariationBefore - report.totalVariationAfter) - gains) <= 1e-9 * report.totalVariationBefore)
    }
}
