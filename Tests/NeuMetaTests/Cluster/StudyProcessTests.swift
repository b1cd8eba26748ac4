import Foundation
import NeuMeta
import Testing

/// `neumeta-coordinator study …` end to end on a small experiment (the process tests' fixture:
/// a LeNet w = 8 base, widths 4…8, a tiny INR, 30 rounds of batches of 16 of Fashion-MNIST).
@Suite(.serialized) struct StudyProcessTests {
    static func study(_ fixture: ClusterFixture, _ arguments: [String]) throws -> ChildProcess {
        let child = try ChildProcess(Products.coordinator, ["study"] + arguments + ["--config", fixture.directory.appendingPathComponent("cluster.yaml").path,
                                                                                    "--epochs", String(Double(ClusterFixture.rounds * 16) / 60_000)],
                                     in: fixture.directory, label: "study")
        #expect(child.wait(timeout: 300) == 0, "study \(arguments.first ?? "") failed:\n\(child.stderr.suffix(2000))")
        return child
    }

    /// Two INRs (ε of the recipe and ε = 0) trained and tested at every width asked, K = 1 and
    /// K = 2, beside the resampled base; a second run reuses both INRs and writes the same table.
    @Test func extrapolationTrainsBothVariantsAndReusesThem() throws {
        let fixture = try ClusterFixture("study-extrapolation")
        defer { fixture.remove() }
        let out = fixture.directory.appendingPathComponent("extrapolation").path
        let first = try Self.study(fixture, ["extrapolation", "--widths", "2,8,12", "--samples", "2", "--out", out])
        let table = try String(contentsOfFile: out + "/extrapolation.md", encoding: .utf8)
        let rows = table.split(separator: "\n").filter { $0.hasPrefix("| ") && !$0.hasPrefix("| width") && !$0.contains("---") }
        #expect(rows.map { $0.split(separator: "|")[0].trimmingCharacters(in: .whitespaces) } == ["2", "8", "12"])
        #expect(table.contains("| width | noise_k1 | noise_k2 | clean_k1 | clean_k2 | resampled | params |"))
        #expect(FileManager.default.fileExists(atPath: out + "/extrapolation.svg") && FileManager.default.fileExists(atPath: out + "/extrapolation.csv"))
        let noisy = try INRCheckpoint.load(path: out + "/noise.safetensors"), clean = try INRCheckpoint.load(path: out + "/clean.safetensors")
        #expect(noisy.plan.noise == 0.5 && clean.plan.noise == 0)
        #expect(noisy.round == ClusterFixture.rounds && clean.round == ClusterFixture.rounds)
        #expect(!first.stderr.contains("reusing"))

        let second = try Self.study(fixture, ["extrapolation", "--widths", "2,8,12", "--samples", "2", "--out", out])
        #expect(second.stderr.contains("noise: reusing") && second.stderr.contains("clean: reusing"))
        #expect(try String(contentsOfFile: out + "/extrapolation.md", encoding: .utf8) == table)
    }

    /// One INR per (ε, permutation) pair; one summary row each, the accuracy-by-width table,
    /// and the correlation line.
    @Test func smoothnessTrainsEveryPairAndSummarisesThem() throws {
        let fixture = try ClusterFixture("study-smoothness")
        defer { fixture.remove() }
        let out = fixture.directory.appendingPathComponent("smoothness").path
        _ = try Self.study(fixture, ["smoothness", "--noise", "0,0.5", "--widths", "8", "--out", out])
        let summary = try String(contentsOfFile: out + "/smoothness.md", encoding: .utf8)
        let rows = summary.split(separator: "\n").filter { $0.hasPrefix("| ") && !$0.hasPrefix("| ε") }
        #expect(rows.count == 4)
        #expect(rows.map { $0.split(separator: "|").prefix(2).map { $0.trimmingCharacters(in: .whitespaces) } }
                == [["0", "on"], ["0.5", "on"], ["0", "off"], ["0.5", "off"]])
        #expect(summary.contains("Pearson correlation of total variation and mean accuracy over the 4 runs"))
        let widths = try String(contentsOfFile: out + "/smoothness-widths.md", encoding: .utf8)
        #expect(widths.contains("| width | noise0-permuted | noise0.5-permuted | noise0-unpermuted | noise0.5-unpermuted | params |"))
        // Without the permutation the total variation of the base (and so of what the INR is
        // trained toward) is higher: the permuted runs' rows must not all equal the others'.
        let unpermuted = try INRCheckpoint.load(path: out + "/noise0.5-unpermuted.safetensors")
        let permuted = try INRCheckpoint.load(path: out + "/noise0.5-permuted.safetensors")
        #expect(TotalVariation.of(unpermuted.base, tensors: Array(unpermuted.base.specs.indices))
                > TotalVariation.of(permuted.base, tensors: Array(permuted.base.specs.indices)))
    }
}
