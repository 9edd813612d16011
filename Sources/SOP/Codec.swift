import Foundation
import SOPBTree
import SOPCore

/// A key as the engine keeps it in a node, whatever the application's key type: the engine
/// (B-tree, nodes, caches, commit) is not generic, so it is compiled once, specialized, for
/// every store. What the fields hold depends on the store's ``KeyForm``:
///
/// - ``KeyForm/string``: the first 16 UTF-8 bytes inline in `p0`/`p1` (big-endian, zero
///   padded), the length and an "any byte not ASCII" flag in `meta`, and the whole UTF-8 in
///   `bytes` only when longer than 16 bytes. Most comparisons then read the item array
///   alone: no pointer chase to a separate allocation per probe (a cache miss each).
/// - ``KeyForm/int``: the integer in `p0`, sign bit flipped (so unsigned order is numeric order).
/// - ``KeyForm/custom``: `object` is the decoded key the store's comparator reads; `bytes`
///   is the key's JSON text (empty for a key that is only searched for, never stored).
@usableFromInline
struct EKey: Sendable {
    var p0: UInt64 = 0
    var p1: UInt64 = 0
    var meta: Int = 0
    var bytes: [UInt8] = []
    var object: KeyObject?

    static let inlineBytes = 16
    static let signBit: UInt64 = 1 << 63

    /// A ``KeyForm/custom`` key.
    init(bytes: [UInt8], object: KeyObject?) {
        self.bytes = bytes
        self.object = object
    }

    /// An ``KeyForm/int`` key.
    init(int: Int64) {
        p0 = UInt64(bitPattern: int) ^ EKey.signBit
    }

    /// The integer of an ``KeyForm/int`` key.
    var int: Int64 { Int64(bitPattern: p0 ^ EKey.signBit) }

    /// A ``KeyForm/string`` key from its UTF-8.
    init(utf8 u: UnsafeBufferPointer<UInt8>) {
        var ascii = true
        var a: UInt64 = 0, b: UInt64 = 0
        for i in 0..<u.count {
            let c = u[i]
            if c >= 0x80 { ascii = false }
            if i < 8 { a |= UInt64(c) << (56 - 8 * UInt64(i)) } else if i < 16 { b |= UInt64(c) << (56 - 8 * UInt64(i - 8)) }
        }
        p0 = a
        p1 = b
        meta = u.count << 1 | (ascii ? 0 : 1)
        if u.count > EKey.inlineBytes { bytes = Array(u) }
    }

    /// A ``KeyForm/string`` key from its UTF-8.
    init(utf8 bytes: [UInt8]) {
        self = bytes.withUnsafeBufferPointer { EKey(utf8: $0) }
    }

    /// UTF-8 length of a ``KeyForm/string`` key.
    var utf8Count: Int { meta >> 1 }

    /// Calls `body` with the UTF-8 of a ``KeyForm/string`` key.
    @inline(__always)
    func withUTF8<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        let n = utf8Count
        if n > EKey.inlineBytes { return try bytes.withUnsafeBufferPointer(body) }
        var words = (p0.bigEndian, p1.bigEndian)
        return try withUnsafeBytes(of: &words) { raw in
            try body(UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count: n))
        }
    }
}

/// A decoded key of a ``KeyForm/custom`` store, as its comparator reads it.
class KeyObject: @unchecked Sendable {
    // @unchecked: subclasses are immutable.
    init() {}
}

/// A key of the application's type, for a store ordered by a comparator over that type.
final class TypedKey<K: Sendable>: KeyObject, @unchecked Sendable {
    let key: K
    init(_ key: K) {
        self.key = key
        super.init()
    }
}

/// A key as a ``JSONValue``, for stores ordered by an index specification or viewed
/// dynamically.
class JSONKey: KeyObject, @unchecked Sendable {
    let json: JSONValue
    init(_ json: JSONValue) {
        self.json = json
        super.init()
    }
}

/// A typed key of a store ordered by an index specification: its JSON (for the order) and the
/// application's value.
final class SpecKey<K: Sendable>: JSONKey, @unchecked Sendable {
    let key: K
    init(_ json: JSONValue, _ key: K) {
        self.key = key
        super.init(json)
    }
}

