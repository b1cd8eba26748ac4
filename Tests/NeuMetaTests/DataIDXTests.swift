import CZlib
import Foundation
import Testing
@testable import NeuMeta

/// IDX encoding and gzip writing for the tests.
enum IDXTestFiles {
    static func bigEndian(_ value: Int) -> [UInt8] {
        [UInt8(value >> 24 & 255), UInt8(value >> 16 & 255), UInt8(value >> 8 & 255), UInt8(value & 255)]
    }

    static func images(_ pixels: [UInt8], count: Int, height: Int, width: Int) -> [UInt8] {
        [0, 0, 8, 3] + bigEndian(count) + bigEndian(height) + bigEndian(width) + pixels
    }

    static func labels(_ labels: [UInt8]) -> [UInt8] {
        [0, 0, 8, 1] + bigEndian(labels.count) + labels
    }

    /// Writes `bytes` gzip-compressed to `path` with zlib's gzwrite.
    static func writeGzip(_ bytes: [UInt8], to path: String) throws {
        let file = try #require(gzopen(path, "wb"))
        let written = bytes.withUnsafeBytes { gzwrite(file, $0.baseAddress, UInt32($0.count)) }
        #expect(Int(written) == bytes.count)
        #expect(gzclose(file) == Z_OK)
    }
}

@Suite struct DataIDXTests {
    @Test func realFashionMNIST() throws {
        let train = try FashionMNIST.load(split: .train)
        #expect(train.count == 60000)
        #expect(train.channels == 1 && train.height == 28 && train.width == 28)
        #expect(train.classCount == 10)
        #expect(train.pixels.count == 60000 * 784)
        #expect(train.labels.allSatisfy { (0 ..< 10).contains($0) })
        #expect(train.classCounts() == [Int](repeating: 6000, count: 10))
        #expect(train.name == "fashion-mnist-train")
        let (mean, std) = train.channelMeanStd()
        #expect(abs(mean[0] - 0.2860) < 0.0005)
        #expect(abs(std[0] - 0.3530) < 0.0005)

        let test = try FashionMNIST.load(split: .test)
        #expect(test.count == 10000)
        #expect(test.height == 28 && test.width == 28 && test.channels == 1)
        #expect(test.labels.allSatisfy { (0 ..< 10).contains($0) })
        #expect(test.classCounts() == [Int](repeating: 1000, count: 10))
    }

    @Test func plainAndGzippedIDXRoundTrip() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        var random = SeededRandom(11)
        let pixels = (0 ..< 5 * 3 * 4).map { _ in UInt8(random.index(below: 256)) }
        let labels: [UInt8] = [3, 0, 9, 9, 1]
        let imageBytes = IDXTestFiles.images(pixels, count: 5, height: 3, width: 4)
        let labelBytes = IDXTestFiles.labels(labels)

