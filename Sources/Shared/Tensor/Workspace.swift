/// Scratch memory reused across steps: each slot grows to the largest size asked of it and is
/// never freed, so after the first step a training loop allocates nothing.
///
/// A workspace belongs to one thread of work; slots are small integers chosen by the caller
/// (`Workspace.Slot`) so that layers running one after another may share them.
public final class Workspace: @unchecked Sendable {
    public enum Slot: Int, CaseIterable { case columns = 0, product, gradColumns, gradProduct, extra }

    private var storages: [FloatStorage?] = Array(repeating: nil, count: Slot.allCases.count)
    /// Number of times a slot had to grow; tests use it to show the steady state allocates nothing.
    public private(set) var growthCount = 0

    public init() {}

    /// At least `count` floats of slot `slot`; contents are unspecified.
    public func buffer(_ slot: Slot, count: Int) -> UnsafeMutablePointer<Float> {
        if let s = storages[slot.rawValue], s.count >= count { return s.base }
        growthCount += 1
        let s = FloatStorage(count: count)
        storages[slot.rawValue] = s
        return s.base
    }
}
