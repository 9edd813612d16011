// The byte-level JSON machinery shared by the parser, `JSONBytes` and `NodeCodec`.
// Works on an `UnsafeBufferPointer<UInt8>`; offsets in error messages are indices into it.

let quoteByte: UInt8 = 0x22
let backslashByte: UInt8 = 0x5C

/// Strict RFC 8259 scanning over a byte buffer. Throws `SOPError(code, prefix + "invalid JSON
/// at byte N: reason")`.
struct JSONScanner {
    /// The maximum nesting depth of arrays and objects.
    static let maxDepth = 512

    let b: UnsafeBufferPointer<UInt8>
    let code: SOPError.Code
    let prefix: String

    init(_ b: UnsafeBufferPointer<UInt8>, code: SOPError.Code, prefix: String = "") {
        self.b = b
        self.code = code
        self.prefix = prefix
    }

    var count: Int { b.count }

    func fail(_ at: Int, _ reason: String) -> SOPError {
        SOPError(code, "\(prefix)invalid JSON at byte \(at): \(reason)")
    }

    @inline(__always)
    func skipWhitespace(_ from: Int) -> Int {
        var i = from
        let n = b.count
        while i < n {
            let c = b[i]
            guard c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 else { break }
            i += 1
        }
        return i
    }

    @inline(__always)
    static func isDigit(_ c: UInt8) -> Bool { c &- 0x30 < 10 }

    @inline(__always)
    static func hexValue(_ c: UInt8) -> UInt32? {
        switch c {
        case 0x30...0x39: return UInt32(c - 0x30)
        case 0x61...0x66: return UInt32(c - 0x61 + 10)
        case 0x41...0x46: return UInt32(c - 0x41 + 10)
        default: return nil
        }
    }

    /// `start` is at `"`. Returns the index after the closing quote and whether a backslash
    /// occurred. Validates escapes and rejects control characters; does not validate UTF-8 or
    /// surrogate pairing (``decodeString`` does).
    @inline(__always)
    func skipString(_ start: Int) throws(SOPError) -> (end: Int, escaped: Bool) {
        var i = start + 1
        let n = b.count
        var escaped = false
        while i < n {
            let c = b[i]
            if c == quoteByte { return (i + 1, escaped) }
            if c == backslashByte {
                escaped = true
                i = try skipEscape(i)
                continue
            }
            if c < 0x20 { throw fail(i, "control character in string") }
            i += 1
        }
        throw fail(start, "unterminated string")
    }

    /// `i` is at a backslash; returns the index after the escape sequence.
    func skipEscape(_ i: Int) throws(SOPError) -> Int {
        let n = b.count
        guard i + 1 < n else { throw fail(i, "unterminated string") }
        switch b[i + 1] {
        case 0x22, 0x5C, 0x2F, 0x62, 0x66, 0x6E, 0x72, 0x74: // " \ / b f n r t
            return i + 2
        case 0x75: // u
            guard i + 6 <= n else { throw fail(i, "truncated \\u escape") }
            for k in 2..<6 where JSONScanner.hexValue(b[i + k]) == nil {
                throw fail(i, "invalid \\u escape")
            }
            return i + 6
        default:
            throw fail(i, "invalid escape")
        }
    }