/// How a store's keys are held in ``EKey``.
enum KeyForm: Sendable {
    /// `String` keys in their natural order.
    case string
    /// `Int` / `Int64` keys in their natural order.
    case int
    /// Any other key or order: a decoded object and a comparator.
    case custom
}

/// Marker types naming the decoded node forms in the L1 cache.
enum StringKeyForm {}
enum IntKeyForm {}

/// The non-generic half of a store's key handling: the order over ``EKey``s, how a stored
/// key's JSON becomes an ``EKey`` and back. One per store opening; shared by its tree, its
/// repository and the node codec.
final class KeySchema: Sendable {
    let form: KeyForm
    /// The order: negative, zero or positive.
    let compare: @Sendable (EKey, EKey) -> Int
    /// The same order over keys in place (what the B-tree's binary searches call).
    let compareInPlace: @Sendable (UnsafePointer<EKey>, UnsafePointer<EKey>) -> Int
    /// ``KeyForm/custom``: decodes the objects of many stored keys (one call per node, so a
    /// Foundation decode is set up once, not once per key).
    let objects: (@Sendable ([[UInt8]]) throws -> [KeyObject])?
    /// Names the decoded form of nodes in the L1 cache.
    let tag: ObjectIdentifier

    init(form: KeyForm, tag: ObjectIdentifier, compare: @escaping @Sendable (EKey, EKey) -> Int,
         compareInPlace: (@Sendable (UnsafePointer<EKey>, UnsafePointer<EKey>) -> Int)? = nil,
         objects: (@Sendable ([[UInt8]]) throws -> [KeyObject])? = nil) {
        self.form = form
        self.tag = tag
        self.compare = compare
        self.compareInPlace = compareInPlace ?? { a, b in compare(a.pointee, b.pointee) }
        self.objects = objects
    }

    /// `String` keys: ASCII keys compare by their bytes, others as Swift strings (Swift's
    /// order on ASCII is byte order, so the two agree).
    static let string = KeySchema(
        form: .string, tag: ObjectIdentifier(StringKeyForm.self),
        compare: { a, b in withUnsafePointer(to: a) { pa in withUnsafePointer(to: b) { pb in compareStrings(pa, pb) } } },
        compareInPlace: { a, b in compareStrings(a, b) })

    @inline(__always)
    static func compareStrings(_ a: UnsafePointer<EKey>, _ b: UnsafePointer<EKey>) -> Int {
        let ma = a.pointee.meta, mb = b.pointee.meta
        if (ma | mb) & 1 == 0 {
            // Both ASCII: bytes order. The first 16 bytes are inline.
            let x0 = a.pointee.p0, y0 = b.pointee.p0
            if x0 != y0 { return x0 < y0 ? -1 : 1 }
            let x1 = a.pointee.p1, y1 = b.pointee.p1
            if x1 != y1 { return x1 < y1 ? -1 : 1 }
            let la = ma >> 1, lb = mb >> 1
            if la <= EKey.inlineBytes || lb <= EKey.inlineBytes { return la == lb ? 0 : (la < lb ? -1 : 1) }
            return compareBytes(a.pointee.bytes, b.pointee.bytes)
        }
        return a.pointee.withUTF8 { x in
            b.pointee.withUTF8 { y in
                let s = String(decoding: x, as: UTF8.self), t = String(decoding: y, as: UTF8.self)
                return s < t ? -1 : (s == t ? 0 : 1)
            }
        }
    }

    /// `Int` and `Int64` keys.
    static let int = KeySchema(
        form: .int, tag: ObjectIdentifier(IntKeyForm.self),
        compare: { a, b in a.p0 < b.p0 ? -1 : (a.p0 == b.p0 ? 0 : 1) },
        compareInPlace: { a, b in a.pointee.p0 < b.pointee.p0 ? -1 : (a.pointee.p0 == b.pointee.p0 ? 0 : 1) })

