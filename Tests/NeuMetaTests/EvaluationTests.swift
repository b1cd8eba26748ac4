import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
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
        plot.add(series: "individual", points: zip(widths, [95.5, 98.2, nil, 98.9, .nan, nil, 99.2, .infinity]).map { ($0, $1) })
        plot.add(series: "pruning_l1", points: zip(widths, [11.4, 35.0, 62.5, 80.1, 90.3, 95.2, 98.0, 99.3]).map { ($0, $1) })
        return plot
    }

    /// What an XML parser sees in an SVG document: the root, every polyline's points, each
    /// series group's stroke colour and every text's content.
    final class Parsed: NSObject, XMLParserDelegate {
        var root: String?, attributes: [String: String] = [:]
        var polylines: [[(x: Double, y: Double)]] = [], seriesColours: [String] = [], texts: [String] = [], titles: [String] = []
        var current: String?

        /// Parses `svg`; nil when it is not well-formed XML.
        static func parse(_ svg: String) -> Parsed? {
            let parsed = Parsed(), parser = XMLParser(data: Data(svg.utf8))
            parser.delegate = parsed
            return parser.parse() ? parsed : nil
        }

        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            if root == nil { root = name; self.attributes = attributes }
            if name == "polyline" {
                polylines.append((attributes["points"] ?? "").split(separator: " ").map { pair in
                    let xy = pair.split(separator: ",").map { Double($0) ?? .nan }
                    return (xy[0], xy.count > 1 ? xy[1] : .nan)
                })
            }
            if name == "g", attributes["class"] == "series" { seriesColours.append(attributes["stroke"] ?? "") }
            if name == "text" || name == "title" { current = "" }
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) { current? += string }

        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
            if name == "text", let c = current { texts.append(c) }
            if name == "title", let c = current { titles.append(c) }
            if name == "text" || name == "title" { current = nil }
        }
    }

    @Test func writesWellFormedSVGWithOnePolylinePerSeries() throws {
        let path = FileManager.default.temporaryDirectory.path + "/neumeta-plot-\(UUID().uuidString).svg"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try example().writeSVG(to: path)
        if let example = ProcessInfo.processInfo.environment["NEUMETA_PLOT_EXAMPLE"] { try self.example().writeSVG(to: example) }

        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text == example().svg)
        let svg = try #require(Parsed.parse(text), "not well-formed XML")
        #expect(svg.root == "svg" && svg.attributes["xmlns"] == "http://www.w3.org/2000/svg")
        #expect(svg.attributes["width"] == "800" && svg.attributes["height"] == "500")
        // One polyline per series, with the present points only (individual: 8 widths, 4 missing).
        #expect(svg.polylines.map(\.count) == [8, 8, 4, 8])
        #expect(svg.seriesColours == Array(LinePlot.palette.prefix(4)))
        for line in svg.polylines {
            #expect(line.allSatisfy { $0.x.isFinite && $0.y.isFinite && (0...800).contains($0.x) && (0...500).contains($0.y) })
            #expect(zip(line, line.dropFirst()).allSatisfy { $0.x < $1.x }, "points not in increasing width")
        }
        // Higher accuracy is drawn higher (smaller y); wider is drawn further right.
        let k1 = svg.polylines[0], pruning = svg.polylines[3]
        #expect(pruning[0].y > pruning[7].y && pruning[0].x < pruning[7].x)
        #expect(k1[0].x == pruning[0].x && k1[7].y < pruning[0].y)
        // Title, axis labels, legend entries and tick labels are text.
        for label in ["LeNet on MNIST: accuracy vs width", "width", "accuracy (%)", "neumeta_k1", "neumeta_k10", "individual",
                      "pruning_l1", "0", "100", "10", "30"] {
            #expect(svg.texts.contains(label), "no text \(label)")
        }
        #expect(!text.contains("nan") && !text.contains("inf"))
    }

    @Test func textIsEscapedForXML() throws {
        let title = #"a < b && c > "d" 'e'"#
        var plot = LinePlot(title: title, xLabel: "x\u{1}y", yLabel: "<y>")
        plot.add(series: "</text><script>", points: [(1, 50), (2, 60)])
        let text = plot.svg
        #expect(!text.contains("<script>") && !text.contains(#"< b"#))
        let svg = try #require(Parsed.parse(text), "not well-formed XML")
        #expect(svg.texts.contains(title) && svg.titles.contains(title))
        #expect(svg.texts.contains("x y") && svg.texts.contains("<y>") && svg.texts.contains("</text><script>"))
        #expect(svg.polylines.map(\.count) == [2])
        #expect(LinePlot.xmlEscape(#"&<>"'"#) == "&amp;&lt;&gt;&quot;&apos;")
    }

    @Test func writeErrorNamesThePath() {
        let path = "/nonexistent-neumeta-dir/plot.svg"
        do {
            try example().writeSVG(to: path)
            Issue.record("writing into a missing directory succeeded")
        } catch {
            #expect("\(error)".contains(path))
        }
    }

    @Test func degenerateInputsStillRender() throws {
        var plot = LinePlot(title: "empty", xLabel: "width", yLabel: "accuracy (%)")
        #expect(try #require(Parsed.parse(plot.svg)).polylines.isEmpty)
        plot.add(series: "one point", points: [(8, 97.5)])
        plot.add(series: "all missing", points: [(4, nil), (16, .nan), (.infinity, 3)])
        let svg = try #require(Parsed.parse(plot.svg), "not well-formed XML")
        #expect(svg.polylines.map(\.count) == [1, 0])
        #expect(svg.polylines[0].allSatisfy { $0.x.isFinite && $0.y.isFinite })
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
