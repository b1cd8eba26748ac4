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
