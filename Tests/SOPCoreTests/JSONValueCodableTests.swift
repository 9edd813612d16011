import Foundation
import SOPCore
import Testing

@Suite("JSONValue Codable")
struct JSONValueCodableTests {
    @Test("JSONDecoder keeps 1 and true apart")
    func boolVersusNumber() throws {
        let d = JSONDecoder()
        let v = try d.decode(JSONValue.self, from: Data("[1, true, 0, false, 1.5, \"1\", null, -7]".utf8))
        guard case .array(let a) = v, a.count == 8 else { Issue.record("\(v)"); return }
        guard case .int(1) = a[0] else { Issue.record("1 -> \(a[0])"); return }
        guard case .bool(true) = a[1] else { Issue.record("true -> \(a[1])"); return }
        guard case .int(0) = a[2] else { Issue.record("0 -> \(a[2])"); return }
        guard case .bool(false) = a[3] else { Issue.record("false -> \(a[3])"); return }
        guard case .double(1.5) = a[4] else { Issue.record("1.5 -> \(a[4])"); return }
        #expect(a[5] == .string("1"))
        #expect(a[6] == .null)
        guard case .int(-7) = a[7] else { Issue.record("-7 -> \(a[7])"); return }
        guard case .int(1) = try d.decode(JSONValue.self, from: Data("1".utf8)) else {
            Issue.record("top-level 1"); return
        }
        guard case .bool(true) = try d.decode(JSONValue.self, from: Data("true".utf8)) else {
            Issue.record("top-level true"); return
        }
    }

    @Test("random values round-trip through JSONEncoder and JSONDecoder")
    func roundTrip() throws {
        var g = SplitMix64(seed: 99)
        let enc = JSONEncoder()
        let dec = JSONDecoder()
        for _ in 0..<500 {
            let v = RandomJSON.value(&g)
            let data = try enc.encode(v)
            let back = try dec.decode(JSONValue.self, from: data)
            // Foundation does not keep member order (== ignores it) and may write 2.0 as 2
            // (== compares numerically).
            #expect(back == v, "\(v) -> \(String(decoding: data, as: UTF8.self))")
        }
    }

    @Test("JSONValue nested in a Codable struct, and Foundation output parses with our parser")
    func nested() throws {
        struct Doc: Codable, Equatable {
            var name: String
            var payload: JSONValue
        }
        let doc = Doc(name: "n", payload: ["a": [1, 2.5, "x", nil, true], "b": [:]])
        let data = try JSONEncoder().encode(doc)
        #expect(try JSONDecoder().decode(Doc.self, from: data) == doc)
        let parsed = try JSONValue(parsing: Array(data))
        #expect(parsed["payload"] == doc.payload)
        // And our text decodes with Foundation.
        let back = try JSONDecoder().decode(JSONValue.self, from: Data(doc.payload.jsonText.utf8))
        #expect(back == doc.payload)
    }

    @Test("non-finite doubles encode as null")
    func nonFinite() throws {
        let data = try JSONEncoder().encode(JSONValue.array([.double(.nan), .double(.infinity)]))
        #expect(String(decoding: data, as: UTF8.self) == "[null,null]")
    }
}