    @inline(__always)
    static func compareBytes(_ a: [UInt8], _ b: [UInt8]) -> Int {
        a.withUnsafeBufferPointer { x in
            b.withUnsafeBufferPointer { y in
                let n = Swift.min(x.count, y.count)
                if n > 0 {
                    let c = memcmp(x.baseAddress!, y.baseAddress!, n)
                    if c != 0 { return c < 0 ? -1 : 1 }
                }
                return x.count == y.count ? 0 : (x.count < y.count ? -1 : 1)
            }
        }
    }

    /// The keys stored as the JSON texts `bytes[ranges[i]]`.
    func keys(in bytes: [UInt8], at ranges: [Range<Int>]) throws -> [EKey] {
        switch form {
        case .string:
            return try bytes.withUnsafeBufferPointer { u in
                try ranges.map { r in
                    // No escape: the key's UTF-8 is the text between the quotes.
                    if r.count >= 2, u[r.lowerBound] == 0x22, u[r.upperBound - 1] == 0x22 {
                        let body = UnsafeBufferPointer(rebasing: u[(r.lowerBound + 1)..<(r.upperBound - 1)])
                        if !body.contains(0x5C) { return EKey(utf8: body) }
                    }
                    return EKey(utf8: Array(try JSONBytes.parseString(bytes[r]).utf8))
                }
            }
        case .int:
            return try ranges.map { r in
                guard let i = JSONBytes.parseInt(bytes[r]) else {
                    throw SOPError(.typeMismatch, "stored key \(String(decoding: bytes[r].prefix(40), as: UTF8.self)) is not an integer")
                }
                return EKey(int: i)
            }
        case .custom:
            guard let objects else { throw SOPError(.internalError, "custom key schema without a decoder") }
            let texts = ranges.map { Array(bytes[$0]) }
            let objs = try objects(texts)
            var out: [EKey] = []
            out.reserveCapacity(texts.count)
            for (t, o) in zip(texts, objs) { out.append(EKey(bytes: t, object: o)) }
            return out
        }
    }

    /// Appends the stored JSON text of `k`.
    @inline(__always)
    func appendJSON(_ k: UnsafePointer<EKey>, to out: inout [UInt8]) throws {
        switch form {
        case .string:
            k.pointee.withUTF8 { JSONBytes.appendString(utf8: $0, to: &out) }
        case .int:
            JSONBytes.appendInt(k.pointee.int, to: &out)
        case .custom:
            guard !k.pointee.bytes.isEmpty else {
                throw SOPError(.internalError, "a key without its JSON text reached a node")
            }
            out.append(contentsOf: k.pointee.bytes)
        }
    }
}

/// JSON text of a value: a range of a shared buffer. The values of a cached node (decoded
/// from its blob, or cached after a commit) share one buffer holding just them, so reading a
/// leaf's values walks one contiguous allocation, not one allocation per value.
@usableFromInline
struct ValueBytes: Sendable {
    let storage: [UInt8]
    let start: UInt32
    let count: UInt32

    /// A whole array.
    init(_ bytes: [UInt8]) {
        storage = bytes
        start = 0
        count = UInt32(bytes.count)
    }

    /// `storage[range]`.
    init(_ storage: [UInt8], _ range: Range<Int>) {
        self.storage = storage
        start = UInt32(range.lowerBound)
        count = UInt32(range.count)
    }

    @inline(__always)
    func withBytes<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        try withExtendedLifetime(storage) { try body(bytesInPlace) }
    }

    /// The bytes, in place: valid only while `storage` is held (by this value or its owner).
    @inline(__always)
    var bytesInPlace: UnsafeBufferPointer<UInt8> {
        storage.withUnsafeBufferPointer { UnsafeBufferPointer(rebasing: $0[Int(start)..<Int(start + count)]) }
    }
}

/// A value as the engine keeps it in a node: its JSON bytes (decoded only when asked for),
/// a reference to a separate value blob, or a new separate value not yet written.
@usableFromInline
enum ValueBox: Sendable {
    case inline(ValueBytes)
    case blob(SOPID)
    case pending([UInt8])

