import SOPCore

/// How a store orders and checks its keys: a comparator over keys, the same over the engine's
/// key boxes (which may carry the key's JSON bytes), and an optional validation run on every
/// key added, updated or searched for.
struct KeyOrdering<K: Codable & Sendable>: Sendable {
    /// The key order: negative, zero or positive.
    let compare: @Sendable (K, K) -> Int
    /// The same order over key boxes (uses their bytes when it compares encodings).
    let compareBoxes: @Sendable (KeyBox<K>, KeyBox<K>) -> Int
    /// Throws ``SOPError/Code/invalidArgument`` for a key the store cannot take.
    let validate: (@Sendable (K) throws -> Void)?
    /// True when the order compares the keys' JSON encodings (search keys then carry their
    /// bytes so each is encoded once, not once per comparison).
    let comparesEncodings: Bool

    /// The key type's own order (or a comparator the program passes).
    static func natural(_ compare: @escaping @Sendable (K, K) -> Int) -> KeyOrdering<K> {
        KeyOrdering(compare: compare, compareBoxes: { a, b in compare(a.key, b.key) }, validate: nil,
                    comparesEncodings: false)
    }

    /// Keys of any `Codable` type ordered by `spec` over their JSON encodings (exactly the JSON
    /// the store holds, so the typed and the dynamic view agree).
    static func typed(_ spec: IndexSpecification) -> KeyOrdering<K> {
        if K.self == JSONValue.self { return KeyOrdering<JSONValue>.json(spec) as! KeyOrdering<K> }
        let coder = JSONCoder<K>()
        @Sendable func json(_ k: K) -> JSONValue {
            (try? coder.encode(k)).flatMap { try? JSONValue(parsing: $0) } ?? .null
        }
        @Sendable func json(_ b: KeyBox<K>) -> JSONValue {
            b.bytes.isEmpty ? json(b.key) : ((try? JSONValue(parsing: b.bytes)) ?? json(b.key))
        }
        return KeyOrdering(
            compare: { a, b in spec.compare(json(a), json(b)) },
            compareBoxes: { a, b in spec.compare(json(a), json(b)) },
            validate: { k in
                let bytes = try coder.encode(k)
                try spec.validateKey(try JSONValue(parsing: bytes))
            },
            comparesEncodings: true)
    }
}

extension KeyOrdering where K == JSONValue {
    /// JSON keys ordered by `spec`; every key must be an object with the indexed fields.
    static func json(_ spec: IndexSpecification) -> KeyOrdering<JSONValue> {
        KeyOrdering(compare: { a, b in spec.compare(a, b) }, compareBoxes: { a, b in spec.compare(a.key, b.key) },
                    validate: { try spec.validateKey($0) }, comparesEncodings: false)
    }

    /// The dynamic view of a store without an index specification created with keys of type
    /// `keyType`: ``JSONValue``'s order, which equals Swift's for strings, integers, doubles
    /// and booleans (keys of other JSON kinds are refused, so a typed program can still decode
    /// them). For other key types the order is the program's and is unknown here: keys can be
    /// walked (first, next, range without bounds) but not added, searched for or removed.
    static func dynamic(keyType: String) -> KeyOrdering<JSONValue> {
        let natural: @Sendable (JSONValue, JSONValue) -> Int = { a, b in a.compare(to: b) }
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
        return KeyOrdering(compare: natural, compareBoxes: { a, b in a.key.compare(to: b.key) }, validate: check,
                           comparesEncodings: false)
    }

    private static func kindError(_ k: JSONValue, _ expected: String, _ keyType: String) -> SOPError {
        let t = k.jsonText
        return SOPError(.invalidArgument,
                        "key \(t.count <= 60 ? t : String(t.prefix(57)) + "...") is not \(expected), as the store's \(keyType) keys are")
    }
}
