/// Allocation-free JSON helpers for the storage engine's hot paths (node encoding/decoding,
/// key and value codecs). Errors are ``SOPError`` with code ``SOPError/Code/corrupt``,
/// because their input is data read back from storage.
public enum JSONBytes {
    /// Skips leading whitespace at `i`, then one complete JSON value.
    ///
    /// Validates the value's structure (string escapes, no raw control characters in strings,
    /// number grammar, literals, nesting up to 512 levels) but not UTF-8 or surrogate pairing,
    /// and builds nothing.
    ///
    /// - Returns: where the value starts (after the whitespace) and the index just after it.
    /// - Throws: ``SOPError/Code/corrupt`` for malformed or truncated input.
    public static func skipValue(_ b: UnsafeBufferPointer<UInt8>, from i: Int) throws -> (start: Int, end: Int) {
        let s = JSONScanner(b, code: .corrupt)
        guard i >= 0, i <= b.count else { throw s.fail(i, "index out of range") }
        let start = s.skipWhitespace(i)
        return (start, try s.skipValue(start, depth: 0))
    }

    /// ``skipValue(_:from:)-(UnsafeBufferPointer<UInt8>,_)`` over an array (indices are the
    /// array's).
    public static func skipValue(_ b: [UInt8], from i: Int) throws -> (start: Int, end: Int) {
        try b.withUnsafeBufferPointer { try skipValue($0, from: i) }
    }

    /// Appends `s` as a JSON string literal with canonical escaping: `"` and `\` are
    /// backslash-escaped, control characters below U+0020 are written as `\b \t \n \f \r` or
    /// `\u00XX`, and everything else (including `/`, U+007F and non-ASCII) is copied as UTF-8.
    public static func appendString(_ s: String, to out: inout [UInt8]) {
        if let done: Void = s.utf8.withContiguousStorageIfAvailable({ appendString(utf8: $0, to: &out) }) {
            return done
        }
        var copy = s
        copy.withUTF8 { appendString(utf8: $0, to: &out) }
    }

    /// Appends the UTF-8 bytes `u` as a JSON string literal (see ``appendString(_:to:)``).
    /// The bytes are not validated.
    public static func appendString(utf8 u: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        out.append(quoteByte)
        var run = 0
        let n = u.count
        var i = 0
        while i < n {
            let c = u[i]
            if c >= 0x20 && c != quoteByte && c != backslashByte {
                i += 1
                continue
            }
            if run < i { out.append(contentsOf: UnsafeBufferPointer(rebasing: u[run..<i])) }
            out.append(backslashByte)
            switch c {
            case quoteByte, backslashByte: out.append(c)
            case 0x08: out.append(0x62)
            case 0x09: out.append(0x74)
            case 0x0A: out.append(0x6E)
            case 0x0C: out.append(0x66)
            case 0x0D: out.append(0x72)
            default:
                out.append(0x75)
                out.append(0x30)
                out.append(0x30)
                out.append(hexDigit(c >> 4))
                out.append(hexDigit(c & 0xF))
            }
            i += 1
            run = i
        }
        if run < n { out.append(contentsOf: UnsafeBufferPointer(rebasing: u[run..<n])) }
        out.append(quoteByte)
    }

    @inline(__always)
    static func hexDigit(_ v: UInt8) -> UInt8 { v < 10 ? 0x30 + v : 0x61 + v - 10 }

    /// Parses exactly one JSON string literal (the whole slice, quotes included, no
    /// surrounding whitespace), fully validated: escapes, surrogate pairs, UTF-8.
    ///
    /// - Throws: ``SOPError/Code/corrupt``; offsets count from the slice's start.
    public static func parseString(_ b: ArraySlice<UInt8>) throws -> String {
        try b.withUnsafeBufferPointer { buf throws(SOPError) -> String in
            let s = JSONScanner(buf, code: .corrupt)
            guard buf.count >= 2, buf[0] == quoteByte else { throw s.fail(0, "expected a string") }
            let (end, escaped) = try s.skipString(0)
            guard end == buf.count else { throw s.fail(end, "unexpected characters after the string") }
            return try s.decodeString(0, end, escaped: escaped)
        }
    }

    /// Parses exactly one JSON integer literal (`-?(0|[1-9][0-9]*)`, the whole slice);
    /// `nil` for anything else, including fractions, exponents and values outside `Int64`.
    public static func parseInt(_ b: ArraySlice<UInt8>) -> Int64? {
        b.withUnsafeBufferPointer { buf -> Int64? in
            let s = JSONScanner(buf, code: .corrupt)
            guard !buf.isEmpty, buf[0] == 0x2D || JSONScanner.isDigit(buf[0]),
                  let (end, isInteger) = try? s.skipNumber(0),
                  isInteger, end == buf.count else { return nil }
            return s.integerValue(0, end)
        }
    }

    /// Appends the decimal digits of `v`.
    public static func appendInt(_ v: Int64, to out: inout [UInt8]) {
        if v < 0 { out.append(0x2D) }
        var m = v.magnitude
        if m < 10 {
            out.append(0x30 + UInt8(m))
            return
        }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0) // 24 bytes >= 20 digits
        var n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            while m > 0 {
                d[n] = 0x30 + UInt8(m % 10)
                m /= 10
                n += 1
            }
            for k in stride(from: n - 1, through: 0, by: -1) { out.append(d[k]) }
        }
    }

    @inline(__always)
    static func appendLiteral(_ lit: StaticString, to out: inout [UInt8]) {
        out.append(contentsOf: UnsafeBufferPointer(start: lit.utf8Start, count: lit.utf8CodeUnitCount))
    }
}
