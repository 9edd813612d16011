import SOPCore
import Testing

@Suite("JSONValue parsing and serialization")
struct JSONValueParsingTests {
    static let valid: [(String, JSONValue)] = [
        ("null", .null),
        ("true", .bool(true)),
        (" false ", .bool(false)),
        ("0", .int(0)),
        ("-0", .int(0)),
        ("42", .int(42)),
        ("-42", .int(-42)),
        ("9223372036854775807", .int(.max)),
        ("-9223372036854775808", .int(.min)),
        ("9223372036854775808", .double(9223372036854775808.0)),
        ("-9223372036854775809", .double(-9223372036854775809.0)),
        ("1.5", .double(1.5)),
        ("-0.0", .double(-0.0)),
        ("1e2", .double(100)),
        ("1E+2", .double(100)),
        ("1.25e-2", .double(0.0125)),
        ("\"\"", .string("")),
        ("\"abc\"", .string("abc")),
        ("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", .string("\"\\/\u{8}\u{c}\n\r\t")),
        ("\"\\u0041\\u00e9\\u20AC\"", .string("Aé€")),
        ("\"\\ud83d\\ude00\"", .string("😀")),
        ("\"\\u0000\"", .string("\u{0}")),
        ("\"é😀\u{7f}\"", .string("é😀\u{7f}")),
        ("[]", .array([])),
        ("[ 1 , [ 2 ] , { } ]", .array([.int(1), .array([.int(2)]), .object(JSONObject())])),
        ("{}", .object(JSONObject())),
        ("\t\r\n{\"a\" : 1 , \"b\":[true,null]}\n", ["a": 1, "b": [true, nil]]),
    ]

    @Test("valid corpus parses to the expected values", arguments: 0..<valid.count)
    func validCorpus(_ index: Int) throws {
        let (text, expected) = Self.valid[index]
        let v = try JSONValue(parsing: text)
        #expect(v == expected, "\(text)")
        // Same through the byte entry points.
        #expect(try JSONValue(parsing: Array(text.utf8)) == expected)
        let padded = [UInt8]("xx".utf8) + Array(text.utf8) + [UInt8]("yy".utf8)
        #expect(try JSONValue(parsing: padded[2..<(padded.count - 2)]) == expected)
    }

    @Test("int and double cases are kept apart when parsing")
    func numberCases() throws {
        guard case .int(1) = try JSONValue(parsing: "1") else { Issue.record("1 is not .int"); return }
        guard case .double(1.0) = try JSONValue(parsing: "1.0") else { Issue.record("1.0 is not .double"); return }
        guard case .double = try JSONValue(parsing: "1e0") else { Issue.record("1e0 is not .double"); return }
        guard case .double = try JSONValue(parsing: "18446744073709551616") else { Issue.record("2^64"); return }
    }

    static let invalid: [String] = [
        "", " ", "nul", "nulll", "True", "tru", "falsey",
        "01", "-01", "00", "-", "+1", "1.", ".5", "1e", "1e+", "1.e3", "0x10", "1e400", "-1e400", "NaN", "Infinity",
        "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\u12G4\"", "\"\\\"", "\"a\tb\"", "\"a\nb\"", "\"\u{1f}\"",
        "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\ud800x\"", "\"\\ude00\\ud83d\"",
        "[", "]", "[1,]", "[,1]", "[1 2]", "[1,,2]", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{,}", "{a:1}",
        "{\"a\" 1}", "{\"a\":1 \"b\":2}", "{1:2}", "1 2", "[] []", "{}x", "null,", "\u{0}", "'a'",
    ]

