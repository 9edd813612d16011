import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A 128-bit identifier: logical node IDs, item IDs, transaction IDs and store incarnations.
///
/// IDs made by ``timeOrdered()`` sort by creation time (UUIDv7 layout: 48-bit milliseconds,
/// then random bits), so duplicates of one key keep their insertion order.
public struct SOPID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The high 64 bits (big-endian first half of the 16 bytes).
    public var high: UInt64
    /// The low 64 bits.
    public var low: UInt64

    /// Makes an ID from its two halves.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The all-zero ID; never assigned to anything.
    public static let zero = SOPID(high: 0, low: 0)
    /// The all-ones ID: the largest, used as an upper search bound.
    public static let max = SOPID(high: .max, low: .max)

    /// A random (version 4 layout) ID.
    public static func random() -> SOPID {
        let h = (fastRandom() & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000
        let l = (fastRandom() & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
        return SOPID(high: h, low: l)
    }

    /// Seeds ``fastRandom()``: 64 bits from the system, once per process.
    private static let randomSeed: UInt64 = {
        var g = SystemRandomNumberGenerator()
        return g.next()
    }()
    private static let randomCounter = AtomicCounter()

    /// Random bits for IDs without a system call per ID (every item added gets an ID): the
    /// SplitMix64 finalizer of a seeded process-wide counter. The finalizer is a bijection, so
    /// no two calls in a process return the same value; across processes the seeds differ.
    /// IDs are unique, not secret.
    static func fastRandom() -> UInt64 {
        var z = randomSeed &+ randomCounter.next() &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The last time-ordered stamp handed out: milliseconds << 12 | sequence.
    private static let lastStamp = Atomic<UInt64>(0)

    /// A time-ordered (version 7 layout) ID: later calls in one process give larger IDs.
    ///
    /// The 48 bits of milliseconds and 12 bits of sequence are one process-wide stamp that
    /// only grows: a call takes the clock's stamp or, when that is not above the last one
    /// (same millisecond, or the wall clock stepped back), the last one plus one. A
    /// sequence overflow carries into the milliseconds (the stamp runs briefly ahead of the
    /// clock), so the order never inverts however many IDs a millisecond sees.
    public static func timeOrdered() -> SOPID {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let ms = (UInt64(ts.tv_sec) &* 1000 &+ UInt64(ts.tv_nsec) / 1_000_000) & 0xFFFF_FFFF_FFFF
        let now = ms << 12
        var last = lastStamp.load(ordering: .relaxed)
        var stamp: UInt64
        while true {
            stamp = now > last ? now : last &+ 1
            let (exchanged, original) = lastStamp.compareExchange(expected: last, desired: stamp, ordering: .relaxed)
            if exchanged { break }
            last = original
        }
        // 48 bits of ms | version 7 | 12 bits of sequence, then random bits.
        let h = ((stamp >> 12) << 16) | 0x7000 | (stamp & 0xFFF)
        let l = (fastRandom() & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
        return SOPID(high: h, low: l)
    }

    /// Hashing for the engine's many dictionaries keyed by IDs: one multiply-xorshift mix of
    /// both halves with the per-process seed, instead of SipHash over 16 bytes (IDs are
    /// random or locations, not attacker-chosen keys).
    public func _rawHashValue(seed: Int) -> Int {
        var z = (high &* 0x9E37_79B9_7F4A_7C15) ^ low ^ UInt64(bitPattern: Int64(seed))
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int(bitPattern: UInt(z ^ (z >> 31)))
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(high)
        hasher.combine(low)
    }

    public static func < (a: SOPID, b: SOPID) -> Bool {
        a.high != b.high ? a.high < b.high : a.low < b.low
    }

    /// 32 lowercase hex digits.
    public var description: String { hex }

    /// 32 lowercase hex digits.
    public var hex: String {
        var out = [UInt8](repeating: 0, count: 32)
        SOPID.writeHex(high, into: &out, at: 0)
        SOPID.writeHex(low, into: &out, at: 16)
        return String(decoding: out, as: UTF8.self)
    }

    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    private static func writeHex(_ v: UInt64, into out: inout [UInt8], at start: Int) {
        for i in 0..<16 {
            out[start + i] = digits[Int((v >> (60 - 4 * UInt64(i))) & 0xF)]
        }
    }

    /// Parses 32 hex digits (either case); `nil` for anything else.
    public init?(hex: some StringProtocol) {
        let u = Array(hex.utf8)
        guard u.count == 32 else { return nil }
        guard let h = SOPID.parseHex(u[0..<16]), let l = SOPID.parseHex(u[16..<32]) else { return nil }
        self.init(high: h, low: l)
    }

    /// Parses 32 hex digits from UTF-8 bytes.
    public init?(hexBytes u: ArraySlice<UInt8>) {
        guard u.count == 32 else { return nil }
        let s = u.startIndex
        guard let h = SOPID.parseHex(u[s..<s + 16]), let l = SOPID.parseHex(u[s + 16..<s + 32]) else { return nil }
        self.init(high: h, low: l)
    }

    private static func parseHex(_ s: ArraySlice<UInt8>) -> UInt64? {
        var v: UInt64 = 0
        for c in s {
            let d: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            v = (v << 4) | UInt64(d)
        }
        return v
    }

    /// Appends the 16 big-endian bytes.
    public func append(to out: inout [UInt8]) {
        withUnsafeBytes(of: high.bigEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: low.bigEndian) { out.append(contentsOf: $0) }
    }

    /// Reads 16 big-endian bytes starting at `offset`.
    public init(bytes: some Collection<UInt8>, at offset: Int) {
        var h: UInt64 = 0, l: UInt64 = 0
        var i = bytes.index(bytes.startIndex, offsetBy: offset)
        for _ in 0..<8 { h = (h << 8) | UInt64(bytes[i]); i = bytes.index(after: i) }
        for _ in 0..<8 { l = (l << 8) | UInt64(bytes[i]); i = bytes.index(after: i) }
        self.init(high: h, low: l)
    }
}

extension SOPID: Codable {
    /// Encoded as 32 hex digits.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let id = SOPID(hex: s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a 32-hex-digit ID: \(s)")
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(hex)
    }
}

/// A tiny lock-protected counter (no dependency on swift-atomics).
final class AtomicCounter: Sendable {
    private let value = Atomic<UInt64>(0)
    func next() -> UInt64 { value.wrappingAdd(1, ordering: .relaxed).newValue }
}
