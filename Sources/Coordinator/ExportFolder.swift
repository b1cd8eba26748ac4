import ArgumentParser
import Dispatch
import Foundation
import CommandLineSupport
import NeuMeta

struct ExportFolder: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-folder",
        abstract: "Write a data set as an ImageNet-style image folder (ROOT/train/<class>/*, ROOT/val/<class>/*).",
        discussion: """
        Every image of the training split goes to OUT/train/<class>/NNNNN.<ext> and every image \
        of the test split to OUT/val/<class>/NNNNN.<ext>, NNNNN being its index in the split. \
        Class directories are numbered so that their sorted order is the label order \
        (0-t-shirt-top, 1-trouser, …, 9-ankle-boot), which is how ImageFolderDataset and \
        torchvision's ImageFolder assign labels. Images are resized to SIZE×SIZE with the \
        antialiased bilinear filter of the training transforms, greyscale replicated to RGB, \
        and encoded as 8-bit PNG (lossless) or JPEG on every core.

        Each file is written under a hidden temporary name in its class directory and renamed \
        into place, so an interrupted export leaves only complete images (Ctrl-C stops after \
        the images in progress). OUT must be empty or absent; --overwrite first removes \
        OUT/train and OUT/val.

        Example: neumeta-coordinator export-folder --dataset fashion-mnist --out /data/fmnist-64 --size 64
        """
    )

    enum Dataset: String, ExpressibleByArgument, CaseIterable {
        case fashionMNIST = "fashion-mnist"
    }

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case png, jpeg

        var fileExtension: String { self == .png ? "png" : "jpg" }
    }

    @Option(help: "Data set to export.") var dataset: Dataset
    @Option(help: "Output directory (created; must be empty unless --overwrite).") var out: String
    @Option(help: "Width and height of the written images, 1…1024.") var size: Int
    @Option(help: "Image format: png or jpeg.") var format: Format = .png
    @Option(help: "JPEG quality, 1…100.") var quality = 95
    @Option(help: "Dataset directory.") var data = FashionMNIST.defaultDirectory
    @Option(help: "Export only the first N images of each split (a class absent from them gets an empty folder).")
    var limit: Int?
    @Flag(help: "Export into a non-empty --out, replacing its train/ and val/ directories.") var overwrite = false
    @Flag(help: "Print one JSON object with the result.") var json = false

    func validate() throws {
        guard (1 ... 1024).contains(size) else { throw ValidationError("--size \(size): must be 1…1024") }
        guard (1 ... 100).contains(quality) else { throw ValidationError("--quality \(quality): must be 1…100") }
        if let limit, limit < 1 { throw ValidationError("--limit \(limit): must be at least 1") }
    }

    func run() throws {
        let splits: [(name: String, data: ImageDataset)]
        do {
            splits = [("train", try FashionMNIST.load(split: .train, directory: data)),
                      ("val", try FashionMNIST.load(split: .test, directory: data))]
        } catch let error as DataError {
            throw ExportError("cannot read \(dataset.rawValue) from \(data) (--data): \(error)")
        }
        let classNames = ExportFolder.directoryNames(FashionMNIST.classNames)
        let root = out.count > 1 && out.hasSuffix("/") ? String(out.dropLast()) : out
        try prepareOutput(root, splits: splits.map(\.name), classNames: classNames)

        var planned: [ExportJob] = []
        for (splitIndex, split) in splits.enumerated() {
            let count = min(split.data.count, limit ?? .max)
            let digits = max(5, String(split.data.count - 1).count)
            for index in 0 ..< count {
                let label = Int(split.data.labels[index])
                let number = String(index), padding = String(repeating: "0", count: max(0, digits - number.count))
                planned.append(ExportJob(split: splitIndex, index: index,
                                      path: "\(root)/\(split.name)/\(classNames[label])/\(padding)\(number).\(format.fileExtension)"))
            }
        }
        let jobs = planned
        for (splitIndex, split) in splits.enumerated() {
            var present = Set<Int>()
            for job in jobs where job.split == splitIndex { present.insert(Int(split.data.labels[job.index])) }
            let empty = classNames.indices.filter { !present.contains($0) }.map { classNames[$0] }
            if !empty.isEmpty, let limit {
                log("warning: --limit \(limit) leaves \(split.name)/\(empty.joined(separator: ", ")) without images; "
                    + "ImageFolderDataset and torchvision's ImageFolder refuse a split with an empty class, "
                    + "so raise --limit to use it for training")
            }
        }
        log("exporting \(jobs.count) \(dataset.rawValue) images (" + splits.map { split in
            "\(jobs.lazy.filter { splits[$0.split].name == split.name }.count) \(split.name)"
        }.joined(separator: ", ") + ") to \(root) as \(size)×\(size) \(format.rawValue) on "
            + "\(ProcessInfo.processInfo.activeProcessorCount) cores")

        let state = ExportState()
        let interrupts = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            // A queue of its own: the global queue's threads are all busy encoding.
            let source = DispatchSource.makeSignalSource(signal: number, queue: DispatchQueue(label: "export-folder.signal"))
            source.setEventHandler { state.interrupt() }
            source.resume()
            return source
        }
        defer { interrupts.forEach { $0.cancel() } }

        let start = Date()
        let datasets = splits.map(\.data)
        let (size, format, quality) = (size, format, quality)
        let finished = DispatchGroup()
        DispatchQueue.global().async(group: finished) {
            DispatchQueue.concurrentPerform(iterations: jobs.count) { slot in
                guard !state.stopped else { return }
                let job = jobs[slot], images = datasets[job.split]
                do {
                    let offset = job.index * images.imageSize
                    let source = RGBImage(grey: images.pixels[offset ..< offset + images.imageSize],
                                          width: images.width, height: images.height)
                    let resized = source.width == size && source.height == size
                        ? source : source.resized(width: size, height: size)
                    let bytes = format == .png
                        ? try ImageEncoding.png(resized) : try ImageEncoding.jpeg(resized, quality: quality)
                    try ExportFolder.writeAtomically(bytes, to: job.path)
                    state.finished(bytes: bytes.count)
                } catch {
                    state.fail(error)
                }
            }
        }
        var progress = ProgressLine()
        while finished.wait(timeout: .now() + 0.25) == .timedOut {
            let (done, _) = state.progress
            let elapsed = Date().timeIntervalSince(start), rate = Double(done) / max(elapsed, 1e-9)
            let eta = done > 0 ? formatDuration(Double(jobs.count - done) / rate) : "?"
            progress.draw(String(format: "%d/%d images (%.1f%%), %.0f images/s, ETA %@", done, jobs.count,
                                 100 * Double(done) / Double(max(jobs.count, 1)), rate, eta))
        }
        progress.clear()
        let (done, bytes) = state.progress
        if let failure = state.failure {
            throw ExportError("\(failure)\n\(done) of \(jobs.count) images were written to \(root); "
                              + "fix the problem and run again with --overwrite")
        }
        if state.stopped {
            log("interrupted: \(done) of \(jobs.count) images written to \(root), each complete; "
                + "run again with --overwrite to start over")
            throw ExitCode(130)
        }
        ExportFolder.flush()
        let seconds = Date().timeIntervalSince(start), rate = Double(done) / max(seconds, 1e-9)
        log(String(format: "exported %d files, %lld bytes (%.1f MB) to %@ in %.2f s, %.0f images/s",
                   done, Int64(bytes), Double(bytes) / 1e6, root, seconds, rate))
        if json {
            printJSON(["files": done, "bytes": bytes, "seconds": seconds, "images_per_second": rate, "out": root,
                       "format": format.rawValue, "size": size])
        }
    }

    /// Creates `root/<split>/<class>` for every split and class, after checking that `root` is
    /// empty or absent (or, with `--overwrite`, removing the split directories).
    private func prepareOutput(_ root: String, splits: [String], classNames: [String]) throws {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        if manager.fileExists(atPath: root, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw ExportError("--out \(root) exists and is not a directory") }
            let entries: [String]
            do {
                entries = try manager.contentsOfDirectory(atPath: root)
            } catch {
                throw ExportError("cannot list --out \(root): \(ExportFolder.reason(error))")
            }
            if !entries.isEmpty {
                guard overwrite else {
                    throw ExportError("--out \(root) is not empty (\(entries.count) entries, e.g. \(entries.sorted()[0])); "
                                      + "choose an empty directory or pass --overwrite to replace its train/ and val/")
                }
                for split in splits where entries.contains(split) {
                    do {
                        try manager.removeItem(atPath: root + "/" + split)
                    } catch {
                        throw ExportError("cannot remove \(root)/\(split): \(ExportFolder.reason(error))")
                    }
                }
            }
        }
        for split in splits {
            for name in classNames {
                let directory = "\(root)/\(split)/\(name)"
                do {
                    try manager.createDirectory(atPath: directory, withIntermediateDirectories: true)
                } catch {
                    throw ExportError("cannot create \(directory): \(ExportFolder.reason(error))")
                }
                guard access(directory, W_OK) == 0 else {
                    throw ExportError("cannot write to \(directory): \(String(cString: strerror(errno)))")
                }
            }
        }
    }

    /// Directory names for classes: lower case, each run of other characters than letters and
    /// digits replaced by one `-`, prefixed by the label (zero-padded to a common width) so that
    /// sorting the names gives the labels in order: "T-shirt/top" → "0-t-shirt-top".
    static func directoryNames(_ classNames: [String]) -> [String] {
        let digits = String(max(0, classNames.count - 1)).count
        return classNames.enumerated().map { label, name in
            var safe = ""
            for character in name.lowercased() {
                if character.isASCII && (character.isLetter || character.isNumber) {
                    safe.append(character)
                } else if !safe.isEmpty && !safe.hasSuffix("-") {
                    safe.append("-")
                }
            }
            while safe.hasSuffix("-") { safe.removeLast() }
            let number = String(label)
            return String(repeating: "0", count: digits - number.count) + number + (safe.isEmpty ? "" : "-" + safe)
        }
    }

    /// Writes `bytes` to `.<name>.tmp-<pid>` beside `path` and renames it over `path`, so that
    /// `path` either does not exist or holds all of `bytes`. The temporary name is hidden, so
    /// image folder listings skip one left by a killed process.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        let slash = path.lastIndex(of: "/").map { path.index(after: $0) } ?? path.startIndex
        let temp = String(path[..<slash]) + "." + String(path[slash...]) + ".tmp-\(getpid())"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ExportError("cannot create \(temp): \(String(cString: strerror(errno)))") }
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, bytes.count - written) }
            if result < 0 && errno == EINTR { continue }
            guard result > 0 else {
                let reason = result < 0 ? String(cString: strerror(errno)) : "no progress"
                close(fd)
                unlink(temp)
                throw ExportError("cannot write \(temp): \(reason)")
            }
            written += result
        }
        guard close(fd) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temp)
            throw ExportError("cannot write \(temp): \(reason)")
        }
        guard rename(temp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temp)
            throw ExportError("cannot rename \(temp) to \(path): \(reason)")
        }
    }

    /// Flushes written files to disk (they are complete either way; this makes them durable
    /// before the summary is printed). POSIX offers no narrower call than `sync` for "every file
    /// just written" without an `fsync` per file.
    private static func flush() {
        sync()
    }

    private static func reason(_ error: Error) -> String {
        if let error = error as? CocoaError, let underlying = error.underlying as? POSIXError {
            return String(cString: strerror(underlying.code.rawValue))
        }
        return (error as NSError).localizedDescription
    }
}

/// One image to write: index `index` of split `split`, to `path`.
private struct ExportJob: Sendable {
    let split: Int
    let index: Int
    let path: String
}

/// What the encoding threads report: counts, the first failure, whether to stop.
private final class ExportState: @unchecked Sendable {
    private let lock = NSLock()
    private var files = 0
    private var bytes = 0
    private var error: Error?
    private var stop = false

    var stopped: Bool { lock.withLock { stop } }
    var failure: Error? { lock.withLock { error } }
    var progress: (files: Int, bytes: Int) { lock.withLock { (files, bytes) } }

    func finished(bytes count: Int) { lock.withLock { files += 1; bytes += count } }
    func interrupt() { lock.withLock { stop = true } }
    func fail(_ failure: Error) {
        lock.withLock {
            if error == nil { error = failure }
            stop = true
        }
    }
}

/// A failed export, described for the user.
struct ExportError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
