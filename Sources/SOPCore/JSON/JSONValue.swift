/// Any JSON value, with a total order so it can be used as a B-tree key.
///
/// Order: `null` < booleans < numbers < strings < arrays < objects.
/// - `false` < `true`.
/// - Numbers compare by numeric value across `.int` and `.double`, exactly (no rounding of
///   large integers): `.int(1) == .double(1.0)`, `.int(3) < .double(3.5)`,
///   `.int(Int64.max) < .double(9223372036854775808.0)`. `-0.0 == 0.0`.
/// - Strings compare with Swift `String` `<` and `==` (Unicode canonical equivalence), the
///   same order a Swift `String` key has.
/// - Arrays compare element by element; a proper prefix is smaller.
/// - Objects compare by canonical form (see ``JSONObject``).
///
/// JSON has no NaN or infinity: the parser rejects numbers that overflow a `Double`, and the
/// serializer writes non-finite doubles as `null`. A `.double(.nan)` made in code compares
/// equal to any other NaN and smaller than every other number; infinities order as usual.
public enum JSONValue: Sendable, Hashable, Comparable {
    /// `null`.
    case null
    /// `true` or `false`.
    case bool(Bool)
    /// A number written without fraction or exponent that fits in an `Int64`.
    case int(Int64)
    /// Any other number.
    case double(Double)
    /// A string.
    case string(String)
    /// An array.
    case array([JSONValue])
    /// An object (member order is kept; see ``JSONObject``).
    case object(JSONObject)

    /// The rank of the value's type in the total order.
    @inline(__always)
    private var typeRank: Int {
        switch self {
        case .null: return 0
        case .bool: return 1
        case .int, .double: return 2
        case .string: return 3
        case .array: return 4
        case .object: return 5
        }
    }

    /// Three-way comparison in the total order: negative, zero or positive.
    public func compare(to other: JSONValue) -> Int {
        switch (self, other) {
        case (.null, .null):
            return 0
        case let (.bool(a), .bool(b)):
            return a == b ? 0 : (a ? 1 : -1)
        case let (.int(a), .int(b)):
            return a < b ? -1 : (a > b ? 1 : 0)
        case let (.int(a), .double(b)):
            return JSONValue.compare(a, b)
        case let (.double(a), .int(b)):
            return -JSONValue.compare(b, a)
        case let (.double(a), .double(b)):
            return JSONValue.compare(a, b)
        case let (.string(a), .string(b)):
            return a == b ? 0 : (a < b ? -1 : 1)
        case let (.array(a), .array(b)):
            for (x, y) in zip(a, b) {
                let c = x.compare(to: y)
                if c != 0 { return c }
            }
            return a.count < b.count ? -1 : (a.count > b.count ? 1 : 0)
        case let (.object(a), .object(b)):
            return a.compare(to: b)
        default:
            return typeRank < other.typeRank ? -1 : 1
        }
    }

    /// Exact comparison of an integer with a double (NaN is smallest).
    static func compare(_ i: Int64, _ d: Double) -> Int {
        if d.isNaN { return 1 }
        // 2^63 is exactly representable; every double in [-2^63, 2^63) with no fraction fits.
        if d < -9_223_372_036_854_775_808.0 { return 1 }
        if d >= 9_223_372_036_854_775_808.0 { return -1 }
        let t = d.rounded(.towardZero)
        let ti = Int64(t)
        if i < ti { return -1 }
        if i > ti { return 1 }
        let frac = d - t
        return frac > 0 ? -1 : (frac < 0 ? 1 : 0)
    }

    /// Comparison of doubles where NaN equals NaN and is smaller than every number.
    static func compare(_ a: Double, _ b: Double) -> Int {
        if a < b { return -1 }
        if a > b { return 1 }
        if a == b { return 0 }
        // At least one NaN.
        if a.isNaN { return b.isNaN ? 0 : -1 }
        return 1
    }

    /// Equality in the total order (so `.int(1) == .double(1.0)`).
    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case let (.string(x), .string(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.array(x), .array(y)):
            guard x.count == y.count else { return false }
            for (p, q) in zip(x, y) where p != q { return false }
            return true
        case let (.object(x), .object(y)): return x == y
        default: return a.compare(to: b) == 0
        }
    }

    /// Order of the total order described on the type.
    public static func < (a: JSONValue, b: JSONValue) -> Bool {
        a.compare(to: b) < 0
    }

    /// Hashes consistently with `==`: an integral double hashes like the equal integer.
    public func hash(into hasher: inout Hasher) {
        switch self {
        case .null:
            hasher.combine(0 as UInt8)
        case .bool(let b):
            hasher.combine(1 as UInt8)
            hasher.combine(b)
        case .int(let i):
            hasher.combine(2 as UInt8)
            hasher.combine(i)
        case .double(let d):
            hasher.combine(2 as UInt8)
            if d.isNaN {
                hasher.combine(UInt64.max)
            } else if d >= -9_223_372_036_854_775_808.0, d < 9_223_372_036_854_775_808.0,
                      d == d.rounded(.towardZero) {
                hasher.combine(Int64(d))
            } else {
                hasher.combine(d)
            }
        case .string(let s):
            hasher.combine(3 as UInt8)
            hasher.combine(s)
        case .array(let a):
            hasher.combine(4 as UInt8)
            hasher.combine(a.count)
            for v in a { hasher.combine(v) }
        case .object(let o):
            hasher.combine(5 as UInt8)
            hasher.combine(o)
        }
    }
}

extension JSONValue {
    /// True for `.null`.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// The value of the last member named `key` when this is an object; `nil` otherwise.
    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    /// The array element at `index`, or `nil` when not an array or out of range.
    public subscript(index: Int) -> JSONValue? {
        if case .array(let a) = self, a.indices.contains(index) { return a[index] }
        return nil
    }
}

extension JSONValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral {
    /// `nil` is `.null`.
    public init(nilLiteral: ()) { self = .null }
    /// A boolean literal is `.bool`.
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    /// An integer literal is `.int`.
    public init(integerLiteral value: Int64) { self = .int(value) }
    /// A float literal is `.double`.
    public init(floatLiteral value: Double) { self = .double(value) }
    /// A string literal is `.string`.
    public init(stringLiteral value: String) { self = .string(value) }
    /// An array literal is `.array`.
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    /// A dictionary literal is `.object`, keeping the literal's member order.
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(JSONObject(elements.map { (key: $0.0, value: $0.1) }))
    }
}

extension JSONValue: CustomStringConvertible {
    /// The compact JSON text (``jsonText``).
    public var description: String { jsonText }
}
