import Dispatch
import Foundation

/// An ImageNet-style image collection on disk: `root/<split>/<class>/…/*.{jpg,jpeg,png}`.
///
/// As torchvision's `ImageFolder`: classes are the sorted names of the split's
/// subdirectories and label `i` is the `i`-th; each class's images are found recursively,
/// matched by extension case-insensitively, and sorted by relative path. Hidden files and
/// directories (leading `.`) are skipped.
/// The listing is therefore the same on every machine holding the same files. Images are
/// decoded on demand.
public struct ImageFolderDataset: Sendable {
    /// The split directory, `root/<split>`.
    public let directory: String
    /// Class names in label order.
    public let classNames: [String]
    /// `[classes + 1]`: the images of class `c` are `classStarts[c] ..< classStarts[c + 1]`
    /// (the listing is grouped by class, in label order).
    public let classStarts: [Int]
    /// The images' paths below `directory` (`<class>/…/<file>`), UTF-8, one after another;
    /// image `i`'s ends at `nameEnds[i]`. About 4 bytes plus the name per image, so the
    /// listing of 1.28 M files takes tens of MB, not the hundreds an array of paths would.
    private let names: [UInt8]
    private let nameEnds: [UInt32]

    public var count: Int { nameEnds.count }

    private static let extensions: Set<String> = ["jpg", "jpeg", "png"]

    /// Lists `root/<split>`; throws if it is missing, has no classes, or a class has no images.
    public init(root: String, split: String) throws {
        try self.init(directory: (root.hasSuffix("/") ? root : root + "/") + split)
    }

    /// Lists the class subdirectories of `directory`.
    public init(directory path: String) throws {
        let directory = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        guard manager.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            throw DataError.missingFile(path: directory)
        }
        guard isDirectory.boolValue else { throw DataError.badDirectory(path: directory, reason: "not a directory") }
        let entries: [String]
        do {
            entries = try manager.contentsOfDirectory(atPath: directory)
        } catch {
            throw DataError.unreadable(path: directory, reason: "\(error)")
        }
        let classNames = entries.filter { name in
            var isClass: ObjCBool = false
            return !name.hasPrefix(".") && manager.fileExists(atPath: directory + "/" + name, isDirectory: &isClass)
                && isClass.boolValue
        }.sorted()
        guard !classNames.isEmpty else { throw DataError.badDirectory(path: directory, reason: "no class subdirectories") }

