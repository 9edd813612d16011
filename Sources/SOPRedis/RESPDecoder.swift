import NIOCore
import SOPCore

/// An incremental decoder of RESP2 and RESP3 replies.
///
/// ``decode(_:)`` looks at the readable bytes of a buffer: when they hold a whole reply it
/// consumes exactly that reply and returns it; when they hold only the start of one it
/// consumes nothing and returns `nil` (call again when more bytes have arrived); when they
/// cannot be the start of a valid reply it throws `SOPError(.io, "redis protocol error: …")`.
///
/// Limits guard against a hostile or broken peer: no bulk string longer than
/// ``maxBulkLength``, no aggregate with more than ``maxAggregateCount`` elements, no nesting
/// deeper than ``maxDepth``, no status line longer than ``maxLineLength``. Memory is never
/// reserved on the strength of a length the peer announced, only for bytes actually received.
///
/// A partial reply is re-scanned from its start on the next call. Bulk strings are skipped in
/// O(1), so this costs little for the replies SOP reads (many small ones); a huge aggregate
/// arriving in many small reads costs a re-scan per read.
public struct RESPDecoder: Sendable {
    /// The longest bulk string (and verbatim string, bulk error) accepted: Redis' own limit.
    public var maxBulkLength: Int = 512 * 1024 * 1024
    /// The deepest nesting of aggregates (arrays, maps, sets, pushes, attributes) accepted.
    public var maxDepth: Int = 64
    /// The most elements one aggregate may announce (a map's count is of pairs).
    public var maxAggregateCount: Int = 16 * 1024 * 1024
    /// The longest type line (simple string, error, number) accepted.
    public var maxLineLength: Int = 1024 * 1024
    /// Keep RESP3 attributes as ``RESPValue/attributed(attributes:value:)`` instead of
    /// skipping them.
    public var keepAttributes: Bool = false

    /// Makes a decoder with the default limits.
    public init() {}

    /// Decodes one reply from the front of `buffer`, or returns `nil` (consuming nothing) when
    /// the buffer does not yet hold a whole reply.
    public func decode(_ buffer: inout ByteBuffer) throws -> RESPValue? {
        let result: (RESPValue, Int)? = try buffer.withUnsafeReadableBytes { raw in
            var parser = RESPParser(bytes: raw, limits: self)
            guard let v = try parser.value(depth: 0) else { return nil }
            return (v, parser.index)
        }
        guard let (value, consumed) = result else { return nil }
        buffer.moveReaderIndex(forwardBy: consumed)
        return value
    }

    /// Decodes every whole reply in `bytes`; for tests and tools.
    public func decodeAll(_ bytes: [UInt8]) throws -> (values: [RESPValue], rest: Int) {
        var buffer = ByteBuffer(bytes: bytes)
        var out: [RESPValue] = []
        while let v = try decode(&buffer) { out.append(v) }
        return (out, buffer.readableBytes)
    }
}

private let CR: UInt8 = 13
private let LF: UInt8 = 10

private func protocolError(_ what: String) -> SOPError {
    SOPError(.io, "redis protocol error: \(what)")
}

private struct RESPParser {
    let bytes: UnsafeRawBufferPointer
    let limits: RESPDecoder
    var index = 0

    init(bytes: UnsafeRawBufferPointer, limits: RESPDecoder) {
        self.bytes = bytes
        self.limits = limits
    }

    /// The next line's content (without CRLF), consuming it; nil when the CRLF has not arrived.
    mutating func line() throws -> Range<Int>? {
        let start = index
        var i = start
        let end = bytes.count
        while i < end {
            let b = bytes[i]
            if b == CR {
                guard i + 1 < end else { return nil }
                guard bytes[i + 1] == LF else {
                    throw protocolError("expected CRLF at byte \(i), found CR followed by \(bytes[i + 1])")
                }
                index = i + 2
                return start..<i
            }
            if b == LF { throw protocolError("bare LF at byte \(i) (lines end with CRLF)") }
            i += 1
            if i - start > limits.maxLineLength {
                throw protocolError("line longer than \(limits.maxLineLength) bytes")
            }
        }
        return nil
    }

