import SOPCore

/// How a store orders and checks keys of the application's type `K`: the generic half of key
/// handling, used only where keys cross the API. It converts keys to and from the engine's
/// ``EKey`` (validating keys added, updated or searched for); the order itself is the
/// non-generic ``KeySchema``.
struct KeyOrdering<K: Codable & Sendable>: Sendable {
    /// The engine-side order and stored-key decoding.
    let schema: KeySchema
    /// A key for the engine. `storing`: the key will be written into a node (it needs its
    /// JSON text), not only searched for. Throws ``SOPError/Code/invalidArgument`` for a key
    /// the store cannot take.
    let toEngine: @Sendable (K, _ storing: Bool) throws -> EKey
    /// The application's key back from the engine's.
    let fromEngine: @Sendable (EKey) -> K

    /// The order of `Comparable` keys: `String`, `Int` and `Int64` keys get the engine's
    /// native forms, other types compare through `compare`.
    static func natural(_ compare: @escaping @Sendable (K, K) -> Int) -> KeyOrdering<K> {
        if K.self == String.self {
            return KeyOrdering(schema: .string,
                               toEngine: { k, _ in
                                   var s = unsafeBitCast(k, to: String.self)
                                   return s.withUTF8 { EKey(utf8: $0) }
                               },
                               fromEngine: { e in unsafeBitCast(e.withUTF8 { String(decoding: $0, as: UTF8.self) }, to: K.self) })
        }
        if K.self == Int.self {
            return KeyOrdering(schema: .int,
                               toEngine: { k, _ in EKey(int: Int64(unsafeBitCast(k, to: Int.self))) },
                               fromEngine: { e in unsafeBitCast(Int(truncatingIfNeeded: e.int), to: K.self) })
        }
        if K.self == Int64.self {
            return KeyOrdering(schema: .int,
                               toEngine: { k, _ in EKey(int: unsafeBitCast(k, to: Int64.self)) },
                               fromEngine: { e in unsafeBitCast(e.int, to: K.self) })
        }
        return comparator(compare)
    }

    /// Keys ordered by a comparator over `K` (decoded keys are kept beside their JSON).
    static func comparator(_ compare: @escaping @Sendable (K, K) -> Int) -> KeyOrdering<K> {
        let coder = JSONCoder<K>()
        let schema = KeySchema(
            form: .custom, tag: ObjectIdentifier(TypedKey<K>.self),
            compare: { a, b in
                compare(unsafeDowncast(a.object!, to: TypedKey<K>.self).key,
                        unsafeDowncast(b.object!, to: TypedKey<K>.self).key)
            },
            objects: { texts in try coder.decodeAll(texts).map { TypedKey($0) } })
        return KeyOrdering(schema: schema,
                           toEngine: { k, storing in EKey(bytes: storing ? try coder.encode(k) : [], object: TypedKey(k)) },
                           fromEngine: { e in unsafeDowncast(e.object!, to: TypedKey<K>.self).key })
    }

    /// Keys of any `Codable` type ordered by `spec` over their JSON encodings (exactly the JSON
    /// the store holds, so the typed and the dynamic view agree).
    static func typed(_ spec: IndexSpecification) -> KeyOrdering<K> {
        if K.self == JSONValue.self { return KeyOrdering<JSONValue>.json(spec) as! KeyOrdering<K> }
        let coder = JSONCoder<K>()
        let schema = KeySchema(
            form: .custom, tag: ObjectIdentifier(SpecKey<K>.self), compare: specCompare(spec),
            objects: { texts in
                let keys = try coder.decodeAll(texts)
                var out: [KeyObject] = []
                out.reserveCapacity(keys.count)
                for (t, k) in zip(texts, keys) { out.append(SpecKey(try JSONValue(parsing: t), k)) }
                return out
            })
        return KeyOrdering(
            schema: schema,
            toEngine: { k, _ in
                let bytes = try coder.encode(k)
                let json = try JSONValue(parsing: bytes)
                try spec.validateKey(json)
                return EKey(bytes: bytes, object: SpecKey(json, k))
            },
            fromEngine: { e in unsafeDowncast(e.object!, to: SpecKey<K>.self).key })
    }

