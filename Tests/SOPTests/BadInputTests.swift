import Foundation
import SOP
import Testing

/// Every bad input gets a clear SOPError and changes nothing.
@Suite struct BadInputTests {
    func populated(_ dir: TempDir) async throws {
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let s = try await tx.createStore("people", key: String.self, value: Int.self, options: StoreOptions(slotLength: 4))
            for i in 0..<200 { try await s.add("p\(i)", i) }
        }
        try await db.close()
    }

    func storeDir(_ dir: TempDir) throws -> String {
        let root = dir.db + "/stores"
        let name = try FileManager.default.contentsOfDirectory(atPath: root).first { $0.hasPrefix("people.") }!
        return root + "/" + name
    }

    func snapshot(_ path: String) throws -> [String: Data] {
        var out: [String: Data] = [:]
        let e = FileManager.default.enumerator(atPath: path)!
        while let f = e.nextObject() as? String {
            var isDir: ObjCBool = false
            let full = path + "/" + f
            if FileManager.default.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue, f != "LOCK" {
                out[f] = try Data(contentsOf: URL(fileURLWithPath: full))
            }
        }
        return out
    }

    func intact(_ dir: TempDir) async throws {
        let db = try await Database.open(at: dir.db)
        let n = try await db.read { tx in try await tx.openStore("people", key: String.self, value: Int.self).count }
        #expect(n == 200)
        #expect(try await db.check().isClean)
        try await db.close()
    }

    @Test func badStoreNamesAndBounds() async throws {
        let dir = TempDir("bad")
        defer { dir.cleanup() }
        try await populated(dir)
        let db = try await Database.open(at: dir.db)
        for name in ["", "a/b", "..", ".hidden", "-x", "sp ace", String(repeating: "n", count: 129), "ü"] {
            await expectSOPError(.invalidArgument) {
                try await db.write { tx in _ = try await tx.store(name, key: Int.self, value: Int.self) }
            }
        }
        for slot in [-1, 0, 3, 10_001] {
            await expectSOPError(.invalidArgument) {
                try await db.write { tx in
                    _ = try await tx.createStore("ok", key: Int.self, value: Int.self, options: StoreOptions(slotLength: slot))
                }
            }
            await expectSOPError(.invalidArgument) {
                try await db.write { tx in
                    _ = try await tx.createStore("ok", key: Int.self, value: Int.self,
                                                 options: StoreOptions(slotLength: 8, internalSlotLength: slot))
                }
            }
        }
        #expect(db.stores().map(\.name) == ["people"])
        try await db.close()
        try await intact(dir)
    }

    @Test func wrongKeyOrValueTypeIsRefused() async throws {
        let dir = TempDir("bad")
        defer { dir.cleanup() }
        try await populated(dir)
        let db = try await Database.open(at: dir.db)
        let e = await expectSOPError(.typeMismatch) {
            try await db.write { tx in _ = try await tx.openStore("people", key: Int.self, value: Int.self) }
        }
        #expect(e?.message.contains("Swift.String") == true)
        await expectSOPError(.typeMismatch) {
            try await db.write { tx in _ = try await tx.openStore("people", key: String.self, value: String.self) }
        }
        await expectSOPError(.alreadyExists) {
            try await db.write { tx in _ = try await tx.createStore("people", key: String.self, value: Int.self) }
        }
        await expectSOPError(.notFound) {
            try await db.read { tx in _ = try await tx.openStore("nobody", key: String.self, value: Int.self) }
        }
        try await db.close()
        try await intact(dir)
    }

    @Test func missingDatabaseAndForeignFolder() async throws {
        let dir = TempDir("bad")
        defer { dir.cleanup() }
        var o = DatabaseOptions()
        o.createIfMissing = false
        await expectSOPError(.notFound) { _ = try await Database.open(at: dir.db, options: o) }
        #expect(!FileManager.default.fileExists(atPath: dir.db))
        try FileManager.default.createDirectory(atPath: dir.path + "/other", withIntermediateDirectories: true)
        try Data("hello".utf8).write(to: URL(fileURLWithPath: dir.path + "/other/notes.txt"))
        await expectSOPError(.invalidArgument) { _ = try await Database.open(at: dir.path + "/other") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/other") == ["notes.txt"])
    }

    /// A creation killed before database.json was written leaves the files it writes first and
    /// the temporary files of their atomic writes: the folder is still ours, and opens as a new
    /// database (the kill -9 loop of CrashMixTests hit this).
    @Test func interruptedCreationIsCompletedNotRefused() async throws {
        let dir = TempDir("bad")
        defer { dir.cleanup() }
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir.db + "/log", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: dir.db + "/stores", withIntermediateDirectories: true)
        for name in ["stores.json.tmp-990bc0f49e2b62d6", "checkpoint.json.tmp-1234", "database.json.tmp-ab"] {
            try Data("{".utf8).write(to: URL(fileURLWithPath: dir.db + "/" + name))
        }
        let db = try await Database.open(at: dir.db)
        #expect(db.stores().isEmpty)
        try await db.close()
        #expect(!(try fm.contentsOfDirectory(atPath: dir.db)).contains { $0.contains(".tmp-") })
        // A file that creation never writes still marks a foreign folder.
        let other = dir.path + "/other"
        try fm.createDirectory(atPath: other, withIntermediateDirectories: true)
        try Data("{".utf8).write(to: URL(fileURLWithPath: other + "/notes.json.tmp-1"))
        await expectSOPError(.invalidArgument) { _ = try await Database.open(at: other) }
    }

    @Test func secondOpenInTheSameProcessIsRefused() async throws {
        let dir = TempDir("bad")
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        await expectSOPError(.databaseLocked) { _ = try await Database.open(at: dir.db) }
        try await db.close()
        let again = try await Database.open(at: dir.db)
        try await again.close()
    }

    @Test func corruptRegistryBlockIsDetectedAndNothingChanges() async throws {
        let dir = TempDir("bad")
        defer { dir.cleanup() }
        try await populated(dir)
        let reg = try storeDir(dir) + "/registry-0.reg"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: reg))
        // Damage every written slot (both copies of each block) in its handle area.
        var damaged = 0
        var off = 4096
        while off + 4096 <= bytes.count {
            if bytes[off..<off + 8].contains(where: { $0 != 0 }) {
                bytes[off + 100] ^= 0xFF
                damaged += 1
            }
            off += 4096
        }
        #expect(damaged > 0)
        try bytes.write(to: URL(fileURLWithPath: reg))
        let before = try snapshot(dir.db)
        let e = await expectSOPError(.corrupt) { _ = try await Database.open(at: dir.db) }
        #expect(e?.description.contains("registry-0.reg") == true)
        #expect(try snapshot(dir.db) == before)
    }

    @Test func truncatedRegistryFileIsDetected() async throws {
        let dir = TempDir("bad")
        defer { dir.cleanup() }
        try await populated(dir)
        let reg = try storeDir(dir) + "/registry-0.reg"
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: reg))
        try h.truncate(atOffset: 4096 + 1000)
        try h.close()
        let before = try snapshot(dir.db)
        let e = await expectSOPError(.corrupt) { _ = try await Database.open(at: dir.db) }
        #expect(e?.description.contains("registry-0.reg") == true)
        #expect(try snapshot(dir.db) == before)
    }

    @Test func corruptStoreInfoIsDetected() async throws {
        let dir = TempDir("bad")
        defer { dir.cleanup() }
        try await populated(dir)
        let info = try storeDir(dir) + "/storeinfo.json"
        try Data("{\"format\": 1, \"name\": ".utf8).write(to: URL(fileURLWithPath: info))
        let before = try snapshot(dir.db)
        let e = await expectSOPError(.corrupt) { _ = try await Database.open(at: dir.db) }
        #expect(e?.description.contains("storeinfo.json") == true)
        #expect(try snapshot(dir.db) == before)
    }

    @Test func corruptNodeBlobIsReportedNamingTheFile() async throws {
        let dir = TempDir("bad")
        defer { dir.cleanup() }
        try await populated(dir)
        let log = dir.db + "/log/00000001.log"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: log))
        // Flip a byte inside the first record's payload (a node blob).
        bytes[64 + 16 + 5] ^= 0x55
        try bytes.write(to: URL(fileURLWithPath: log))
        let db = try await Database.open(at: dir.db)
        let report = try await db.check()
        #expect(!report.isClean)
        #expect(report.problems.contains { $0.contains("00000001.log") })
        try await db.close()
    }
}
