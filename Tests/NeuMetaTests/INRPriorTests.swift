import Foundation
import Testing
@testable import NeuMeta

/// `WeightPrior.base`: generated weights are the resampled base network plus the INR's output.
@Suite struct INRPriorTests {
    static let tiny = INRConfig(hidden: 8, layers: 3, frequencies: 2, outputSize: 25, norm: 4)
    static var tinyWithPrior: INRConfig { var c = tiny; c.prior = .base; return c }

    static func lenetBase(width: Int, seed: UInt64) -> (LeNet, ParameterSet) {
        let net = LeNet(width: width)
        let p = net.makeParameters()
        var rng = SeededRandom(seed)
        p.initializeDefault(rng: &rng)
        return (net, p)
    }

    /// A new INR with the prior outputs zeros, so every width's network is the base resampled
    /// to that width — at the base width the base itself, bit for bit — whatever the noise.
    @Test func aNewINRGeneratesTheResampledBase() throws {
        let (net, base) = Self.lenetBase(width: 4, seed: 3)
        let inr = HyperNetwork(config: Self.tinyWithPrior, targetSpecs: net.trainableSpecs, seed: 5)
        let generator = NetworkGenerator(inr: inr, morph: MorphPlan(family: "lenet", baseWidths: [4]), classCount: 10, base: base)
        let (_, atBase) = try generator.generate(width: 4, noise: 0.5, noiseSeed: 7)
        for i in base.specs.indices { #expect(atBase.value(i).toArray() == base.value(i).toArray(), "\(base.specs[i].name)") }
        let (_, narrow) = try generator.generate(width: 3, noise: 0.5, noiseSeed: 8)
        let expected = LeNet(width: 3).makeParameters()
        PretrainedResampling.resample(base, into: expected)
        for i in expected.specs.indices { #expect(narrow.value(i).toArray() == expected.value(i).toArray(), "\(expected.specs[i].name)") }
    }

    /// With trained (here: random) output layers the value is prior + the INR's own value: the
    /// same INR without the prior generates exactly the difference.
    @Test func generatedValuesArePriorPlusTheINROutput() throws {
        let (net, base) = Self.lenetBase(width: 4, seed: 3)
        let with = HyperNetwork(config: Self.tinyWithPrior, targetSpecs: net.trainableSpecs, seed: 5)
        let without = HyperNetwork(config: Self.tiny, targetSpecs: net.trainableSpecs, seed: 5)
        with.parameters.values.base.update(from: without.parameters.values.base, count: without.parameters.count)
        let morph = MorphPlan(family: "lenet", baseWidths: [4])
        let (_, sum) = try NetworkGenerator(inr: with, morph: morph, classCount: 10, base: base).generate(width: 3, noise: 0.5, noiseSeed: 9)
        let (_, own) = try NetworkGenerator(inr: without, morph: morph, classCount: 10, base: nil).generate(width: 3, noise: 0.5, noiseSeed: 9)
        let prior = LeNet(width: 3).makeParameters()
        PretrainedResampling.resample(base, into: prior)
        var differs = false
        for i in prior.specs.indices {
            let s = sum.value(i).toArray(), o = own.value(i).toArray(), p = prior.value(i).toArray()
            #expect(zip(s, zip(o, p)).allSatisfy { $0 == $1.0 + $1.1 }, "\(prior.specs[i].name)")
            differs = differs || s != p
        }
        #expect(differs, "the INR's output must take part")
    }

    /// The whole chain with the prior (whose values are constants) against central differences:
    /// relative L2 error under 3%, as for the chain without it (INRTests).
    @Test func configurationGradientWithThePriorMatchesFiniteDifferences() throws {
        let net = LeNet(width: 2)
        var config = Self.tinyWithPrior
        config.outputSize = 25
        let inr = HyperNetwork(config: config, targetSpecs: net.trainableSpecs, seed: 5)
        var rng = SeededRandom(12)
        inr.parameters.initializeDefault(rng: &rng)   // non-zero output layers: every parameter matters
        let data = syntheticImages(count: 4, seed: 6)
        let (_, pretrained) = Self.lenetBase(width: 2, seed: 7)
        let objective = ConfigurationGradient(inr: inr, family: "lenet", dataset: data, mean: [0.5], std: [0.3],
                                              pretrained: pretrained, pretrainedWidth: 2)
        let configuration = Configuration(width: 2, batch: [0, 2, 3], noiseSeed: 11, noise: 1,
                                          lossWeights: LossWeights(normRegularizer: 0.1, reconstruction: 1))
        let terms = try objective.compute(configuration)
        #expect(terms.reconstruction > 0 && terms.samples == 3)
        try expectConfigurationGradientMatchesFiniteDifferences(objective, configuration, every: 4, "configuration gradient with the prior")
    }

    /// A ResNet morphed in its last block: the prior covers the generated tensors only.
    @Test func lastBlockPriorIsTheResampledBlock() throws {
        let (net, base) = MorphGenerationTests.base(batchNorm: false)
        let morph = try MorphPlan(base: net, scope: .lastBlock)
        var config = MorphGenerationTests.tiny
        config.prior = .base
        let inr = HyperNetwork(config: config, targetSpecs: try morph.generatedSpecs(classCount: 10), seed: 4)
        let generator = NetworkGenerator(inr: inr, morph: morph, classCount: 10, base: base)
        let (network, weights) = try generator.generate(width: 3, noise: 0.5, noiseSeed: 9)
        let expected = network.makeParameters()
        PretrainedResampling.resample(base, into: expected)
        for i in morph.generated(weights.specs) {
            #expect(weights.value(i).toArray() == expected.value(i).toArray(), "\(weights.specs[i].name)")
        }
    }

    @Test func thePriorNeedsTheBaseNetwork() throws {
        let net = LeNet(width: 2)
        let inr = HyperNetwork(config: Self.tinyWithPrior, targetSpecs: net.trainableSpecs, seed: 5)
        let generator = NetworkGenerator(inr: inr, family: "lenet", classCount: 10)
        #expect(throws: NetworkGenerator.Failure.self) { try generator.generate(width: 2, noise: 0, noiseSeed: 0) }
    }

    /// Job specs and checkpoints written without the field mean no prior; with it, it survives.
    @Test func configDecodesWithAndWithoutThePrior() throws {
        let old = #"{"hidden":256,"layers":4,"frequencies":6,"outputSize":25,"norm":32}"#
        #expect(try JSONDecoder().decode(INRConfig.self, from: Data(old.utf8)) == INRConfig(hidden: 256, layers: 4, frequencies: 6, outputSize: 25, norm: 32))
        let encoded = try JSONEncoder().encode(Self.tinyWithPrior)
        #expect(try JSONDecoder().decode(INRConfig.self, from: encoded) == Self.tinyWithPrior)
        let bad = #"{"hidden":256,"layers":4,"frequencies":6,"outputSize":25,"norm":32,"prior":"pretrained"}"#
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(INRConfig.self, from: Data(bad.utf8)) }
    }
}
