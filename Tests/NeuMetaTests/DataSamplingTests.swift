import Foundation
import Testing
@testable import NeuMeta

/// A fresh directory under the system temporary directory, removed by `remove()`.
struct DataTestDirectory {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.path + "/neumeta-data-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// Writes `bytes` to `name` (intermediate directories created) and returns its path.
    @discardableResult
    func write(_ bytes: [UInt8], to name: String) throws -> String {
        let file = path + "/" + name
        try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        return file
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

@Suite struct DataSamplingTests {
    @Test func epochOrderIsAPermutation() {
        for count in [0, 1, 2, 17, 1000] {
            let order = EpochOrder.indices(count: count, seed: 42, epoch: 3)
            #expect(order.count == count)
            #expect(order.sorted() == Array(0 ..< count))
        }
    }

    @Test func epochOrderIsDeterministicAndVariesWithEpochAndSeed() {
        let first = EpochOrder.indices(count: 500, seed: 7, epoch: 0)
        #expect(first == EpochOrder.indices(count: 500, seed: 7, epoch: 0))
        #expect(first != EpochOrder.indices(count: 500, seed: 7, epoch: 1))
        #expect(first != EpochOrder.indices(count: 500, seed: 8, epoch: 0))
        #expect(first != Array(0 ..< 500))
        // Pinned: the order is a pure function of SeededRandom(seed, epoch).
        var random = SeededRandom(7, 0)
        #expect(first == random.permutation(500))
    }

    @Test func batchesKeepOrDropTheRemainder() {
        let indices = Array(10 ..< 20)
        let kept = EpochOrder.batches(indices, size: 4, dropLast: false)
        #expect(kept.map(Array.init) == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19]])
        let dropped = EpochOrder.batches(indices, size: 4, dropLast: true)
        #expect(dropped.map(Array.init) == [[10, 11, 12, 13], [14, 15, 16, 17]])
        #expect(EpochOrder.batches(indices, size: 5, dropLast: true).count == 2)
        #expect(EpochOrder.batches([], size: 3, dropLast: false).isEmpty)
        #expect(EpochOrder.batches([1, 2], size: 3, dropLast: true).isEmpty)
    }
}
