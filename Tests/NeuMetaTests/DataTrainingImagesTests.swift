import Foundation
import Testing
@testable import NeuMeta

/// The data abstraction training reads: in-memory data and a streamed image folder give a batch
/// that depends only on its indices and augmentation seed — prefetched or not, at any depth.
@Suite struct DataTrainingImagesTests {
    /// `root/train/<class>` with 3 classes × 4 PNG images of different sizes.
    static func makeFolder(_ directory: DataTestDirectory) throws -> ImageFolderDataset {
        for c in 0..<3 {
            for i in 0..<4 {
                let image = ImageTestFiles.gradient(width: 18 + 3 * i + c, height: 14 + 2 * i)
                try directory.write(try ImageTestFiles.png(image), to: "train/class\(c)/\(i).png")
            }
        }
        return try ImageFolderDataset(root: directory.path, split: "train")
    }

    static let mean: [Float] = [0.5, 0.4, 0.3], std: [Float] = [0.2, 0.25, 0.3]

    static func batch(_ source: any TrainingImages, _ indices: [Int], _ seed: UInt64) throws -> ([Float], [Int32]) {
        let shape = source.batchImageShape
        var images = [Float](repeating: .nan, count: indices.count * shape.channels * shape.height * shape.width)
        var labels = [Int32](repeating: -1, count: indices.count)
        try images.withUnsafeMutableBufferPointer { x in
            try labels.withUnsafeMutableBufferPointer { y in
                try source.fillBatch(indices: indices, augmentation: seed, mean: mean, std: std, images: x.baseAddress!, labels: y.baseAddress!)
            }
        }
        return (images, labels)
    }

    @Test func streamedBatchesDoNotDependOnPrefetching() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let folder = try Self.makeFolder(directory)
        let batches: [(indices: [Int], augmentation: UInt64)] = [([0, 5, 11], 1), ([3, 3, 7], 2), ([1, 2, 4, 8, 9], 3), ([0, 5, 11], 4)]
        let plain = StreamingImageFolder(folder: folder, transform: .train, size: 12, mean: Self.mean, std: Self.std, depth: 0)
        let expected = try batches.map { try Self.batch(plain, $0.indices, $0.augmentation) }
        #expect(expected[0].1 == [0, 1, 2] && expected[1].1 == [0, 0, 1])
        #expect(expected[0].0 != expected[3].0, "another augmentation seed gives other crops")
        #expect(expected.allSatisfy { $0.0.allSatisfy(\.isFinite) })

        for depth in [1, 2, 8] {
            let streamed = StreamingImageFolder(folder: folder, transform: .train, size: 12, mean: Self.mean, std: Self.std, depth: depth)
            streamed.prefetch(batches)
            #expect(streamed.prefetched == min(depth, batches.count), "at most depth batches ahead")
            for (k, b) in batches.enumerated() {
                let got = try Self.batch(streamed, b.indices, b.augmentation)
                #expect(got.0 == expected[k].0 && got.1 == expected[k].1, "depth \(depth) batch \(k)")
            }
            #expect(streamed.prefetched == 0, "taken batches are released")
        }
    }

    /// A batch that fails to decode reports the failing file, prefetched or not.
    @Test func decodingFailuresNameTheFile() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        _ = try Self.makeFolder(directory)
        try directory.write(Array("not a png".utf8), to: "train/class1/9.png")
        let folder = try ImageFolderDataset(root: directory.path, split: "train")
        let broken = try #require(folder.files.firstIndex { $0.hasSuffix("class1/9.png") })
        for depth in [0, 2] {
            let streamed = StreamingImageFolder(folder: folder, transform: .eval, size: 8, mean: Self.mean, std: Self.std, depth: depth)
            streamed.prefetch([([broken], 1)])
            #expect { try Self.batch(streamed, [0, broken], 1) } throws: { "\($0)".contains("class1/9.png") }
        }
    }

    /// In-memory data is a source too: augmentation seeds are ignored, batches equal
    /// `ImageDataset.fillBatch`'s.
    @Test func inMemoryDataIsATrainingSource() throws {
        let data = syntheticImages(count: 16, seed: 4)
        let source: any TrainingImages = data
        #expect(source.prefetchDepth == 0 && source.count == 16 && source.batchImageShape.channels == 1)
        let mean: [Float] = [0.5], std: [Float] = [0.3]
        var direct = [Float](repeating: 0, count: 3 * 784), labels = [Int32](repeating: 0, count: 3)
        direct.withUnsafeMutableBufferPointer { x in
            labels.withUnsafeMutableBufferPointer { y in data.fillBatch(indices: [2, 9, 2], mean: mean, std: std, images: x.baseAddress!, labels: y.baseAddress!) }
        }
        for seed: UInt64 in [0, 7] {
            var images = [Float](repeating: .nan, count: 3 * 784), got = [Int32](repeating: -1, count: 3)
            try images.withUnsafeMutableBufferPointer { x in
                try got.withUnsafeMutableBufferPointer { y in
                    try source.fillBatch(indices: [2, 9, 2], augmentation: seed, mean: mean, std: std, images: x.baseAddress!, labels: y.baseAddress!)
                }
            }
            #expect(images == direct && got == labels)
        }
    }

    /// Every configuration carries its own augmentation seed, a pure function of (seed, round,
    /// index), drawn from a generator of its own: widths and noise seeds are unchanged by it.
    @Test func configurationsCarryTheirAugmentationSeed() {
        var plan = RoundPlan()
        plan.datasetCount = 1000; plan.batchSize = 100; plan.configurationsPerRound = 3; plan.rounds = 10; plan.seed = 9
        let a = plan.configuration(round: 4, index: 1), b = plan.configuration(round: 4, index: 1)
        #expect(a.augmentation == b.augmentation)
        let seeds = Set((0..<10).flatMap { r in (0..<3).map { plan.configuration(round: r, index: $0).augmentation } })
        #expect(seeds.count == 30)
        var rng = SeededRandom(9, 0x5717, 4, 1)
        let width = plan.minWidth + rng.index(below: plan.maxWidth - plan.minWidth + 1)
        #expect(a.width == width && a.noiseSeed == rng.next())
    }
}