    @Test("invalid corpus throws invalidArgument with a byte offset", arguments: invalid)
    func invalidCorpus(_ text: String) {
        do {
            let v = try JSONValue(parsing: text)
            Issue.record("parsed \(text.debugDescription) as \(v)")
        } catch let e as SOPError {
            #expect(e.code == .invalidArgument)
            #expect(e.message.hasPrefix("invalid JSON at byte "), "\(e.message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("invalid UTF-8 inside strings is rejected")
    func invalidUTF8() {
        for bytes: [UInt8] in [[0x22, 0xFF, 0x22], [0x22, 0xC3, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22],
                               [0x22, 0xC3, 0x5C, 0x6E, 0x22], [0xEF, 0xBB, 0xBF, 0x31]] {
            #expect(throws: SOPError.self) { try JSONValue(parsing: bytes) }
        }
    }

    @Test("error offsets point at the problem")
    func errorOffset() {
        do {
            _ = try JSONValue(parsing: "[1, 2, x]")
            Issue.record("no error")
        } catch let e as SOPError {
            #expect(e.message == "invalid JSON at byte 7: unexpected character")
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test("nesting is limited to 512 levels")
    func depthLimit() throws {
        let ok = String(repeating: "[", count: 512) + String(repeating: "]", count: 512)
        #expect(try JSONValue(parsing: ok) != .null)
        let tooDeep = String(repeating: "[", count: 513) + String(repeating: "]", count: 513)
        #expect(throws: SOPError.self) { try JSONValue(parsing: tooDeep) }
        let objects = String(repeating: "{\"a\":", count: 513) + "1" + String(repeating: "}", count: 513)
        #expect(throws: SOPError.self) { try JSONValue(parsing: objects) }
        // Very deep input fails fast instead of overflowing the stack.
        let huge = String(repeating: "[", count: 100_000)
        #expect(throws: SOPError.self) { try JSONValue(parsing: huge) }
    }

    @Test("duplicate keys are kept; subscript returns the last")
    func duplicateKeys() throws {
        let v = try JSONValue(parsing: "{\"a\":1,\"b\":2,\"a\":3}")
        guard case .object(let o) = v else { Issue.record("not an object"); return }
        #expect(o.count == 3)
        #expect(o.keys == ["a", "b", "a"])
        #expect(o["a"] == .int(3))
        #expect(v["b"] == .int(2))
        #expect(o["c"] == nil)
        #expect(v.jsonText == "{\"a\":1,\"b\":2,\"a\":3}")
        #expect(v == ["b": 2, "a": 3])
        var m = o
        m["a"] = 4
        #expect(m.keys == ["b", "a"])
        m["a"] = nil
        #expect(m.keys == ["b"])
        m["c"] = "x"
        #expect(m.keys == ["b", "c"])
    }

    @Test("serialization is compact and canonically escaped")
    func serialization() throws {
        let v: JSONValue = ["s": "a\"b\\c/\n\t\r\u{8}\u{c}\u{1}\u{1f}\u{7f}é😀", "n": nil, "b": [true, false],
                            "i": -9223372036854775808, "d": 2.0, "e": 1e-5, "big": 1e300]
        #expect(v.jsonText == #"{"s":"a\"b\\c/\n\t\r\b\f\u0001\u001f"# + "\u{7f}é😀" + #"","n":null,"b":[true,false],"i":-9223372036854775808,"d":2.0,"e":1e-05,"big":1e+300}"#)
        #expect(JSONValue.double(.nan).jsonText == "null")
        #expect(JSONValue.double(.infinity).jsonText == "null")
        #expect(JSONValue.double(-.infinity).jsonText == "null")
        #expect(JSONValue.int(0).jsonText == "0")
        #expect(JSONValue.int(-7).jsonText == "-7")
        #expect("\(JSONValue.array([1, "x"]))" == "[1,\"x\"]")
        var out: [UInt8] = [0x41]
        JSONValue.bool(true).write(to: &out)
        #expect(out == Array("Atrue".utf8))
    }

    @Test("random values round-trip through text exactly (case and order preserved)")
    func roundTrip() throws {
        var g = SplitMix64(seed: 42)
        for _ in 0..<2_000 {
            let v = RandomJSON.value(&g)
            let text = v.jsonText
            let back = try JSONValue(parsing: text)
            #expect(back == v, "\(text)")
            #expect(back.jsonText == text, "\(text)")
        }
    }

    @Test("mutated texts never crash the parser")
    func parserFuzz() {
        var g = SplitMix64(seed: 7)
        for _ in 0..<2_000 {
            var bytes = Array(RandomJSON.value(&g).jsonText.utf8)
            for _ in 0..<Int.random(in: 1...3, using: &g) where !bytes.isEmpty {
                let at = Int.random(in: 0..<bytes.count, using: &g)
                switch Int.random(in: 0..<3, using: &g) {
                case 0: bytes[at] = UInt8.random(in: 0...255, using: &g)
                case 1: bytes.remove(at: at)
                default: bytes.insert(Array("{}[]\",:\\0-e.tfn ".utf8).randomElement(using: &g)!, at: at)
                }
            }
            do {
                _ = try JSONValue(parsing: bytes)
            } catch {
                #expect(error is SOPError)
            }
        }
    }
}
