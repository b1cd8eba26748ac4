import ArgumentParser
import Foundation
import CommandLineSupport
import NeuMeta

struct Permute: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Permute a base network's channels along shortest Hamiltonian paths (intra-model smoothness).",
        discussion: """
        For every channel group (a layer's output channels with its bias and the next layer's \
        input channels; whole residual streams in ResNets), orders the channels along a \
        shortest Hamiltonian path of the L1 distances between their parameter slices (2-opt and \
        Or-opt local search from a seed), reorders them, and checks that the network computes the \
        same function: the largest absolute logit difference on test images is printed, with \
        the total variation before and after.

        Example: neumeta-coordinator permute --base runs/lenet-32.safetensors --out runs/lenet-32-permuted.safetensors
        """
    )

    @Option(help: "Base network checkpoint.") var base: String
    @Option(help: "Where to write the permuted checkpoint.") var out: String
    @Option(help: "Seed of the path search.") var seed: UInt64 = 0
    @Option(help: "Local-search descents per group (1 + perturbation restarts).") var iterations = 1000
    @Option(help: "Test images used to check the outputs are unchanged (Fashion-MNIST families).") var checkImages = 1000
    @Option(help: "Dataset directory for the output check.") var data = FashionMNIST.defaultDirectory
    @Flag(help: "Print one JSON object with the result.") var json = false
    @OptionGroup var blas: BLASOptions

    func run() throws {
        blas.apply()
        let checkpoint = try NetworkCheckpoint.load(path: base)
        let network = checkpoint.network, p = checkpoint.parameters
        // Inputs for the invariance check: test images where the family reads Fashion-MNIST, else noise.
        let n = max(1, checkImages)
        let x = Tensor(zeros: [n] + network.inputShape)
        if network.inputShape == [1, 28, 28], let test = try? FashionMNIST.load(split: .test, directory: data) {
            let labels = UnsafeMutablePointer<Int32>.allocate(capacity: n)
            defer { labels.deallocate() }
            test.fillBatch(indices: 0..<min(n, test.count), mean: checkpoint.mean, std: checkpoint.std, images: x.data, labels: labels)
        } else {
            var rng = SeededRandom(seed, 0xC4EC)
            for i in 0..<x.count { x[i] = rng.normal() }
        }
        let before = network.forward(p, input: x, mode: .inference).clone()
        let report = Permutation.permute(p, groups: network.channelGroups, seed: seed, budget: SearchBudget(maxIterations: iterations))
        let after = network.forward(p, input: x, mode: .inference)
        var maxDiff: Float = 0
        for i in 0..<after.count { maxDiff = max(maxDiff, abs(after[i] - before[i])) }
        for g in report.groups {
            log(String(format: "%@: %d channels, path %.1f → %.1f, total variation %.1f → %.1f", g.name, g.size, g.pathLengthBefore,
                       g.pathLengthAfter, g.totalVariationBefore, g.totalVariationAfter))
        }
        log(String(format: "total variation %.1f → %.1f (%.1f%% lower); max |Δ logit| on %d inputs: %.3g", report.totalVariationBefore,
                   report.totalVariationAfter, 100 * (1 - report.totalVariationAfter / report.totalVariationBefore), n, Double(maxDiff)))
        var metadata = checkpoint.metadata.filter { $0.key != CheckpointStore.digestKey }
        metadata["permuted"] = "shp seed \(seed)"
        try NetworkCheckpoint(network: network, parameters: p, mean: checkpoint.mean, std: checkpoint.std, metadata: metadata).save(to: out)
        log("saved \(out)")
        if json {
            printJSON(["total_variation_before": report.totalVariationBefore, "total_variation_after": report.totalVariationAfter,
                       "max_abs_logit_difference": Double(maxDiff), "groups": report.groups.map { ["name": $0.name, "size": $0.size,
                       "total_variation_before": $0.totalVariationBefore, "total_variation_after": $0.totalVariationAfter] }])
        }
    }
}
