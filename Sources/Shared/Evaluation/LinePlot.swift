import Foundation

/// A line chart of accuracy against width, written as SVG (the NeuMeta paper's accuracy-vs-
/// width figures).
///
/// Each series is one polyline through its points with markers, in its own colour and marker
/// shape; a missing value (nil or not finite) is left out. Axes get "nice" tick values with
/// labels and a light grid; a legend of series names stands right of the plot. Text is SVG
/// text (escaped for XML), so any viewer or browser renders it at any size.
public struct LinePlot: Sendable {
    /// Why a plot could not be written.
    public enum Failure: Error, CustomStringConvertible {
        case cannotWrite(path: String, reason: String)

        public var description: String {
            switch self {
            case .cannotWrite(let path, let reason): "cannot write plot \(path): \(reason)"
            }
        }
    }

    public let title: String, xLabel: String, yLabel: String
    /// Image size in SVG user units (pixels).
    public var width = 800, height = 500
    private(set) var series: [(name: String, points: [(x: Double, y: Double)])] = []

    public init(title: String, xLabel: String, yLabel: String) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel
    }

    /// Adds a series; points are drawn in increasing x, and those with a nil or non-finite
    /// value are left out.
    public mutating func add(series name: String, points: [(Double, Double?)]) {
        let present = points.compactMap { p -> (x: Double, y: Double)? in
            guard p.0.isFinite, let y = p.1, y.isFinite else { return nil }
            return (p.0, y)
        }
        series.append((name, present.sorted { $0.x < $1.x }))
    }

    /// Series colours, in order of `add` (Tableau 10), reused cyclically.
    static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    static let ink = "#282828", axis = "#5a5a5a", grid = "#e4e4e4"
    static let fontSize = 13.0

    /// Writes the chart to `path`.
    public func writeSVG(to path: String) throws {
        do {
            try Data(svg.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw Failure.cannotWrite(path: path, reason: error.localizedDescription)
        }
    }

    /// The chart as a standalone SVG document.
    public var svg: String {
        let present = series.flatMap(\.points)
        let xs = present.isEmpty ? [0, 1] : present.map(\.x), ys = present.isEmpty ? [0, 100] : present.map(\.y)
        let xAxis = Ticks(xs.min()!, xs.max()!, tight: true), yAxis = Ticks(ys.min()!, ys.max()!)
        let font = Self.fontSize, charWidth = 0.6 * font
        func textWidth(_ s: String) -> Double { Double(s.count) * charWidth }

        // Margins: y label and y tick labels on the left, legend on the right, title on top,
        // x tick labels and x label below.
        let yTickWidth = yAxis.values.map { textWidth(yAxis.label($0)) }.max()!
        let legendWidth = series.isEmpty ? 0 : 50 + series.map { textWidth($0.name) }.max()!
        let left = 16 + font + 12 + yTickWidth + 10, top = 20 + font + 18
        let right = Double(width) - 20 - legendWidth, bottom = Double(height) - (16 + 2 * font + 20)
        // Data map into the frame inset by `pad`, so markers at the extremes clear the axes.
        let pad = 12.0
        func px(_ x: Double) -> Double { left + pad + (x - xAxis.low) / (xAxis.high - xAxis.low) * (right - left - 2 * pad) }
        func py(_ y: Double) -> Double { bottom - pad - (y - yAxis.low) / (yAxis.high - yAxis.low) * (bottom - top - 2 * pad) }

        var out = """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" viewBox="0 0 \(width) \(height)" \
        font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="\(svgNumber(font))" fill="\(Self.ink)">
        <title>\(Self.xmlEscape(title))</title>
        <rect width="\(width)" height="\(height)" fill="white"/>

        """
        func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double) -> String {
            "<line x1=\"\(svgNumber(x1))\" y1=\"\(svgNumber(y1))\" x2=\"\(svgNumber(x2))\" y2=\"\(svgNumber(y2))\"/>"
        }
        func text(_ s: String, _ x: Double, _ y: Double, anchor: String, extra: String = "") -> String {
            "<text x=\"\(svgNumber(x))\" y=\"\(svgNumber(y))\" text-anchor=\"\(anchor)\"\(extra)>\(Self.xmlEscape(s))</text>"
        }

        // Grid, axes, ticks and tick labels.
        out += "<g class=\"grid\" stroke=\"\(Self.grid)\" stroke-width=\"1\">\n"
        for x in xAxis.values { out += line(px(x), top, px(x), bottom) + "\n" }
        for y in yAxis.values { out += line(left, py(y), right, py(y)) + "\n" }
        out += "</g>\n<g class=\"axes\" stroke=\"\(Self.axis)\" stroke-width=\"1\">\n"
        out += line(left, top, left, bottom) + line(left, bottom, right, bottom) + "\n"
        for x in xAxis.values { out += line(px(x), bottom, px(x), bottom + 6) }
        for y in yAxis.values { out += line(left - 6, py(y), left, py(y)) }
        out += "\n</g>\n<g class=\"tick-labels\">\n"
        for x in xAxis.values { out += text(xAxis.label(x), px(x), bottom + 12 + font, anchor: "middle") + "\n" }
        for y in yAxis.values { out += text(yAxis.label(y), left - 10, py(y) + font * 0.35, anchor: "end") + "\n" }
        out += "</g>\n"

        // Axis titles and the chart title.
        let centre = (left + right) / 2, middle = (top + bottom) / 2
        out += text(xLabel, centre, Double(height) - 16, anchor: "middle") + "\n"
        out += text(yLabel, 16 + font, middle, anchor: "middle", extra: " transform=\"rotate(-90 \(svgNumber(16 + font)) \(svgNumber(middle)))\"") + "\n"
        out += text(title, centre, 20 + font, anchor: "middle", extra: " font-size=\"\(svgNumber(font + 3))\" font-weight=\"bold\"") + "\n"

        // Series: one polyline through the points, then white-ringed markers.
        for (k, s) in series.enumerated() {
            let color = Self.palette[k % Self.palette.count], shape = k % 4
            out += "<g class=\"series\" stroke=\"\(color)\" fill=\"\(color)\"><title>\(Self.xmlEscape(s.name))</title>\n"
            out += "<polyline fill=\"none\" stroke-width=\"2.5\" stroke-linejoin=\"round\" points=\""
                + s.points.map { "\(svgNumber(px($0.x))),\(svgNumber(py($0.y)))" }.joined(separator: " ") + "\"/>\n"
            for p in s.points { out += Self.marker(shape, px(p.x), py(p.y)) + "\n" }
            out += "</g>\n"
        }

        // Legend: a line sample with the marker and the name per series, top right of the plot.
        out += "<g class=\"legend\">\n"
        for (k, s) in series.enumerated() {
            let color = Self.palette[k % Self.palette.count], y = top + 4 + font / 2 + Double(k) * (font + 12), x = right + 20
            out += "<g stroke=\"\(color)\" fill=\"\(color)\" stroke-width=\"2.5\">" + line(x, y, x + 24, y)
                + Self.marker(k % 4, x + 12, y) + "</g>"
            out += text(s.name, x + 32, y + font * 0.35, anchor: "start") + "\n"
        }
        out += "</g>\n</svg>\n"
        return out
    }

    /// A marker of shape `shape` (circle, square, triangle, diamond) centred on (x, y).
    static func marker(_ shape: Int, _ x: Double, _ y: Double) -> String {
        let r = 5.0, ring = " stroke=\"white\" stroke-width=\"1.5\"/>"
        switch shape {
        case 0: return "<circle cx=\"\(svgNumber(x))\" cy=\"\(svgNumber(y))\" r=\"\(svgNumber(r))\"" + ring
        case 1: return "<rect x=\"\(svgNumber(x - r))\" y=\"\(svgNumber(y - r))\" width=\"\(svgNumber(2 * r))\" height=\"\(svgNumber(2 * r))\"" + ring
        case 2: return "<polygon points=\"\(svgNumber(x)),\(svgNumber(y - 1.2 * r)) \(svgNumber(x + 1.1 * r)),\(svgNumber(y + 0.8 * r)) \(svgNumber(x - 1.1 * r)),\(svgNumber(y + 0.8 * r))\"" + ring
        default: return "<polygon points=\"\(svgNumber(x)),\(svgNumber(y - 1.3 * r)) \(svgNumber(x + 1.3 * r)),\(svgNumber(y)) \(svgNumber(x)),\(svgNumber(y + 1.3 * r)) \(svgNumber(x - 1.3 * r)),\(svgNumber(y))\"" + ring
        }
    }

    /// `text` escaped for XML character data and attribute values; characters XML 1.0 does not
    /// allow (control characters other than tab, newline and carriage return) become spaces.
    static func xmlEscape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\t", "\n", "\r": out.unicodeScalars.append(scalar)
            case _ where scalar.value < 0x20 || scalar.value == 0xFFFE || scalar.value == 0xFFFF: out += " "
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