    /// The JSON of an in-node value (`nil` for other cases), in place: valid only while
    /// whatever holds this box (the leaf's item array) is alive and unchanged. Nothing opaque
    /// runs while the payload is bound, so the payload's retain and release cancel out (a
    /// `withBytes` closure around the caller's work kept them: a retain and a release per
    /// item of a scan).
    @inline(__always)
    func inlineBytesInPlace() -> UnsafeBufferPointer<UInt8>? {
        guard case .inline(let v) = self else { return nil }
        return v.bytesInPlace
    }

    /// An in-node value's place: its buffer's address (see `objectAddress`) and the range of
    /// its bytes there; `nil` for other cases. For hints only: reads no byte of the buffer.
    @inline(__always)
    var inlineSpan: (storage: UnsafeRawPointer, start: Int, end: Int)? {
        guard case .inline(let v) = self else { return nil }
        return (objectAddress(v.storage), Int(v.start), Int(v.start + v.count))
    }
}

typealias EngineNode = BTreeNode<EKey, ValueBox>

/// JSON encoding of keys and values: fast paths for common types, Foundation for the rest.
struct JSONCoder<T: Codable & Sendable>: Sendable {
    /// Which fast path applies, decided once (not by a dynamic cast per value).
    enum Kind: Sendable {
        case string, int, int64, json, other
    }

    let kind: Kind

    init() {
        if T.self == String.self { kind = .string } else if T.self == Int.self { kind = .int } else if T.self == Int64.self {
            kind = .int64
        } else if T.self == JSONValue.self { kind = .json } else { kind = .other }
    }

    /// Appends the JSON text of the value at `p` (fast paths only; `false` otherwise).
    /// Reads the value in place: no copy, no dynamic cast.
    @inline(__always)
    func appendFast(_ p: UnsafePointer<T>, to out: inout [UInt8]) -> Bool {
        let raw = UnsafeRawPointer(p)
        switch kind {
        case .string: JSONBytes.appendString(raw.assumingMemoryBound(to: String.self).pointee, to: &out)
        case .int: JSONBytes.appendInt(Int64(raw.assumingMemoryBound(to: Int.self).pointee), to: &out)
        case .int64: JSONBytes.appendInt(raw.assumingMemoryBound(to: Int64.self).pointee, to: &out)
        case .json: raw.assumingMemoryBound(to: JSONValue.self).pointee.write(to: &out)
        case .other: return false
        }
        return true
    }

    func encode(_ v: T) throws -> [UInt8] {
        if kind != .other {
            var out: [UInt8] = []
            // A string's JSON is its UTF-8 plus quotes (and escapes, rare): sized once.
            out.reserveCapacity(kind == .string ? unsafeBitCast(v, to: String.self).utf8.count + 8 : 24)
            _ = withUnsafePointer(to: v) { appendFast($0, to: &out) }
            return out
        }
        do {
            let enc = JSONEncoder()
            enc.outputFormatting = [.withoutEscapingSlashes]
            return Array(try enc.encode(v))
        } catch {
            throw SOPError(.invalidArgument, "cannot encode \(T.self) as JSON: \(error)")
        }
    }

    func decode(_ v: ValueBytes) throws -> T {
        if v.start == 0 && Int(v.count) == v.storage.count { return try decode(v.storage) }
        if kind == .string {
            if let s = v.withBytes({ JSONCoder.plainString($0) }) { return unsafeBitCast(s, to: T.self) }
        }
        return try decode(v.withBytes { Array($0) })
    }

    /// A JSON string literal without escapes: its UTF-8 between the quotes (texts written by
    /// this engine are valid UTF-8); `nil` when it is not that simple.
    @inline(__always)
    static func plainString(_ u: UnsafeBufferPointer<UInt8>) -> String? {
        let n = u.count
        guard n >= 2, u[0] == 0x22, u[n - 1] == 0x22 else { return nil }
        let body = UnsafeBufferPointer(rebasing: u[1..<(n - 1)])
        guard !needsUnescaping(body) else { return nil }
        return String(decoding: body, as: UTF8.self)
    }

