import SOPCore


enum RandomJSON {
    /// Small alphabets so that random values collide (equal values, shared prefixes) often.
    static let strings = ["", "a", "ab", "b", "B", "é", "e\u{301}", "z", "😀", "a\"b", "\\", "\n", "\u{1}", "aa"]
    static let ints: [Int64] = [0, 1, -1, 2, 3, 1 << 53, (1 << 53) + 1, .max, .min, .max - 1, 100]
    static let doubles: [Double] = [0.0, -0.0, 1.0, 1.5, -1.5, 2.0, 3.5, 9007199254740992.0,
                                    9223372036854775808.0, -9223372036854775808.0, 1e300, -1e300, 0.1, .leastNonzeroMagnitude]

    static func value(_ g: inout SplitMix64, depth: Int = 0) -> JSONValue {
        let kinds = depth >= 3 ? 5 : 7
        switch Int.random(in: 0..<kinds, using: &g) {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &g))
        case 2: return .int(ints.randomElement(using: &g)!)
        case 3: return .double(doubles.randomElement(using: &g)!)
        case 4: return .string(strings.randomElement(using: &g)!)
        case 5:
            let n = Int.random(in: 0...3, using: &g)
            return .array((0..<n).map { _ in value(&g, depth: depth + 1) })
        default:
            let n = Int.random(in: 0...3, using: &g)
            var o = JSONObject()
            for _ in 0..<n {
                o.append(key: strings.randomElement(using: &g)!, value: value(&g, depth: depth + 1))
            }
            return .object(o)
        }
    }
}
