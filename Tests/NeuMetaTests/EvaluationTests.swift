import CPNG
import Foundation
import Testing
@testable import NeuMeta

@Suite struct EvaluationPruningTests {
    /// Randomly initialised LeNet parameters.
    func randomParameters(_ net: LeNet, seed: UInt64) -> ParameterSet {
        let p = net.makeParameters()
        var rng = SeededRandom(seed)
        p.initializeDefault(rng: &rng)
        return p
    }

    /// Rescales each output channel (axis 0) of `t` so that its L1 norm is `norms[c]`.
    func setChannelNorms(_ t: Tensor, _ norms: [Float]) {
        let inner = t.count / t.shape[0]
        for (c, norm) in norms.enumerated() {
            let channel = t.slice(from: c * inner, shape: [inner])
            let current = channel.toArray().reduce(0) { $0 + abs($1) }
            for i in 0..<inner { channel[i] *= norm / current }
        }
    }

    /// t[rows, columns, ...] flattened, for a tensor of shape [O] or [O, I, ...].
    func sliced(_ t: Tensor, rows: [Int], columns: [Int]? = nil) -> [Float] {
        let o = t.shape[0], i = t.rank > 1 ? t.shape[1] : 1, inner = t.count / (o * i)
        var out = [Float]()
        for r in rows { for c in columns ?? Array(0..<i) { for k in 0..<inner { out.append(t[(r * i + c) * inner + k]) } } }
        return out
    }

    /// The error `body` throws, as a pruning failure.
    func failure(_ body: () throws -> Void) -> L1Pruning.Failure? {
        do { try body(); return nil } catch { return error as? L1Pruning.Failure }
    }

    @Test func keepsTopL1ChannelsInOriginalOrder() throws {
        let big = LeNet(width: 4), small = LeNet(width: 2)
        let p = randomParameters(big, seed: 11)
        setChannelNorms(p.value("conv1.weight"), [1, 4, 2, 3])
        let w1 = p.value("conv1.weight")
        for i in 9..<18 { w1[i] = -abs(w1[i]) }  // channel 1 all negative: the score is |·|, not the sum
        setChannelNorms(p.value("conv2.weight"), [5, 8, 1, 2, 7, 3, 4, 6])
        setChannelNorms(p.value("conv3.weight"), [3, 15, 0.5, 9, 12, 1, 14, 2, 11, 4, 16, 5, 10, 6, 13, 7])
        let kept1 = [1, 3], kept2 = [0, 1, 4, 7], kept3 = [1, 3, 4, 6, 8, 10, 12, 14]

        let q = try L1Pruning.prune(p, from: big, to: small)
        #expect(q.specs == small.parameterSpecs)
        #expect(q.value("conv1.weight").toArray() == sliced(p.value("conv1.weight"), rows: kept1))
        #expect(q.value("conv1.bias").toArray() == sliced(p.value("conv1.bias"), rows: kept1))
        #expect(q.value("conv2.weight").toArray() == sliced(p.value("conv2.weight"), rows: kept2, columns: kept1))
        #expect(q.value("conv2.bias").toArray() == sliced(p.value("conv2.bias"), rows: kept2))
        #expect(q.value("conv3.weight").toArray() == sliced(p.value("conv3.weight"), rows: kept3, columns: kept2))
        #expect(q.value("conv3.bias").toArray() == sliced(p.value("conv3.bias"), rows: kept3))
        #expect(q.value("fc.weight").toArray() == sliced(p.value("fc.weight"), rows: Array(0..<10), columns: kept3))
        #expect(q.value("fc.bias").toArray() == p.value("fc.bias").toArray())
    }

    @Test func tiesGoToTheLowerIndex() throws {
        let p = randomParameters(LeNet(width: 4), seed: 12)
        let w1 = p.value("conv1.weight")  // [4, 1, 3, 3]; channel 1 scores 0.9, the others exactly 2.25
        for i in 0..<w1.count { w1[i] = i / 9 == 1 ? -0.1 : 0.25 }
        let kept = try L1Pruning.keptChannels(p, groups: LeNet(width: 4).channelGroups, targetGroups: LeNet(width: 2).channelGroups)
        #expect(kept[0] == [0, 2])
    }

