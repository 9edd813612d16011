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
    package init() {}

    package func encode(_ v: T) throws -> [UInt8] {
        if let s = v as? String {
            var out: [UInt8] = []
            out.reserveCapacity(s.utf8.count + 2)
            JSONBytes.appendString(s, to: &out)
            return out
        }
        if let i = v as? Int { return Array(String(i).utf8) }
        if let i = v as? Int64 { return Array(String(i).utf8) }
        if let j = v as? JSONValue {
            var out: [UInt8] = []
            j.write(to: &out)
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
        if T.self == String.self { return try JSONBytes.parseString(b[...]) as! T }
        if T.self == Int.self, let i = JSONBytes.parseInt(b[...]) { return Int(i) as! T }
        if T.self == Int64.self, let i = JSONBytes.parseInt(b[...]) { return i as! T }
        if T.self == JSONValue.self { return try JSONValue(parsing: b) as! T }
        do {
            return try JSONDecoder().decode(T.self, from: Data(b))
        } catch {
            throw SOPError(.typeMismatch, "stored JSON does not decode as \(T.self): \(error)")
        }
    }

    /// Decodes many texts at once (one Foundation call for the slow path, not one per item).
    package func decodeAll(_ texts: [[UInt8]]) throws -> [T] {
        if T.self == String.self || T.self == Int.self || T.self == Int64.self || T.self == JSONValue.self {
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

/// Converts between engine nodes and their stored JSON form.
package enum NodeFormat {
    package static func encode<K>(_ n: EngineNode<K>, resolving pending: [Int: SOPID] = [:]) throws -> [UInt8] {
        var raw = NodeCodec.RawNode(id: n.id, items: [], separators: [], children: n.children)
        raw.items.reserveCapacity(n.items.count)
        for it in n.items {
            let v: NodeCodec.RawValue
            switch it.value {
            case .inline(let b): v = .inline(b)
            case .blob(let id): v = .blob(id)
            case .pending:
                throw SOPError(.internalError, "a separate value was not written before its node")
            }
            raw.items.append(NodeCodec.RawItem(key: it.key.bytes, id: it.id, value: v))
        }
        raw.separators = n.separators.map { NodeCodec.RawSeparator(key: $0.key.bytes, id: $0.id) }
        return NodeCodec.encode(raw)
    }

    package static func decode<K>(_ bytes: [UInt8], expectedID: SOPID, coder: JSONCoder<K>) throws -> EngineNode<K> {
        let raw = try NodeCodec.decode(bytes)
        guard raw.id == expectedID else {
            throw SOPError(.corrupt, "node blob holds node \(raw.id), expected \(expectedID)")
        }
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
                items.append(BTreeItem(key: KeyBox(key: keys[i], bytes: r.key), id: r.id, value: v))
            }
            return BTreeNode(id: raw.id, items: items)
        }
        let keys = try coder.decodeAll(raw.separators.map(\.key))
        let seps = raw.separators.enumerated().map { i, s in Separator(key: KeyBox(key: keys[i], bytes: s.key), id: s.id) }
        return BTreeNode(id: raw.id, separators: seps, children: raw.children)
    }

    /// Rough in-memory cost of a node, for the byte-bounded cache.
    package static func cost<K>(_ n: EngineNode<K>) -> Int {
        var c = 64 + n.children.count * 16
        for it in n.items {
            c += 48 + it.key.bytes.count * 2
            switch it.value {
            case .inline(let b), .pending(let b): c += b.count + 16
            case .blob: c += 16
            }
        }
        for s in n.separators { c += 40 + s.key.bytes.count * 2 }
        return c
    }
}
