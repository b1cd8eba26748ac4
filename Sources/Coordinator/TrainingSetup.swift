import ArgumentParser
import Foundation
import NeuMeta

/// Named starting points for INR training.
enum Recipe: String, ExpressibleByArgument, CaseIterable {
    /// The paper's recipe, exactly (NEUMETA.md §2–3).
    case paper
    /// Ours, from measurements on Fashion-MNIST (see README).
    case `default`

    /// The recipe's settings (defined in the library, `ClusterConfig.Recipe.apply`, so that `neumeta-bench` uses the same).
    func apply(to plan: inout RoundPlan, _ optimizer: inout OptimizerSettings, _ config: inout INRConfig) {
        ClusterConfig.Recipe(rawValue: rawValue)!.apply(to: &plan, &optimizer, &config)
    }
}

/// Settings that override a recipe (nil: the recipe decides).
struct RecipeOverrides {
    var configurationsPerRound: Int?, frequencies: Int?, hidden: Int?, layers: Int?
    var learningRate: Float?, cosineSchedule: Bool?, emaDecay: Float?, weightDecay: Float?, gradientClip: Float?
    var reconstruction: Float?, resampledReconstruction: Float?, normalizedReconstruction: Bool?, sharedBatch: Bool?
    var noise: Float?, fitPretrainedEveryRound: Bool?

    func apply(to plan: inout RoundPlan, _ optimizer: inout OptimizerSettings, _ config: inout INRConfig) {
        if let configurationsPerRound { plan.configurationsPerRound = configurationsPerRound }
        if let frequencies { config.frequencies = frequencies }
        if let hidden { config.hidden = hidden }
        if let layers { config.layers = layers }
        if let learningRate { optimizer.learningRate = learningRate }
        if let cosineSchedule { optimizer.cosineSchedule = cosineSchedule }
        if let emaDecay { optimizer.emaDecay = emaDecay }
        if let weightDecay { optimizer.weightDecay = weightDecay }
        if let gradientClip { optimizer.gradientClip = gradientClip }
        if let reconstruction { plan.reconstruction = reconstruction }
        if let normalizedReconstruction, normalizedReconstruction { plan.normalizedReconstruction = true }
        if let resampledReconstruction { plan.resampledReconstruction = resampledReconstruction }
        if let sharedBatch { plan.sharedBatch = sharedBatch }
        if let noise { plan.noise = noise }
        if let fitPretrainedEveryRound { plan.fitPretrainedEveryRound = fitPretrainedEveryRound }
    }
}

/// What INR training starts from, shared by `train` (one process) and `run` (the cluster):
/// the base network, its SHP permutation, the training data and the recipe's settings.
struct TrainingSetup {
    let checkpoint: NetworkCheckpoint
    /// The base network's parameters after the permutation (the reconstruction target).
    let permuted: ParameterSet
    let train: ImageDataset
    let config: INRConfig, plan: RoundPlan, optimizer: OptimizerSettings
    let recipe: Recipe
    let seed: UInt64

    init(base: String, data: String, recipe: Recipe, overrides: RecipeOverrides, minWidth: Int, maxWidth: Int, epochs: Double,
         batchSize: Int, seed: UInt64, permute: Bool) throws {
        checkpoint = try NetworkCheckpoint.load(path: base)
        guard checkpoint.network.widths.count == 1 else { throw ValidationError("only single-width families can be trained into an INR") }
        train = try FashionMNIST.load(split: .train, directory: data)
        let pretrainedWidth = checkpoint.network.widths[0]
        log("base: \(checkpoint.network.family) width \(pretrainedWidth) from \(base)")

        var config = INRConfig(), plan = RoundPlan(), optimizer = OptimizerSettings()
        recipe.apply(to: &plan, &optimizer, &config)
        overrides.apply(to: &plan, &optimizer, &config)
        config.norm = Float(maxWidth)
        plan.minWidth = minWidth; plan.maxWidth = maxWidth; plan.pretrainedWidth = pretrainedWidth
        plan.batchSize = batchSize; plan.seed = seed; plan.datasetCount = train.count
        plan.rounds = plan.rounds(forEpochs: epochs)
        self.config = config; self.plan = plan; self.optimizer = optimizer; self.recipe = recipe; self.seed = seed

        permuted = checkpoint.parameters
        if permute {
            let report = Permutation.permute(permuted, groups: checkpoint.network.channelGroups, seed: seed)
            log(String(format: "permuted %d channel groups: total variation %.1f → %.1f", report.groups.count, report.totalVariationBefore,
                       report.totalVariationAfter))
        }
    }

    /// A trainer at round 0 (the INR initialised from the seed).
    func makeTrainer() -> INRTrainer {
        let inr = HyperNetwork(config: config, targetSpecs: checkpoint.network.trainableSpecs, seed: seed)
        let objective = ConfigurationGradient(inr: inr, family: checkpoint.network.family, dataset: train, mean: checkpoint.mean,
                                              std: checkpoint.std, pretrained: permuted, pretrainedWidth: checkpoint.network.widths[0])
        let trainer = INRTrainer(objective: objective, plan: plan, optimizer: optimizer)
        log("INR (\(recipe.rawValue) recipe): \(inr.parameters.count) parameters, hidden \(config.hidden), L \(config.layers), "
            + "F \(config.frequencies); \(plan.rounds) rounds × \(plan.configurationsPerRound) configurations "
            + "(\(String(format: "%.2f", plan.epochs)) epochs), widths \(plan.minWidth)…\(plan.maxWidth)")
        return trainer
    }

    /// The checkpoint of `trainer`'s current state.
    func checkpoint(of trainer: INRTrainer) -> INRCheckpoint {
        INRCheckpoint(trainer: trainer, base: permuted, family: checkpoint.network.family, mean: checkpoint.mean, std: checkpoint.std,
                      recipe: recipe.rawValue)
    }
}
