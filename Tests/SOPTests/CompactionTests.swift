import Foundation
@testable import SOP
import SOPCore
import SOPFileSystem
import Testing

/// Segment compaction: space comes back, data and invariants survive, concurrent readers and
/// writers see correct data or a retryable conflict.
@Suite struct CompactionTests {
    static func options(segment: UInt64 = 64 << 10, automatic: Bool = false) -> DatabaseOptions {
        var o = DatabaseOptions()
        o.logSegmentBytes = segment
        o.checkpointBytes = 256 << 10
        o.automaticCompaction = automatic
        o.compactionMinAgeBytes = 0   // compact as soon as a segment is sealed (the mechanism)
        o.preallocateBytes = 0
        o.registryHashMod = 8     // small registry files: the folder is mostly log
        return o
    }

    /// Bytes of the files under `path`.
    static func folderBytes(_ path: String) -> UInt64 {
        let fm = FileManager.default
        var total: UInt64 = 0
        for case let name as String in fm.enumerator(atPath: path)! {
            let attrs = try? fm.attributesOfItem(atPath: path + "/" + name)
            if attrs?[.type] as? FileAttributeType == .typeRegular { total += (attrs?[.size] as? UInt64) ?? 0 }
        }
        return total
    }

    static func value(_ i: Int, _ round: Int) -> String {
        "value \(i) of round \(round) " + String(repeating: "v", count: 80)
    }

    /// Writes `rounds` versions of keys `0..<count` in transactions of `batch` keys.
    static func load(_ db: Database, store: String = "s", count: Int, rounds: Int, batch: Int = 100,
                     options: StoreOptions = StoreOptions(slotLength: 16)) async throws {
        for r in 0..<rounds {
            var i = 0
            while i < count {
                let range = i..<min(i + batch, count)
                try await db.write { tx in
                    let s = try await tx.store(store, key: Int.self, value: String.self, options: options)
                    for k in range { try await s.upsert(k, value(k, r)) }
                }
                i = range.upperBound
            }
        }
    }

    static func expectAll(_ db: Database, store: String = "s", count: Int, round: Int,
                          sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let got = try await db.read { tx in
            var m: [Int: String] = [:]
            for try await it in try await tx.openStore(store, key: Int.self, value: String.self).range() { m[it.key] = it.value }
            return m
        }
        #expect(got.count == count, sourceLocation: sourceLocation)
        for k in 0..<count where got[k] != value(k, round) {
            Issue.record("key \(k): \(got[k] ?? "missing")", sourceLocation: sourceLocation)
            break
        }
    }

    static func expectClean(_ db: Database, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let report = try await db.check()
        #expect(report.isClean, "\(report.problems)", sourceLocation: sourceLocation)
    }