    func text(_ r: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[r]), as: UTF8.self)
    }

    func byteArray(_ r: Range<Int>) -> [UInt8] {
        Array(UnsafeRawBufferPointer(rebasing: bytes[r]))
    }

    /// Parses a signed decimal Int64 (no '+', no spaces, at least one digit).
    func integer(_ r: Range<Int>, what: String) throws -> Int64 {
        var i = r.lowerBound
        var negative = false
        if i < r.upperBound, bytes[i] == UInt8(ascii: "-") {
            negative = true
            i += 1
        }
        guard i < r.upperBound else { throw protocolError("empty \(what)") }
        var v: Int64 = 0
        while i < r.upperBound {
            let d = bytes[i]
            guard d >= 48, d <= 57 else { throw protocolError("bad \(what) \"\(text(r))\"") }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = negative ? m.subtractingReportingOverflow(Int64(d - 48)) : m.addingReportingOverflow(Int64(d - 48))
            guard !o1, !o2 else { throw protocolError("\(what) \"\(text(r))\" overflows 64 bits") }
            v = a
            i += 1
        }
        return v
    }

    /// A length: nil for -1 when `nullable`, otherwise 0...limit.
    func length(_ r: Range<Int>, what: String, nullable: Bool, limit: Int) throws -> Int? {
        let n = try integer(r, what: "\(what) length")
        if n == -1 && nullable { return nil }
        guard n >= 0 else { throw protocolError("negative \(what) length \(n)") }
        guard n <= Int64(limit) else { throw protocolError("\(what) length \(n) exceeds the limit of \(limit)") }
        return Int(n)
    }

    /// The `n` bytes of a bulk payload and its CRLF; nil when they have not all arrived.
    mutating func payload(_ n: Int, what: String) throws -> Range<Int>? {
        let start = index
        guard bytes.count - start >= n + 2 else { return nil }
        guard bytes[start + n] == CR, bytes[start + n + 1] == LF else {
            throw protocolError("\(what) of \(n) bytes not followed by CRLF")
        }
        index = start + n + 2
        return start..<(start + n)
    }

    mutating func elements(_ n: Int, depth: Int) throws -> [RESPValue]? {
        var out: [RESPValue] = []
        out.reserveCapacity(min(n, 1024))
        for _ in 0..<n {
            guard let v = try value(depth: depth + 1) else { return nil }
            out.append(v)
        }
        return out
    }

    mutating func pairs(_ n: Int, depth: Int) throws -> [RESPPair]? {
        var out: [RESPPair] = []
        out.reserveCapacity(min(n, 1024))
        for _ in 0..<n {
            guard let k = try value(depth: depth + 1) else { return nil }
            guard let v = try value(depth: depth + 1) else { return nil }
            out.append(RESPPair(k, v))
        }
        return out
    }

    /// `level` is the 1-based nesting level of the aggregate being opened.
    func checkDepth(_ level: Int) throws {
        guard level <= limits.maxDepth else {
            throw protocolError("aggregates nested deeper than \(limits.maxDepth) levels")
        }
    }

    /// One value at the current index; nil when more bytes are needed.
    mutating func value(depth: Int) throws -> RESPValue? {
        guard index < bytes.count else { return nil }
        let type = bytes[index]
        let typeOffset = index
        index += 1
        guard let head = try line() else { return nil }
        if head.count == 1, bytes[head.lowerBound] == UInt8(ascii: "?"),
            "$*%~>|=!".utf8.contains(type)
        {
            throw protocolError("streamed RESP3 aggregates and strings are not supported")
        }
        switch type {
        case UInt8(ascii: "+"):
            return .simpleString(text(head))
        case UInt8(ascii: "-"):
            return .error(text(head))
        case UInt8(ascii: ":"):
            return .integer(try integer(head, what: "integer"))
        case UInt8(ascii: "$"):
            guard let n = try length(head, what: "bulk string", nullable: true, limit: limits.maxBulkLength) else {
                return .bulkString(nil)
            }
            guard let r = try payload(n, what: "bulk string") else { return nil }
            return .bulkString(byteArray(r))
        case UInt8(ascii: "*"):
            guard let n = try length(head, what: "array", nullable: true, limit: limits.maxAggregateCount) else {
                return .array(nil)
            }
            try checkDepth(depth + 1)
            guard let e = try elements(n, depth: depth) else { return nil }
            return .array(e)
        case UInt8(ascii: "_"):
            guard head.isEmpty else { throw protocolError("null with content \"\(text(head))\"") }
            return .null
        case UInt8(ascii: "#"):
            guard head.count == 1 else { throw protocolError("bad boolean \"\(text(head))\"") }
            switch bytes[head.lowerBound] {
            case UInt8(ascii: "t"): return .boolean(true)
            case UInt8(ascii: "f"): return .boolean(false)
            default: throw protocolError("bad boolean \"\(text(head))\"")
            }
        case UInt8(ascii: ","):
            return .double(try double(head))
        case UInt8(ascii: "("):
            var i = head.lowerBound
            if i < head.upperBound, bytes[i] == UInt8(ascii: "-") || bytes[i] == UInt8(ascii: "+") { i += 1 }
            guard i < head.upperBound, bytes[i..<head.upperBound].allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                throw protocolError("bad big number \"\(text(head))\"")
            }
            return .bigNumber(text(head))
        case UInt8(ascii: "!"):
            guard let n = try length(head, what: "bulk error", nullable: false, limit: limits.maxBulkLength) else {
                return nil
            }
            guard let r = try payload(n, what: "bulk error") else { return nil }
            return .bulkError(text(r))
        case UInt8(ascii: "="):
            guard let n = try length(head, what: "verbatim string", nullable: false, limit: limits.maxBulkLength) else {
                return nil
            }
            guard let r = try payload(n, what: "verbatim string") else { return nil }
            guard n >= 4, bytes[r.lowerBound + 3] == UInt8(ascii: ":") else {
                throw protocolError("verbatim string without a \"fmt:\" prefix")
            }
            return .verbatimString(
                format: text(r.lowerBound..<(r.lowerBound + 3)),
                text: byteArray((r.lowerBound + 4)..<r.upperBound))
        case UInt8(ascii: "%"):
            guard let n = try length(head, what: "map", nullable: false, limit: limits.maxAggregateCount) else {
                return nil
            }
            try checkDepth(depth + 1)
            guard let p = try pairs(n, depth: depth) else { return nil }
            return .map(p)
        case UInt8(ascii: "~"):
            guard let n = try length(head, what: "set", nullable: false, limit: limits.maxAggregateCount) else {
                return nil
            }
            try checkDepth(depth + 1)
            guard let e = try elements(n, depth: depth) else { return nil }
            return .set(e)
        case UInt8(ascii: ">"):
            guard let n = try length(head, what: "push", nullable: false, limit: limits.maxAggregateCount) else {
                return nil
            }
            try checkDepth(depth + 1)
            guard let e = try elements(n, depth: depth) else { return nil }
            return .push(e)
        case UInt8(ascii: "|"):
            guard let n = try length(head, what: "attribute", nullable: false, limit: limits.maxAggregateCount) else {
                return nil
            }
            // The attribute and the value it annotates both count as one level, so a chain
            // of attributes cannot recurse without bound.
            try checkDepth(depth + 1)
            guard let p = try pairs(n, depth: depth) else { return nil }
            guard let v = try value(depth: depth + 1) else { return nil }
            return limits.keepAttributes ? .attributed(attributes: p, value: v) : v
        default:
            throw protocolError("unknown type byte 0x\(String(type, radix: 16)) at offset \(typeOffset)")
        }
    }

    func double(_ r: Range<Int>) throws -> Double {
        let s = text(r)
        switch s {
        case "inf", "+inf": return .infinity
        case "-inf": return -.infinity
        case "nan", "-nan": return .nan
        default: break
        }
        let allowed = Set("0123456789+-.eE".utf8)
        guard !s.isEmpty, s.utf8.allSatisfy({ allowed.contains($0) }), let d = Double(s) else {
            throw protocolError("bad double \"\(s)\"")
        }
        return d
    }
}

