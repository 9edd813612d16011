/// The order of a store whose keys are JSON objects: a list of fields, each ascending or
/// descending, compared one after the other with ``JSONValue``'s total order.
///
/// Fields not in the specification do not affect the order: they ride along with the key as
/// metadata (and can be changed in place with `Store.updateCurrentKey`). A field is a path of
/// member names separated by dots (`"address.city"` is the member `city` of the member
/// `address`); member names containing a dot cannot be indexed.
///
/// Its JSON form is the list itself, and it is persisted in the store's info so every
/// program and tool opening the store gets the same order:
///
/// ```json
/// [{"field":"last","ascending":true},{"field":"age","ascending":false}]
/// ```
///
/// Every key added to such a store (and every key searched for) must be a JSON object that has
/// every indexed field; otherwise the operation throws ``SOPError/Code/invalidArgument``
/// (`key is missing indexed field 'x'`) and changes nothing.
public struct IndexSpecification: Codable, Sendable, Equatable, CustomStringConvertible {
    /// One indexed field.
    public struct Field: Codable, Sendable, Equatable {
        /// The member path, segments separated by dots.
        public var field: String
        /// `true` for ascending order of this field, `false` for descending.
        public var ascending: Bool

        /// Makes a field (validated when the specification is made).
        public init(_ field: String, ascending: Bool = true) {
            self.field = field
            self.ascending = ascending
        }
    }

    /// The most fields a specification may have.
    public static let maxFields = 64
    /// The longest field path, in UTF-8 bytes.
    public static let maxPathLength = 1024

    /// The fields, most significant first.
    public let fields: [Field]
    /// Each field's path split at the dots.
    private let paths: [[String]]

    /// Makes a specification, validating it: at least one field, no field twice, every path
    /// well formed (non-empty segments separated by single dots, no control characters).
    /// - Throws: ``SOPError/Code/invalidArgument`` naming the problem.
    public init(_ fields: [Field]) throws {
        guard !fields.isEmpty else {
            throw SOPError(.invalidArgument, "index specification is empty: it needs at least one field")
        }
        guard fields.count <= IndexSpecification.maxFields else {
            throw SOPError(.invalidArgument, "index specification has more than \(IndexSpecification.maxFields) fields")
        }
        var seen = Set<String>()
        var paths: [[String]] = []
        for f in fields {
            paths.append(try IndexSpecification.parsePath(f.field))
            guard seen.insert(f.field).inserted else {
                throw SOPError(.invalidArgument, "index specification names field '\(f.field)' more than once")
            }
        }
        self.fields = fields
        self.paths = paths
    }

    /// Makes a specification from its JSON form (`[{"field":"last","ascending":true},...]`):
    /// an array of objects with exactly the members `field` (a string) and `ascending` (a
    /// boolean). Validated like ``init(_:)``.
    public init(json: JSONValue) throws {
        guard case .array(let elements) = json else {
            throw SOPError(.invalidArgument,
                           "index specification must be a JSON array of {\"field\": ..., \"ascending\": ...} objects")
        }
        var fields: [Field] = []
        for (i, e) in elements.enumerated() {
            guard case .object(let o) = e else {
                throw SOPError(.invalidArgument, "index specification element \(i) is not an object")
            }
            for k in o.keys where k != "field" && k != "ascending" {
                throw SOPError(.invalidArgument, "index specification element \(i) has unknown member '\(k)'")
            }
            guard case .string(let name)? = o["field"] else {
                throw SOPError(.invalidArgument, "index specification element \(i) needs \"field\": a string")
            }
            guard case .bool(let asc)? = o["ascending"] else {
                throw SOPError(.invalidArgument, "index specification element \(i) needs \"ascending\": true or false")
            }
            fields.append(Field(name, ascending: asc))
        }
        try self.init(fields)
    }

    /// Parses and validates the JSON text of a specification; see ``init(json:)``.
    public init(parsing text: String) throws {
        let v: JSONValue
        do { v = try JSONValue(parsing: text) } catch let e as SOPError {
            throw SOPError(.invalidArgument, "index specification is not valid JSON: \(e.message)")
        }
        try self.init(json: v)
    }

    /// Decodes the JSON array form and validates it (a malformed specification is
    /// ``SOPError/Code/invalidArgument``).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        try self.init(try c.decode([Field].self))
    }

    /// Encodes the JSON array form.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(fields)
    }

    /// Two specifications are equal when they list the same fields in the same order and directions.
    public static func == (a: IndexSpecification, b: IndexSpecification) -> Bool { a.fields == b.fields }

    /// The JSON form.
    public var json: JSONValue {
        .array(fields.map { .object(JSONObject([(key: "field", value: .string($0.field)),
                                                 (key: "ascending", value: .bool($0.ascending))])) })
    }

    /// The compact JSON text of ``json``.
    public var description: String { json.jsonText }

    static func parsePath(_ path: String) throws -> [String] {
        guard !path.isEmpty else { throw SOPError(.invalidArgument, "index field path is empty") }
        guard path.utf8.count <= maxPathLength else {
            throw SOPError(.invalidArgument, "index field path is longer than \(maxPathLength) bytes")
        }
        for c in path.unicodeScalars where c.value < 0x20 || c.value == 0x7F {
            throw SOPError(.invalidArgument, "index field path '\(path.debugDescription.dropFirst().dropLast())' contains a control character")
        }
        let segments = path.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard !segments.contains(where: \.isEmpty) else {
            throw SOPError(.invalidArgument,
                           "index field path '\(path)' is malformed: segments must be non-empty and separated by single dots")
        }
        return segments
    }

    /// The value at field `i`'s path in `key`, or `nil` when absent (or `key` is not an object).
    @inline(__always)
    func value(_ i: Int, in key: JSONValue) -> JSONValue? {
        var v = key
        for s in paths[i] {
            guard case .object(let o) = v, let next = o[s] else { return nil }
            v = next
        }
        return v
    }

    /// Throws ``SOPError/Code/invalidArgument`` unless `key` is an object with every indexed field.
    public func validateKey(_ key: JSONValue) throws {
        guard case .object = key else {
            throw SOPError(.invalidArgument,
                           "key \(IndexSpecification.excerpt(key)) is not a JSON object; the store's index needs field '\(fields[0].field)'")
        }
        for i in fields.indices where value(i, in: key) == nil {
            throw SOPError(.invalidArgument, "key is missing indexed field '\(fields[i].field)'")
        }
    }

    private static func excerpt(_ v: JSONValue) -> String {
        let t = v.jsonText
        return t.count <= 60 ? t : String(t.prefix(57)) + "..."
    }

    /// Three-way comparison of two keys by the indexed fields (negative, zero or positive).
    /// An absent field (only possible for keys that were not validated) orders before every value.
    public func compare(_ a: JSONValue, _ b: JSONValue) -> Int {
        for i in fields.indices {
            let x = value(i, in: a), y = value(i, in: b)
            var c: Int
            switch (x, y) {
            case (nil, nil): c = 0
            case (nil, _): c = -1
            case (_, nil): c = 1
            case let (x?, y?): c = x.compare(to: y)
            }
            if c != 0 {
                if !fields[i].ascending { c = -c }
                return c
            }
        }
        return 0
    }
}
