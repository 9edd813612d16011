import Foundation
import Testing
import SOPCore
@testable import SOPFileSystem

/// Commit sequence numbers, the checkpoint's offset map (and its old single-pointer form),
/// shared folder locks and exclusive segment claims (clustered mode's storage side).
@Suite struct SequenceTests {
    func info(_ name: String = "s", count: Int64) -> StoreInfo {
        var i = StoreInfo(name: name, options: StoreOptions(), keyType: "K", valueType: "V", createdAt: 1)
        i.id = SOPID(high: 7, low: 7)
        i.count = count
        return i
    }

    @Test func version1RecordsDecodeWithoutSequenceAndVersion2RoundTrips() throws {
        var r = CommitRecord(transactionID: SOPID(high: 1, low: 2), storeInfos: [info(count: 3)])
        let v1 = CommitRecordCodec.encode(r)
        #expect(v1[0] == 1)
        #expect(try CommitRecordCodec.decode(v1, path: "t", offset: 64).sequence == nil)
        r.sequence = 0x0102_0304_0506_0708
        let v2 = CommitRecordCodec.encode(r)
        #expect(v2[0] == 2)
        #expect(try CommitRecordCodec.decode(v2, path: "t", offset: 64) == r)
    }

    /// Store infos are encoded once with JSONEncoder, then by splicing the count and its
    /// version into the template: every variation decodes to the info encoded, and any other
    /// change of the info makes a new template.
    @Test func storeInfoTemplatesRoundTrip() throws {
        var base = info("templated", count: 0)
        base.id = SOPID(high: 9, low: 9)
        for (count, version) in [(Int64(0), UInt64(0)), (1, 1), (-5, 2), (Int64.max, UInt64.max), (Int64.min, 7), (42, 3)] {
            var i = base
            i.count = count
            i.countVersion = version
            var r = CommitRecord(transactionID: SOPID(high: 1, low: 2), storeInfos: [i])
            r.sequence = 9
            let decoded = try CommitRecordCodec.decode(CommitRecordCodec.encode(r), path: "t", offset: 64)
            #expect(decoded == r)
            let reference = JSONEncoder()
            reference.outputFormatting = [.sortedKeys]
            #expect(CommitRecordCodec.storeInfoJSON(i) == Array(try reference.encode(i)))
        }
        var renamed = base
        renamed.name = "other"
        renamed.count = 3
        var r = CommitRecord(transactionID: SOPID(high: 1, low: 2), storeInfos: [renamed])
        r.sequence = 10
        #expect(try CommitRecordCodec.decode(CommitRecordCodec.encode(r), path: "t", offset: 64) == r)
    }

    @Test func commitsGetSequencesAndCheckpointIsAMap() async throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let s = try await FileStorage.open(at: dir.path)
        for c in 1...3 {
            try await s.commit { _ in CommitRecord(transactionID: .random(), storeInfos: [self.info(count: Int64(c))]) }
        }
        try await s.close()
        let cp = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.path + "/checkpoint.json"))) as! [String: Any]
        #expect(cp["format"] as? Int == 2)
        #expect(cp["sequence"] as? Int == 3)
        #expect((cp["segments"] as? [String: Any])?["1"] != nil)
        let again = try await FileStorage.open(at: dir.path)
        #expect(again.storeInfo(named: "s")?.count == 3)
        try await again.close()
    }

    @Test func oldSinglePointerCheckpointIsStillRead() async throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let s = try await FileStorage.open(at: dir.path)
        try await s.commit { _ in CommitRecord(transactionID: .random(), storeInfos: [self.info(count: 9)]) }
        try await s.close()
        // As an earlier build would have left it before its checkpoint: replay from the start.
        try FileStorage.writeJSON(["format": 1, "segment": 1, "offset": 64], to: dir.path + "/checkpoint.json", PosixFileIO())
        let again = try await FileStorage.open(at: dir.path)
        #expect(again.storeInfo(named: "s")?.count == 9)
        try await again.close()
    }

    @Test func recoveryAppliesRecordsInSequenceOrderAcrossSegments() async throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let s = try await FileStorage.open(at: dir.path)
        try await s.close()
        // Segment 1 holds sequence 2, segment 2 sequence 1: log order would end at count 5.
        let seg1 = try LogSegment.open(path: dir.path + "/log/00000001.log")
        let seg2 = try LogSegment.createExclusive(path: dir.path + "/log/00000002.log", number: 2)
        var late = CommitRecord(transactionID: .random(), storeInfos: [info(count: 7)])
        late.sequence = 2
        var early = CommitRecord(transactionID: .random(), storeInfos: [info(count: 5)])
        early.sequence = 1
        _ = try seg1.append(kind: FileStorage.RecordKind.commit.rawValue, payload: CommitRecordCodec.encode(late))
        _ = try seg2.append(kind: FileStorage.RecordKind.commit.rawValue, payload: CommitRecordCodec.encode(early))
        try seg1.dataSync()
        try seg2.dataSync()
        seg1.close()
        seg2.close()
        let again = try await FileStorage.open(at: dir.path)
        #expect(again.storeInfo(named: "s")?.count == 7)
        // The next commit follows the highest sequence.
        try await again.commit { _ in CommitRecord(transactionID: .random(), storeInfos: [self.info(count: 8)]) }
        try await again.close()
        let cp = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.path + "/checkpoint.json"))) as! [String: Any]
        #expect(cp["sequence"] as? Int == 3)
    }

    @Test func sharedLocksExcludeExclusiveOnesBothWays() throws {
        try withTempDir { dir in
            let a = try DirectoryLock.acquire(dir.path, shared: true)
            let b = try DirectoryLock.acquire(dir.path, shared: true)
            #expect(throws: SOPError.self) { _ = try DirectoryLock.acquire(dir.path) }
            do {
                _ = try DirectoryLock.acquire(dir.path)
            } catch let e as SOPError {
                #expect(e.code == .databaseLocked)
                #expect(e.message.contains("clustered"))
            }
            a.release()
            b.release()
            let x = try DirectoryLock.acquire(dir.path)
            #expect(throws: SOPError.self) { _ = try DirectoryLock.acquire(dir.path, shared: true) }
            x.release()
        }
    }

    @Test func segmentNumbersAreClaimedExclusively() throws {
        try withTempDir { dir in
            let p = dir.path + "/00000005.log"
            let first = try LogSegment.createExclusive(path: p, number: 5)
            do {
                _ = try LogSegment.createExclusive(path: p, number: 5)
                Issue.record("a second claim of the same number succeeded")
            } catch let e as SOPError {
                #expect(e.code == .alreadyExists)
            }
            first.close()
            #expect(try FileSystem.list(dir.path) == ["00000005.log"])   // no temporary left
        }
    }
}
