import Foundation
import Testing
@testable import NeuMeta

/// `ImageEncoding` and the `export-folder` command, run as the built executable on the real
/// Fashion-MNIST files.
@Suite struct DataExportFolderTests {
    static let classDirectories = ["0-t-shirt-top", "1-trouser", "2-pullover", "3-dress", "4-coat",
                                   "5-sandal", "6-shirt", "7-sneaker", "8-bag", "9-ankle-boot"]

    private static func randomImage(width: Int, height: Int, seed: UInt64) -> RGBImage {
        var rng = SeededRandom(seed)
        return RGBImage(width: width, height: height, pixels: (0 ..< width * height * 3).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
    }

    private static func meanAbsoluteError(_ a: RGBImage, _ b: RGBImage) -> Double {
        precondition(a.pixels.count == b.pixels.count)
        return Double(zip(a.pixels, b.pixels).reduce(0) { $0 + abs(Int($1.0) - Int($1.1)) }) / Double(a.pixels.count)
    }

    /// Fashion-MNIST image `index` of `split` as RGB, resized to `size × size` as the export does.
    private static func source(_ data: ImageDataset, _ index: Int, size: Int) -> RGBImage {
        let offset = index * data.imageSize
        return RGBImage(grey: data.pixels[offset ..< offset + data.imageSize], width: data.width, height: data.height)
            .resized(width: size, height: size)
    }

    private static func export(_ arguments: [String], in directory: DataTestDirectory, label: String) throws -> ChildProcess {
        let child = try ChildProcess(Products.coordinator, ["export-folder", "--dataset", "fashion-mnist"] + arguments,
                                     in: URL(fileURLWithPath: directory.path), label: label)
        #expect(child.wait(timeout: 300) != nil, "export-folder did not finish: \(child.stderr)")
        return child
    }

    /// Every path under `root`, relative, hidden entries included.
    private static func allEntries(_ root: String) -> [String] {
        (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []).sorted()
    }

    @Test(arguments: [(1, 1), (37, 23), (64, 64)]) func pngRoundTripIsExact(width: Int, height: Int) throws {
        let image = Self.randomImage(width: width, height: height, seed: UInt64(width * 1000 + height))
        let encoded = try ImageEncoding.png(image)
        #expect(encoded.starts(with: [0x89, 0x50, 0x4E, 0x47]))
        #expect(try ImageDecoding.decode(encoded, path: "random.png") == image)
    }

    /// Quality 95 quantises low frequencies by one or two levels, and 4:2:0 subsampling
    /// averages chroma over 2×2 pixels. A grey Fashion-MNIST image, as the export writes it,
    /// has no chroma to lose: it must come back grey and within 1 level on average. A smooth
    /// colour image (random 4×4 values upsampled to 64×64) loses a little chroma at the
    /// gradients' kinks: within 2 levels on average. (Uniform noise, JPEG's worst case, is
    /// not a meaningful target: chroma subsampling alone costs tens of levels there.)
    @Test func jpegRoundTripIsClose() throws {
        let garment = Self.source(try FashionMNIST.load(split: .test), 0, size: 64)
        let garmentBack = try ImageDecoding.decode(ImageEncoding.jpeg(garment), path: "garment.jpg")
        #expect(garmentBack.width == 64 && garmentBack.height == 64)
        #expect(Self.meanAbsoluteError(garment, garmentBack) < 1)
        #expect(garmentBack.pixels.enumerated().allSatisfy { abs(Int($1) - Int(garmentBack.pixels[$0 - $0 % 3])) <= 1 },
                "a grey image comes back grey")

        for seed: UInt64 in 1 ... 8 {
            let smooth = Self.randomImage(width: 4, height: 4, seed: seed).resized(width: 64, height: 64)
            let smoothBack = try ImageDecoding.decode(ImageEncoding.jpeg(smooth), path: "smooth.jpg")
            #expect(Self.meanAbsoluteError(smooth, smoothBack) < 2)
        }
        let smooth = Self.randomImage(width: 4, height: 4, seed: 1).resized(width: 64, height: 64)

        // Lower quality, larger error, smaller file.
        let low = try ImageEncoding.jpeg(smooth, quality: 20)
        #expect(low.count < (try ImageEncoding.jpeg(smooth)).count)
        #expect(throws: ImageEncodingError.self) { try ImageEncoding.jpeg(smooth, quality: 0) }
        #expect(throws: ImageEncodingError.self) { try ImageEncoding.jpeg(smooth, quality: 101) }
    }

