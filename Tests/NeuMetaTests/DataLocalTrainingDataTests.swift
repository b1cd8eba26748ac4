import Foundation
import Testing
@testable import NeuMeta

/// The training data as jobs open it (`LocalTrainingData`): the kind, the image folder streamed
/// or decoded into memory with the same bits, prefetching that forgets what is no longer
/// wanted, a worker's guesses of what it computes next, and a folder fingerprint that fits a
/// hello whatever the number of classes.
@Suite struct DataLocalTrainingDataTests {
    typealias Folder = DataTrainingImagesTests

    @Test func streamedAndInMemoryFoldersGiveTheSameBits() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let folder = try Folder.makeFolder(directory)
        for transform in [ImageTransform.train, .eval] {
            let streamed = StreamingImageFolder(folder: folder, transform: transform, size: 10, mean: Folder.mean, std: Folder.std, depth: 2)
            let memory = try MemoryImageFolder(folder: folder, transform: transform, size: 10)
            #expect(memory.batchImageShape == (3, 10, 10) && memory.count == 12 && memory.classCount == 3)
            let batches: [(indices: [Int], augmentation: UInt64)] = [([0, 5, 11], 1), ([11, 3, 3, 7], 2), ([0, 5, 11], 3)]
            streamed.prefetch(batches)
            for b in batches {
                let (x, y) = try Folder.batch(streamed, b.indices, b.augmentation), (mx, my) = try Folder.batch(memory, b.indices, b.augmentation)
                #expect(x == mx && y == my, "\(transform) batch \(b.indices)")
            }
        }
    }

    /// Batches ahead that a later `prefetch` no longer lists are forgotten (the depth goes to
    /// the new ones); asked for anyway, they are decoded on the spot with the same bits.
    @Test func prefetchForgetsBatchesNoLongerListed() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let folder = try Folder.makeFolder(directory)
        let plain = StreamingImageFolder(folder: folder, transform: .train, size: 8, mean: Folder.mean, std: Folder.std, depth: 0)
        let streamed = StreamingImageFolder(folder: folder, transform: .train, size: 8, mean: Folder.mean, std: Folder.std, depth: 2)
        streamed.prefetch([([0, 1], 1), ([2, 3], 2), ([4, 5], 3)])
        #expect(streamed.prefetched == 2)
        streamed.prefetch([([2, 3], 2), ([6, 7], 4)])
        #expect(streamed.prefetched == 2, "([0, 1], 1) forgotten, ([6, 7], 4) taken on")
        for (indices, seed) in [([0, 1], UInt64(1)), ([6, 7], 4), ([2, 3], 2)] {
            let got = try Folder.batch(streamed, indices, seed), expected = try Folder.batch(plain, indices, seed)
            #expect(got.0 == expected.0 && got.1 == expected.1, "batch \(indices)")
        }
        #expect(streamed.prefetched == 0)
    }

    @Test func kindsAreToldByTheDirectory() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        #expect(DatasetSpec.Kind.detect(directory: directory.path) == .fashionMNIST)
        try directory.write([0], to: "cifar-100/train.bin")
        #expect(DatasetSpec.Kind.detect(directory: directory.path + "/cifar-100") == .cifar100)
        try directory.write([0], to: "cifar-10/data_batch_1.bin")
        #expect(DatasetSpec.Kind.detect(directory: directory.path + "/cifar-10/") == .cifar10)
        _ = try Folder.makeFolder(directory)
        #expect(DatasetSpec.Kind.detect(directory: directory.path) == .folder)
    }

    /// A folder opened as a spec says: streamed at its image size and prefetch depth (the same
    /// object while the same is asked for), or decoded into memory; the wrong kind, a missing
    /// image size and a validation split with other classes are refused, naming the problem.
    @Test func aFolderIsOpenedAsTheSpecSays() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        _ = try Folder.makeFolder(directory)
        let data = LocalTrainingData(kind: .folder, directory: directory.path, prefetch: 3)
        #expect(try data.count() == (12, 3))
        #expect(try data.fingerprint() == DataFingerprint.imageFolder(root: directory.path))
        let spec = DatasetSpec(kind: .folder, imageSize: 9, augment: true)
        let train = try data.training(spec, mean: Folder.mean, std: Folder.std)
        #expect(train is StreamingImageFolder && train.prefetchDepth == 3 && train.batchImageShape == (3, 9, 9))
        #expect(try data.training(spec, mean: Folder.mean, std: Folder.std) as AnyObject === train as AnyObject)
        let memory = LocalTrainingData(kind: .folder, directory: directory.path, inMemory: true)
        #expect(try memory.training(spec, mean: Folder.mean, std: Folder.std) is MemoryImageFolder)

        #expect { try data.training(DatasetSpec(kind: .fashionMNIST), mean: [0], std: [1]) } throws: {
            "\($0)".contains("holds folder data, not the fashion-mnist data asked for")
        }
        #expect { try data.training(DatasetSpec(kind: .folder), mean: Folder.mean, std: Folder.std) } throws: {
            "\($0)".contains("an image folder needs an image size")
        }
        #expect(DatasetSpec(kind: .cifar10, imageSize: 32).problem?.contains("keep their stored size") == true)
        #expect { try data.test(spec, mean: Folder.mean, std: Folder.std, classCount: 3) } throws: { "\($0)".contains("/val") }
        try directory.write(try ImageTestFiles.png(ImageTestFiles.gradient(width: 9, height: 9)), to: "val/class0/0.png")
        try directory.write(try ImageTestFiles.png(ImageTestFiles.gradient(width: 9, height: 9)), to: "val/class2/0.png")
        #expect { try data.test(spec, mean: Folder.mean, std: Folder.std, classCount: 3) } throws: {
            "\($0)".contains("has 2 classes, the training data 3")
        }
        try directory.write(try ImageTestFiles.png(ImageTestFiles.gradient(width: 9, height: 9)), to: "val/class1/0.png")
        let test = try data.test(spec, mean: Folder.mean, std: Folder.std, classCount: 3)
        #expect(test.count == 3 && test.batchImageShape == (3, 9, 9))
    }

    /// More classes, with longer names, than one entry each would fit in a hello: runs of
    /// classes share an entry, and a changed class is named by its run.
    @Test func manyClassesAreGroupedToFitTheHello() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let names = (0..<2000).map { String(format: "class-with-a-long-descriptive-name-%04d", $0) }
        for name in names { try directory.write([1, 2, 3], to: "train/\(name)/0.png") }
        let fingerprint = try DataFingerprint.imageFolder(root: directory.path)
        #expect(fingerprint.text.utf8.count <= WireProtocol.maxFingerprintBytes)
        #expect(fingerprint.files.count < names.count && fingerprint.files.count >= names.count / 8, "\(fingerprint.files.count) entries")
        #expect(fingerprint.files[0].name.hasPrefix("train/\(names[0])..") && fingerprint.files.reduce(0) { $0 + $1.size } == 3 * names.count)
        #expect(DataFingerprint(text: fingerprint.text) == fingerprint)

        try directory.write([1, 2, 3, 4], to: "train/\(names[1234])/0.png")
        let differences = fingerprint.differences(from: try DataFingerprint.imageFolder(root: directory.path))
        #expect(differences.count == 1)
        let run = try #require(differences.first?.split(separator: " ").first.map(String.init))
        let bounds = run.dropFirst("train/".count).components(separatedBy: "..")
        #expect(bounds.count == 2 && bounds[0] <= names[1234] && names[1234] <= bounds[1], "\(differences)")
    }

    /// A worker's prefetch: the configurations it holds, then the same ones of the next round
    /// (up to the depth), and the gradient it then computes is the one computed without any.
    @Test func workerJobPrefetchesItsConfigurationsAndTheNextRounds() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        _ = try Folder.makeFolder(directory)
        let network = try NetworkFamily.make("lenet", widths: [4], classCount: 3, imageSize: 8)
        let base = network.makeParameters()
        var rng = SeededRandom(3)
        base.initializeDefault(rng: &rng)
        let config = INRConfig(hidden: 8, layers: 2, frequencies: 2, outputSize: 25, norm: 4)
        var plan = RoundPlan()
        plan.minWidth = 2; plan.maxWidth = 4; plan.pretrainedWidth = 4; plan.batchSize = 4; plan.datasetCount = 12
        plan.rounds = 4; plan.configurationsPerRound = 3
        let inr = HyperNetwork(config: config, targetSpecs: network.trainableSpecs, seed: 2)
        let data = LocalTrainingData(kind: .folder, directory: directory.path, prefetch: 4)
        var spec = JobSpec(family: "lenet", classCount: 3, pretrainedWidth: 4, mean: Folder.mean, std: Folder.std, inr: config, plan: plan,
                           parameterCount: inr.parameters.count, baseParameterCount: base.count, data: try data.fingerprint())
        spec.dataset = DatasetSpec(kind: .folder, imageSize: 8)
        let parameters = [WorkerState.ParameterHead(offset: 0, values: WireTensor(copying: inr.parameters.values))]
        let job = try WorkerJob(spec: try JobSpec.decode(spec.json), data: data, parameters: parameters, base: WireTensor(copying: base.values),
                                round: 1)
        let streamed = try #require(try data.training(spec.dataset, mean: Folder.mean, std: Folder.std) as? StreamingImageFolder)
        job.prefetch([(1, 0), (1, 2)])
        #expect(streamed.prefetched == 4, "round 1's configurations 0 and 2, and round 2's guessed")
        job.prefetch([(3, 1)])
        #expect(streamed.prefetched == 1, "the last round: nothing to guess")

        let plain = StreamingImageFolder(folder: try ImageFolderDataset(root: directory.path, split: "train"), transform: .train, size: 8,
                                         mean: Folder.mean, std: Folder.std, depth: 0)
        let reference = ConfigurationGradient(inr: HyperNetwork(config: config, targetSpecs: network.trainableSpecs, seed: 2), family: "lenet",
                                              dataset: plain, mean: Folder.mean, std: Folder.std, pretrained: base, pretrainedWidth: 4)
        let expected = try reference.compute(plan.configuration(round: 3, index: 1))
        var heads = 0
        let terms = try job.gradient(round: 3, block: 1) { _, _ in heads += 1 }  // blocks of one configuration
        #expect(terms == [expected] && heads == inr.headRanges.count)
        #expect(Array(reference.inr.parameters.gradients.buffer) == Array(job.objective.inr.parameters.gradients.buffer))
        #expect(streamed.prefetched == 0)
    }
}
