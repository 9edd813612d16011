import Foundation
@testable import SOP
import SOPCore
import SOPFileSystem
import Testing

/// Crash safety of compaction: a crash (process kill or power loss) at every compaction
/// failpoint and at random I/O operations during a compaction, then recovery: every
/// acknowledged value is there, `check` is clean (no reference into a missing or retired
/// segment), retired segment files are gone, and compacting again works.
@Suite struct CompactionCrashTests {
    typealias State = [String: [Int: String]]

    static let path = "/sim/db"
    static let stores: [(name: String, options: StoreOptions)] = [
        ("a", StoreOptions(slotLength: 4)),
        ("b", StoreOptions(slotLength: 4, valuePlacement: .separateBlob)),
    ]

    static func options(_ fs: SimulatedFileSystem, _ fp: Failpoints = Failpoints()) -> DatabaseOptions {
        var o = DatabaseOptions()
        o.fileIO = fs
        o.failpoints = fp
        o.checkpointBytes = 16 << 10
        o.logSegmentBytes = 4 << 10     // many small segments
        o.registryHashMod = 4
        o.preallocateBytes = 4 << 10
        o.automaticCompaction = false   // compactions happen where the test says
        return o
    }

    /// Transactions that leave many mostly-dead segments; returns the state they make.
    static func setup(_ db: Database) async throws -> State {
        var state: State = [:]
        var rng = SplitMix64(seed: 5)
        for t in 0..<24 {
            var ops: [(String, Int, String?)] = []
            for i in 0..<8 {
                let store = stores[Int.random(in: 0..<2, using: &rng)].name
                let key = Int.random(in: 0..<40, using: &rng)
                ops.append((store, key, t > 8 && Int.random(in: 0..<5, using: &rng) == 0 ? nil : "t\(t)-\(i)"))
            }
            let batch = ops
            try await db.write { tx in
                for (name, key, value) in batch {
                    let options = stores.first { $0.name == name }!.options
                    let s = try await tx.store(name, key: Int.self, value: String.self, options: options)
                    if let value { try await s.upsert(key, value) } else { try await s.remove(key) }
                }
            }
            for (name, key, value) in batch { state[name, default: [:]][key] = value }
        }
        return state
    }

    static func read(_ db: Database) async throws -> State {
        try await db.read { tx in
            var out: State = [:]
            for name in tx.storeNames() {
                let s = try await tx.openStore(name, key: Int.self, value: String.self)
                var m: [Int: String] = [:]
                for try await it in s.range() { m[it.key] = it.value }
                #expect(Int64(m.count) == s.count)
                out[name] = m
            }
            return out
        }
    }

    /// Recovers the files a crash left and checks everything.
    static func verify(_ fs: SimulatedFileSystem, _ expected: State, _ what: String) async throws {
        let db = try await Database.open(at: path, options: options(fs))
        #expect(try await read(db) == expected, "\(what): data after recovery")
        let report = try await db.check()
        #expect(report.isClean, "\(what): \(report.problems)")
        // Retired segments were deleted on open; every file in log/ is a live segment.
        let files = try fs.list(path + "/log").filter { $0.hasSuffix(".log") }.compactMap { Int($0.dropLast(4)) }
        #expect(Set(files) == Set(db.logSegments.map(\.number)), "\(what): log files \(files)")
        #expect(db.logSegments.allSatisfy { !$0.isRetired }, "\(what)")
        // Compaction works again and changes nothing.
        let again = try await db.compact()
        #expect(again.segmentsAwaitingDeletion.isEmpty, "\(what): \(again)")
        #expect(try await read(db) == expected, "\(what): data after compacting again")
        let report2 = try await db.check()
        #expect(report2.isClean, "\(what) (compacted again): \(report2.problems)")
        try await db.close()
        // And once more from what that left.
        let db2 = try await Database.open(at: path, options: options(fs))
        #expect(try await read(db2) == expected, "\(what): data after the second reopen")
        try await db2.close()
    }