    static func specCompare(_ spec: IndexSpecification) -> @Sendable (EKey, EKey) -> Int {
        { a, b in
            spec.compare(unsafeDowncast(a.object!, to: JSONKey.self).json, unsafeDowncast(b.object!, to: JSONKey.self).json)
        }
    }
}

extension KeyOrdering where K == JSONValue {
    /// Decoded ``JSONKey`` objects of stored keys.
    private static let jsonObjects: @Sendable ([[UInt8]]) throws -> [KeyObject] = { texts in
        try texts.map { JSONKey(try JSONValue(parsing: $0)) }
    }

    /// JSON keys with the given order and check.
    private static func jsonKeys(compare: @escaping @Sendable (EKey, EKey) -> Int,
                                 validate: (@Sendable (JSONValue) throws -> Void)?) -> KeyOrdering<JSONValue> {
        let schema = KeySchema(form: .custom, tag: ObjectIdentifier(JSONKey.self), compare: compare, objects: jsonObjects)
        return KeyOrdering(
            schema: schema,
            toEngine: { k, storing in
                try validate?(k)
                var bytes: [UInt8] = []
                if storing { k.write(to: &bytes) }
                return EKey(bytes: bytes, object: JSONKey(k))
            },
            fromEngine: { e in unsafeDowncast(e.object!, to: JSONKey.self).json })
    }

    /// JSON keys ordered by `spec`; every key must be an object with the indexed fields.
    static func json(_ spec: IndexSpecification) -> KeyOrdering<JSONValue> {
        jsonKeys(compare: specCompare(spec), validate: { try spec.validateKey($0) })
    }

    /// The dynamic view of a store without an index specification created with keys of type
    /// `keyType`: ``JSONValue``'s order, which equals Swift's for strings, integers, doubles
    /// and booleans (keys of other JSON kinds are refused, so a typed program can still decode
    /// them). For other key types the order is the program's and is unknown here: keys can be
    /// walked (first, next, range without bounds) but not added, searched for or removed.
    static func dynamic(keyType: String) -> KeyOrdering<JSONValue> {
        let check: (@Sendable (JSONValue) throws -> Void)?
        switch keyType {
        case "JSONValue":
            check = nil
        case "Swift.String":
            check = { k in
                guard case .string = k else { throw kindError(k, "a JSON string", keyType) }
            }
        case "Swift.Int", "Swift.Int64", "Swift.Int32", "Swift.Int16", "Swift.Int8",
             "Swift.UInt", "Swift.UInt64", "Swift.UInt32", "Swift.UInt16", "Swift.UInt8":
            check = { k in
                guard case .int = k else { throw kindError(k, "a JSON integer", keyType) }
            }
        case "Swift.Double", "Swift.Float":
            check = { k in
                switch k {
                case .int, .double: return
                default: throw kindError(k, "a JSON number", keyType)
                }
            }
        case "Swift.Bool":
            check = { k in
                guard case .bool = k else { throw kindError(k, "true or false", keyType) }
            }
        default:
            check = { _ in
                throw SOPError(.invalidArgument,
                               "the store's keys are \(keyType), ordered by the program's own comparator, and the store has no index specification: the dynamic view can walk its keys but not add, find or remove one")
            }
        }
        return jsonKeys(compare: { a, b in
            unsafeDowncast(a.object!, to: JSONKey.self).json.compare(to: unsafeDowncast(b.object!, to: JSONKey.self).json)
        }, validate: check)
    }

    private static func kindError(_ k: JSONValue, _ expected: String, _ keyType: String) -> SOPError {
        let t = k.jsonText
        return SOPError(.invalidArgument,
                        "key \(t.count <= 60 ? t : String(t.prefix(57)) + "...") is not \(expected), as the store's \(keyType) keys are")
    }
}