    @Test func prunedNetworkMatchesBigOneWhenDroppedChannelsAreZero() throws {
        let big = LeNet(width: 4), small = LeNet(width: 2)
        let p = randomParameters(big, seed: 13)
        // Zero filters and biases output 0 after ReLU and pooling, so those channels contribute
        // nothing downstream, and they have the smallest L1 norm.
        for (layer, dropped) in [("conv1", [0, 2]), ("conv2", [1, 2, 5, 6]), ("conv3", [0, 3, 5, 6, 9, 10, 13, 15])] {
            let weight = p.value("\(layer).weight"), bias = p.value("\(layer).bias")
            let inner = weight.count / weight.shape[0]
            for c in dropped {
                weight.slice(from: c * inner, shape: [inner]).zero()
                bias[c] = 0
            }
        }
        let q = try L1Pruning.prune(p, from: big, to: small)
        let x = randomTensor([3, 1, 28, 28], seed: 14)
        let expected = big.forward(p, input: x, mode: .inference).toArray()
        let logits = small.forward(q, input: x, mode: .inference).toArray()
        expectClose(logits, expected, atol: 1e-5, rtol: 0, "pruned width-2 logits vs width-4 logits")
    }

    @Test func sameWidthIsTheIdentity() throws {
        let net = LeNet(width: 3)
        let p = randomParameters(net, seed: 15)
        let q = try L1Pruning.prune(p, from: net, to: LeNet(width: 3))
        let all = { (p: ParameterSet) in Tensor(storage: p.values, offset: 0, shape: [p.count]).toArray() }
        #expect(all(q) == all(p))
    }

    @Test func rejectsMismatchedNetworks() {
        let p = randomParameters(LeNet(width: 2), seed: 16)
        #expect(failure { _ = try L1Pruning.prune(p, from: LeNet(width: 2), to: LeNet(width: 4)) }?.description
                == "target is wider than the source: group conv1 has 2 channels, target asks for 4")
        if case .parametersDoNotMatch = failure({ _ = try L1Pruning.prune(p, from: LeNet(width: 3), to: LeNet(width: 1)) }) {} else {
            Issue.record("parameters of a width-2 LeNet accepted for a width-3 one")
        }
        if case .groupsDoNotLineUp = failure({ _ = try L1Pruning.prune(p, from: LeNet(width: 2), to: LeNet(width: 1, classCount: 5)) }) {} else {
            Issue.record("a target with another class count accepted")
        }
    }
}

@Suite struct EvaluationTableTests {
    func example() -> ResultTable {
        var table = ResultTable(columns: ["neumeta_k1", "neumeta_k10", "individual", "pruning_l1"])
        table.add(width: 8, params: 1234, accuracies: ["neumeta_k1": 0.9812, "neumeta_k10": 0.99, "individual": 0.99053])
        table.add(width: 4, params: 500, accuracies: ["neumeta_k1": 0.95, "pruning_l1": 0.8])
        table.add(width: 4, params: 500, accuracies: ["individual": 0.97])
        return table
    }

