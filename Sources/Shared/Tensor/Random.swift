import Foundation

/// Deterministic pseudo-random numbers: xoshiro256** seeded through SplitMix64.
///
/// Every random choice in training (shuffles, widths, noise, initialisation) draws from a
/// generator derived from explicit integers, so a result is a pure function of its seeds.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    /// A generator for the stream named by `seed` and any number of further keys
    /// (e.g. `SeededRandom(seed, round, configuration)`).
    public init(_ seed: UInt64, _ keys: UInt64...) {
        var x = seed
        for k in keys { x = SeededRandom.splitMix(&x) ^ (k &* 0x9E37_79B9_7F4A_7C15) }
        s0 = SeededRandom.splitMix(&x); s1 = SeededRandom.splitMix(&x)
        s2 = SeededRandom.splitMix(&x); s3 = SeededRandom.splitMix(&x)
    }

    @inline(__always) static func splitMix(_ x: inout UInt64) -> UInt64 {
        x &+= 0x9E37_79B9_7F4A_7C15
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    @inline(__always) public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t
        s3 = (s3 << 45) | (s3 >> 19)
        return result
    }

    /// Uniform in [0, 1) with 24 random bits.
    @inline(__always) public mutating func uniform() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// Uniform in [low, high).
    @inline(__always) public mutating func uniform(_ low: Float, _ high: Float) -> Float {
        low + (high - low) * uniform()
    }

    /// Standard normal by Box–Muller.
    public mutating func normal() -> Float {
        let u1 = max(Double(next() >> 11) * 0x1.0p-53, 1e-300)
        let u2 = Double(next() >> 11) * 0x1.0p-53
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    /// Uniform integer in `0 ..< bound`.
    @inline(__always) public mutating func index(below bound: Int) -> Int {
        Int(next() % UInt64(bound))
    }

    /// A uniformly shuffled `0 ..< count` (Fisher–Yates).
    public mutating func permutation(_ count: Int) -> [Int] {
        var p = Array(0..<count)
        if count > 1 { for i in stride(from: count - 1, to: 0, by: -1) { p.swapAt(i, index(below: i + 1)) } }
        return p
    }
}