    /// Whether `b` holds a backslash or a control byte (< 0x20), eight bytes at a time: with
    /// `x` a word, `(x - 0x20…) & ~x & 0x80…` has a high bit set for each byte below 0x20
    /// (bytes of 0x80 and up have their own high bit in `x`, masked out by `~x`), and the same
    /// test of `x ^ 0x5C…` against 0x01… finds bytes equal to 0x5C.
    @inline(__always)
    static func needsUnescaping(_ b: UnsafeBufferPointer<UInt8>) -> Bool {
        let n = b.count
        var i = 0
        if let base = b.baseAddress {
            let raw = UnsafeRawPointer(base)
            let ones: UInt64 = 0x0101_0101_0101_0101
            let highs: UInt64 = 0x8080_8080_8080_8080
            while i + 8 <= n {
                let x = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                let control = (x &- ones &* 0x20) & ~x & highs
                let y = x ^ (ones &* 0x5C)
                let backslash = (y &- ones) & ~y & highs
                if control | backslash != 0 { return true }
                i += 8
            }
        }
        while i < n {
            let c = b[i]
            if c == 0x5C || c < 0x20 { return true }
            i += 1
        }
        return false
    }

    func decode(_ b: [UInt8]) throws -> T {
        switch kind {
        case .string:
            if let plain = b.withUnsafeBufferPointer({ JSONCoder.plainString($0) }) { return unsafeBitCast(plain, to: T.self) }
            // Valid JSON of another kind (a value written through the dynamic view) is the
            // wrong type, not damage.
            if b.first(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }) != UInt8(ascii: "\""),
               (try? JSONValue(parsing: b)) != nil {
                throw SOPError(.typeMismatch, "stored JSON does not decode as String: \(String(decoding: b.prefix(40), as: UTF8.self))")
            }
            return unsafeBitCast(try JSONBytes.parseString(b[...]), to: T.self)
        case .int:
            if let i = JSONBytes.parseInt(b[...]) { return unsafeBitCast(Int(i), to: T.self) }
        case .int64:
            if let i = JSONBytes.parseInt(b[...]) { return unsafeBitCast(i, to: T.self) }
        case .json: return unsafeBitCast(try JSONValue(parsing: b), to: T.self)
        case .other: break
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(b))
        } catch {
            throw SOPError(.typeMismatch, "stored JSON does not decode as \(T.self): \(error)")
        }
    }

    /// Decodes many texts at once (one Foundation call for the slow path, not one per item).
    func decodeAll(_ texts: [[UInt8]]) throws -> [T] {
        if kind != .other {
            return try texts.map(decode)
        }
        var joined: [UInt8] = [UInt8(ascii: "[")]
        joined.reserveCapacity(texts.reduce(2) { $0 + $1.count + 1 })
        for (i, t) in texts.enumerated() {
            if i > 0 { joined.append(UInt8(ascii: ",")) }
            joined.append(contentsOf: t)
        }
        joined.append(UInt8(ascii: "]"))
        do {
            return try JSONDecoder().decode([T].self, from: Data(joined))
        } catch {
            throw SOPError(.typeMismatch, "stored keys do not decode as \(T.self): \(error)")
        }
    }
}

/// A pointer handed to the workers of `DispatchQueue.concurrentPerform`, which write
/// disjoint elements of one buffer (see ``NodeFormat/encodeAll(_:schema:)``).
struct UnsafeSendable<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    init(_ pointer: UnsafeMutablePointer<T>) { self.pointer = pointer }
}

/// Converts between engine nodes and their stored JSON form (see `docs/format.md`). Encoding
/// writes the JSON directly from the node, splicing each item's kept bytes; decoding finds
/// item boundaries with `NodeCodec` and decodes only the keys.
enum NodeFormat {

    /// Each byte's two lowercase hex digits, as one little-endian `UInt16`.
    private static let hexPairs: [UInt16] = (0..<256).map { b in
        let d = Array("0123456789abcdef".utf8)
        return UInt16(d[b >> 4]) | UInt16(d[b & 0xF]) << 8
    }