    @Test func csv() {
        #expect(example().csv == """
            width,neumeta_k1,neumeta_k10,individual,pruning_l1,params
            4,95.00,,97.00,80.00,500
            8,98.12,99.00,99.05,,1234

            """)
    }

    @Test func markdown() {
        #expect(example().markdown == """
            | width | neumeta_k1 | neumeta_k10 | individual | pruning_l1 | params |
            | ---: | ---: | ---: | ---: | ---: | ---: |
            | 4 | 95.00 | – | 97.00 | 80.00 | 500 |
            | 8 | 98.12 | 99.00 | 99.05 | – | 1234 |

            """)
    }

    @Test func jsonRowsAndPoints() throws {
        let table = example(), rows = table.jsonRows
        #expect(rows.count == 2)
        #expect(rows[0]["width"] as? Int == 4 && rows[0]["params"] as? Int == 500)
        #expect(rows[0]["neumeta_k10"] is NSNull)
        #expect(abs((rows[1]["neumeta_k1"] as? Double ?? 0) - 98.12) < 1e-9)
        let text = String(decoding: try JSONSerialization.data(withJSONObject: rows, options: [.sortedKeys]), as: UTF8.self)
        #expect(text.hasPrefix(#"[{"individual":97,"neumeta_k1":95,"neumeta_k10":null,"#))
        let points = table.points("pruning_l1")
        #expect(points.map(\.0) == [4, 8] && points[0].1 == 80 && points[1].1 == nil)
    }
}

@Suite struct EvaluationPlotTests {
    func example() -> LinePlot {
        var plot = LinePlot(title: "LeNet on MNIST: accuracy vs width", xLabel: "width", yLabel: "accuracy (%)")
        let widths: [Double] = [4, 8, 12, 16, 20, 24, 28, 32]
        plot.add(series: "neumeta_k1", points: zip(widths, [91.2, 96.5, 97.8, 98.3, 98.6, 98.7, 98.9, 99.0]).map { ($0, $1) })
        plot.add(series: "neumeta_k10", points: zip(widths, [92.0, 97.1, 98.1, 98.5, 98.8, 98.9, 99.0, 99.1]).map { ($0, $1) })
        plot.add(series: "individual", points: zip(widths, [95.5, 98.2, nil, 98.9, 99.0, nil, 99.2, 99.3]).map { ($0, $1) })
        plot.add(series: "pruning_l1", points: zip(widths, [11.4, 35.0, 62.5, 80.1, 90.3, 95.2, 98.0, 99.3]).map { ($0, $1) })
        return plot
    }

    /// Reads a PNG as 8-bit RGB with libpng's simplified API.
    func readPNG(_ path: String) -> (width: Int, height: Int, pixels: [UInt8])? {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        defer { png_image_free(&image) }
        guard png_image_begin_read_from_file(&image, path) != 0 else { return nil }
        image.format = UInt32(PNG_FORMAT_RGB)
        var pixels = [UInt8](repeating: 0, count: Int(image.width) * Int(image.height) * 3)
        guard pixels.withUnsafeMutableBytes({ png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }) != 0 else { return nil }
        return (Int(image.width), Int(image.height), pixels)
    }

    @Test func writesReadablePNGWithEverySeriesColour() throws {
        let path = FileManager.default.temporaryDirectory.path + "/neumeta-plot-\(UUID().uuidString).png"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try example().writePNG(to: path)
        if ProcessInfo.processInfo.environment["NEUMETA_PLOT_EXAMPLE"] != nil {
            try example().writePNG(to: "/tmp/neumeta-plot-example.png")
        }

        let bytes = try #require(FileManager.default.contents(atPath: path))
        #expect(Array(bytes.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let image = try #require(readPNG(path))
        #expect(image.width == 800 && image.height == 500)
        var counts = [RGB: Int](), whiteish = 0
        for i in stride(from: 0, to: image.pixels.count, by: 3) {
            let c = RGB(image.pixels[i], image.pixels[i + 1], image.pixels[i + 2])
            counts[c, default: 0] += 1
            if min(c.r, c.g, c.b) >= 240 { whiteish += 1 }
        }
        for k in 0..<4 {
            #expect(counts[LinePlot.palette[k], default: 0] > 50, "series \(k) colour \(LinePlot.palette[k]) barely drawn")
        }
        #expect(Array(image.pixels.prefix(3)) == [255, 255, 255], "corner pixel is not white")
        #expect(whiteish > image.width * image.height * 7 / 10, "only \(whiteish) white-ish pixels")
    }

    @Test func writeErrorNamesThePath() {
        let path = "/nonexistent-neumeta-dir/plot.png"
        do {
            try example().writePNG(to: path)
            Issue.record("writing into a missing directory succeeded")
        } catch {
            #expect("\(error)".contains(path))
        }
    }

    @Test func degenerateInputsStillRender() throws {
        let path = FileManager.default.temporaryDirectory.path + "/neumeta-plot-\(UUID().uuidString).png"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var plot = LinePlot(title: "empty", xLabel: "width", yLabel: "accuracy (%)")
        try plot.writePNG(to: path)
        plot.add(series: "one point", points: [(8, 97.5)])
        plot.add(series: "all missing", points: [(4, nil), (16, .nan)])
        try plot.writePNG(to: path)
        #expect(readPNG(path)?.width == 800)
    }

    @Test func niceTicks() {
        let t = Ticks(11.4, 99.3)
        #expect(t.low == 0 && t.high == 100 && t.step == 20)
        #expect(Ticks(4, 32).values == [0, 5, 10, 15, 20, 25, 30, 35])
        let tight = Ticks(4, 32, tight: true)
        #expect(tight.low == 4 && tight.high == 32 && tight.values == [5, 10, 15, 20, 25, 30])
        let flat = Ticks(50, 50)
        #expect(flat.low <= 49 && flat.high >= 51)
        #expect(Ticks(0.1, 0.9).label(0.5) == "0.5" && Ticks(0, 100).label(40) == "40")
    }
}