    /// The failpoints a compaction passes: its own, and the commit and checkpoint steps of its
    /// commit.
    static let failpoints = Failpoints.all.filter { $0.hasPrefix("compaction.") } + [
        "blob.beforeWrite", "commit.afterRecordWrite", "commit.afterRecordSync", "commit.afterApply",
        "checkpoint.begin", "checkpoint.betweenRegistrySlots", "checkpoint.afterRegistryWrite", "checkpoint.afterPointer",
    ]

    @Test(arguments: failpoints)
    func crashAtFailpoint(_ name: String) async throws {
        var rng = SplitMix64(seed: UInt64(name.utf8.reduce(0) { $0 &* 31 &+ Int($1) }.magnitude % 10_000))
        for action in [Failpoints.Action.crash, .error] {
            let fs = SimulatedFileSystem()
            let fp = Failpoints()
            let db = try await Database.open(at: Self.path, options: Self.options(fs, fp))
            let expected = try await Self.setup(db)
            #expect(db.logSegments.count > 5)
            fp.set(name, action)
            var tripped = false
            do {
                try await db.compact()
            } catch is FailpointCrash {
                tripped = true
            } catch let e as SOPError {
                #expect(e.code == .io, "\(name): \(e)")
                tripped = true
            }
            #expect(tripped, "\(name)=\(action) did not trip during the compaction")
            fs.freeze()
            let what = "\(name)=\(action)"
            try await Self.verify(fs.afterProcessCrash(), expected, what + " (kill -9)")
            try await Self.verify(fs.afterPowerLoss(using: &rng, keepSomeUnsynced: true), expected, what + " (power loss)")
            try await Self.verify(fs.afterPowerLoss(using: &rng, keepSomeUnsynced: false), expected,
                                  what + " (power loss, nothing unsynced)")
        }
    }

    @Test func crashAtRandomOperationsDuringCompaction() async throws {
        // Count a compaction's file operations once.
        let probe = SimulatedFileSystem()
        let pdb = try await Database.open(at: Self.path, options: Self.options(probe))
        _ = try await Self.setup(pdb)
        let start = probe.operationCount
        let report = try await pdb.compact()
        let total = probe.operationCount - start
        #expect(!report.segmentsDeleted.isEmpty && report.valuesMoved > 0, "\(report)")
        try await pdb.close()
        try #require(total > 10)

        var rng = SplitMix64(seed: 17)
        var failed = 0
        for cut in 0..<60 {
            let fs = SimulatedFileSystem()
            let db = try await Database.open(at: Self.path, options: Self.options(fs))
            let expected = try await Self.setup(db)
            let n = Int.random(in: 1...total, using: &rng)
            fs.failOperation(n, with: [.eio, .enospc, .shortWrite][cut % 3])   // the power goes out here
            do { try await db.compact() } catch let e as SOPError {
                #expect(e.code == .io, "operation \(n): \(e)")
                failed += 1
            }
            fs.freeze()
            let what = "operation \(n) of \(total)"
            try await Self.verify(fs.afterProcessCrash(), expected, what + " (kill -9)")
            try await Self.verify(fs.afterPowerLoss(using: &rng, keepSomeUnsynced: cut % 2 == 0), expected,
                                  what + " (power loss)")
        }
        #expect(failed > 40)
    }

    @Test func crashWhileRetiredSegmentsAwaitAnOpenReader() async throws {
        var rng = SplitMix64(seed: 3)
        let fs = SimulatedFileSystem()
        let db = try await Database.open(at: Self.path, options: Self.options(fs))
        let expected = try await Self.setup(db)
        let reader = try await db.beginTransaction(.forReading)
        _ = try await reader.openStore("a", key: Int.self, value: String.self).get(1)
        let report = try await db.compact()
        #expect(!report.segmentsAwaitingDeletion.isEmpty)
        // More commits after the compaction, then the crash with the segments still on disk.
        try await db.write { tx in try await tx.openStore("a", key: Int.self, value: String.self).upsert(1000, "after") }
        var after = expected
        after["a", default: [:]][1000] = "after"
        fs.freeze()
        try await Self.verify(fs.afterProcessCrash(), after, "kill -9 with retired segments")
        try await Self.verify(fs.afterPowerLoss(using: &rng, keepSomeUnsynced: true), after, "power loss with retired segments")
        await reader.rollback()
    }
}
