// Parsing and serializing JSON text (no Foundation).

extension JSONValue {
    /// Parses one JSON text (RFC 8259, strict).
    ///
    /// Whitespace may surround the value; anything else after it is an error. Arrays and
    /// objects may nest at most 512 deep. Integers without fraction or exponent that fit in an
    /// `Int64` become ``int(_:)``, every other number ``double(_:)``; a number too large for a
    /// `Double` is rejected. Duplicate object keys are kept. Strings must be valid UTF-8 with
    /// no raw control characters and no unpaired surrogate escapes.
    ///
    /// - Throws: ``SOPError`` with code ``SOPError/Code/invalidArgument`` and the message
    ///   `invalid JSON at byte <offset>: <reason>`.
    public init(parsing text: String) throws {
        var text = text
        self = try text.withUTF8 { try JSONValue.parse($0) }
    }

    /// Parses one JSON text from UTF-8 bytes; see ``init(parsing:)-(String)``.
    public init(parsing bytes: [UInt8]) throws {
        self = try bytes.withUnsafeBufferPointer { try JSONValue.parse($0) }
    }

    /// Parses one JSON text from UTF-8 bytes; error offsets count from the slice's start.
    public init(parsing bytes: ArraySlice<UInt8>) throws {
        self = try bytes.withUnsafeBufferPointer { try JSONValue.parse($0) }
    }

    static func parse(_ buffer: UnsafeBufferPointer<UInt8>) throws(SOPError) -> JSONValue {
        let p = JSONParser(s: JSONScanner(buffer, code: .invalidArgument))
        let start = p.s.skipWhitespace(0)
        let (value, end) = try p.parseValue(start, depth: 0)
        let rest = p.s.skipWhitespace(end)
        guard rest == buffer.count else { throw p.s.fail(rest, "unexpected characters after the value") }
        return value
    }

    /// The compact JSON text (see ``write(to:)``).
    public var jsonText: String {
        var out: [UInt8] = []
        write(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the compact JSON text: no whitespace, object members in their order
    /// (duplicates included), strings escaped canonically (see
    /// ``JSONBytes/appendString(_:to:)``), doubles in Swift's shortest round-trip form (`2.0`,
    /// `1e-05`), NaN and infinities as `null`.
    public func write(to out: inout [UInt8]) {
        switch self {
        case .null:
            JSONBytes.appendLiteral("null", to: &out)
        case .bool(let v):
            JSONBytes.appendLiteral(v ? "true" : "false", to: &out)
        case .int(let v):
            JSONBytes.appendInt(v, to: &out)
        case .double(let d):
            if d.isFinite {
                out.append(contentsOf: d.description.utf8)
            } else {
                JSONBytes.appendLiteral("null", to: &out)
            }
        case .string(let s):
            JSONBytes.appendString(s, to: &out)
        case .array(let a):
            out.append(0x5B)
            for (i, v) in a.enumerated() {
                if i > 0 { out.append(0x2C) }
                v.write(to: &out)
            }
            out.append(0x5D)
        case .object(let o):
            out.append(0x7B)
            for (i, m) in o.members.enumerated() {
                if i > 0 { out.append(0x2C) }
                JSONBytes.appendString(m.key, to: &out)
                out.append(0x3A)
                m.value.write(to: &out)
            }
            out.append(0x7D)
        }
    }
}

/// Recursive-descent parser building `JSONValue`s.
struct JSONParser {
    let s: JSONScanner

    func parseValue(_ i: Int, depth: Int) throws(SOPError) -> (JSONValue, Int) {
        let b = s.b
        let n = b.count
        guard i < n else { throw s.fail(i, "unexpected end of input") }
        switch b[i] {
        case quoteByte:
            let (end, escaped) = try s.skipString(i)
            return (.string(try s.decodeString(i, end, escaped: escaped)), end)
        case 0x2D, 0x30...0x39:
            let (end, isInteger) = try s.skipNumber(i)
            if isInteger, let v = s.integerValue(i, end) { return (.int(v), end) }
            let text = String(decoding: UnsafeBufferPointer(rebasing: b[i..<end]), as: UTF8.self)
            guard let d = Double(text), d.isFinite else { throw s.fail(i, "number out of range") }
            return (.double(d), end)
        case 0x74: return (.bool(true), try s.expectLiteral(i, "true"))
        case 0x66: return (.bool(false), try s.expectLiteral(i, "false"))
        case 0x6E: return (.null, try s.expectLiteral(i, "null"))
        case 0x5B:
            guard depth < JSONScanner.maxDepth else { throw s.fail(i, "nesting deeper than \(JSONScanner.maxDepth)") }
            var elements: [JSONValue] = []
            var j = s.skipWhitespace(i + 1)
            if j < n && b[j] == 0x5D { return (.array(elements), j + 1) }
            while true {
                let (v, end) = try parseValue(j, depth: depth + 1)
                elements.append(v)
                j = s.skipWhitespace(end)
                guard j < n else { throw s.fail(j, "unterminated array") }
                if b[j] == 0x2C {
                    j = s.skipWhitespace(j + 1)
                } else if b[j] == 0x5D {
                    return (.array(elements), j + 1)
                } else {
                    throw s.fail(j, "expected ',' or ']'")
                }
            }
        case 0x7B:
            guard depth < JSONScanner.maxDepth else { throw s.fail(i, "nesting deeper than \(JSONScanner.maxDepth)") }
            var members: [(key: String, value: JSONValue)] = []
            var j = s.skipWhitespace(i + 1)
            if j < n && b[j] == 0x7D { return (.object(JSONObject(members)), j + 1) }
            while true {
                guard j < n else { throw s.fail(j, "unterminated object") }
                guard b[j] == quoteByte else { throw s.fail(j, "expected string key") }
                let (kEnd, escaped) = try s.skipString(j)
                let key = try s.decodeString(j, kEnd, escaped: escaped)
                j = s.skipWhitespace(kEnd)
                guard j < n, b[j] == 0x3A else { throw s.fail(j, "expected ':'") }
                j = s.skipWhitespace(j + 1)
                let (v, end) = try parseValue(j, depth: depth + 1)
                members.append((key: key, value: v))
                j = s.skipWhitespace(end)
                guard j < n else { throw s.fail(j, "unterminated object") }
                if b[j] == 0x2C {
                    j = s.skipWhitespace(j + 1)
                } else if b[j] == 0x7D {
                    return (.object(JSONObject(members)), j + 1)
                } else {
                    throw s.fail(j, "expected ',' or '}'")
                }
            }
        default:
            throw s.fail(i, "unexpected character")
        }
    }
}
