import Testing
@testable import NeuMeta

@Suite struct TensorTests {
    @Test func viewsAliasStorage() {
        let t = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let row = t.slice(from: 3, shape: [3])
        row[0] = 40
        #expect(t[3] == 40)
        #expect(t.reshaped([3, 2]).shape == [3, 2])
        #expect(t.clone().toArray() == [1, 2, 3, 40, 5, 6])
    }
}

@Suite struct TransposeTests {
    /// The blocked transpose equals the plain loop exactly (both copy), for shapes that are and
    /// are not multiples of the block, with a row stride, on 1 and 2 threads.
    @Test(arguments: [(256, 256, 256), (198, 256, 256), (25, 256, 256), (7, 45, 50), (300, 33, 40)])
    func blockedTransposeMatchesTheLoop(rows: Int, columns: Int, ld: Int) {
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        let src = randomTensor([rows, ld], seed: 40)
        for threads in [1, 2] {
            Parallel.threads = threads
            let fast = Tensor(zeros: [columns, rows]), reference = Tensor(zeros: [columns, rows])
            Transpose.transpose(src.data, rows: rows, columns: columns, ld: ld, into: fast.data)
            Transpose.transposeReference(src.data, rows: rows, columns: columns, ld: ld, into: reference.data)
            #expect(fast.toArray() == reference.toArray())
            #expect(fast[1 * rows + 2] == src[2 * ld + 1])
        }
    }
}