/// Base training on a streamed image folder: SGD against its formula, and the trained
/// parameters independent of how far ahead the folder decodes.
@Suite struct BaseTrainingOnFoldersTests {
    @Test func sgdFollowsItsFormula() {
        let n = 37  // odd: exercises every split of the parallel loop
        var rng = SeededRandom(3)
        let values = FloatStorage(count: n), gradients = FloatStorage(count: n)
        for i in 0..<n { values.base[i] = rng.normal(); gradients.base[i] = rng.normal() }
        var theta = Array(values.buffer), velocity = [Float](repeating: 0, count: n)
        let sgd = SGD(parameterCount: n, trainable: [0..<30], learningRate: 0.1, momentum: 0.9, weightDecay: 0.01)
        for _ in 0..<3 {
            sgd.update(values: values, gradients: gradients)
            for i in 0..<30 {  // v ← μv + (g + λθ), θ ← θ − lr·v; the rest untouched
                velocity[i] = 0.9 * velocity[i] + (gradients.base[i] + 0.01 * theta[i])
                theta[i] -= 0.1 * velocity[i]
            }
        }
        #expect(Array(values.buffer) == theta)
        #expect(Array(sgd.velocity.buffer.prefix(30)) == Array(velocity.prefix(30)))
    }

    /// One epoch of a tiny ResNet-18 with SGD, cosine schedule and augmentation: the same bits
    /// whether the folder decodes 0, 1 or 3 batches ahead; evaluation reads val/ with its own
    /// transform.
    @Test func trainingDoesNotDependOnPrefetching() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let folder = try DataTrainingImagesTests.makeFolder(directory)
        for c in 0..<3 { try directory.write(try ImageTestFiles.png(ImageTestFiles.gradient(width: 16, height: 16 + c)), to: "val/class\(c)/0.png") }
        let val = try ImageFolderDataset(root: directory.path, split: "val")
        let (mean, std) = try StreamingImageFolder.channelMeanStd(of: folder, size: 12)
        #expect(mean.allSatisfy { $0 > 0 && $0 < 1 } && std.allSatisfy { $0 > 0 })
        var config = BaseTrainingConfig()
        config.epochs = 2; config.batchSize = 4; config.optimizer = .sgd(momentum: 0.9); config.learningRate = 0.05
        config.weightDecay = 5e-4; config.cosine = true; config.seed = 1
        var results: [[Float]] = []
        for depth in [0, 1, 3] {
            let network = try NetworkFamily.make("resnet18", widths: [2, 2, 2, 2], classCount: 3, imageSize: 12)
            let train = StreamingImageFolder(folder: folder, transform: .train, size: 12, mean: mean, std: std, depth: depth)
            let test = StreamingImageFolder(folder: val, transform: .eval, size: 12, mean: mean, std: std, depth: 0)
            let trainer = try BaseTrainer(network: network, train: train, test: test, config: config, mean: mean, std: std)
            var steps = 0, fastest = 0.0
            let report = try #require(try trainer.run(onStep: { steps += 1; fastest = max(fastest, $0.imagesPerSecond) }))
            #expect(steps == 2 * 3 && fastest > 0)  // 12 images in batches of 4, two epochs
            #expect((0...1).contains(report.testAccuracy) && report.trainLoss.isFinite)
            results.append(Array(trainer.parameters.values.buffer))
        }
        #expect(results[0] == results[1] && results[1] == results[2])
        // A streamed folder needs its statistics given.
        let network = try NetworkFamily.make("resnet18", widths: [2, 2, 2, 2], classCount: 3, imageSize: 12)
        let train = StreamingImageFolder(folder: folder, transform: .train, size: 12, mean: mean, std: std, depth: 0)
        #expect(throws: BaseTrainer.ShapeMismatch.self) { try BaseTrainer(network: network, train: train, test: train, config: config) }
    }
}

