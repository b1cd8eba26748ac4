import Foundation
import Testing
@testable import NeuMeta

@Suite struct DataCIFARTests {
    /// `count` records of `variant` with labels `label(i)` (coarse label `i % 20` for CIFAR-100)
    /// and image bytes `(i * 7 + j) % 256`.
    private func records(_ variant: CIFAR.Variant, count: Int, label: (Int) -> Int) -> [UInt8] {
        (0 ..< count).flatMap { i -> [UInt8] in
            let labels = variant == .cifar10 ? [UInt8(label(i))] : [UInt8(i % 20), UInt8(label(i))]
            return labels + (0 ..< CIFAR.imageSize).map { UInt8((i * 7 + $0) % 256) }
        }
    }

    @Test func cifar10BatchesRoundTripInOrder() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        for batch in 1 ... 5 {
            try directory.write(records(.cifar10, count: 3) { ($0 + batch) % 10 }, to: "data_batch_\(batch).bin")
        }
        try directory.write(records(.cifar10, count: 2) { $0 }, to: "test_batch.bin")

        let train = try CIFAR.load(split: .train, directory: directory.path, variant: .cifar10)
        #expect(train.count == 15 && train.channels == 3 && train.height == 32 && train.width == 32)
        #expect(train.classCount == 10 && train.name == "cifar10-train")
        #expect(train.labels == (1 ... 5).flatMap { batch in (0 ..< 3).map { Int32(($0 + batch) % 10) } })
        // Image 5 of the set is record 2 of batch 2, whose bytes are (2·7 + j) % 256.
        let fifth = Array(train.pixels[5 * CIFAR.imageSize ..< 6 * CIFAR.imageSize])
        let expected: [UInt8] = (0 ..< CIFAR.imageSize).map { UInt8((14 + $0) % 256) }
        #expect(fifth == expected)

        let test = try CIFAR.load(split: .test, directory: directory.path, variant: .cifar10)
        #expect(test.count == 2 && test.labels == [0, 1])
    }

    @Test func cifar100UsesFineLabels() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let path = try directory.write(records(.cifar100, count: 4) { 99 - $0 * 30 }, to: "train.bin")
        let train = try CIFAR.load(files: [path], variant: .cifar100, name: "c100")
        #expect(train.count == 4 && train.classCount == 100)
        #expect(train.labels == [99, 69, 39, 9])
        #expect(Array(train.pixels.prefix(3)) == [0, 1, 2])
        #expect(Array(train.pixels[CIFAR.imageSize ..< CIFAR.imageSize + 3]) == [7, 8, 9])
    }

    @Test func badSizesAndLabelsAreErrorsNamingTheFile() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let short = try directory.write(Array(records(.cifar10, count: 2) { $0 }.dropLast()), to: "short.bin")
        let sizeError = try #require(throws: DataError.self) {
            try CIFAR.load(files: [short], variant: .cifar10, name: "x")
        }
        #expect(sizeError.description.contains(short) && sizeError.description.contains("3073"))

        // A CIFAR-100 file read as CIFAR-10 has the wrong record size.
        let hundred = try directory.write(records(.cifar100, count: 3) { $0 }, to: "hundred.bin")
        #expect(throws: DataError.self) { try CIFAR.load(files: [hundred], variant: .cifar10, name: "x") }

        let empty = try directory.write([], to: "empty.bin")
        #expect(throws: DataError.self) { try CIFAR.load(files: [empty], variant: .cifar10, name: "x") }

        let badLabel = try directory.write(records(.cifar10, count: 3) { $0 == 2 ? 10 : 0 }, to: "label.bin")
        let labelError = try #require(throws: DataError.self) {
            try CIFAR.load(files: [badLabel], variant: .cifar10, name: "x")
        }
        #expect(labelError == .labelOutOfRange(path: badLabel, index: 2, label: 10, classCount: 10))

        let missing = directory.path + "/cifar-100-binary"
        let absent = try #require(throws: DataError.self) {
            try CIFAR.load(split: .test, directory: missing, variant: .cifar100)
        }
        #expect(absent == .missingFile(path: missing + "/test.bin"))
    }
}
