/// A parsed JSON value, as strict as the safetensors header needs.
///
/// Foundation's `JSONSerialization` merges duplicate keys, loses key order and blurs integers,
/// floats and booleans (all become `NSNumber`), so the header gets this small RFC 8259 parser:
/// objects keep their key order and reject repeated keys, and integers stay distinct from other
/// numbers.
enum JSONValue {
    case null
    case bool(Bool)
    /// A number written without fraction or exponent that fits in `Int`.
    case integer(Int)
    /// Any other number, kept as written.
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in document order; keys are unique.
    case object([(key: String, value: JSONValue)])

    /// Why a document failed to parse.
    enum ParseError: Error {
        case invalid(String, at: Int)
        case duplicateKey(String)
    }

    /// Parses a complete document; surrounding whitespace is allowed, anything else is not.
    static func parse(_ bytes: UnsafeRawBufferPointer) throws(ParseError) -> JSONValue {
        var parser = Parser(bytes: bytes)
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.position == bytes.count else { throw parser.failure("trailing characters") }
        return value
    }

    /// `text` as a JSON string literal, quotes included.
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// Recursive-descent parser over UTF-8 bytes (already validated as UTF-8 by the caller).
    private struct Parser {
        let bytes: UnsafeRawBufferPointer
        var position = 0
        /// Deeper nesting is rejected rather than risking the stack.
        static let maxDepth = 64

        init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

        func failure(_ what: String) -> ParseError { .invalid(what, at: position) }

        var peek: UInt8? { position < bytes.count ? bytes[position] : nil }

        mutating func skipWhitespace() {
            while let c = peek, c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { position += 1 }
        }

        mutating func expect(_ literal: String) throws(ParseError) {
            for byte in literal.utf8 {
                guard peek == byte else { throw failure("expected \(literal)") }
                position += 1
            }
        }

        mutating func value(depth: Int) throws(ParseError) -> JSONValue {
            guard depth < Parser.maxDepth else { throw failure("nesting deeper than \(Parser.maxDepth)") }
            skipWhitespace()
            switch peek {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "n"): try expect("null"); return .null
            case UInt8(ascii: "-"), (UInt8(ascii: "0")...UInt8(ascii: "9"))?: return try number()
            case nil: throw failure("unexpected end of input")
            default: throw failure("unexpected character")
            }
        }

        mutating func object(depth: Int) throws(ParseError) -> JSONValue {
            position += 1
            var members: [(key: String, value: JSONValue)] = []
            var seen = Set<String>()
            skipWhitespace()
            if peek == UInt8(ascii: "}") { position += 1; return .object(members) }
            while true {
                skipWhitespace()
                guard peek == UInt8(ascii: "\"") else { throw failure("expected a string key") }
                let key = try string()
                guard seen.insert(key).inserted else { throw .duplicateKey(key) }
                skipWhitespace()
                try expect(":")
                members.append((key, try value(depth: depth + 1)))
                skipWhitespace()
                switch peek {
                case UInt8(ascii: ","): position += 1
                case UInt8(ascii: "}"): position += 1; return .object(members)
                default: throw failure("expected , or } in object")
                }
            }
        }

        mutating func array(depth: Int) throws(ParseError) -> JSONValue {
            position += 1
            var elements: [JSONValue] = []
            skipWhitespace()
            if peek == UInt8(ascii: "]") { position += 1; return .array(elements) }
            while true {
                elements.append(try value(depth: depth + 1))
                skipWhitespace()
                switch peek {
                case UInt8(ascii: ","): position += 1
                case UInt8(ascii: "]"): position += 1; return .array(elements)
                default: throw failure("expected , or ] in array")
                }
            }
        }

        mutating func string() throws(ParseError) -> String {
            position += 1
            var scalars = String.UnicodeScalarView()
            var runStart = position
            func flush(_ end: Int) {
                let run = UnsafeRawBufferPointer(rebasing: bytes[runStart ..< end])
                scalars.append(contentsOf: String(decoding: run, as: UTF8.self).unicodeScalars)
            }
            while let c = peek {
                switch c {
                case UInt8(ascii: "\""):
                    flush(position)
                    position += 1
                    return String(scalars)
                case UInt8(ascii: "\\"):
                    flush(position)
                    position += 1
                    scalars.append(try escape())
                    runStart = position
                case 0 ..< 0x20:
                    throw failure("unescaped control character in string")
                default:
                    position += 1
                }
            }
            throw failure("unterminated string")
        }

        /// The scalar for the escape sequence after a backslash.
        mutating func escape() throws(ParseError) -> Unicode.Scalar {
            guard let c = peek else { throw failure("unterminated escape") }
            position += 1
            switch c {
            case UInt8(ascii: "\""): return "\""
            case UInt8(ascii: "\\"): return "\\"
            case UInt8(ascii: "/"): return "/"
            case UInt8(ascii: "b"): return "\u{08}"
            case UInt8(ascii: "f"): return "\u{0C}"
            case UInt8(ascii: "n"): return "\n"
            case UInt8(ascii: "r"): return "\r"
            case UInt8(ascii: "t"): return "\t"
            case UInt8(ascii: "u"):
                let unit = try hex4()
                if (0xD800 ..< 0xDC00).contains(unit) {
                    try expect("\\u")
                    let low = try hex4()
                    guard (0xDC00 ..< 0xE000).contains(low) else { throw failure("unpaired surrogate") }
                    return Unicode.Scalar(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))!
                }
                guard let scalar = Unicode.Scalar(unit) else { throw failure("unpaired surrogate") }
                return scalar
            default: throw failure("invalid escape")
            }
        }

        mutating func hex4() throws(ParseError) -> UInt32 {
            var value: UInt32 = 0
            for _ in 0 ..< 4 {
                guard let c = peek, let digit = UInt32(String(UnicodeScalar(c)), radix: 16) else {
                    throw failure("invalid \\u escape")
                }
                value = value << 4 | digit
                position += 1
            }
            return value
        }

        mutating func number() throws(ParseError) -> JSONValue {
            let start = position
            var isInteger = true
            if peek == UInt8(ascii: "-") { position += 1 }
            let integerStart = position
            let integerDigits = digits()
            guard integerDigits > 0 else { throw failure("expected digits") }
            guard integerDigits == 1 || bytes[integerStart] != UInt8(ascii: "0") else {
                throw failure("leading zero in number")
            }
            if peek == UInt8(ascii: ".") {
                position += 1
                isInteger = false
                guard digits() > 0 else { throw failure("expected digits after .") }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                position += 1
                isInteger = false
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { position += 1 }
                guard digits() > 0 else { throw failure("expected exponent digits") }
            }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start ..< position]), as: UTF8.self)
            if isInteger, let value = Int(text) { return .integer(value) }
            return .number(text)
        }

        /// Consumes a run of decimal digits and returns its length.
        mutating func digits() -> Int {
            let start = position
            while let c = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { position += 1 }
            return position - start
        }
    }
}
