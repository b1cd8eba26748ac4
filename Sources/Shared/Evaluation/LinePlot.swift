import Foundation

/// A line chart of accuracy against width, written as a PNG (the NeuMeta paper's accuracy-vs-
/// width figures).
///
/// Each series is a polyline with markers in its own colour and marker shape; a missing value
/// (nil or not finite) breaks its line. Axes get "nice" tick values with labels and a light
/// grid; a legend of coloured boxes and series names stands right of the plot. Text uses a
/// built-in 5×7 bitmap font, so the plot needs only libpng.
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
    /// Image size in pixels.
    public var width = 800, height = 500
    private(set) var series: [(name: String, points: [(x: Double, y: Double?)])] = []

    public init(title: String, xLabel: String, yLabel: String) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel
    }

    /// Adds a series; points are drawn in increasing x, a nil y leaves a gap.
    public mutating func add(series name: String, points: [(Double, Double?)]) {
        let clean = points.map { (x: $0.0, y: $0.1.flatMap { $0.isFinite ? $0 : nil }) }.filter { $0.x.isFinite }
        series.append((name, clean.sorted { $0.x < $1.x }))
    }

    /// Series colours, in order of `add` (Tableau 10), reused cyclically.
    static let palette = [RGB(31, 119, 180), RGB(255, 127, 14), RGB(44, 160, 44), RGB(214, 39, 40), RGB(148, 103, 189),
                          RGB(140, 86, 75), RGB(227, 119, 194), RGB(127, 127, 127), RGB(188, 189, 34), RGB(23, 190, 207)]
    static let ink = RGB(40, 40, 40), axis = RGB(90, 90, 90), grid = RGB(228, 228, 228)
    /// Font pixel size of all text.
    static let textSize = 2
    /// Height of one line of text in output pixels.
    static var lineHeight: Int { BitmapFont.glyphHeight * textSize }

    /// Renders the chart and writes it to `path`.
    public func writePNG(to path: String) throws {
        if let reason = render().writePNG(to: path) { throw Failure.cannotWrite(path: path, reason: reason) }
    }

    /// Lays out and draws the chart.
    func render() -> Raster {
        var raster = Raster(width: width, height: height)
        let present = series.flatMap { $0.points.compactMap { p in p.y.map { (p.x, $0) } } }
        let xs = present.isEmpty ? [0, 1] : present.map(\.0), ys = present.isEmpty ? [0, 100] : present.map(\.1)
        let xAxis = Ticks(xs.min()!, xs.max()!, tight: true), yAxis = Ticks(ys.min()!, ys.max()!)

        // Margins: y label and y tick labels on the left, legend on the right, title on top,
        // x tick labels and x label below.
        let size = Self.textSize, line = Self.lineHeight
        let yLabelWidth = yAxis.values.map { BitmapFont.width(of: yAxis.label($0)) * size }.max()!
        let legendWidth = series.isEmpty ? 0 : 40 + series.map { BitmapFont.width(of: $0.name) * size }.max()!
        let plot = (left: 16 + line + 12 + yLabelWidth + 10, top: 20 + line + 18,
                    right: width - 20 - legendWidth, bottom: height - (16 + 2 * line + 20))
        // Data map into the frame inset by `pad`, so markers at the extremes clear the axes.
        let pad = 12.0
        func px(_ x: Double) -> Double {
            Double(plot.left) + pad + (x - xAxis.low) / (xAxis.high - xAxis.low) * (Double(plot.right - plot.left) - 2 * pad)
        }
        func py(_ y: Double) -> Double {
            Double(plot.bottom) - pad - (y - yAxis.low) / (yAxis.high - yAxis.low) * (Double(plot.bottom - plot.top) - 2 * pad)
        }

        // Grid, axes, ticks and tick labels.
        let frameWidth = Double(plot.right - plot.left), frameHeight = Double(plot.bottom - plot.top)
        for x in xAxis.values {
            let column = px(x).rounded(.down)
            raster.fillRect(x: column, y: Double(plot.top), width: 1, height: frameHeight, Self.grid)
            raster.fillRect(x: column, y: Double(plot.bottom), width: 1, height: 6, Self.axis)
            let label = xAxis.label(x), labelWidth = BitmapFont.width(of: label) * size
            raster.text(label, x: Int(column) - labelWidth / 2, y: plot.bottom + 12, size: size, Self.ink)
        }
        for y in yAxis.values {
            let row = py(y).rounded(.down)
            raster.fillRect(x: Double(plot.left), y: row, width: frameWidth, height: 1, Self.grid)
            raster.fillRect(x: Double(plot.left - 6), y: row, width: 6, height: 1, Self.axis)
            let label = yAxis.label(y), labelWidth = BitmapFont.width(of: label) * size
            raster.text(label, x: plot.left - 10 - labelWidth, y: Int(row) - line / 2, size: size, Self.ink)
        }
        raster.fillRect(x: Double(plot.left), y: Double(plot.top), width: 1, height: frameHeight + 1, Self.axis)
        raster.fillRect(x: Double(plot.left), y: Double(plot.bottom), width: frameWidth, height: 1, Self.axis)

        // Axis titles and the chart title.
        let plotCentre = (plot.left + plot.right) / 2
        raster.text(xLabel, x: plotCentre - BitmapFont.width(of: xLabel) * size / 2, y: height - 16 - line, size: size, Self.ink)
        raster.text(yLabel, x: 16, y: (plot.top + plot.bottom) / 2 - BitmapFont.width(of: yLabel) * size / 2,
                    size: size, Self.ink, vertical: true)
        raster.text(title, x: plotCentre - BitmapFont.width(of: title) * size / 2, y: 20, size: size, Self.ink)

        // Series: the polyline through consecutive present points, then white-ringed markers.
        for (k, s) in series.enumerated() {
            let color = Self.palette[k % Self.palette.count], shape = MarkerShape.allCases[k % MarkerShape.allCases.count]
            for (a, b) in zip(s.points, s.points.dropFirst()) {
                guard let ya = a.y, let yb = b.y else { continue }
                raster.line(from: (px(a.x), py(ya)), to: (px(b.x), py(yb)), width: 2.5, color)
            }
            for p in s.points {
                guard let y = p.y else { continue }
                raster.marker(shape, at: (px(p.x), py(y)), radius: 6.5, .white)
                raster.marker(shape, at: (px(p.x), py(y)), radius: 5, color)
            }
        }

        // Legend: a coloured box and the name per series, top right of the plot.
        for (k, s) in series.enumerated() {
            let top = plot.top + 4 + k * (line + 12), left = plot.right + 20
            raster.fillRect(x: Double(left), y: Double(top), width: Double(line), height: Double(line),
                            Self.palette[k % Self.palette.count])
            raster.text(s.name, x: left + line + 8, y: top, size: size, Self.ink)
        }
        return raster
    }
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
