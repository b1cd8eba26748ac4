/// The settings each INR training recipe names (`experiment.recipe`, `--recipe`).
extension ClusterConfig.Recipe {
    /// Sets `plan`, `optimizer` and `config` to this recipe's values; everything else stays.
    public func apply(to plan: inout RoundPlan, _ optimizer: inout OptimizerSettings, _ config: inout INRConfig) {
        switch self {
        case .paper:
            // The paper's recipe exactly (docs/algorithm.md §2–3).
            config.hidden = 256; config.layers = 4; config.frequencies = 16; config.prior = .none
            plan.configurationsPerRound = 1; plan.sharedBatch = false; plan.noise = 1
            optimizer.learningRate = 1e-3; optimizer.cosineSchedule = false; optimizer.gradientClip = nil
        case .default:
            // Measured on Fashion-MNIST at 6 epochs (docs/results.md): 6 frequencies, noise 0.5,
            // two uniformly drawn widths per step on one shared mini-batch, and the INR's output
            // added to the resampled base network.
            config.hidden = 256; config.layers = 4; config.frequencies = 6; config.prior = .base
            plan.configurationsPerRound = 2; plan.sharedBatch = true; plan.noise = 0.5
            optimizer.learningRate = 1e-3; optimizer.cosineSchedule = false; optimizer.gradientClip = nil
        }
    }
}
