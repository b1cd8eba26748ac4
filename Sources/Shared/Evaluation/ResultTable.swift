import Foundation

/// Accuracy by network width for several methods (the NeuMeta paper's comparison tables): one row
/// per width with one optional accuracy per method column and the width's parameter count.
///
/// Columns are named by the caller, e.g.
/// `ResultTable(columns: ["neumeta_k1", "neumeta_k10", "individual", "pruning_l1"])`; every
/// writer lays a row out as `width`, the method columns in that order, then `params`.
/// Accuracies are recorded as fractions correct in [0, 1] and written as percentages.
public struct ResultTable: Sendable {
    /// One width's results; `accuracies[k]` belongs to `columns[k]` and is nil when missing.
    public struct Row: Equatable, Sendable {
        public let width: Int
        public let params: Int
        public var accuracies: [Double?]
    }

    /// The method columns, in output order.
    public let columns: [String]
    /// The rows, in increasing width.
    public private(set) var rows: [Row] = []

    public init(columns: [String]) {
        precondition(Set(columns).count == columns.count, "duplicate column in \(columns)")
        precondition(!columns.contains("width") && !columns.contains("params"), "'width' and 'params' are reserved column names")
        self.columns = columns
    }

    /// Records accuracies (fractions in [0, 1]) for the network of `width` with `params`
    /// parameters. Columns not named stay missing; recording a width again merges into its row,
    /// replacing the columns named.
    public mutating func add(width: Int, params: Int, accuracies: [String: Double]) {
        for (column, value) in accuracies {
            precondition(columns.contains(column), "unknown column '\(column)' (columns: \(columns))")
            precondition((0...1).contains(value), "accuracy \(value) for '\(column)' is not a fraction in [0, 1]")
        }
        let index = rows.firstIndex { $0.width >= width } ?? rows.endIndex
        if index == rows.endIndex || rows[index].width != width {
            rows.insert(Row(width: width, params: params, accuracies: Array(repeating: nil, count: columns.count)), at: index)
        }
        precondition(rows[index].params == params, "width \(width) recorded with \(rows[index].params) and \(params) parameters")
        for (k, column) in columns.enumerated() where accuracies[column] != nil {
            rows[index].accuracies[k] = accuracies[column]
        }
    }

    /// The header names: `width`, the method columns, `params`.
    public var header: [String] { ["width"] + columns + ["params"] }

    /// Comma-separated values with a header line; a missing accuracy is an empty field,
    /// present ones are percentages with two decimals. Every line ends in a newline.
    public var csv: String {
        ([header] + rows.map { cells($0, missing: "") }).map { $0.joined(separator: ",") + "\n" }.joined()
    }

    /// A GitHub-flavoured Markdown table, numbers right-aligned, `–` for a missing accuracy.
    public var markdown: String {
        let lines = [header, header.map { _ in "---:" }] + rows.map { cells($0, missing: "–") }
        return lines.map { "| " + $0.joined(separator: " | ") + " |\n" }.joined()
    }

    /// One dictionary per row with the header names as keys, ready for `JSONSerialization`:
    /// `width` and `params` as Int, accuracies as Double percentages (unrounded), NSNull when
    /// missing.
    public var jsonRows: [[String: Any]] {
        rows.map { row in
            var object: [String: Any] = ["width": row.width, "params": row.params]
            for (column, value) in zip(columns, row.accuracies) {
                object[column] = value.map { $0 * 100 } ?? NSNull()
            }
            return object
        }
    }

    /// (width, accuracy %) for every row, nil where `column` is missing: a `LinePlot` series.
    public func points(_ column: String) -> [(Double, Double?)] {
        guard let k = columns.firstIndex(of: column) else { preconditionFailure("unknown column '\(column)' (columns: \(columns))") }
        return rows.map { (Double($0.width), $0.accuracies[k].map { $0 * 100 }) }
    }

    private func cells(_ row: Row, missing: String) -> [String] {
        [String(row.width)] + row.accuracies.map { $0.map { String(format: "%.2f", $0 * 100) } ?? missing } + [String(row.params)]
    }
}
