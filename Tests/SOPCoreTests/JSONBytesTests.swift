import SOPCore
import Testing

@Suite("JSONBytes helpers")
struct JSONBytesTests {
    @Test("skipValue finds value boundaries after whitespace")
    func skipValue() throws {
        let cases: [(String, Int, Int, Int)] = [ // text, from, start, end
            ("  \"a\\\"b\" ,", 0, 2, 8),
            ("[1,{\"x\":[true,null]},\"]\"]x", 0, 0, 25),
            ("{\"a\" : [ ] }", 0, 0, 12),
            ("-12.5e+3,", 0, 0, 8),
            ("0]", 0, 0, 1),
            ("xx false", 2, 3, 8),
            ("\t\n\r null", 0, 4, 8),
        ]
        for (text, from, start, end) in cases {
            let r = try JSONBytes.skipValue(Array(text.utf8), from: from)
            #expect(r.start == start && r.end == end, "\(text.debugDescription): \(r)")
        }
    }

    @Test("skipValue throws corrupt on malformed or truncated input")
    func skipValueErrors() {
        let bad = ["", "  ", "[", "[1", "[1,", "{\"a\"", "{\"a\":", "{\"a\":1", "\"abc", "\"\\q\"", "\"\\u12\"",
                   "tru", "nul", "-", "01", "1.", "1e", "[1 2]", "{\"a\" 1}", "{1:1}", "}", "\"a\nb\"",
                   String(repeating: "[", count: 600) + String(repeating: "]", count: 600)]
        for text in bad {
            do {
                let r = try JSONBytes.skipValue(Array(text.utf8), from: 0)
                Issue.record("\(text.debugDescription) skipped to \(r)")
            } catch let e as SOPError {
                #expect(e.code == .corrupt)
            } catch {
                Issue.record("\(error)")
            }
        }
        #expect(throws: SOPError.self) { try JSONBytes.skipValue([0x31], from: 2) }
        #expect(throws: SOPError.self) { try JSONBytes.skipValue([0x31], from: -1) }
    }

    @Test("appendString escapes canonically and round-trips through parseString")
    func strings() throws {
        var out: [UInt8] = []
        JSONBytes.appendString("a\"\\/\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f} é😀\u{7f}", to: &out)
        #expect(String(decoding: out, as: UTF8.self) == #""a\"\\/\u0000\b\t\n\u000b\f\r\u001f é😀"# + "\u{7f}\"")
        var g = SplitMix64(seed: 5)
        let pool: [Character] = ["a", "\"", "\\", "\n", "\u{1}", "é", "😀", "/", " ", "\u{7f}", "\u{2028}"]
        for _ in 0..<500 {
            let s = String((0..<Int.random(in: 0...20, using: &g)).map { _ in pool.randomElement(using: &g)! })
            var b: [UInt8] = []
            JSONBytes.appendString(s, to: &b)
            #expect(try JSONBytes.parseString(b[...]) == s)
            #expect(try JSONValue(parsing: b) == .string(s))
        }
        #expect(try JSONBytes.parseString(Array("\"\\u00e9\\ud83d\\ude00\\/\"".utf8)[...]) == "é😀/")
    }

    @Test("parseString rejects anything but exactly one valid string literal")
    func parseStringErrors() {
        for text in ["", "\"", "abc", "\"a\" ", " \"a\"", "\"a\"\"b\"", "\"\\ud800\"", "\"\\x\"", "1"] {
            #expect(throws: SOPError.self, "\(text)") { try JSONBytes.parseString(Array(text.utf8)[...]) }
        }
        #expect(throws: SOPError.self) { try JSONBytes.parseString([0x22, 0xFF, 0x22][...]) }
    }

    @Test("parseInt accepts exactly one JSON integer literal")
    func parseInt() {
        let ok: [(String, Int64)] = [("0", 0), ("-0", 0), ("7", 7), ("-42", -42),
                                     ("9223372036854775807", .max), ("-9223372036854775808", .min)]
        for (t, v) in ok { #expect(JSONBytes.parseInt(Array(t.utf8)[...]) == v, "\(t)") }
        for t in ["", "-", "01", "+1", "1.0", "1e2", " 1", "1 ", "9223372036854775808", "-9223372036854775809", "x"] {
            #expect(JSONBytes.parseInt(Array(t.utf8)[...]) == nil, "\(t)")
        }
        let s = Array("[123]".utf8)
        #expect(JSONBytes.parseInt(s[1..<4]) == 123)
    }
}
