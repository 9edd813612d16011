/// A JSON object: its members in the order they were parsed or added.
///
/// Duplicate keys are kept as they are (the parser accepts them); lookups by key see the
/// *last* member with that key. Equality, hashing and ordering ignore member order and use
/// the object's canonical form: one member per key (the last one) sorted by key with Swift
/// `String` `<`. So `{"a":1,"b":2}` equals `{"b":2,"a":1}`, and `{"a":1,"a":2}` equals
/// `{"a":2}`.
public struct JSONObject: Sendable, Hashable, Comparable, ExpressibleByDictionaryLiteral {
    /// The members in order, duplicates included.
    public var members: [(key: String, value: JSONValue)]

    /// An empty object.
    public init() {
        members = []
    }

    /// An object with these members, in this order (duplicates are kept).
    public init(_ members: [(key: String, value: JSONValue)]) {
        self.members = members
    }

    /// An object with the literal's members, in the literal's order.
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        members = elements.map { (key: $0.0, value: $0.1) }
    }

    /// Number of members, duplicates included.
    public var count: Int { members.count }

    /// True when the object has no members.
    public var isEmpty: Bool { members.isEmpty }

    /// The keys in member order (duplicates included).
    public var keys: [String] { members.map(\.key) }

    /// The value of the last member named `key`, or `nil`.
    ///
    /// Setting a value replaces the last member with that key (removing earlier duplicates) or
    /// appends a new member; setting `nil` removes every member with that key.
    public subscript(key: String) -> JSONValue? {
        get {
            var i = members.count - 1
            while i >= 0 {
                if members[i].key == key { return members[i].value }
                i -= 1
            }
            return nil
        }
        set {
            guard let newValue else {
                members.removeAll { $0.key == key }
                return
            }
            guard let last = members.lastIndex(where: { $0.key == key }) else {
                members.append((key: key, value: newValue))
                return
            }
            members[last].value = newValue
            if members[..<last].contains(where: { $0.key == key }) {
                var kept: [(key: String, value: JSONValue)] = []
                kept.reserveCapacity(members.count)
                for (i, m) in members.enumerated() where m.key != key || i == last {
                    kept.append(m)
                }
                members = kept
            }
        }
    }

    /// Appends a member (even when the key is already present).
    public mutating func append(key: String, value: JSONValue) {
        members.append((key: key, value: value))
    }

    /// The canonical member list: one member per key (the last), sorted by key.
    public var canonicalMembers: [(key: String, value: JSONValue)] {
        if members.count <= 1 { return members }
        // Sort positions by (key, position) so the last duplicate ends each run of equal keys.
        let order = members.indices.sorted { a, b in
            let ka = members[a].key, kb = members[b].key
            if ka < kb { return true }
            if kb < ka { return false }
            return a < b
        }
        var out: [(key: String, value: JSONValue)] = []
        out.reserveCapacity(members.count)
        for i in order {
            let m = members[i]
            if let last = out.last, last.key == m.key {
                out[out.count - 1] = m
            } else {
                out.append(m)
            }
        }
        return out
    }

    /// Three-way comparison of canonical forms: negative, zero or positive.
    ///
    /// Members are compared pairwise by key, then value; when one list is a prefix of the
    /// other, the object with fewer members is smaller.
    public func compare(to other: JSONObject) -> Int {
        let a = canonicalMembers, b = other.canonicalMembers
        for (x, y) in zip(a, b) {
            if x.key < y.key { return -1 }
            if y.key < x.key { return 1 }
            let c = x.value.compare(to: y.value)
            if c != 0 { return c }
        }
        return a.count < b.count ? -1 : (a.count > b.count ? 1 : 0)
    }

    /// Equal canonical forms (member order and overridden duplicates do not matter).
    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        if a.members.count == b.members.count {
            // Fast path: same members in the same order without duplicates is the common case.
            var same = true
            for (x, y) in zip(a.members, b.members) where x.key != y.key || x.value != y.value {
                same = false
                break
            }
            if same { return true }
        }
        return a.compare(to: b) == 0
    }

    /// Orders by canonical form; see ``compare(to:)``.
    public static func < (a: JSONObject, b: JSONObject) -> Bool {
        a.compare(to: b) < 0
    }

    /// Hashes the canonical form, consistently with `==`.
    public func hash(into hasher: inout Hasher) {
        let c = canonicalMembers
        hasher.combine(c.count)
        for m in c {
            hasher.combine(m.key)
            hasher.combine(m.value)
        }
    }
}
