import SOPTestSupport
import Foundation
import SOP
import Testing

@Suite struct CLITests {
    @Test func theDocumentedWalkthrough() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = ["--db", dir.db]
        #expect(try sop(db + ["create-store", "people", "--slot-length", "500", "--unique"]).status == 0)
        #expect(try sop(db + ["put", "people", "\"ada\"", "{\"born\":1815}"]).status == 0)
        let got = try sop(db + ["get", "people", "\"ada\""])
        #expect(got.status == 0)
        #expect(got.out == "{\"born\":1815}\n")
        var lines = ""
        for name in ["bob", "carol", "dave", "erin", "mallory", "zed"] {
            lines += "{\"key\": \"\(name)\", \"value\": {\"n\": \"\(name)\"}}\n"
        }
        let file = dir.path + "/data.jsonl"
        try lines.write(toFile: file, atomically: true, encoding: .utf8)
        let imp = try sop(db + ["import", "people", file, "--batch", "2", "--log-commits"])
        #expect(imp.status == 0, "\(imp.err)")
        #expect(imp.out == "committed 2\ncommitted 4\ncommitted 6\n")
        let scan = try sop(db + ["scan", "people", "--from", "\"a\"", "--to", "\"m\"", "--limit", "20", "--reverse"])
        #expect(scan.status == 0)
        let keys = scan.out.split(separator: "\n").map { line -> String in
            let v = try! JSONValue(parsing: String(line))
            guard case .object(let o) = v, case .string(let k)? = o["key"] else { return "?" }
            return k
        }
        #expect(keys == ["erin", "dave", "carol", "bob", "ada"])
        let limited = try sop(db + ["scan", "people", "--limit", "2"])
        #expect(limited.out.split(separator: "\n").count == 2)
        let stores = try sop(db + ["stores"])
        #expect(stores.out.hasPrefix("people 7 "))
        #expect(try sop(db + ["delete", "people", "\"ada\""]).status == 0)
        expectFailure(try sop(db + ["get", "people", "\"ada\""]), containing: "not in store")
        let check = try sop(db + ["check"])
        #expect(check.status == 0, "\(check.out)\(check.err)")
        #expect(check.out.hasSuffix("clean\n"))
        let json = try sop(db + ["check", "--json"])
        #expect(json.out.contains("\"clean\":true"))
    }

    @Test func compactReportsWhatItReclaimed() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = ["--db", dir.db]
        #expect(try sop(db + ["create-store", "s", "--slot-length", "8"]).status == 0)
        let file = dir.path + "/d.jsonl"
        for round in 0..<3 {
            var lines = ""
            for i in 0..<300 { lines += "{\"key\": \(i), \"value\": \"round \(round) of \(i)\"}\n" }
            try lines.write(toFile: file, atomically: true, encoding: .utf8)
            #expect(try sop(db + ["import", "s", file, "--batch", "10"]).status == 0)
        }
        let r = try sop(db + ["compact"])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.hasPrefix("compacted "), "\(r.out)")
        #expect(r.out.contains("deleted "), "\(r.out)")
        #expect(r.out.contains("reclaimed "), "\(r.out)")
        let again = try sop(db + ["compact", "--json"])
        #expect(again.status == 0, "\(again.err)")
        #expect(again.out.contains("\"segmentsCompacted\":[]"), "\(again.out)")
        let got = try sop(db + ["get", "s", "299"])
        #expect(got.out == "\"round 2 of 299\"\n")
        let check = try sop(db + ["check"])
        #expect(check.status == 0, "\(check.out)\(check.err)")
    }

    @Test func badInputGivesOneErrorLineAndChangesNothing() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = ["--db", dir.db]
        #expect(try sop(db + ["create-store", "s"]).status == 0)
        #expect(try sop(db + ["put", "s", "1", "\"one\""]).status == 0)
        expectFailure(try sop(db + ["put", "s", "{bad", "1"]), containing: "not valid JSON")
        expectFailure(try sop(db + ["put", "s", "2", "[1,"]), containing: "not valid JSON")
        expectFailure(try sop(db + ["create-store", "bad/name"]), containing: "store name")
        expectFailure(try sop(db + ["create-store", "t", "--slot-length", "3"]), containing: "slot length")
        expectFailure(try sop(db + ["create-store", "s"]), containing: "already exists")
        expectFailure(try sop(db + ["get", "nostore", "1"]), containing: "does not exist")
        expectFailure(try sop(["get", "s", "1"]), containing: "--db")
        expectFailure(try sop(db + ["frobnicate"]))
        let file = dir.path + "/bad.jsonl"
        try "{\"key\": 5, \"value\": 5}\n{\"key\": 6, \"value\": }\n".write(toFile: file, atomically: true, encoding: .utf8)
        expectFailure(try sop(db + ["import", "s", file]), containing: "line 2")
        try "{\"key\": 5}\n".write(toFile: file, atomically: true, encoding: .utf8)
        expectFailure(try sop(db + ["import", "s", file]), containing: "line 1")
        expectFailure(try sop(db + ["import", "s", dir.path + "/missing.jsonl"]))
        let stores = try sop(db + ["stores"])
        #expect(stores.out.hasPrefix("s 1 "))
        #expect(try sop(db + ["check"]).status == 0)
        // check on a missing database does not create it.
        let missing = try sop(["--db", dir.path + "/nothing", "check"])
        #expect(missing.status == 2)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/nothing"))
    }

    @Test func secondProcessGetsAClearErrorUntilTheFirstCloses() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        let r = try sop(["--db", dir.db, "stores"])
        expectFailure(r, containing: "open in another process")
        try await db.close()
        #expect(try sop(["--db", dir.db, "stores"]).status == 0)
    }

    @Test func checkReportsCorruptionNamingTheFile() throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = ["--db", dir.db]
        #expect(try sop(db + ["create-store", "s", "--slot-length", "4"]).status == 0)
        var lines = ""
        for i in 0..<100 { lines += "{\"key\": \(i), \"value\": \"v\(i)\"}\n" }
        let file = dir.path + "/d.jsonl"
        try lines.write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try sop(db + ["import", "s", file]).status == 0)
        let root = dir.db + "/stores"
        let storeDir = root + "/" + (try FileManager.default.contentsOfDirectory(atPath: root).first!)
        let info = storeDir + "/storeinfo.json"
        try "garbage".write(toFile: info, atomically: false, encoding: .utf8)
        let r = try sop(db + ["check"])
        #expect(r.status == 1)
        #expect(r.out.contains("storeinfo.json"))
    }
}