    /// `--limit 20 --size 64`: the first 20 training and 20 test images in label-ordered class
    /// folders, with the IDX labels and the resized IDX pixels (exactly for PNG; for JPEG within
    /// the bound of `jpegRoundTripIsClose`). The first 20 test images cover all ten classes, so
    /// `ImageFolderDataset` opens `val` and finds the same files and labels; the first 20
    /// training images hold no bag, so `train/8-bag` is empty, the command warns, and
    /// `ImageFolderDataset` refuses `train` (as torchvision's `ImageFolder` does).
    @Test(.timeLimit(.minutes(5)), arguments: ["png", "jpeg"]) func exportWritesTheFirstImagesOfEachSplit(format: String) throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let out = directory.path + "/out"
        let child = try Self.export(["--out", out, "--size", "64", "--limit", "20", "--format", format, "--json"],
                                    in: directory, label: "export")
        #expect(child.process.terminationStatus == 0, "\(child.stderr)")
        let summary = try JSONSerialization.jsonObject(with: Data(child.stdout.utf8)) as? [String: Any]
        #expect(summary?["files"] as? Int == 40)
        #expect(child.stderr.contains("exported 40 files"), "\(child.stderr)")
        #expect(child.stderr.contains("warning: --limit 20 leaves train/8-bag without images"), "\(child.stderr)")
        #expect(!child.stderr.contains("leaves val/"), "\(child.stderr)")

        let entries = Self.allEntries(out)
        #expect(!entries.contains { $0.split(separator: "/").contains { $0.hasPrefix(".") } }, "no temporary files left")
        let extensionName = format == "png" ? ".png" : ".jpg"
        let files = entries.filter { $0.hasSuffix(extensionName) }
        #expect(files.count == 40)
        #expect(entries.count == files.count + 2 + 2 * 10, "only train/, val/, their class folders and images")

