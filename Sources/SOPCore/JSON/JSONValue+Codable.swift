/// A coding key made from any string or integer, for encoding and decoding JSON objects.
struct JSONCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int?

    init(stringValue: String) {
        self.stringValue = stringValue
        self.intValue = nil
    }

    init(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }
}

extension JSONValue: Codable {
    /// Decodes whatever the decoder holds.
    ///
    /// Tries, in order: `nil`, `Bool`, `Int64`, `Double`, `String` (single value), then an
    /// unkeyed container (array), then a keyed container (object). With Foundation's
    /// `JSONDecoder`, `1` decodes as `.int(1)` and `true` as `.bool(true)`; `1.0` may decode as
    /// `.int(1)`, which is equal to `.double(1.0)`. Object member order is whatever order the
    /// decoder reports its keys in (Foundation's `JSONDecoder` does not keep it), and duplicate
    /// keys are collapsed by the decoder.
    public init(from decoder: any Decoder) throws {
        if let c = try? decoder.singleValueContainer() {
            if c.decodeNil() {
                self = .null
                return
            }
            if let v = try? c.decode(Bool.self) {
                self = .bool(v)
                return
            }
            if let v = try? c.decode(Int64.self) {
                self = .int(v)
                return
            }
            if let v = try? c.decode(Double.self) {
                self = .double(v)
                return
            }
            if let v = try? c.decode(String.self) {
                self = .string(v)
                return
            }
        }
        if var c = try? decoder.unkeyedContainer() {
            var elements: [JSONValue] = []
            if let n = c.count { elements.reserveCapacity(n) }
            while !c.isAtEnd {
                elements.append(try c.decode(JSONValue.self))
            }
            self = .array(elements)
            return
        }
        let c = try decoder.container(keyedBy: JSONCodingKey.self)
        var object = JSONObject()
        for key in c.allKeys {
            object.append(key: key.stringValue, value: try c.decode(JSONValue.self, forKey: key))
        }
        self = .object(object)
    }

    /// Encodes as the matching primitive, unkeyed container (array) or keyed container
    /// (object, members in order). Non-finite doubles are encoded as `nil`, as in
    /// ``jsonText``.
    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .null:
            var c = encoder.singleValueContainer()
            try c.encodeNil()
        case .bool(let v):
            var c = encoder.singleValueContainer()
            try c.encode(v)
        case .int(let v):
            var c = encoder.singleValueContainer()
            try c.encode(v)
        case .double(let v):
            var c = encoder.singleValueContainer()
            if v.isFinite { try c.encode(v) } else { try c.encodeNil() }
        case .string(let v):
            var c = encoder.singleValueContainer()
            try c.encode(v)
        case .array(let a):
            var c = encoder.unkeyedContainer()
            for v in a { try c.encode(v) }
        case .object(let o):
            var c = encoder.container(keyedBy: JSONCodingKey.self)
            for m in o.members {
                try c.encode(m.value, forKey: JSONCodingKey(stringValue: m.key))
            }
        }
    }
}