/// Writes Redis commands: each an array of bulk strings.
public enum RESPEncoder {
    /// Appends one command to `buffer`.
    public static func writeCommand(_ args: [String], into buffer: inout ByteBuffer) {
        buffer.writeStaticString("*")
        writeDecimal(args.count, into: &buffer)
        for a in args {
            buffer.writeStaticString("\r\n$")
            writeDecimal(a.utf8.count, into: &buffer)
            buffer.writeStaticString("\r\n")
            buffer.writeString(a)
        }
        buffer.writeStaticString("\r\n")
    }

    /// Appends one command with binary arguments to `buffer`.
    public static func writeCommand(_ args: [[UInt8]], into buffer: inout ByteBuffer) {
        buffer.writeStaticString("*")
        writeDecimal(args.count, into: &buffer)
        for a in args {
            buffer.writeStaticString("\r\n$")
            writeDecimal(a.count, into: &buffer)
            buffer.writeStaticString("\r\n")
            buffer.writeBytes(a)
        }
        buffer.writeStaticString("\r\n")
    }

    /// Appends one command whose arguments are byte buffers (their readable bytes) to `buffer`.
    public static func writeCommand(_ args: [ByteBuffer], into buffer: inout ByteBuffer) {
        buffer.writeStaticString("*")
        writeDecimal(args.count, into: &buffer)
        for a in args {
            buffer.writeStaticString("\r\n$")
            writeDecimal(a.readableBytes, into: &buffer)
            buffer.writeStaticString("\r\n")
            buffer.writeImmutableBuffer(a)
        }
        buffer.writeStaticString("\r\n")
    }

    /// The encoding of one command, as bytes (for tests).
    public static func encode(_ args: [String]) -> [UInt8] {
        var b = ByteBuffer()
        writeCommand(args, into: &b)
        return Array(b.readableBytesView)
    }

    private static func writeDecimal(_ n: Int, into buffer: inout ByteBuffer) {
        buffer.writeString(String(n))
    }
}