    /// Decodes the string literal `b[start..<end]` (as found by ``skipString``), validating
    /// surrogate pairs and UTF-8.
    func decodeString(_ start: Int, _ end: Int, escaped: Bool) throws(SOPError) -> String {
        let stop = end - 1
        if !escaped {
            let content = UnsafeBufferPointer(rebasing: b[(start + 1)..<stop])
            guard let s = String(validating: content, as: UTF8.self) else {
                throw fail(start, "invalid UTF-8 in string")
            }
            return s
        }
        var out: [UInt8] = []
        out.reserveCapacity(stop - start)
        var i = start + 1
        var run = i
        while i < stop {
            guard b[i] == backslashByte else {
                i += 1
                continue
            }
            if run < i { out.append(contentsOf: UnsafeBufferPointer(rebasing: b[run..<i])) }
            switch b[i + 1] {
            case 0x62: out.append(0x08); i += 2
            case 0x66: out.append(0x0C); i += 2
            case 0x6E: out.append(0x0A); i += 2
            case 0x72: out.append(0x0D); i += 2
            case 0x74: out.append(0x09); i += 2
            case 0x75:
                let u = hex4(i + 2)
                var scalar = u
                if u >= 0xD800 && u <= 0xDBFF {
                    guard i + 7 < stop, b[i + 6] == backslashByte, b[i + 7] == 0x75 else {
                        throw fail(i, "unpaired high surrogate")
                    }
                    let lo = hex4(i + 8)
                    guard lo >= 0xDC00 && lo <= 0xDFFF else { throw fail(i, "unpaired high surrogate") }
                    scalar = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)
                    i += 12
                } else if u >= 0xDC00 && u <= 0xDFFF {
                    throw fail(i, "unpaired low surrogate")
                } else {
                    i += 6
                }
                JSONScanner.appendUTF8(scalar, to: &out)
            default: // " \ /
                out.append(b[i + 1])
                i += 2
            }
            run = i
        }
        if run < stop { out.append(contentsOf: UnsafeBufferPointer(rebasing: b[run..<stop])) }
        guard let s = String(validating: out, as: UTF8.self) else {
            throw fail(start, "invalid UTF-8 in string")
        }
        return s
    }

    /// Four hex digits already validated by ``skipEscape``.
    @inline(__always)
    func hex4(_ i: Int) -> UInt32 {
        var v: UInt32 = 0
        for k in 0..<4 { v = (v << 4) | (JSONScanner.hexValue(b[i + k]) ?? 0) }
        return v
    }

    static func appendUTF8(_ s: UInt32, to out: inout [UInt8]) {
        switch s {
        case 0..<0x80:
            out.append(UInt8(s))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | (s >> 6)))
            out.append(UInt8(0x80 | (s & 0x3F)))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | (s >> 12)))
            out.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (s & 0x3F)))
        default:
            out.append(UInt8(0xF0 | (s >> 18)))
            out.append(UInt8(0x80 | ((s >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (s & 0x3F)))
        }
    }

    /// `start` is at `-` or a digit. Returns the end of the number and whether it is an
    /// integer literal (no fraction, no exponent).
    func skipNumber(_ start: Int) throws(SOPError) -> (end: Int, isInteger: Bool) {
        var i = start
        let n = b.count
        if i < n && b[i] == 0x2D { i += 1 }
        guard i < n else { throw fail(i, "expected digit") }
        if b[i] == 0x30 {
            i += 1
            if i < n && JSONScanner.isDigit(b[i]) { throw fail(start, "leading zero in number") }
        } else if JSONScanner.isDigit(b[i]) {
            i += 1
            while i < n && JSONScanner.isDigit(b[i]) { i += 1 }
        } else {
            throw fail(i, "expected digit")
        }
        var isInteger = true
        if i < n && b[i] == 0x2E {
            isInteger = false
            i += 1
            guard i < n && JSONScanner.isDigit(b[i]) else { throw fail(i, "expected digit after decimal point") }
            while i < n && JSONScanner.isDigit(b[i]) { i += 1 }
        }
        if i < n && (b[i] == 0x65 || b[i] == 0x45) {
            isInteger = false
            i += 1
            if i < n && (b[i] == 0x2B || b[i] == 0x2D) { i += 1 }
            guard i < n && JSONScanner.isDigit(b[i]) else { throw fail(i, "expected digit in exponent") }
            while i < n && JSONScanner.isDigit(b[i]) { i += 1 }
        }
        return (i, isInteger)
    }

    /// The integer literal `b[start..<end]` (validated by ``skipNumber``), or `nil` when it
    /// does not fit in an `Int64`.
    func integerValue(_ start: Int, _ end: Int) -> Int64? {
        var i = start
        let negative = b[i] == 0x2D
        if negative { i += 1 }
        var v: Int64 = 0
        while i < end {
            let d = Int64(b[i] &- 0x30)
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (r, o2) = negative ? m.subtractingReportingOverflow(d) : m.addingReportingOverflow(d)
            if o1 || o2 { return nil }
            v = r
            i += 1
        }
        return v
    }

    @inline(__always)
    func expectLiteral(_ i: Int, _ lit: StaticString) throws(SOPError) -> Int {
        let n = lit.utf8CodeUnitCount
        guard i + n <= b.count else { throw fail(i, "invalid literal") }
        let p = lit.utf8Start
        for k in 0..<n where b[i + k] != p[k] { throw fail(i, "invalid literal") }
        return i + n
    }

    /// Skips one value that starts exactly at `i` (no leading whitespace); returns its end.
    func skipValue(_ i: Int, depth: Int) throws(SOPError) -> Int {
        let n = b.count
        guard i < n else { throw fail(i, "unexpected end of input") }
        switch b[i] {
        case quoteByte:
            return try skipString(i).end
        case 0x7B: // {
            guard depth < JSONScanner.maxDepth else { throw fail(i, "nesting deeper than \(JSONScanner.maxDepth)") }
            var j = skipWhitespace(i + 1)
            if j < n && b[j] == 0x7D { return j + 1 }
            while true {
                guard j < n else { throw fail(j, "unterminated object") }
                guard b[j] == quoteByte else { throw fail(j, "expected string key") }
                j = skipWhitespace(try skipString(j).end)
                guard j < n, b[j] == 0x3A else { throw fail(j, "expected ':'") }
                j = skipWhitespace(j + 1)
                j = skipWhitespace(try skipValue(j, depth: depth + 1))
                guard j < n else { throw fail(j, "unterminated object") }
                if b[j] == 0x2C {
                    j = skipWhitespace(j + 1)
                } else if b[j] == 0x7D {
                    return j + 1
                } else {
                    throw fail(j, "expected ',' or '}'")
                }
            }
        case 0x5B: // [
            guard depth < JSONScanner.maxDepth else { throw fail(i, "nesting deeper than \(JSONScanner.maxDepth)") }
            var j = skipWhitespace(i + 1)
            if j < n && b[j] == 0x5D { return j + 1 }
            while true {
                j = skipWhitespace(try skipValue(j, depth: depth + 1))
                guard j < n else { throw fail(j, "unterminated array") }
                if b[j] == 0x2C {
                    j = skipWhitespace(j + 1)
                } else if b[j] == 0x5D {
                    return j + 1
                } else {
                    throw fail(j, "expected ',' or ']'")
                }
            }
        case 0x74: return try expectLiteral(i, "true")
        case 0x66: return try expectLiteral(i, "false")
        case 0x6E: return try expectLiteral(i, "null")
        case 0x2D, 0x30...0x39: return try skipNumber(i).end
        default: throw fail(i, "unexpected character")
        }
    }
}
