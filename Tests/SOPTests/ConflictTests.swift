import Foundation
import SOP
import Testing

/// Two transactions at a time: the outcomes a serializable engine must give.
@Suite struct ConflictTests {
    func seeded(_ dir: TempDir, items: Int = 200, slot: Int = 8) async throws -> Database {
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let s = try await tx.createStore("k", key: Int.self, value: Int.self, options: StoreOptions(slotLength: slot))
            for i in 0..<items { try await s.add(i, 0) }
        }
        return db
    }

    func value(_ db: Database, _ k: Int) async throws -> Int? {
        try await db.read { tx in try await tx.openStore("k", key: Int.self, value: Int.self).get(k) }
    }

    @Test func sameItemSecondWriterConflicts() async throws {
        let dir = TempDir("conflict")
        defer { dir.cleanup() }
        let db = try await seeded(dir)
        let t1 = try await db.beginTransaction(), t2 = try await db.beginTransaction()
        let s1 = try await t1.openStore("k", key: Int.self, value: Int.self)
        let s2 = try await t2.openStore("k", key: Int.self, value: Int.self)
        let v1 = try await s1.get(5)!, v2 = try await s2.get(5)!
        try await s1.update(5, v1 + 1)
        try await s2.update(5, v2 + 10)
        try await t1.commit()
        let e = await expectSOPError(.conflict) { try await t2.commit() }
        #expect(e?.isRetryable == true)
        #expect(try await value(db, 5) == 1)   // no lost update, no dirty write
        try await db.close()
    }

    @Test func sameNodeDifferentKeysOneConflictsOrBothCommit() async throws {
        let dir = TempDir("conflict")
        defer { dir.cleanup() }
        let db = try await seeded(dir, items: 4, slot: 16)   // everything in the root leaf
        let t1 = try await db.beginTransaction(), t2 = try await db.beginTransaction()
        try await t1.openStore("k", key: Int.self, value: Int.self).update(0, 100)
        try await t2.openStore("k", key: Int.self, value: Int.self).update(1, 200)
        try await t1.commit()
        do {
            try await t2.commit()
            #expect(try await value(db, 1) == 200)
        } catch let e as SOPError {
            #expect(e.code == .conflict)
            #expect(try await value(db, 1) == 0)
        }
        #expect(try await value(db, 0) == 100)
        try await db.close()
    }

    @Test func differentNodesBothCommit() async throws {
        let dir = TempDir("conflict")
        defer { dir.cleanup() }
        let db = try await seeded(dir, items: 400, slot: 8)
        let t1 = try await db.beginTransaction(), t2 = try await db.beginTransaction()
        try await t1.openStore("k", key: Int.self, value: Int.self).update(3, 33)
        try await t2.openStore("k", key: Int.self, value: Int.self).update(390, 44)
        try await t1.commit()
        try await t2.commit()
        #expect(try await value(db, 3) == 33)
        #expect(try await value(db, 390) == 44)
        try await db.close()
    }

    @Test func writeSkewIsPrevented() async throws {
        let dir = TempDir("conflict")
        defer { dir.cleanup() }
        let db = try await seeded(dir, items: 400, slot: 8)
        // Constraint: v(3) + v(390) >= 0; each transaction checks the other item, then decrements its own.
        let t1 = try await db.beginTransaction(), t2 = try await db.beginTransaction()
        let s1 = try await t1.openStore("k", key: Int.self, value: Int.self)
        let s2 = try await t2.openStore("k", key: Int.self, value: Int.self)
        #expect(try await s1.get(390) == 0)
        #expect(try await s2.get(3) == 0)
        try await s1.update(3, -1)
        try await s2.update(390, -1)
        var committed = 0
        for t in [t1, t2] {
            do { try await t.commit(); committed += 1 } catch let e as SOPError { #expect(e.code == .conflict) }
        }
        #expect(committed == 1)
        let sum = try await value(db, 3)! + value(db, 390)!
        #expect(sum == -1)
        try await db.close()
    }

    @Test func readOnlyTransactionSeesNoNonRepeatableRead() async throws {
        let dir = TempDir("conflict")
        defer { dir.cleanup() }
        let db = try await seeded(dir)
        let r = try await db.beginTransaction(.forReading)
        let rs = try await r.openStore("k", key: Int.self, value: Int.self)
        #expect(try await rs.get(7) == 0)
        try await db.write { tx in try await tx.openStore("k", key: Int.self, value: Int.self).update(7, 70) }
        #expect(try await rs.get(7) == 0)   // repeatable within the transaction
        await expectSOPError(.conflict) { try await r.commit() }
        // Writes in a read transaction are refused.
        let r2 = try await db.beginTransaction(.forReading)
        await expectSOPError(.invalidState) {
            _ = try await r2.openStore("k", key: Int.self, value: Int.self).add(1000, 1)
        }
        try await db.close()
    }

    /// The commit-time check of a read transaction is skipped only while no handle changed
    /// since it began: a commit elsewhere in the tree forces the per-node check, which passes.
    @Test func readTransactionChecksNodesOnlyAfterOtherCommits() async throws {
        let dir = TempDir("conflict")
        defer { dir.cleanup() }
        let db = try await seeded(dir, items: 400, slot: 8)
        let quiet = try await db.beginTransaction(.forReading)
        #expect(try await quiet.openStore("k", key: Int.self, value: Int.self).get(3) == 0)
        try await quiet.commit()
        let r = try await db.beginTransaction(.forReading)
        #expect(try await r.openStore("k", key: Int.self, value: Int.self).get(3) == 0)
        try await db.write { tx in try await tx.openStore("k", key: Int.self, value: Int.self).update(399, 1) }
        try await r.commit()   // a different leaf changed: no conflict
        let r2 = try await db.beginTransaction(.forReading)
        #expect(try await r2.openStore("k", key: Int.self, value: Int.self).get(399) == 1)
        try await db.write { tx in try await tx.openStore("k", key: Int.self, value: Int.self).update(399, 2) }
        await expectSOPError(.conflict) { try await r2.commit() }
        try await db.close()
    }

    @Test func countReadIsValidated() async throws {
        let dir = TempDir("conflict")
        defer { dir.cleanup() }
        let db = try await seeded(dir, items: 400, slot: 8)
        let t1 = try await db.beginTransaction()
        let s1 = try await t1.openStore("k", key: Int.self, value: Int.self)
        #expect(s1.count == 400)
        try await s1.add(1000, 1)
        try await db.write { tx in try await tx.openStore("k", key: Int.self, value: Int.self).add(2000, 1) }
        await expectSOPError(.conflict) { try await t1.commit() }
        // Without reading the count, inserts in different nodes merge their counts.
        let a = try await db.beginTransaction(), b = try await db.beginTransaction()
        try await a.openStore("k", key: Int.self, value: Int.self).add(-5, 1)
        try await b.openStore("k", key: Int.self, value: Int.self).add(5000, 1)
        try await a.commit()
        try await b.commit()
        #expect(db.stores().first?.count == 403)
        #expect(try await db.check().isClean)
        try await db.close()
    }

    @Test func concurrentStoreCreationOneWins() async throws {
        let dir = TempDir("conflict")
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        let t1 = try await db.beginTransaction(), t2 = try await db.beginTransaction()
        try await t1.store("new", key: Int.self, value: Int.self).add(1, 1)
        try await t2.store("new", key: Int.self, value: Int.self).add(2, 2)
        try await t1.commit()
        await expectSOPError(.conflict) { try await t2.commit() }
        #expect(db.stores().first?.count == 1)
        try await db.close()
    }

    @Test func twoPhaseCommitWithOutsideParticipant() async throws {
        let dir = TempDir("conflict")
        defer { dir.cleanup() }
        let db = try await seeded(dir)
        let t = try await db.beginTransaction()
        try await t.openStore("k", key: Int.self, value: Int.self).update(1, 11)
        try await t.phase1Commit()
        // While prepared, a conflicting writer cannot commit.
        let other = try await db.beginTransaction()
        try await other.openStore("k", key: Int.self, value: Int.self).update(1, 99)
        await expectSOPError(.conflict) { try await other.commit() }
        try await t.phase2Commit()
        #expect(try await value(db, 1) == 11)
        await expectSOPError(.invalidState) { try await t.phase2Commit() }
        try await db.close()
    }

    @Test func maximumDurationIsEnforced() async throws {
        let dir = TempDir("conflict")
        defer { dir.cleanup() }
        let db = try await seeded(dir)
        let t = try await db.beginTransaction(.forWriting, maxDuration: .milliseconds(50))
        let s = try await t.openStore("k", key: Int.self, value: Int.self)
        try await Task.sleep(for: .milliseconds(80))
        await expectSOPError(.timeout) { try await s.update(1, 1) }
        await expectSOPError(.timeout) { try await t.commit() }
        #expect(try await value(db, 1) == 0)
        try await db.close()
    }
}
