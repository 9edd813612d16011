import SOPCore
import Testing

@Suite("JSONValue total order")
struct JSONValueOrderTests {
    @Test("type ranks: null < bool < number < string < array < object")
    func typeRanks() {
        let ladder: [JSONValue] = [nil, false, true, .int(.min), -1.5, 0, 0.5, .int(.max), 1e300, "", "a",
                                   [], [nil], [1], ["a"], [:], ["a": nil], ["a": 1], ["b": 0]]
        for i in ladder.indices {
            for j in ladder.indices {
                #expect((ladder[i] < ladder[j]) == (i < j), "\(ladder[i]) vs \(ladder[j])")
                #expect((ladder[i] == ladder[j]) == (i == j), "\(ladder[i]) vs \(ladder[j])")
            }
        }
    }

    @Test("numbers compare exactly across int and double")
    func numericCrossType() {
        #expect(JSONValue.int(1) == .double(1.0))
        #expect(JSONValue.int(0) == .double(-0.0))
        #expect(JSONValue.double(0.0) == .double(-0.0))
        #expect(JSONValue.int(3) < .double(3.5))
        #expect(JSONValue.double(3.5) < .int(4))
        #expect(JSONValue.double(-3.5) < .int(-3))
        #expect(JSONValue.int(-4) < .double(-3.5))
        // 2^53 + 1 is not a double; it must not collapse onto 2^53.
        let p53 = Int64(1) << 53
        #expect(JSONValue.int(p53 + 1) > .double(Double(p53)))
        #expect(JSONValue.int(p53) == .double(Double(p53)))
        #expect(JSONValue.int(p53 - 1) < .double(Double(p53)))
        // Near 2^63: Double(Int64.max) rounds up to 2^63, which is larger than every Int64.
        #expect(JSONValue.int(.max) < .double(9223372036854775808.0))
        #expect(JSONValue.int(.max - 1) < .int(.max))
        #expect(JSONValue.int(.min) == .double(-9223372036854775808.0))
        #expect(JSONValue.int(.min) > .double(-9223372036854777856.0))
        #expect(JSONValue.int(.max) > .double(9223372036854774784.0)) // largest double below 2^63
        #expect(JSONValue.int(.max) < .double(.infinity))
        #expect(JSONValue.int(.min) > .double(-.infinity))
        // NaN: equal to itself, smaller than every other number, still above booleans.
        #expect(JSONValue.double(.nan) == .double(.nan))
        #expect(JSONValue.double(.nan) < .double(-.infinity))
        #expect(JSONValue.double(.nan) < .int(.min))
        #expect(JSONValue.bool(true) < .double(.nan))
    }

    @Test("equal values hash equally, across number cases and member orders")
    func hashing() throws {
        #expect(JSONValue.int(1).hashValue == JSONValue.double(1.0).hashValue)
        #expect(JSONValue.int(.min).hashValue == JSONValue.double(-9223372036854775808.0).hashValue)
        #expect(JSONValue.int(0).hashValue == JSONValue.double(-0.0).hashValue)
        let a = try JSONValue(parsing: "{\"x\":[1,2.0],\"y\":{\"p\":null,\"q\":true}}")
        let b = try JSONValue(parsing: "{\"y\":{\"q\":true,\"p\":null},\"x\":[1.0,2]}")
        #expect(a == b)
        #expect(a.hashValue == b.hashValue)
        #expect(Set([a, b, .int(1), .double(1)]).count == 2)
    }

    @Test("objects compare by sorted members; fewer members first on a common prefix")
    func objectOrder() throws {
        let x = try JSONValue(parsing: "{\"b\":1,\"a\":2}")
        let y = try JSONValue(parsing: "{\"a\":2,\"b\":1,\"c\":0}")
        let z = try JSONValue(parsing: "{\"a\":3}")
        #expect(x < y)
        #expect(y < z) // ("a",2) < ("a",3)
        #expect(try JSONValue(parsing: "{\"a\":1}") < JSONValue(parsing: "{\"b\":0}"))
        #expect(try JSONValue(parsing: "{\"a\":1,\"a\":5}") == JSONValue(parsing: "{\"a\":5}"))
    }

    @Test("strings order exactly as Swift String does")
    func stringOrder() {
        var g = SplitMix64(seed: 3)
        let pool = RandomJSON.strings + ["Z", "ä", "a\u{308}", "\u{10FFFF}", "\u{FFFF}", "ab\u{0}", "abc", "ﬁ"]
        for _ in 0..<2_000 {
            let s = pool.randomElement(using: &g)! + pool.randomElement(using: &g)!
            let t = pool.randomElement(using: &g)! + pool.randomElement(using: &g)!
            #expect((JSONValue.string(s) < .string(t)) == (s < t), "\(s.debugDescription) vs \(t.debugDescription)")
            #expect((JSONValue.string(s) == .string(t)) == (s == t))
        }
    }

    @Test("arrays order lexicographically, a proper prefix first")
    func arrayOrder() {
        #expect(JSONValue.array([1, 2]) < [1, 2, 0])
        #expect(JSONValue.array([1, 2, 9]) < [1, 3])
        #expect(JSONValue.array([]) < [nil])
        #expect(JSONValue.array([1]) == [1.0])
    }

    @Test("random values: a total order consistent with == and hashing")
    func totalOrderProperties() {
        var g = SplitMix64(seed: 1234)
        let values = (0..<300).map { _ in RandomJSON.value(&g) }
        for _ in 0..<20_000 {
            let a = values.randomElement(using: &g)!
            let b = values.randomElement(using: &g)!
            let c = values.randomElement(using: &g)!
            let ab = a.compare(to: b), ba = b.compare(to: a)
            // Antisymmetry and trichotomy.
            #expect(ab.signum() == -ba.signum(), "\(a) vs \(b)")
            #expect((a < b) == (ab < 0))
            #expect((a == b) == (ab == 0), "\(a) vs \(b)")
            #expect([a < b, b < a, a == b].filter { $0 }.count == 1)
            if a == b { #expect(a.hashValue == b.hashValue, "\(a) vs \(b)") }
            // Transitivity.
            if a <= b && b <= c { #expect(a <= c, "\(a) <= \(b) <= \(c)") }
            if a == b && b == c { #expect(a == c) }
        }
        // Sorting is consistent: every adjacent pair is ordered.
        let sorted = values.sorted()
        for (p, q) in zip(sorted, sorted.dropFirst()) { #expect(p <= q) }
    }
}
