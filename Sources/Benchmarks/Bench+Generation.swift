import Foundation
import CommandLineSupport
import NeuMeta

/// The `generation` part: what a sampled network costs — the time to produce one from the INR
/// (K = 1 and K = K, per width) and the bytes stored, the INR against every individually
/// trained width of its range.
extension Bench {
    func generationPart(_ out: inout Figures) throws {
        let generator: NetworkGenerator, source: String, trained: ClosedRange<Int>, noise: Float
        if let inr = generationINR {
            let checkpoint = try INRCheckpoint.load(path: inr)
            generator = checkpoint.makeGenerator()
            source = inr
            trained = checkpoint.plan.minWidth...checkpoint.plan.maxWidth
            noise = checkpoint.plan.noise
        } else {
            // Latency does not depend on the INR's values: a freshly initialised default-recipe
            // LeNet INR times the same work as a trained one.
            var config = INRConfig(), plan = RoundPlan(), optimizer = OptimizerSettings()
            Recipe.default.apply(to: &plan, &optimizer, &config)
            config.norm = Float(plan.maxWidth)
            let inr = HyperNetwork(config: config, targetSpecs: LeNet(width: plan.pretrainedWidth).trainableSpecs, seed: seed)
            generator = NetworkGenerator(inr: inr, family: "lenet", classCount: 10)
            source = "a new default-recipe LeNet INR"
            trained = plan.minWidth...plan.maxWidth
            noise = plan.noise
        }
        let k = generationSamples, repeats = self.repeats ?? (quick ? 3 : 20)
        let widths = try parseWidths(generationWidths, option: "--generation-widths")
        let section = "generation (\(generator.family), \(source); median of \(repeats) after a warm-up)"
        var rows: [[String: Any]] = []
        for (index, width) in widths.enumerated() {
            func median(_ samples: Int) throws -> Double {
                _ = try generator.sample(width: width, samples: samples, noise: noise, seed: seed)   // builds the width's buffers
                var times: [Double] = []
                for r in 0..<repeats {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    _ = try generator.sample(width: width, samples: samples, noise: noise, seed: seed &+ UInt64(r))
                    times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
                }
                return times.sorted()[times.count / 2]
            }
            let one = try median(1), many = try median(k)
            let parameters = try generator.morph.network(width: width, classCount: generator.classCount).parameterSpecs.reduce(0) { $0 + $1.count }
            rows.append(["width": width, "k1_ms": one, "k\(k)_ms": many, "parameters": parameters])
            out.add("generation_w\(width)_ms", one, "width \(width) (\(parameters) parameters): K = 1 / K = \(k)",
                    String(format: "%.2f ms / %.2f ms", one, many), section: index == 0 ? section : nil)
        }
        out.json["generation"] = rows
        // Bytes as float32: the INR (its EMA parameters, what sampling reads) against one network
        // of every integer width of the trained range.
        let inrBytes = 4 * generator.inr.parameters.count
        var individualBytes = 0
        for w in trained {
            individualBytes += 4 * (try generator.morph.network(width: w, classCount: generator.classCount).parameterSpecs.reduce(0) { $0 + $1.count })
        }
        out.add("generation_inr_bytes", inrBytes, "bytes stored: the INR (float32)", String(format: "%.2f MB", Double(inrBytes) / 1e6),
                section: "storage")
        out.add("generation_individual_bytes", individualBytes,
                "bytes stored: \(trained.count) individually trained widths \(trained.lowerBound)…\(trained.upperBound) (float32)",
                String(format: "%.2f MB (%.2f× the INR)", Double(individualBytes) / 1e6, Double(individualBytes) / Double(inrBytes)))
    }
}