        var names: [UInt8] = [], nameEnds: [UInt32] = [], classStarts = [0]
        for name in classNames {
            let classDirectory = directory + "/" + name
            var images = try Self.images(below: classDirectory)
            images.sort()
            guard !images.isEmpty else {
                throw DataError.badDirectory(path: classDirectory, reason: "no .jpg, .jpeg or .png images")
            }
            for image in images {
                names += (name + "/" + image).utf8
                guard names.count <= Int(UInt32.max) else {
                    throw DataError.badDirectory(path: directory, reason: "more than 4 GiB of file names")
                }
                nameEnds.append(UInt32(names.count))
            }
            classStarts.append(nameEnds.count)
        }
        self.directory = directory
        self.classNames = classNames
        self.classStarts = classStarts
        self.names = names
        self.nameEnds = nameEnds
    }

    /// Image `index`'s path below `directory`, `<class>/…/<file>`.
    public func relativePath(_ index: Int) -> String {
        precondition(index >= 0 && index < count, "image index \(index) outside 0..<\(count) in \(directory)")
        let start = index == 0 ? 0 : Int(nameEnds[index - 1]), end = Int(nameEnds[index])
        return names.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[start..<end]), as: UTF8.self) }
    }

    /// Image `index`'s path.
    public func path(_ index: Int) -> String { directory + "/" + relativePath(index) }

    /// Image `index`'s label (its class's position in `classNames`).
    public func label(_ index: Int) -> Int32 {
        precondition(index >= 0 && index < count, "image index \(index) outside 0..<\(count) in \(directory)")
        var low = 0, high = classNames.count  // the class c with classStarts[c] <= index < classStarts[c + 1]
        while high - low > 1 {
            let middle = (low + high) / 2
            if classStarts[middle] <= index { low = middle } else { high = middle }
        }
        return Int32(low)
    }

    /// Every image's path, in listing order (built on each call: for tests and tools).
    public var files: [String] { (0..<count).map(path) }

    /// Every image's label, in listing order (built on each call: for tests and tools).
    public var labels: [Int32] { (0..<classNames.count).flatMap { c in repeatElement(Int32(c), count: classStarts[c + 1] - classStarts[c]) } }

    /// The images below `directory`, as paths relative to it, unsorted; hidden files and
    /// directories are skipped, symbolic links are taken as files. Read with readdir, whose
    /// entry types spare a stat per file (Foundation's enumerator stats each one: minutes
    /// for 1.28 M files instead of seconds).
    private static func images(below directory: String) throws -> [String] {
        var found: [String] = [], pending = [""]  // subdirectories still to read, relative
        while let relative = pending.popLast() {
            let path = relative.isEmpty ? directory : directory + "/" + relative
            guard let handle = opendir(path) else { throw DataError.unreadable(path: path, reason: String(cString: strerror(errno))) }
            defer { closedir(handle) }
            while let entry = readdir(handle) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                guard !name.hasPrefix(".") else { continue }
                let child = relative.isEmpty ? name : relative + "/" + name
                var isDirectory = entry.pointee.d_type == UInt8(DT_DIR)
                if entry.pointee.d_type == UInt8(DT_UNKNOWN) {
                    var info = stat()
                    isDirectory = lstat(path + "/" + name, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
                }
                if isDirectory { pending.append(child) } else if isImage(name) { found.append(child) }
            }
        }
        return found
    }

    /// Whether `relativePath` names an image: a `.jpg`, `.jpeg` or `.png` extension in any
    /// case, and no hidden component (such as macOS `._name.jpg` resource forks).
    private static func isImage(_ relativePath: String) -> Bool {
        extensions.contains((relativePath as NSString).pathExtension.lowercased())
            && !relativePath.split(separator: "/").contains { $0.hasPrefix(".") }
    }

    /// Decodes image `index`.
    public func load(index: Int) throws -> RGBImage {
        precondition(index >= 0 && index < count, "image index \(index) outside 0..<\(count) in \(directory)")
        return try ImageDecoding.decodeFile(path(index))
    }

    /// Decodes, transforms (to `size × size`) and normalises the images at `indices` into
    /// `images` (`[indices.count, 3, size, size]`, `(pixel / 255 - mean[c]) / std[c]`) and
    /// writes their labels into `labels` (`[indices.count]`).
    ///
    /// Images are decoded in parallel. Sample `k` draws its augmentation from a generator
    /// seeded by the `k`-th value of `rng`, so the batch depends only on `rng`'s state, not
    /// on scheduling; `rng` advances by one draw per image. If any image fails, the error of
    /// the first failing position in `indices` is thrown.
    public func fillBatch(indices: some Collection<Int>, transform: ImageTransform, size: Int,
                          rng: inout SeededRandom, mean: [Float], std: [Float],
                          images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) throws {
        try fillBatch(indices: indices, transform: transform, size: size, rng: &rng, mean: mean, std: std, images: images, labels: labels,
                      image: { try load(index: $0) })
    }

    /// The same, taking each image from `image(index)` (an image decoded earlier, or decoded now).
    func fillBatch(indices: some Collection<Int>, transform: ImageTransform, size: Int,
                   rng: inout SeededRandom, mean: [Float], std: [Float],
                   images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>,
                   image source: @Sendable (Int) throws -> RGBImage) throws {
        let jobs = indices.map { (index: $0, seed: rng.next()) }
        let imageSize = 3 * size * size
        let failures = UnsafeMutableBufferPointer<DataError?>.allocate(capacity: jobs.count)
        failures.initialize(repeating: nil)
        defer { failures.deallocate() }
        let output = SendablePointers(images: images, labels: labels, failures: failures.baseAddress!)
        DispatchQueue.concurrentPerform(iterations: jobs.count) { slot in
            let job = jobs[slot]
            output.labels[slot] = label(job.index)
            do {
                var random = SeededRandom(job.seed)
                let image = transform.apply(to: try source(job.index), size: size, rng: &random)
                image.normalize(mean: mean, std: std, into: output.images + slot * imageSize)
            } catch let error as DataError {
                output.failures[slot] = error
            } catch {
                output.failures[slot] = .unreadable(path: path(job.index), reason: "\(error)")
            }
        }
        if let failure = failures.lazy.compactMap({ $0 }).first { throw failure }
    }
}

/// Destinations written concurrently by `fillBatch`, each slot by exactly one iteration.
private struct SendablePointers: @unchecked Sendable {
    let images: UnsafeMutablePointer<Float>
    let labels: UnsafeMutablePointer<Int32>
    let failures: UnsafeMutablePointer<DataError?>
}
