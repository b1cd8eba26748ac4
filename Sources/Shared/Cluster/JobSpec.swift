import Foundation

/// Everything a worker needs, besides its local data and the two tensors of the welcome, to
/// compute the gradient of any configuration of the run: the target family, the INR size, the
/// round plan (which decides every configuration's width, batch and noise seed), the input
/// normalisation, and the training data: its fingerprint, kind and batch images. Travels as JSON in the welcome.
public struct JobSpec: Sendable, Equatable, Codable {
    public var family: String
    public var classCount: Int
    public var pretrainedWidth: Int
    public var mean: [Float], std: [Float]
    public var inr: INRConfig
    public var plan: RoundPlan
    /// INR parameter count (the welcome's first tensor).
    public var parameterCount: Int
    /// Pretrained-network parameter count (the welcome's second tensor).
    public var baseParameterCount: Int
    /// The coordinator's training data; a worker with other data is refused.
    public var data: DataFingerprint
    /// Which kind of data that is and how batches are made of it (image size, augmentation).
    public var dataset = DatasetSpec()
    /// How workers send gradients.
    public var gradientEncoding: WireTensor.Encoding = .float32
    /// A synthetic job (load generation, `SyntheticGradients`): the size of each INR head.
    /// Its workers read no data and send stand-in gradients of these sizes; nil for training.
    public var syntheticHeads: [Int]?
    /// The target family's morph plan (nil: every tensor generated, `family`'s one width the
    /// scalar width, as for LeNet).
    public var morph: MorphPlan?

    /// `morph`, or the plan a spec without one means.
    public var morphPlan: MorphPlan { morph ?? MorphPlan(family: family, baseWidths: [pretrainedWidth], imageSize: dataset.imageSize) }

    public init(family: String, classCount: Int, pretrainedWidth: Int, mean: [Float], std: [Float], inr: INRConfig,
                plan: RoundPlan, parameterCount: Int, baseParameterCount: Int, data: DataFingerprint) {
        self.family = family; self.classCount = classCount; self.pretrainedWidth = pretrainedWidth
        self.mean = mean; self.std = std; self.inr = inr; self.plan = plan
        self.parameterCount = parameterCount; self.baseParameterCount = baseParameterCount; self.data = data
    }

    public var json: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try! encoder.encode(self))
    }

    /// Decodes a job spec received from the coordinator (any malformed JSON is an error, not a trap).
    public static func decode(_ bytes: [UInt8]) throws -> JobSpec {
        do { return try JSONDecoder().decode(JobSpec.self, from: Data(bytes)) } catch {
            throw JobSpecError.malformed("\(error)")
        }
    }
}

public enum JobSpecError: Error, CustomStringConvertible, Equatable {
    case malformed(String)
    /// The spec does not fit this build (unknown family, wrong tensor sizes…).
    case unusable(String)

    public var description: String {
        switch self {
        case .malformed(let why): "job spec does not decode: \(why)"
        case .unusable(let why): "job spec cannot be used: \(why)"
        }
    }
}
