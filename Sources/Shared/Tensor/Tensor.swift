/// Owned, zero-initialised, 64-byte aligned `Float` memory.
///
/// Parameters, gradients and activations live in a few of these flat buffers; a `Tensor` is a
/// shaped view into one, so optimizers, averaging and checkpointing are single loops over a
/// buffer (llm.c style).
public final class FloatStorage: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Float>
    public let count: Int

    public init(count: Int) {
        precondition(count >= 0, "negative storage size \(count)")
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
        base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        base.initialize(repeating: 0, count: max(count, 1))
        self.count = count
    }

    deinit { UnsafeMutableRawPointer(base).deallocate() }

    public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: base, count: count) }
}

/// A shaped, row-major (C-contiguous) view of `count` floats inside a `FloatStorage`.
///
/// Copying a `Tensor` copies the view, not the data: two copies alias the same floats.
public struct Tensor: @unchecked Sendable {
    public let storage: FloatStorage
    public let offset: Int
    public let shape: [Int]
    public let count: Int

    /// A new zero tensor with its own storage.
    public init(zeros shape: [Int]) {
        let n = shape.reduce(1, *)
        self.init(storage: FloatStorage(count: n), offset: 0, shape: shape)
    }

    /// A new tensor holding `values` (row-major), which must have `shape.product` elements.
    public init(shape: [Int], values: [Float]) {
        self.init(zeros: shape)
        precondition(values.count == count, "\(values.count) values for shape \(shape)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    /// A view of `storage[offset ..< offset + shape.product]`.
    public init(storage: FloatStorage, offset: Int, shape: [Int]) {
        let n = shape.reduce(1, *)
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(offset >= 0 && offset + n <= storage.count,
                     "view [\(offset), \(offset + n)) outside storage of \(storage.count)")
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.count = n
    }

    /// Pointer to the first element of the view.
    @inlinable public var data: UnsafeMutablePointer<Float> { storage.base + offset }
    public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: data, count: count) }
    public var rank: Int { shape.count }

    /// The same floats under another shape with the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(storage: storage, offset: offset, shape: newShape)
    }

    /// A view of `newShape.product` floats starting `start` elements into this view.
    public func slice(from start: Int, shape newShape: [Int]) -> Tensor {
        let n = newShape.reduce(1, *)
        precondition(start >= 0 && start + n <= count, "slice [\(start), \(start + n)) outside \(count)")
        return Tensor(storage: storage, offset: offset + start, shape: newShape)
    }

    /// Element `i` of the flat row-major view.
    public subscript(i: Int) -> Float {
        get { precondition(i >= 0 && i < count); return data[i] }
        nonmutating set { precondition(i >= 0 && i < count); data[i] = newValue }
    }

    public func fill(_ value: Float) { data.update(repeating: value, count: count) }
    public func zero() { fill(0) }

    public func copy(from other: Tensor) {
        precondition(other.count == count, "copy of \(other.shape) into \(shape)")
        data.update(from: other.data, count: count)
    }

    /// A deep copy with its own storage.
    public func clone() -> Tensor {
        let t = Tensor(zeros: shape)
        t.copy(from: self)
        return t
    }

    public func toArray() -> [Float] { Array(buffer) }
}
