/// Deterministic example order for data-parallel training.
///
/// An epoch's order is a pure function of `(seed, epoch)`: every rank computes the same
/// permutation and cuts it into batches, so no order has to be
/// communicated and a resumed run replays exactly.
public struct EpochOrder {
    /// A permutation of `0 ..< count` drawn from `SeededRandom(seed, epoch)`.
    public static func indices(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        precondition(count >= 0 && epoch >= 0, "negative count or epoch")
        var random = SeededRandom(seed, UInt64(epoch))
        return random.permutation(count)
    }

    /// `indices` cut in order into batches of `size`; a final shorter batch is kept unless
    /// `dropLast`.
    public static func batches(_ indices: [Int], size: Int, dropLast: Bool) -> [ArraySlice<Int>] {
        precondition(size > 0, "batch size must be positive")
        let end = dropLast ? indices.count - indices.count % size : indices.count
        return stride(from: 0, to: end, by: size).map { indices[$0 ..< min($0 + size, end)] }
    }
}