        let plain = try ImageDataset.loadIDX(images: directory.write(imageBytes, to: "images"),
                                             labels: directory.write(labelBytes, to: "labels"), name: "plain")
        try IDXTestFiles.writeGzip(imageBytes, to: directory.path + "/images.gz")
        try IDXTestFiles.writeGzip(labelBytes, to: directory.path + "/labels.gz")
        let gzipped = try ImageDataset.loadIDX(images: directory.path + "/images.gz",
                                               labels: directory.path + "/labels.gz", name: "gz")
        for dataset in [plain, gzipped] {
            #expect(dataset.count == 5 && dataset.channels == 1 && dataset.height == 3 && dataset.width == 4)
            #expect(dataset.pixels == pixels)
            #expect(dataset.labels == labels.map(Int32.init))
        }
        #expect(gzipped.name == "gz")
    }

    @Test func fashionMNISTLayoutAcceptsPlainFiles() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        try directory.write(IDXTestFiles.images([UInt8](repeating: 7, count: 2 * 28 * 28), count: 2, height: 28, width: 28),
                            to: "t10k-images-idx3-ubyte")
        try IDXTestFiles.writeGzip(IDXTestFiles.labels([4, 2]), to: directory.path + "/t10k-labels-idx1-ubyte.gz")
        let test = try FashionMNIST.load(split: .test, directory: directory.path)
        #expect(test.count == 2 && test.labels == [4, 2] && test.pixels.allSatisfy { $0 == 7 })
        #expect(throws: DataError.self) { try FashionMNIST.load(split: .train, directory: directory.path) }
    }

    @Test func truncatedFileNamesFileAndSizes() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let full = IDXTestFiles.images([UInt8](repeating: 1, count: 4 * 5 * 5), count: 4, height: 5, width: 5)
        let images = try directory.write(Array(full.dropLast(10)), to: "short-images")
        let labels = try directory.write(IDXTestFiles.labels([0, 1, 2, 3]), to: "labels")
        let error = try #require(throws: DataError.self) {
            try ImageDataset.loadIDX(images: images, labels: labels, name: "x")
        }
        #expect(error == .truncated(path: images, expectedBytes: 116, actualBytes: 106))
        #expect(error.description.contains(images))
        #expect(error.description.contains("116") && error.description.contains("106"))

        // A cut gzip stream is reported as such.
        let gz = directory.path + "/cut.gz"
        try IDXTestFiles.writeGzip(full, to: gz)
        let compressed = try [UInt8](Data(contentsOf: URL(fileURLWithPath: gz)))
        try directory.write(Array(compressed.prefix(compressed.count / 2)), to: "cut.gz")
        let cut = try #require(throws: DataError.self) { try ImageDataset.loadIDX(images: gz, labels: labels, name: "x") }
        #expect(cut.description.contains(gz))
    }

    @Test func wrongMagicMissingFileAndBadContentsAreErrors() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let images = try directory.write(IDXTestFiles.images([1, 2, 3, 4], count: 1, height: 2, width: 2), to: "images")
        let labels = try directory.write(IDXTestFiles.labels([5]), to: "labels")

        // Labels where images are expected: magic 0x801 instead of 0x803.
        let swapped = try #require(throws: DataError.self) { try ImageDataset.loadIDX(images: labels, labels: images, name: "x") }
        #expect(swapped == .badMagic(path: labels, expected: 0x803, found: 0x801))
        #expect(swapped.description.contains(labels) && swapped.description.contains("0x00000801"))

        let missing = directory.path + "/nothing-here"
        let absent = try #require(throws: DataError.self) { try ImageDataset.loadIDX(images: missing, labels: labels, name: "x") }
        #expect(absent == .missingFile(path: missing))
        #expect(absent.description.contains(missing))

        let trailing = try directory.write(IDXTestFiles.labels([5]) + [0], to: "trailing")
        let extra = try #require(throws: DataError.self) { try ImageDataset.loadIDX(images: images, labels: trailing, name: "x") }
        #expect(extra.description.contains(trailing))

        let twoLabels = try directory.write(IDXTestFiles.labels([5, 6]), to: "two")
        let mismatch = try #require(throws: DataError.self) { try ImageDataset.loadIDX(images: images, labels: twoLabels, name: "x") }
        #expect(mismatch == .countMismatch(imagesPath: images, imageCount: 1, labelsPath: twoLabels, labelCount: 2))

        let badLabel = try directory.write(IDXTestFiles.labels([10]), to: "ten")
        let range = try #require(throws: DataError.self) { try ImageDataset.loadIDX(images: images, labels: badLabel, name: "x") }
        #expect(range == .labelOutOfRange(path: badLabel, index: 0, label: 10, classCount: 10))
        #expect(range.description.contains(badLabel))
    }

    @Test func batchesAreNormalisedInNCHWOrder() throws {
        // Two 1×2×2 images with distinct values; mean 0.5, std 0.25.
        let dataset = ImageDataset(name: "tiny", channels: 1, height: 2, width: 2, classCount: 3,
                                   pixels: [0, 51, 102, 255, 204, 153, 102, 51], labels: [2, 1])
        var images = [Float](repeating: .nan, count: 8)
        var labels = [Int32](repeating: -1, count: 2)
        images.withUnsafeMutableBufferPointer { imageBuffer in
            labels.withUnsafeMutableBufferPointer { labelBuffer in
                dataset.fillBatch(indices: [1, 0], mean: [0.5], std: [0.25],
                                  images: imageBuffer.baseAddress!, labels: labelBuffer.baseAddress!)
            }
        }
        let expected: [Float] = [204, 153, 102, 51, 0, 51, 102, 255].map { (Float($0) / 255 - 0.5) / 0.25 }
        for (got, want) in zip(images, expected) { #expect(abs(got - want) < 1e-5) }
        #expect(labels == [1, 2])

        let (mean, std) = dataset.channelMeanStd()
        let values = dataset.pixels.map { Double($0) / 255 }
        let m = values.reduce(0, +) / 8
        let s = (values.map { ($0 - m) * ($0 - m) }.reduce(0, +) / 8).squareRoot()
        #expect(abs(Double(mean[0]) - m) < 1e-6 && abs(Double(std[0]) - s) < 1e-6)
    }
}