    @Test func theFolderShrinks() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db, options: Self.options())
        try await Self.load(db, count: 3000, rounds: 3)
        let before = Self.folderBytes(dir.db)
        let segmentsBefore = db.logSegments.count
        let report = try await db.compact()
        let after = Self.folderBytes(dir.db)
        #expect(!report.segmentsCompacted.isEmpty)
        #expect(report.segmentsDeleted.sorted() == report.segmentsCompacted.sorted())
        #expect(report.segmentsAwaitingDeletion.isEmpty)
        #expect(report.reclaimedBytes > 0)
        #expect(after * 2 < before, "folder \(before) -> \(after) bytes")
        #expect(db.logSegments.count < segmentsBefore)
        try await Self.expectAll(db, count: 3000, round: 2)
        try await Self.expectClean(db)
        // Nothing left to do: a second compaction copies nothing.
        let again = try await db.compact()
        #expect(again.segmentsCompacted.isEmpty && again.bytesCopied == 0, "\(again)")
        try await db.close()

        let reopened = try await Database.open(at: dir.db, options: Self.options())
        try await Self.expectAll(reopened, count: 3000, round: 2)
        try await Self.expectClean(reopened)
        // Writing on after a compaction, then compacting again.
        try await Self.load(reopened, count: 3000, rounds: 1)
        try await reopened.compact()
        try await Self.expectAll(reopened, count: 3000, round: 0)
        try await Self.expectClean(reopened)
        try await reopened.close()
    }

    @Test func automaticCompactionKeepsTheLogBounded() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db, options: Self.options(automatic: true))
        try await Self.load(db, count: 2000, rounds: 8)
        await db.waitForCompaction()
        let segments = db.logSegments
        let bytes = segments.reduce(0) { $0 + $1.bytes }
        let live = segments.reduce(0) { $0 + $1.liveNodeBytes }
        // Without compaction the log holds every version (8 rounds); with it, the sealed
        // segments are at least a quarter live, plus the current one and one just sealed.
        #expect(bytes < 4 * live + 2 * (64 << 10), "log \(bytes) bytes for \(live) live bytes in \(segments.count) segments")
        #expect(segments.count < 12, "\(segments.count) segments")
        try await Self.expectAll(db, count: 2000, round: 7)
        try await Self.expectClean(db)
        try await db.close()
    }

    @Test func automaticCompactionOfSeparateValuesAndOnOpen() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let separate = StoreOptions(slotLength: 8, valuePlacement: .separateBlob)
        do {
            // Written without automatic compaction: every version stays.
            let db = try await Database.open(at: dir.db, options: Self.options())
            try await Self.load(db, store: "v", count: 1000, rounds: 4, options: separate)
            try await db.close()
        }
        var o = Self.options(automatic: true)
        let db = try await Database.open(at: dir.db, options: o)
        let before = db.logSegments.count
        await db.waitForCompaction()   // the open looked for work and found plenty
        let after = db.logSegments
        #expect(after.count * 3 < before, "\(before) -> \(after.count) segments")
        // More rounds with automatic compaction on: the census keeps up.
        try await Self.load(db, store: "v", count: 1000, rounds: 4, options: separate)
        await db.waitForCompaction()
        // Without compaction this would be about twice the segments the open found.
        #expect(db.logSegments.count < before, "\(db.logSegments.count) segments")
        try await Self.expectAll(db, store: "v", count: 1000, round: 3)
        try await Self.expectClean(db)
        try await db.close()
        o.automaticCompaction = false
        let reopened = try await Database.open(at: dir.db, options: o)
        try await Self.expectAll(reopened, store: "v", count: 1000, round: 3)
        try await Self.expectClean(reopened)
        try await reopened.close()
    }

    @Test func automaticCompactionWaitsForSegmentsToAge() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        var o = Self.options(automatic: true)
        o.compactionMinAgeBytes = 1 << 40
        let db = try await Database.open(at: dir.db, options: o)
        try await Self.load(db, count: 2000, rounds: 3)
        await db.waitForCompaction()
        let young = db.logSegments
        #expect(young.count > 10, "\(young.count) segments")
        // An explicit compaction takes them whatever their age.
        let report = try await db.compact()
        #expect(report.segmentsDeleted.count >= young.count - 1, "\(report)")
        try await Self.expectAll(db, count: 2000, round: 2)
        try await db.close()
    }

    @Test(arguments: [ValuePlacement.separateBlob, .separateBlobWrittenAtOnce])
    func separatelyStoredValuesMove(_ placement: ValuePlacement) async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db, options: Self.options())
        let options = StoreOptions(slotLength: 8, valuePlacement: placement)
        try await Self.load(db, store: "v", count: 600, rounds: 2, options: options)
        try await Self.load(db, store: "i", count: 600, rounds: 2)
        // Values written early and never updated: their leaves get rewritten when they move.
        try await Self.load(db, store: "v", count: 300, rounds: 3, options: options)
        let report = try await db.compact()
        #expect(report.valuesMoved > 0 && report.leavesRewritten > 0, "\(report)")
        #expect(report.segmentsAwaitingDeletion.isEmpty)
        try await Self.expectClean(db)
        let got = try await db.read { tx in
            var m: [Int: String] = [:]
            for try await it in try await tx.openStore("v", key: Int.self, value: String.self).range() { m[it.key] = it.value }
            return m
        }
        for k in 0..<600 { #expect(got[k] == Self.value(k, k < 300 ? 2 : 1)) }
        try await Self.expectAll(db, store: "i", count: 600, round: 1)
        try await db.close()
        let reopened = try await Database.open(at: dir.db, options: Self.options())
        try await Self.expectClean(reopened)
        try await reopened.close()
    }

    @Test func anOpenReadTransactionKeepsReadingCorrectData() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db, options: Self.options())
        let separate = StoreOptions(slotLength: 8, valuePlacement: .separateBlob)
        try await Self.load(db, store: "i", count: 800, rounds: 3)
        try await Self.load(db, store: "v", count: 400, rounds: 3, options: separate)
        // A transaction counts as active until it (and the stores opened through it) is released.
        func readAcross() async throws -> CompactionReport {
            let reader = try await db.beginTransaction(.forReading)
            let iStore = try await reader.openStore("i", key: Int.self, value: String.self)
            let vStore = try await reader.openStore("v", key: Int.self, value: String.self)
            // Half read before the compaction (nodes fetched, values not all read yet).
            for k in stride(from: 0, to: 800, by: 2) { #expect(try await iStore.get(k) == Self.value(k, 2)) }
            for k in stride(from: 0, to: 400, by: 7) { #expect(try await vStore.get(k) == Self.value(k, 2)) }

            let report = try await db.compact()
            #expect(!report.segmentsCompacted.isEmpty)
            // The reader began before the compaction: nothing it may read is deleted.
            #expect(report.segmentsDeleted.isEmpty)
            #expect(Set(report.segmentsAwaitingDeletion) == Set(report.segmentsCompacted))

            // Everything, including what it had not fetched yet, reads correctly.
            for k in 0..<800 { #expect(try await iStore.get(k) == Self.value(k, 2)) }
            for k in 0..<400 { #expect(try await vStore.get(k) == Self.value(k, 2)) }
            // Its commit either validates or conflicts (retryable): leaves whose values moved
            // have a new version.
            do { try await reader.commit() } catch let e as SOPError { #expect(e.code == .conflict, "\(e)") }
            return report
        }
        let report = try await readAcross()

        // Once it is gone, the segments are deleted.
        let next = try await db.compact()
        #expect(Set(next.segmentsDeleted).isSuperset(of: report.segmentsCompacted), "\(next)")
        #expect(next.segmentsAwaitingDeletion.isEmpty)
        try await Self.expectAll(db, store: "i", count: 800, round: 2)
        try await Self.expectAll(db, store: "v", count: 400, round: 2)
        try await Self.expectClean(db)
        try await db.close()
    }

    @Test func aSegmentAnOpenTransactionMayWriteIntoIsNotCompacted() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db, options: Self.options())
        try await Self.load(db, store: "i", count: 1500, rounds: 2)
        let big = StoreOptions(slotLength: 8, valuePlacement: .separateBlobWrittenAtOnce)
        func writeAcross() async throws -> Int {
            // This transaction writes a value blob now (into the current segment) and commits later.
            let writer = try await db.beginTransaction()
            let s = try await writer.createStore("w", key: Int.self, value: String.self, options: big)
            try await s.add(5, "written early")
            let current = db.logSegments.first { $0.isCurrent }
            let segment = try #require(current).number
            // Other commits seal that segment.
            try await Self.load(db, store: "i", count: 1500, rounds: 2)
            #expect(db.logSegments.first { $0.number == segment }?.isCurrent == false)
            // Segments sealed before the writer began are compacted; the ones it may have
            // written into are not.
            let report = try await db.compact()
            #expect(!report.segmentsCompacted.isEmpty)
            #expect(report.segmentsCompacted.allSatisfy { $0 < segment }, "\(report) \(segment)")
            try await writer.commit()
            return segment
        }
        let segment = try await writeAcross()
        let again = try await db.compact()
        #expect(again.segmentsCompacted.contains(segment), "\(again)")
        #expect(again.segmentsAwaitingDeletion.isEmpty)
        let five = try await db.read { tx in try await tx.openStore("w", key: Int.self, value: String.self).get(5) }
        #expect(five == "written early")
        try await Self.expectAll(db, store: "i", count: 1500, round: 1)
        try await Self.expectClean(db)
        try await db.close()
        let reopened = try await Database.open(at: dir.db, options: Self.options())
        try await Self.expectClean(reopened)
        try await reopened.close()
    }

    @Test func aStaleWriterOfARewrittenLeafConflicts() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db, options: Self.options())
        let separate = StoreOptions(slotLength: 8, valuePlacement: .separateBlob)
        try await Self.load(db, store: "v", count: 400, rounds: 1, options: separate)
        try await Self.load(db, store: "i", count: 1500, rounds: 2)   // seals the values' segments

        // Reads a leaf whose values are about to move, then writes another item of it.
        func staleWrite() async throws {
            let stale = try await db.beginTransaction()
            let s = try await stale.openStore("v", key: Int.self, value: String.self)
            #expect(try await s.get(100) == Self.value(100, 0))
            let report = try await db.compact()
            #expect(report.leavesRewritten > 0)
            try await s.upsert(101, "stale writer")
            await expectSOPError(.conflict) { try await stale.commit() }
        }
        try await staleWrite()

        // Retried through `write`, it succeeds, and no value is lost once the segments go.
        try await db.write { tx in try await tx.openStore("v", key: Int.self, value: String.self).upsert(101, "fresh writer") }
        let after = try await db.compact()
        #expect(after.segmentsAwaitingDeletion.isEmpty, "\(after)")
        let got = try await db.read { tx in
            var m: [Int: String] = [:]
            for try await it in try await tx.openStore("v", key: Int.self, value: String.self).range() { m[it.key] = it.value }
            return m
        }
        for k in 0..<400 { #expect(got[k] == (k == 101 ? "fresh writer" : Self.value(k, 0))) }
        try await Self.expectClean(db)
        try await db.close()
    }

    @Test func aWriterOfAMovedNodeDoesNotConflict() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db, options: Self.options())
        try await Self.load(db, store: "i", count: 1500, rounds: 3)
        let writer = try await db.beginTransaction()
        let s = try await writer.openStore("i", key: Int.self, value: String.self)
        for k in 0..<1500 { #expect(try await s.get(k) == Self.value(k, 2)) }
        let report = try await db.compact()
        #expect(report.nodesMoved > 0 && report.leavesRewritten == 0)
        for k in 0..<1500 where k % 10 == 0 { try await s.upsert(k, "after") }
        try await writer.commit()   // node moves keep versions: no conflict
        try await db.compact()
        let got = try await db.read { tx in
            var m: [Int: String] = [:]
            for try await it in try await tx.openStore("i", key: Int.self, value: String.self).range() { m[it.key] = it.value }
            return m
        }
        for k in 0..<1500 { #expect(got[k] == (k % 10 == 0 ? "after" : Self.value(k, 2))) }
        try await Self.expectClean(db)
        try await db.close()
    }

    @Test func concurrentWritersAndCompactions() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        var o = Self.options(automatic: true)
        o.compactionThreshold = 0.8
        o.maxWriteAttempts = 200
        let db = try await Database.open(at: dir.db, options: o)
        let separate = StoreOptions(slotLength: 8, valuePlacement: .separateBlob)
        try await Self.load(db, store: "i", count: 400, rounds: 1)
        try await Self.load(db, store: "v", count: 400, rounds: 1, options: separate)
        let writers = 4, rounds = 40
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<writers {
                group.addTask {
                    var rng = SplitMix64(seed: UInt64(w + 1))
                    for r in 0..<rounds {
                        // Writer w owns the keys w * 100 ..< (w + 1) * 100; it also reads others'.
                        let keys = (0..<10).map { _ in w * 100 + Int.random(in: 0..<100, using: &rng) }
                        let reads = (Int.random(in: 0..<400, using: &rng), Int.random(in: 0..<400, using: &rng))
                        try await db.write { tx in
                            let i = try await tx.openStore("i", key: Int.self, value: String.self)
                            let v = try await tx.openStore("v", key: Int.self, value: String.self)
                            for k in keys {
                                try await i.upsert(k, "w\(w) r\(r) k\(k)")
                                try await v.upsert(k, "w\(w) r\(r) k\(k)")
                            }
                            _ = try await i.get(reads.0)
                            _ = try await v.get(reads.1)
                        }
                    }
                }
            }
            group.addTask {
                for _ in 0..<8 {
                    try await db.compact()
                    try await Task.sleep(for: .milliseconds(5))
                }
            }
            try await group.waitForAll()
        }
        await db.waitForCompaction()
        try await db.compact()
        // Every key holds the last value its writer wrote (replay each writer's choices).
        var expected: [Int: String] = [:]
        for w in 0..<writers {
            var rng = SplitMix64(seed: UInt64(w + 1))
            for r in 0..<rounds {
                for _ in 0..<10 {
                    let k = w * 100 + Int.random(in: 0..<100, using: &rng)
                    expected[k] = "w\(w) r\(r) k\(k)"
                }
                _ = Int.random(in: 0..<400, using: &rng)
                _ = Int.random(in: 0..<400, using: &rng)
            }
        }
        for name in ["i", "v"] {
            let got = try await db.read { tx in
                var m: [Int: String] = [:]
                for try await it in try await tx.openStore(name, key: Int.self, value: String.self).range() { m[it.key] = it.value }
                return m
            }
            for k in 0..<400 { #expect(got[k] == (expected[k] ?? Self.value(k, 0)), "\(name) \(k)") }
        }
        try await Self.expectClean(db)
        try await db.close()
        let reopened = try await Database.open(at: dir.db, options: Self.options())
        try await Self.expectClean(reopened)
        try await reopened.close()
    }
}
