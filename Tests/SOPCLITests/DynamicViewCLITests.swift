import SOPTestSupport
import Foundation
import SOP
import Testing

/// A struct key ordered by `last` then `age` descending; `note` is metadata.
private struct MemberKey: Codable, Sendable, Equatable {
    var last: String
    var age: Int
    var note: String
}

private struct Member: Codable, Sendable, Equatable {
    var first: String
    var born: Int
}

private let memberSpec = try! IndexSpecification([.init("last"), .init("age", ascending: false)])

@Suite struct DynamicViewCLITests {
    /// A store written by a typed program is read and edited by `sop` through the dynamic
    /// view, then re-read by the typed program.
    @Test func typedStoreThroughTheCLI() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let keys = [MemberKey(last: "lovelace", age: 36, note: "a"), MemberKey(last: "babbage", age: 79, note: "b"),
                    MemberKey(last: "lovelace", age: 12, note: "c"), MemberKey(last: "turing", age: 41, note: "d")]
        do {
            let db = try await Database.open(at: dir.db)
            try await db.write { tx in
                let s = try await tx.store("members", key: MemberKey.self, value: Member.self, index: memberSpec)
                for k in keys { try await s.add(k, Member(first: k.note, born: 1800 + k.age)) }
                let n = try await tx.store("names", key: String.self, value: Int.self)
                try await n.add("b", 2)
                try await n.add("a", 1)
            }
            try await db.close()
        }
        let db = ["--db", dir.db]
        let scan = try sop(db + ["scan", "members"])
        #expect(scan.status == 0, "\(scan.err)")
        let order = scan.out.split(separator: "\n").map { line -> String in
            let v = try! JSONValue(parsing: String(line))
            return "\(v["key"]?["last"]?.jsonText ?? "?")/\(v["key"]?["age"]?.jsonText ?? "?")"
        }
        #expect(order == [#""babbage"/79"#, #""lovelace"/36"#, #""lovelace"/12"#, #""turing"/41"#])
        // Put a value by key (the key's metadata field differs: only indexed fields locate the item).
        let put = try sop(db + ["put", "members", #"{"last":"lovelace","age":12,"note":"ignored"}"#,
                                #"{"first":"ada","born":1815}"#])
        #expect(put.status == 0, "\(put.err)")
        let get = try sop(db + ["get", "members", #"{"last":"lovelace","age":12,"note":"x"}"#])
        #expect(get.out == #"{"first":"ada","born":1815}"# + "\n")
        // A key missing an indexed field: one error line, nothing written.
        expectFailure(try sop(db + ["put", "members", #"{"last":"x"}"#, "{}"]), containing: "missing indexed field 'age'")
        // A String-keyed store created by a program: readable and editable; a wrong key kind is refused.
        #expect(try sop(db + ["put", "names", #""c""#, "3"]).status == 0)
        expectFailure(try sop(db + ["put", "names", "5", "3"]), containing: "not a JSON string")
        #expect(try sop(db + ["scan", "names"]).out
                == "{\"key\":\"a\",\"value\":1}\n{\"key\":\"b\",\"value\":2}\n{\"key\":\"c\",\"value\":3}\n")
        let stores = try sop(db + ["stores"])
        #expect(stores.out.contains(#"index=[{"field":"last","ascending":true},{"field":"age","ascending":false}]"#))
        #expect(try sop(db + ["check"]).status == 0)

        let reopened = try await Database.open(at: dir.db)
        try await reopened.read { tx in
            let s = try await tx.openStore("members", key: MemberKey.self, value: Member.self, index: nil)
            #expect(s.count == 4)
            #expect(try await s.find(MemberKey(last: "lovelace", age: 12, note: "")))
            #expect(s.currentKey == keys[2])     // metadata kept: put replaces the value only
            #expect(try await s.currentValue() == Member(first: "ada", born: 1815))
            let n = try await tx.openStore("names", key: String.self, value: Int.self)
            #expect(try await n.get("c") == 3)
        }
        try await reopened.close()
    }

    @Test func createStoreWithIndexAndBadSpecifications() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = ["--db", dir.db]
        let spec = #"[{"field":"last","ascending":true},{"field":"address.city","ascending":false}]"#
        let created = try sop(db + ["create-store", "people", "--index", spec])
        #expect(created.status == 0, "\(created.err)")
        for (bad, message) in [("[]", "empty"),
                               (#"[{"field":"a","ascending":true},{"field":"a","ascending":true}]"#, "more than once"),
                               (#"[{"field":"a..b","ascending":true}]"#, "malformed"),
                               ("not json", "not valid JSON"),
                               (#"[{"field":"a"}]"#, "ascending")] {
            expectFailure(try sop(db + ["create-store", "other", "--index", bad]), containing: message)
        }
        #expect(try sop(db + ["stores"]).out.split(separator: "\n").count == 1)
        #expect(try sop(db + ["put", "people", #"{"last":"b","address":{"city":"oslo"}}"#, "1"]).status == 0)
        #expect(try sop(db + ["put", "people", #"{"last":"b","address":{"city":"rome"}}"#, "2"]).status == 0)
        #expect(try sop(db + ["put", "people", #"{"last":"a","address":{"city":"oslo"}}"#, "3"]).status == 0)
        expectFailure(try sop(db + ["put", "people", #"{"last":"c"}"#, "4"]), containing: "address.city")
        expectFailure(try sop(db + ["add", "people", #""c""#, "4"]), containing: "not a JSON object")
        // Import validates every key against the index before writing anything.
        let file = dir.path + "/in.jsonl"
        try """
            {"key": {"last":"d","address":{"city":"x"}}, "value": 5}
            {"key": {"last":"e"}, "value": 6}

            """.write(toFile: file, atomically: true, encoding: .utf8)
        expectFailure(try sop(db + ["import", "people", file]), containing: "missing indexed field")
        let scan = try sop(db + ["scan", "people"])
        #expect(scan.out.split(separator: "\n").map { try! JSONValue(parsing: String($0))["value"]! } == [3, 2, 1])
    }
}