    /// Appends the 32 hex digits of `id`: built in a stack buffer two digits at a time, then
    /// appended at once (not 32 appends, each checking capacity).
    @inline(__always)
    static func appendHex(_ id: SOPID, to out: inout [UInt8]) {
        var digits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { raw in
            hexPairs.withUnsafeBufferPointer { t in
                var v = id.high
                for i in 0..<8 {
                    raw.storeBytes(of: t[Int(v >> 56)].littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                    v <<= 8
                }
                v = id.low
                for i in 8..<16 {
                    raw.storeBytes(of: t[Int(v >> 56)].littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                    v <<= 8
                }
            }
            raw.withMemoryRebound(to: UInt8.self) { out.append(contentsOf: UnsafeBufferPointer($0)) }
        }
    }

    @inline(__always)
    static func append(_ text: StaticString, to out: inout [UInt8]) {
        text.withUTF8Buffer { out.append(contentsOf: $0) }
    }

    /// An upper bound of the node's encoded size, close enough to reserve exactly once
    /// (a node buffer that grows while encoding is copied and over-allocated).
    static func encodedSizeBound(_ n: EngineNode, schema: KeySchema) -> Int {
        // Fixed framing: 93 bytes for the node, 52 per item and 47 per separator besides key
        // and value, 35 per child (rounded up).
        var size = 100 + n.items.count * 56 + n.separators.count * 48 + n.children.count * 36
        @inline(__always) func keySize(_ k: UnsafePointer<EKey>) -> Int {
            switch schema.form {
            case .string:
                return k.pointee.withUTF8 { u in
                    var extra = 2
                    for c in u where c < 0x20 || c == 0x22 || c == 0x5C { extra += 5 }
                    return u.count + extra
                }
            case .int: return 20
            case .custom: return k.pointee.bytes.count
            }
        }
        n.items.withUnsafeBufferPointer { items in
            guard let base = items.baseAddress else { return }
            for i in 0..<items.count {
                let item = base + i
                size += keySize(item.pointer(to: \.key)!)
                switch item.pointee.value {
                case .inline(let v): size += Int(v.count)
                case .blob, .pending: size += 40
                }
            }
        }
        for i in n.separators.indices { size += withUnsafePointer(to: n.separators[i].key) { keySize($0) } }
        return size
    }

    /// Encodes many nodes (a commit's), on both cores when there are enough of them: each
    /// node's encoding is independent, and a large commit's encoding is a good part of its
    /// CPU time. Results are in the order of `nodes`.
    static func encodeAll(_ nodes: [EngineNode], schema: KeySchema) -> [Result<[UInt8], any Error>] {
        @Sendable func one(_ n: EngineNode) -> Result<[UInt8], any Error> {
            Result { try encode(n, schema: schema) }
        }
        let workers = min(ProcessInfo.processInfo.activeProcessorCount, 4)
        guard workers > 1, nodes.count >= 64, getenv("SOP_SERIAL_ENCODE") == nil else { return nodes.map(one) }
        let results = [Result<[UInt8], any Error>](unsafeUninitializedCapacity: nodes.count) { buffer, initialized in
            let base = UnsafeSendable(buffer.baseAddress!)
            nodes.withUnsafeBufferPointer { input in
                let inputBase = UnsafeSendable(UnsafeMutablePointer(mutating: input.baseAddress!))
                let count = input.count
                DispatchQueue.concurrentPerform(iterations: workers) { w in
                    // Each worker takes every `workers`-th node: no two write the same slot.
                    var i = w
                    while i < count {
                        (base.pointer + i).initialize(to: one(inputBase.pointer[i]))
                        i += workers
                    }
                }
            }
            initialized = nodes.count
        }
        return results
    }

    /// Encodes `n` (format 1 JSON, see `docs/format.md`).
    static func encode(_ n: EngineNode, schema: KeySchema) throws -> [UInt8] {
        var out: [UInt8] = []
        let bound = encodedSizeBound(n, schema: schema)
        out.reserveCapacity(bound)
        defer { assert(out.count <= bound, "node size bound \(bound) < \(out.count)") }
        append("{\"format\":1,\"id\":\"", to: &out)
        appendHex(n.id, to: &out)
        append("\",\"items\":[", to: &out)
        // Fields are read in place through a buffer pointer: in unspecialized generic code,
        // `items[i].key` would copy (and retain every field of) the whole item.
        try n.items.withUnsafeBufferPointer { items in
            guard let base = items.baseAddress else { return }
            for i in 0..<items.count {
                let item = base + i
                append(i == 0 ? "{\"k\":" : ",{\"k\":", to: &out)
                try schema.appendJSON(item.pointer(to: \.key)!, to: &out)
                append(",\"id\":\"", to: &out)
                appendHex(item.pointee.id, to: &out)
                switch item.pointee.value {
                case .inline(let b):
                    append("\",\"v\":", to: &out)
                    b.withBytes { out.append(contentsOf: $0) }
                case .blob(let id):
                    append("\",\"vb\":\"", to: &out)
                    appendHex(id, to: &out)
                    out.append(UInt8(ascii: "\""))
                case .pending:
                    throw SOPError(.internalError, "a separate value was not written before its node")
                }
                out.append(UInt8(ascii: "}"))
            }
        }
        append("],\"separators\":[", to: &out)
        try n.separators.withUnsafeBufferPointer { seps in
            guard let base = seps.baseAddress else { return }
            for i in 0..<seps.count {
                let sep = base + i
                append(i == 0 ? "{\"k\":" : ",{\"k\":", to: &out)
                try schema.appendJSON(sep.pointer(to: \.key)!, to: &out)
                append(",\"id\":\"", to: &out)
                appendHex(sep.pointee.id, to: &out)
                append("\"}", to: &out)
            }
        }
        append("],\"children\":[", to: &out)
        for i in n.children.indices {
            append(i == 0 ? "\"" : ",\"", to: &out)
            appendHex(n.children[i], to: &out)
            out.append(UInt8(ascii: "\""))
        }
        append("]}", to: &out)
        return out
    }

    /// Decodes a node blob. Keys are decoded now (they are compared); values stay JSON text
    /// inside `bytes` (decoded when read).
    static func decode(_ bytes: [UInt8], expectedID: SOPID, schema: KeySchema) throws -> EngineNode {
        let raw = try NodeCodec.decodeInPlace(bytes)
        guard raw.id == expectedID else {
            throw SOPError(.corrupt, "node blob holds node \(raw.id), expected \(expectedID)")
        }
        if raw.children.isEmpty {
            let keys = try schema.keys(in: bytes, at: raw.items.map(\.key))
            var items: [BTreeItem<EKey, ValueBox>] = []
            items.reserveCapacity(keys.count)
            for (i, r) in raw.items.enumerated() {
                let v: ValueBox
                switch r.value {
                case .inline(let range): v = .inline(ValueBytes(bytes, range))
                case .blob(let id): v = .blob(id)
                }
                items.append(BTreeItem(key: keys[i], id: r.id, value: v))
            }
            // The values are copied into one buffer of their own: the blob (twice their size
            // with keys, IDs and JSON framing) is not kept alive by the cached node.
            packValues(&items)
            return BTreeNode(id: raw.id, items: items)
        }
        let keys = try schema.keys(in: bytes, at: raw.separators.map(\.key))
        let seps = raw.separators.enumerated().map { i, s in Separator(key: keys[i], id: s.id) }
        return BTreeNode(id: raw.id, separators: seps, children: raw.children)
    }

    /// In-memory cost of a cached node for the byte-bounded cache: the buffers its values are
    /// kept in (each counted once, at its size), its arrays at their capacity, keys longer
    /// than 16 bytes (custom keys: their JSON and about 64 bytes of decoded object), and object
    /// and allocation headers.
    static func cost(_ n: EngineNode) -> Int {
        var extra = 0
        var buffers: [UnsafeRawPointer] = []
        for item in n.items {
            if !item.key.bytes.isEmpty || item.key.object != nil {
                extra += item.key.bytes.count + (item.key.object == nil ? 32 : 96)
            }
            guard case .inline(let v) = item.value else { continue }
            let base = v.storage.withUnsafeBytes { UnsafeRawPointer($0.baseAddress) }
            if let base, !buffers.contains(base) {
                buffers.append(base)
                extra += 32 + v.storage.capacity
            }
        }
        for sep in n.separators where !sep.key.bytes.isEmpty || sep.key.object != nil {
            extra += sep.key.bytes.count + (sep.key.object == nil ? 32 : 96)
        }
        return 160 + extra
            + n.items.capacity * MemoryLayout<BTreeItem<EKey, ValueBox>>.stride
            + n.separators.capacity * MemoryLayout<Separator<EKey>>.stride
            + n.children.capacity * MemoryLayout<SOPID>.stride
    }

    /// `n` as the cache keeps it: arrays no larger than their contents need (a leaf that grew
    /// before a split keeps twice its capacity otherwise) and, for a leaf, its inline values in
    /// one buffer of their own (allocated here, by the committing task: buffers made on the
    /// encoding or I/O threads then die young instead of spreading long-lived memory over
    /// their allocator arenas).
    static func forCache(_ n: EngineNode) -> EngineNode {
        var m = trimmed(n)
        guard m.isLeaf else { return m }
        // Compacting costs a copy of the values and a retain of the new buffer per item. It is
        // skipped only when the values already lie in one buffer, in item order, and the
        // buffer holds not much more than them. Values in item order are what a scan reads
        // fast: each one starts where the previous one ended, so the processor has already
        // fetched it. A leaf that kept a few values in buffers of their own after a commit
        // (each value a new array when written) made a scan wait for memory at each of those
        // (a scan after loading in thousand-item commits ran at 4.5M items/s against 6M for
        // the same leaves read back from disk, whose values are packed in order). The price is
        // paid by commits: packing is ~3 % of an update phase's profile (`sop-prof update`);
        // leaving a once-changed leaf's values in two buffers saved updates nothing measurable
        // at a million items and cost scans (docs/performance.md, sixth round).
        var total = 0
        var buffer: UnsafeRawPointer?
        var kept = 0
        var packed = true  // the values lie in one buffer, in item order
        var lastEnd = 0
        for item in m.items {
            guard case .inline(let v) = item.value else { continue }
            total += Int(v.count)
            let base = v.storage.withUnsafeBytes { UnsafeRawPointer($0.baseAddress) }
            if buffer == nil {
                buffer = base
                kept = v.storage.count
            } else if base != buffer || Int(v.start) < lastEnd {
                packed = false
                break
            }
            lastEnd = Int(v.start) + Int(v.count)
        }
        if packed && kept <= total + total / 4 { return m }
        packValues(&m.items)
        return m
    }

    /// Copies the inline values of `items` into one buffer sized for them and points the
    /// items at it. The items are read in place: a copy of each (as a `for item in items`
    /// loop makes) retained and released its key and value buffers, twice per item.
    static func packValues(_ items: inout [BTreeItem<EKey, ValueBox>]) {
        let total = items.withUnsafeBufferPointer { b in
            var total = 0
            for i in b.indices { total += b[i].value.inlineBytesInPlace()?.count ?? 0 }
            return total
        }
        let values = [UInt8](unsafeUninitializedCapacity: total) { out, count in
            items.withUnsafeBufferPointer { b in
                var at = 0
                for i in b.indices {
                    guard let v = b[i].value.inlineBytesInPlace(), let source = v.baseAddress, !v.isEmpty else { continue }
                    (out.baseAddress! + at).initialize(from: source, count: v.count)
                    at += v.count
                }
            }
            count = total
        }
        items.withUnsafeMutableBufferPointer { b in
            var at = 0
            for i in b.indices {
                guard let n = b[i].value.inlineBytesInPlace()?.count else { continue }
                b[i].value = .inline(ValueBytes(values, at..<(at + n)))
                at += n
            }
        }
    }

    /// `n` with arrays no larger than their contents need.
    static func trimmed(_ n: EngineNode) -> EngineNode {
        func fit<T>(_ a: [T]) -> [T] {
            guard a.capacity > a.count + 8 else { return a }
            var b: [T] = []
            b.reserveCapacity(a.count)
            b.append(contentsOf: a)
            return b
        }
        return BTreeNode(id: n.id, items: fit(n.items), separators: fit(n.separators), children: fit(n.children))
    }
}