/// A coordinate with at most two decimals ("12.5", "300").
private func svgNumber(_ value: Double) -> String {
    let text = String(format: "%.2f", value)
    var trimmed = Substring(text)
    while trimmed.hasSuffix("0") { trimmed = trimmed.dropLast() }
    if trimmed.hasSuffix(".") { trimmed = trimmed.dropLast() }
    return trimmed == "-0" ? "0" : String(trimmed)
}

/// Evenly spaced round tick values (steps of 1, 2 or 5 × 10ⁿ) for a data range.
struct Ticks {
    /// The axis range.
    let low: Double, high: Double, step: Double

    /// About `count` intervals over [lo, hi]; a range of one value is widened by 1 either side.
    /// The axis range is the data range when `tight`, otherwise it is rounded out to multiples
    /// of the step.
    init(_ lo: Double, _ hi: Double, count: Int = 6, tight: Bool = false) {
        let (lo, hi) = hi - lo > 1e-9 * max(1, abs(hi)) ? (lo, hi) : (lo - 1, hi + 1)
        let raw = (hi - lo) / Double(count), magnitude = pow(10, (log10(raw)).rounded(.down))
        step = [1.0, 2, 5, 10].first { $0 * magnitude >= raw * (1 - 1e-9) }! * magnitude
        low = tight ? lo : (lo / step + 1e-9).rounded(.down) * step
        high = tight ? hi : (hi / step - 1e-9).rounded(.up) * step
    }

    /// The multiples of the step from `low` to `high`.
    var values: [Double] {
        let first = Int((low / step - 1e-9).rounded(.up)), last = Int((high / step + 1e-9).rounded(.down))
        return (first...last).map { Double($0) * step }
    }

    /// A tick value with as many decimals as the step needs.
    func label(_ value: Double) -> String {
        let decimals = max(0, Int((-log10(step) - 1e-9).rounded(.up)))
        let text = String(format: "%.\(decimals)f", value)
        return text.hasPrefix("-") && Double(text) == 0 ? String(text.dropFirst()) : text
    }
}