/// The data fingerprint of an image folder: per class, so differences are named by class, and
/// small enough for a thousand-class folder in a hello message.
@Suite struct DataFolderFingerprintTests {
    @Test func folderFingerprintsNameTheClassesThatDiffer() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        _ = try DataTrainingImagesTests.makeFolder(directory)
        try directory.write(try ImageTestFiles.png(ImageTestFiles.gradient(width: 9, height: 9)), to: "train/odd name;1/0.png")
        let reference = try DataFingerprint.imageFolder(root: directory.path)
        #expect(reference.files.map(\.name) == ["train/class0", "train/class1", "train/class2", "train/odd%20name%3B1"])
        #expect(DataFingerprint(text: reference.text) == reference)
        #expect(try DataFingerprint.imageFolder(root: directory.path) == reference)

        // A renamed image (same bytes): the class's manifest differs; a resized class's bytes differ.
        try FileManager.default.moveItem(atPath: directory.path + "/train/class1/2.png", toPath: directory.path + "/train/class1/9.png")
        try directory.write(try ImageTestFiles.png(ImageTestFiles.gradient(width: 30, height: 30)), to: "train/class2/0.png")
        let changed = try DataFingerprint.imageFolder(root: directory.path)
        let differences = reference.differences(from: changed)
        #expect(differences.count == 2)
        #expect(differences[0].hasPrefix("train/class1 has other contents") && differences[0].contains("other file names or file sizes"))
        #expect(differences[1].hasPrefix("train/class2 has ") && differences[1].contains("bytes, expected"))

        // Same names and sizes, other bytes: only the content fingerprint sees it.
        let path = directory.path + "/train/class0/1.png"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let before = try DataFingerprint.imageFolder(root: directory.path, contentHashes: true)
        bytes[bytes.count - 5] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: path))
        #expect(try DataFingerprint.imageFolder(root: directory.path) == changed)
        let after = try DataFingerprint.imageFolder(root: directory.path, contentHashes: true)
        #expect(before.differences(from: after) == ["train/class0 has other contents (blake2b \(after.files[0].digest.prefix(12))…, "
                                                     + "expected \(before.files[0].digest.prefix(12))…: other file names, sizes or bytes)"])
        #expect(reference.differences(from: after).first == "data set is image-folder+contents, expected image-folder")
    }

    /// A thousand ImageNet-style classes (WordNet ids, 1,300 images of ~110 KB each) fit the hello.
    @Test func aThousandClassesFitTheHello() {
        let files = (0..<1000).map { DataFingerprint.File(name: "train/n0\(1_440_764 + $0)", size: 143_000_000, digest: String(repeating: "f", count: 16)) }
        let fingerprint = DataFingerprint(dataset: "image-folder", files: files)
        #expect(fingerprint.text.utf8.count <= WireProtocol.maxFingerprintBytes)
        #expect(throws: Never.self) { try Message.hello(workerName: "w", protocolVersion: WireProtocol.version, dataFingerprint: fingerprint.text).encoded() }
    }
}
