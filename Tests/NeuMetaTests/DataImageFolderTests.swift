import Foundation
import Testing
@testable import NeuMeta

@Suite struct DataImageFolderTests {
    /// `root/train/{cat,dog}` with JPEGs and PNGs of different extension spellings, plus
    /// things that are not images: a text file, hidden files, a directory named like an image.
    private func makeTree(_ directory: DataTestDirectory) throws -> [String: RGBImage] {
        var images: [String: RGBImage] = [:]
        for (index, name) in ["cat/b.PNG", "cat/a.jpg", "dog/nested/c.jpeg", "dog/d.png"].enumerated() {
            let image = ImageTestFiles.gradient(width: 20 + 4 * index, height: 16 + 2 * index)
            let bytes = name.lowercased().hasSuffix("png") ? try ImageTestFiles.png(image) : ImageTestFiles.jpeg(image)
            try directory.write(bytes, to: "train/" + name)
            images[name] = image
        }
        try directory.write(Array("notes".utf8), to: "train/cat/readme.txt")
        try directory.write(Array("hidden".utf8), to: "train/.cache/x.jpg")
        try directory.write(Array("resource fork".utf8), to: "train/dog/._d.png")
        try FileManager.default.createDirectory(atPath: directory.path + "/train/dog/folder.jpg",
                                                withIntermediateDirectories: true)
        return images
    }

    @Test func listsClassesAndFilesDeterministically() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let images = try makeTree(directory)
        let dataset = try ImageFolderDataset(root: directory.path, split: "train")
        #expect(dataset.classNames == ["cat", "dog"])
        let base = directory.path + "/train/"
        #expect(dataset.files == ["cat/a.jpg", "cat/b.PNG", "dog/d.png", "dog/nested/c.jpeg"].map { base + $0 })
        #expect(dataset.labels == [0, 0, 1, 1])
        #expect(dataset.count == 4)

        #expect(try dataset.load(index: 1) == images["cat/b.PNG"])
        let jpeg = try dataset.load(index: 0), original = images["cat/a.jpg"]!
        #expect(jpeg.width == original.width && jpeg.height == original.height)
        #expect(zip(jpeg.pixels, original.pixels).allSatisfy { abs(Int($0) - Int($1)) <= 12 })

        let again = try ImageFolderDataset(directory: base)
        #expect(again.files == dataset.files && again.directory == directory.path + "/train")
    }

    @Test func batchesAreDeterministicNormalisedAndLabelled() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let images = try makeTree(directory)
        let dataset = try ImageFolderDataset(root: directory.path, split: "train")
        let mean: [Float] = [0.5, 0.4, 0.3], std: [Float] = [0.2, 0.25, 0.3]
        func batch(_ transform: ImageTransform, seed: UInt64) throws -> ([Float], [Int32]) {
            var pixels = [Float](repeating: .nan, count: 3 * 3 * 8 * 8)
            var labels = [Int32](repeating: -1, count: 3)
            var rng = SeededRandom(seed)
            try pixels.withUnsafeMutableBufferPointer { pixelBuffer in
                try labels.withUnsafeMutableBufferPointer { labelBuffer in
                    try dataset.fillBatch(indices: [3, 1, 0], transform: transform, size: 8, rng: &rng, mean: mean,
                                          std: std, images: pixelBuffer.baseAddress!, labels: labelBuffer.baseAddress!)
                }
            }
            return (pixels, labels)
        }
        let (train, labels) = try batch(.train, seed: 9)
        #expect(labels == [1, 0, 0])
        #expect(train.allSatisfy { $0.isFinite })
        #expect(try batch(.train, seed: 9).0 == train)
        #expect(try batch(.train, seed: 10).0 != train)

        // Evaluation is the documented resize and centre crop, normalised channel by channel.
        let (eval, _) = try batch(.eval, seed: 1)
        var unused = SeededRandom(0)
        let expected = ImageTransform.eval.apply(to: images["cat/b.PNG"]!, size: 8, rng: &unused)
        for channel in 0 ..< 3 {
            for p in 0 ..< 64 {
                let want = (Float(expected.pixels[3 * p + channel]) / 255 - mean[channel]) / std[channel]
                #expect(abs(eval[192 + channel * 64 + p] - want) < 1e-5)
            }
        }
    }

    @Test func badTreesAndDamagedImagesAreErrorsNamingThePath() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        _ = try makeTree(directory)
        let missing = try #require(throws: DataError.self) { try ImageFolderDataset(root: directory.path, split: "val") }
        #expect(missing == .missingFile(path: directory.path + "/val"))

        try FileManager.default.createDirectory(atPath: directory.path + "/empty/bird", withIntermediateDirectories: true)
        let empty = try #require(throws: DataError.self) { try ImageFolderDataset(root: directory.path, split: "empty") }
        #expect(empty.description.contains(directory.path + "/empty/bird"))

        let jpeg = ImageTestFiles.jpeg(ImageTestFiles.gradient(width: 30, height: 30))
        let cut = try directory.write(Array(jpeg.prefix(jpeg.count * 2 / 3)), to: "train/dog/e.jpg")
        let dataset = try ImageFolderDataset(root: directory.path, split: "train")
        let index = try #require(dataset.files.firstIndex(of: cut))
        let error = try #require(throws: DataError.self) { try dataset.load(index: index) }
        #expect(error.description.contains(cut))

        var pixels = [Float](repeating: 0, count: 2 * 3 * 4 * 4)
        var labels = [Int32](repeating: 0, count: 2)
        var rng = SeededRandom(3)
        let batchError = try #require(throws: DataError.self) {
            try pixels.withUnsafeMutableBufferPointer { pixelBuffer in
                try labels.withUnsafeMutableBufferPointer { labelBuffer in
                    try dataset.fillBatch(indices: [0, index], transform: .eval, size: 4, rng: &rng, mean: [0, 0, 0],
                                          std: [1, 1, 1], images: pixelBuffer.baseAddress!, labels: labelBuffer.baseAddress!)
                }
            }
        }
        #expect(batchError.description.contains(cut))
    }
}
