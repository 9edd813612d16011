import Foundation
import SOPBTree
import SOPCore

/// A key as the engine keeps it in a node: decoded (for comparisons) and encoded (so a node
/// re-encodes by splicing bytes instead of re-serializing every key).
package struct KeyBox<K: Sendable>: Sendable {
    package var key: K
    package var bytes: [UInt8]
}

/// A value as the engine keeps it in a node: its JSON bytes (decoded only when asked for),
/// a reference to a separate value blob, or a new separate value not yet written.
package enum ValueBox: Sendable {
    case inline([UInt8])
    case blob(SOPID)
    case pending([UInt8])
}

package typealias EngineNode<K: Sendable> = BTreeNode<KeyBox<K>, ValueBox>

/// JSON encoding of keys and values: fast paths for common types, Foundation for the rest.
package struct JSONCoder<T: Codable & Sendable>: Sendable {
    /// Which fast path applies, decided once (not by a dynamic cast per value).
    enum Kind: Sendable {
        case string, int, int64, json, other
    }

    let kind: Kind

    package init() {
        if T.self == String.self { kind = .string } else if T.self == Int.self { kind = .int } else if T.self == Int64.self {
            kind = .int64
        } else if T.self == JSONValue.self { kind = .json } else { kind = .other }
    }

    /// Whether encoded bytes are worth keeping with each key: for types with a fast path
    /// (String, Int, Int64, JSONValue) re-encoding costs less than keeping a second copy.
    package var cachesBytes: Bool { kind == .other }

    /// Appends the JSON text of the value at `p` (fast paths only; see ``cachesBytes``).
    /// Reads the value in place: no copy, no dynamic cast.
    @inline(__always)
    package func appendFast(_ p: UnsafePointer<T>, to out: inout [UInt8]) -> Bool {
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

    package func encode(_ v: T) throws -> [UInt8] {
        if kind != .other {
            var out: [UInt8] = []
            out.reserveCapacity(24)
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

    package func decode(_ b: [UInt8]) throws -> T {
        switch kind {
        case .string: return unsafeBitCast(try JSONBytes.parseString(b[...]), to: T.self)
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
    package func decodeAll(_ texts: [[UInt8]]) throws -> [T] {
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

/// Converts between engine nodes and their stored JSON form (see `docs/format.md`). Encoding
/// writes the JSON directly from the node, splicing each item's kept bytes; decoding finds
/// item boundaries with `NodeCodec` and decodes only the keys.
package enum NodeFormat {
    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    @inline(__always)
    static func appendHex(_ id: SOPID, to out: inout [UInt8]) {
        hexDigits.withUnsafeBufferPointer { d in
            var v = id.high
            for _ in 0..<16 { out.append(d[Int(v >> 60)]); v <<= 4 }
            v = id.low
            for _ in 0..<16 { out.append(d[Int(v >> 60)]); v <<= 4 }
        }
    }

    @inline(__always)
    static func append(_ text: StaticString, to out: inout [UInt8]) {
        text.withUTF8Buffer { out.append(contentsOf: $0) }
    }

    @inline(__always)
    static func appendKey<K>(_ k: UnsafePointer<KeyBox<K>>, coder: JSONCoder<K>, to out: inout [UInt8]) throws {
        if !k.pointee.bytes.isEmpty {
            out.append(contentsOf: k.pointee.bytes)
        } else if !coder.appendFast(k.pointer(to: \.key)!, to: &out) {
            out.append(contentsOf: try coder.encode(k.pointee.key))
        }
    }

    package static func encode<K>(_ n: EngineNode<K>, coder: JSONCoder<K>) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(96 + n.items.count * 160 + n.separators.count * 80 + n.children.count * 35)
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
                try appendKey(item.pointer(to: \.key)!, coder: coder, to: &out)
                append(",\"id\":\"", to: &out)
                appendHex(item.pointee.id, to: &out)
                switch item.pointee.value {
                case .inline(let b):
                    append("\",\"v\":", to: &out)
                    out.append(contentsOf: b)
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
                try appendKey(sep.pointer(to: \.key)!, coder: coder, to: &out)
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

    package static func decode<K>(_ bytes: [UInt8], expectedID: SOPID, coder: JSONCoder<K>) throws -> EngineNode<K> {
        let raw = try NodeCodec.decode(bytes)
        guard raw.id == expectedID else {
            throw SOPError(.corrupt, "node blob holds node \(raw.id), expected \(expectedID)")
        }
        let keep = coder.cachesBytes
        if raw.children.isEmpty {
            let keys = try coder.decodeAll(raw.items.map(\.key))
            var items: [BTreeItem<KeyBox<K>, ValueBox>] = []
            items.reserveCapacity(keys.count)
            for (i, r) in raw.items.enumerated() {
                let v: ValueBox
                switch r.value {
                case .inline(let b): v = .inline(b)
                case .blob(let id): v = .blob(id)
                }
                items.append(BTreeItem(key: KeyBox(key: keys[i], bytes: keep ? r.key : []), id: r.id, value: v))
            }
            return BTreeNode(id: raw.id, items: items)
        }
        let keys = try coder.decodeAll(raw.separators.map(\.key))
        let seps = raw.separators.enumerated().map { i, s in
            Separator(key: KeyBox(key: keys[i], bytes: keep ? s.key : []), id: s.id)
        }
        return BTreeNode(id: raw.id, separators: seps, children: raw.children)
    }

    /// In-memory cost of a node for the byte-bounded cache, estimated from its encoded size
    /// (an estimate from the layout: a decoded item holds its key, its value's JSON bytes and
    /// about 60 bytes of headers, against about 70 bytes of JSON framing per item).
    package static func cost(encodedSize: Int) -> Int { 256 + encodedSize + encodedSize * 3 / 10 }
}
