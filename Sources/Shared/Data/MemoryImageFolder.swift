import Dispatch
import Foundation

/// An image folder decoded into memory once — every image at its stored size as 8-bit RGB —
/// then transformed and normalised batch by batch exactly as `StreamingImageFolder` does: the
/// same bits for the same (indices, augmentation seed), without decoding every image again each
/// epoch. For folders whose decoded images fit in memory (3 bytes a pixel).
public final class MemoryImageFolder: TrainingImages, @unchecked Sendable {
    public let folder: ImageFolderDataset
    public let transform: ImageTransform
    public let size: Int
    /// `[count]` decoded images, in listing order.
    private let decoded: [RGBImage]

    public var name: String { folder.directory }
    public var count: Int { folder.count }
    public var classCount: Int { folder.classNames.count }
    public var batchImageShape: (channels: Int, height: Int, width: Int) { (3, size, size) }

    /// Decodes every image of `folder` (in parallel); throws the error of the first image, in
    /// listing order, that fails.
    public init(folder: ImageFolderDataset, transform: ImageTransform, size: Int) throws {
        precondition(size >= 1, "image size \(size)")
        let n = folder.count
        let slots = UnsafeMutableBufferPointer<Result<RGBImage, DataError>?>.allocate(capacity: n)
        slots.initialize(repeating: nil)
        defer { slots.deinitialize(); slots.deallocate() }
        let output = DecodedSlots(base: slots.baseAddress!)
        DispatchQueue.concurrentPerform(iterations: n) { i in
            do { output.base[i] = .success(try folder.load(index: i)) } catch let error as DataError {
                output.base[i] = .failure(error)
            } catch {
                output.base[i] = .failure(.unreadable(path: folder.path(i), reason: "\(error)"))
            }
        }
        decoded = try slots.map { try $0!.get() }
        self.folder = folder; self.transform = transform; self.size = size
    }

    public func fillBatch(indices: [Int], augmentation: UInt64, mean: [Float], std: [Float],
                          images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) throws {
        var rng = SeededRandom(augmentation)
        try folder.fillBatch(indices: indices, transform: transform, size: size, rng: &rng, mean: mean, std: std, images: images,
                             labels: labels) { decoded[$0] }
    }
}

/// The result slots `MemoryImageFolder.init` fills concurrently, each by exactly one iteration.
private struct DecodedSlots: @unchecked Sendable {
    let base: UnsafeMutablePointer<Result<RGBImage, DataError>?>
}
