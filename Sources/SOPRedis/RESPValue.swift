/// One reply from a Redis server, in either protocol version (RESP2 or RESP3).
///
/// RESP2 has five types (simple string, error, integer, bulk string, array, with a null bulk
/// string and a null array). RESP3 adds a real null, booleans, doubles, big numbers, bulk
/// errors, verbatim strings, maps, sets, attributes and out-of-band pushes.
public enum RESPValue: Sendable, Equatable, CustomStringConvertible {
    /// `+OK` — a short, CRLF-free status line.
    case simpleString(String)
    /// `-ERR ...` — an error reply (RESP2 and RESP3).
    case error(String)
    /// `:42` — a signed 64-bit integer.
    case integer(Int64)
    /// `$3\r\nfoo` — binary-safe bytes; `nil` is RESP2's null bulk string (`$-1`).
    case bulkString([UInt8]?)
    /// `*2\r\n...` — an ordered list; `nil` is RESP2's null array (`*-1`).
    case array([RESPValue]?)
    /// `_` — RESP3's null.
    case null
    /// `#t` / `#f` — RESP3 boolean.
    case boolean(Bool)
    /// `,3.14` — RESP3 double (also `inf`, `-inf`, `nan`).
    case double(Double)
    /// `(3492890328409238509324850943850943825024385` — RESP3 big number, kept as its digits.
    case bigNumber(String)
    /// `!21\r\nSYNTAX invalid syntax` — RESP3 bulk error.
    case bulkError(String)
    /// `=15\r\ntxt:Some string` — RESP3 verbatim string: a three-letter format and the text.
    case verbatimString(format: String, text: [UInt8])
    /// `%2\r\n...` — RESP3 map, in the order the server sent it.
    case map([RESPPair])
    /// `~2\r\n...` — RESP3 set, in the order the server sent it.
    case set([RESPValue])
    /// `>3\r\n...` — RESP3 out-of-band push (pub/sub messages, client-tracking invalidations).
    case push([RESPValue])
    /// A value preceded by a RESP3 attribute (`|1\r\n...`), kept only when the decoder is
    /// asked to (``RESPDecoder/keepAttributes``); otherwise attributes are skipped.
    indirect case attributed(attributes: [RESPPair], value: RESPValue)

    /// True for `error` and `bulkError`.
    public var isError: Bool {
        switch self {
        case .error, .bulkError: return true
        case .attributed(_, let v): return v.isError
        default: return false
        }
    }

    /// The error text of `error` and `bulkError` replies.
    public var errorMessage: String? {
        switch self {
        case .error(let m), .bulkError(let m): return m
        case .attributed(_, let v): return v.errorMessage
        default: return nil
        }
    }

    /// True for the null bulk string, the null array and RESP3's null.
    public var isNull: Bool {
        switch self {
        case .null, .bulkString(nil), .array(nil): return true
        case .attributed(_, let v): return v.isNull
        default: return false
        }
    }

    /// The bytes of a bulk string, simple string or verbatim string.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let b): return b
        case .simpleString(let s): return Array(s.utf8)
        case .verbatimString(_, let t): return t
        case .attributed(_, let v): return v.bytes
        default: return nil
        }
    }

    /// The text of a bulk, simple or verbatim string (decoded as UTF-8, repairing bad bytes),
    /// or of a big number.
    public var string: String? {
        switch self {
        case .simpleString(let s), .bigNumber(let s): return s
        case .bulkString(let b?): return String(decoding: b, as: UTF8.self)
        case .verbatimString(_, let t): return String(decoding: t, as: UTF8.self)
        case .attributed(_, let v): return v.string
        default: return nil
        }
    }

    /// The value of an integer reply (or of a bulk/simple string holding a decimal integer).
    public var int: Int64? {
        switch self {
        case .integer(let i): return i
        case .bulkString(let b?): return Int64(String(decoding: b, as: UTF8.self))
        case .simpleString(let s): return Int64(s)
        case .attributed(_, let v): return v.int
        default: return nil
        }
    }

    /// The elements of an array, set or push.
    public var elements: [RESPValue]? {
        switch self {
        case .array(let a): return a
        case .set(let a), .push(let a): return a
        case .attributed(_, let v): return v.elements
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .simpleString(let s): return "+\(s)"
        case .error(let s): return "-\(s)"
        case .integer(let i): return ":\(i)"
        case .bulkString(nil): return "(nil bulk)"
        case .bulkString(let b?): return "\"\(String(decoding: b, as: UTF8.self))\""
        case .array(nil): return "(nil array)"
        case .array(let a?): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .null: return "(null)"
        case .boolean(let b): return b ? "#t" : "#f"
        case .double(let d): return ",\(d)"
        case .bigNumber(let s): return "(\(s)"
        case .bulkError(let s): return "!\(s)"
        case .verbatimString(let f, let t): return "=\(f):\(String(decoding: t, as: UTF8.self))"
        case .map(let m): return "{" + m.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        case .set(let a): return "~[" + a.map(\.description).joined(separator: ", ") + "]"
        case .push(let a): return ">[" + a.map(\.description).joined(separator: ", ") + "]"
        case .attributed(let at, let v): return "|{" + at.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "} \(v)"
        }
    }
}

/// One key/value entry of a RESP3 map or attribute.
public struct RESPPair: Sendable, Equatable {
    /// The entry's key.
    public var key: RESPValue
    /// The entry's value.
    public var value: RESPValue

    /// Makes an entry.
    public init(_ key: RESPValue, _ value: RESPValue) {
        self.key = key
        self.value = value
    }
}