        var totalBytes = 0
        for (split, idxSplit) in [("train", DatasetSplit.train), ("val", DatasetSplit.test)] {
            let idx = try FashionMNIST.load(split: idxSplit)
            let splitDirectory = "\(out)/\(split)"
            #expect(try FileManager.default.contentsOfDirectory(atPath: splitDirectory).sorted() == Self.classDirectories)
            // The folders as ImageFolder reads them: label = position of the class in sorted order.
            var listing: [(path: String, label: Int32)] = []
            for (label, name) in Self.classDirectories.enumerated() {
                let images = try FileManager.default.contentsOfDirectory(atPath: "\(splitDirectory)/\(name)").sorted()
                listing += images.map { ("\(splitDirectory)/\(name)/\($0)", Int32(label)) }
            }
            #expect(listing.count == 20)
            let expectedCounts = Dictionary(grouping: idx.labels.prefix(20), by: { $0 }).mapValues(\.count)
            #expect(Dictionary(grouping: listing.map(\.label), by: { $0 }).mapValues(\.count) == expectedCounts)

            var indices: [Int] = []
            for (path, label) in listing {
                let name = (path as NSString).lastPathComponent
                #expect(name.count == 5 + extensionName.count, "five-digit index and extension: \(name)")
                let index = try #require(Int((name as NSString).deletingPathExtension))
                indices.append(index)
                #expect(label == idx.labels[index], "\(path)")
                let decoded = try ImageDecoding.decodeFile(path)
                let expectedImage = Self.source(idx, index, size: 64)
                if format == "png" {
                    #expect(decoded == expectedImage, "\(path)")
                } else {
                    #expect(decoded.width == 64 && decoded.height == 64)
                    #expect(Self.meanAbsoluteError(decoded, expectedImage) < 1, "\(path)")
                }
                totalBytes += try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
            }
            #expect(indices.sorted() == Array(0 ..< 20), "the first 20 of the split, each once")

            if expectedCounts.count == 10 {
                let folder = try ImageFolderDataset(root: out, split: split)
                #expect(folder.classNames == Self.classDirectories)
                #expect(folder.files == listing.map(\.path))
                #expect(folder.labels == listing.map(\.label))
                #expect(folder.labels == folder.files.map { idx.labels[Int(($0 as NSString).lastPathComponent.prefix(5))!] })
                if format == "png" { #expect(try folder.load(index: 0) == ImageDecoding.decodeFile(listing[0].path)) }
            } else {
                #expect(throws: DataError.badDirectory(path: "\(splitDirectory)/8-bag", reason: "no .jpg, .jpeg or .png images")) {
                    try ImageFolderDataset(root: out, split: split)
                }
            }
        }
        #expect(summary?["bytes"] as? Int == totalBytes)
    }

    @Test(.timeLimit(.minutes(5))) func nonEmptyOutputIsRefusedUnlessOverwrite() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let out = directory.path + "/out"
        let first = try Self.export(["--out", out, "--size", "16", "--limit", "5"], in: directory, label: "first")
        #expect(first.process.terminationStatus == 0, "\(first.stderr)")
        let before = Self.allEntries(out)
        let modified = try FileManager.default.attributesOfItem(atPath: "\(out)/train/9-ankle-boot/00000.png")[.modificationDate] as? Date

        let refused = try Self.export(["--out", out, "--size", "32", "--limit", "3"], in: directory, label: "refused")
        #expect(refused.process.terminationStatus != 0)
        #expect(refused.stderr.contains("\(out) is not empty"), "\(refused.stderr)")
        #expect(refused.stderr.contains("--overwrite"))
        #expect(Self.allEntries(out) == before)
        #expect(try FileManager.default.attributesOfItem(atPath: "\(out)/train/9-ankle-boot/00000.png")[.modificationDate] as? Date == modified)

        // A stray file alone makes a directory non-empty.
        let other = directory.path + "/other"
        try directory.write(Array("notes".utf8), to: "other/notes.txt")
        let strayRefused = try Self.export(["--out", other, "--size", "8", "--limit", "1"], in: directory, label: "stray")
        #expect(strayRefused.process.terminationStatus != 0)
        #expect(strayRefused.stderr.contains("is not empty"))

        // --overwrite replaces train/ and val/ entirely: no stale files from the larger export.
        let replaced = try Self.export(["--out", out, "--size", "32", "--limit", "3", "--format", "jpeg", "--overwrite"],
                                       in: directory, label: "overwrite")
        #expect(replaced.process.terminationStatus == 0, "\(replaced.stderr)")
        let files = Self.allEntries(out).filter { $0.contains(".") }
        #expect(files.count == 6 && files.allSatisfy { $0.hasSuffix(".jpg") }, "\(files)")
        let image = try ImageDecoding.decodeFile("\(out)/\(files[0])")
        #expect(image.width == 32 && image.height == 32)
    }

    @Test(.timeLimit(.minutes(5))) func badArgumentsFailWithClearMessages() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let out = directory.path + "/out"
        let notADirectory = try directory.write(Array("x".utf8), to: "file")
        let cases: [(arguments: [String], message: String)] = [
            (["--out", out, "--size", "0"], "--size 0: must be 1…1024"),
            (["--out", out, "--size", "1025"], "--size 1025: must be 1…1024"),
            (["--out", out, "--size", "64", "--format", "gif"], "'gif' is invalid for '--format"),
            (["--out", out, "--size", "64", "--limit", "0"], "--limit 0: must be at least 1"),
            (["--out", out, "--size", "64", "--data", directory.path + "/nowhere"],
             "cannot read fashion-mnist from \(directory.path)/nowhere (--data): \(directory.path)/nowhere/train-images-idx3-ubyte[.gz]: no such file or directory"),
            (["--out", notADirectory, "--size", "64"], "--out \(notADirectory) exists and is not a directory"),
            (["--out", notADirectory + "/sub", "--size", "64"], "cannot create \(notADirectory)/sub/train/0-t-shirt-top"),
        ]
        for (number, (arguments, message)) in cases.enumerated() {
            let child = try Self.export(arguments, in: directory, label: "bad\(number)")
            #expect(child.process.terminationStatus != 0, "\(arguments)")
            #expect(child.stderr.contains(message), "\(arguments): \(child.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: out), "nothing created for a rejected command")
    }

    /// SIGINT stops the export after the images in progress: exit status 130, and every file
    /// present is a complete image (no temporary files, every one decodes).
    @Test(.timeLimit(.minutes(5))) func interruptedExportLeavesOnlyCompleteImages() throws {
        let directory = try DataTestDirectory()
        defer { directory.remove() }
        let out = directory.path + "/out"
        let child = try ChildProcess(Products.coordinator, ["export-folder", "--dataset", "fashion-mnist", "--out", out,
                                                            "--size", "256"],
                                     in: URL(fileURLWithPath: directory.path), label: "interrupted")
        #expect(child.waitForLog(timeout: 60) { $0.contains("exporting 70000") })
        // Let some files appear, then interrupt.
        let deadline = Date().addingTimeInterval(30)
        while Self.allEntries(out).filter({ $0.hasSuffix(".png") }).count < 20 && Date() < deadline { usleep(20_000) }
        child.signal(SIGINT)
        #expect(child.wait(timeout: 60) == 130, "\(child.stderr)")
        #expect(child.stderr.contains("interrupted:"), "\(child.stderr)")
        let entries = Self.allEntries(out)
        #expect(!entries.contains { $0.split(separator: "/").contains { $0.hasPrefix(".") } }, "no temporary files left")
        let files = entries.filter { $0.hasSuffix(".png") }
        #expect(files.count >= 20 && files.count < 70_000)
        for file in files {
            let image = try ImageDecoding.decodeFile("\(out)/\(file)")
            #expect(image.width == 256 && image.height == 256)
        }
    }
}
