import Testing
import SOPCore
@testable import SOPFileSystem

@Suite struct LogSegmentTests {
    private func payload(_ i: Int) -> [UInt8] {
        (0..<(i * 37 % 300)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
    }

    private func collect(_ log: LogSegment, from: UInt64 = 64) throws -> (records: [(UInt64, UInt8, [UInt8])], end: UInt64) {
        var out: [(UInt64, UInt8, [UInt8])] = []
        let end = try log.scan(from: from) { out.append(($0, $1, $2)) }
        return (out, end)
    }

    @Test func appendReadAndScan() throws {
        try withTempDir { dir in
            let path = dir.file("log-1.seg")
            let log = try LogSegment.create(path: path, number: 1)
            #expect(log.end == 64)
            #expect(log.number == 1 && log.path == path)
            var offsets: [UInt64] = []
            for i in 0..<50 { offsets.append(try log.append(kind: UInt8(i % 4), payload: payload(i))) }
            let batch = try log.appendBatch((50..<60).map { (kind: UInt8(9), payload: payload($0)) })
            offsets += batch
            #expect(try log.appendBatch([]) == [])
            #expect(offsets.first == 64)
            #expect(offsets.allSatisfy { $0 % 8 == 0 })
            for (i, offset) in offsets.enumerated() {
                let kind: UInt8 = i < 50 ? UInt8(i % 4) : 9
                #expect(try log.readRecord(at: offset) == payload(i))
                #expect(try log.readRecord(at: offset, expectedKind: kind) == payload(i))
                #expect(try log.readRecord(at: offset, payloadLength: payload(i).count, expectedKind: kind) == payload(i))
            }
            #expect(throws: SOPError.self) { try log.readRecord(at: offsets[1], expectedKind: 3) }
            #expect(throws: SOPError.self) { try log.readRecord(at: offsets[2], payloadLength: 5) }
            #expect(throws: SOPError.self) { try log.readRecord(at: offsets[2] + 8) }
            #expect(throws: SOPError.self) { try log.readRecord(at: log.end) }
            #expect(throws: SOPError.self) { try log.readRecord(at: 0) }
            let scanned = try collect(log)
            #expect(scanned.end == log.end)
            #expect(scanned.records.map(\.0) == offsets)
            #expect(scanned.records.map(\.2) == (0..<60).map(payload))
            // Scan from the middle.
            #expect(try collect(log, from: offsets[30]).records.count == 30)
            try log.dataSync()
            log.close()

            let reopened = try LogSegment.open(path: path)
            #expect(reopened.number == 1)
            #expect(reopened.end == scanned.end)
            #expect(try collect(reopened).records.count == 60)
            #expect(throws: SOPError.self) { try LogSegment.create(path: path, number: 1) }
        }
    }

    @Test func largeRecordsSpanScanChunks() throws {
        try withTempDir { dir in
            let log = try LogSegment.create(path: dir.file("big"), number: 2)
            var g = SplitMix64(seed: 5)
            let sizes = [10, 700_000, 3_000_000, 5, 1 << 20, 0]
            let payloads = sizes.map { randomBytes($0, using: &g) }
            for p in payloads { _ = try log.append(kind: 1, payload: p) }
            let scanned = try collect(log)
            #expect(scanned.records.map(\.2) == payloads)
            #expect(scanned.end == log.end)
        }
    }

    @Test func scanStopsAtATornTailAndAppendsContinue() throws {
        try withTempDir { dir in
            let path = dir.file("log")
            let log = try LogSegment.create(path: path, number: 7)
            var offsets: [UInt64] = []
            for i in 0..<10 { offsets.append(try log.append(kind: 1, payload: payload(i + 1))) }
            let goodEnd = log.end
            let raw = try SOPFile.open(path, create: false)
            defer { raw.close() }

            // 1. Truncated mid-record: the last record is cut.
            try raw.truncate(to: offsets[9] + 20)
            var s = try collect(log)
            #expect(s.records.count == 9)
            #expect(s.end == offsets[9])
            try log.truncate(to: s.end)
            #expect(log.end == offsets[9])
            let o = try log.append(kind: 2, payload: payload(10))
            #expect(o == offsets[9])
            s = try collect(log)
            #expect(s.records.count == 10 && s.end == goodEnd && s.records.last?.1 == 2)

            // 2. A flipped payload byte in record 6: scan stops before it.
            let flipAt = offsets[6] + 16 + 3
            var byte = try raw.read(at: flipAt, count: 1)
            byte[0] ^= 0x40
            try raw.write(byte, at: flipAt)
            s = try collect(log)
            #expect(s.records.count == 6 && s.end == offsets[6])
            #expect(throws: SOPError.self) { try log.readRecord(at: offsets[6]) }
            do {
                _ = try log.readRecord(at: offsets[6], payloadLength: payload(7).count)
                Issue.record("corrupt record was read")
            } catch let e as SOPError {
                #expect(e.code == .corrupt && e.path == path)
                #expect(e.message.contains("\(offsets[6])") && e.message.contains(path))
            }
            try log.truncate(to: s.end)
            #expect(try log.append(kind: 3, payload: [1, 2, 3]) == offsets[6])
            let endAfter = log.end

            // 3. Garbage after the last record.
            var g = SplitMix64(seed: 6)
            try raw.write(randomBytes(5000, using: &g), at: endAfter)
            s = try collect(log)
            #expect(s.records.count == 7 && s.end == endAfter)
            #expect(s.records.last?.2 == [1, 2, 3])
            // Zeros after the last record (preallocated / lost write) as well.
            try raw.write([UInt8](repeating: 0, count: 4096), at: endAfter)
            #expect(try collect(log).end == endAfter)
            // A torn header (fewer than 16 bytes left).
            try raw.truncate(to: endAfter + 10)
            #expect(try collect(log).end == endAfter)

            try log.truncate(to: endAfter)
            let next = try log.append(kind: 4, payload: Array("after".utf8))
            s = try collect(log)
            #expect(s.records.count == 8 && s.records.last?.0 == next && s.records.last?.2 == Array("after".utf8))
            #expect(throws: SOPError.self) { try log.truncate(to: 10) }
        }
    }

    @Test func scanPropagatesVisitorErrors() throws {
        try withTempDir { dir in
            let log = try LogSegment.create(path: dir.file("log"), number: 0)
            _ = try log.append(kind: 1, payload: [1])
            _ = try log.append(kind: 1, payload: [2])
            var seen = 0
            #expect(throws: SOPError.self) {
                _ = try log.scan(from: 64) { _, _, _ in
                    seen += 1
                    throw SOPError(.internalError, "stop")
                }
            }
            #expect(seen == 1)
            #expect(throws: SOPError.self) { try log.scan(from: 0) { _, _, _ in } }
        }
    }

    @Test func headerValidation() throws {
        try withTempDir { dir in
            let path = dir.file("log")
            try LogSegment.create(path: path, number: 5).close()
            let f = try SOPFile.open(path, create: false)
            defer { f.close() }
            let original = try f.read(at: 0, count: 64)
            func expectOpen(_ code: SOPError.Code) {
                do {
                    _ = try LogSegment.open(path: path)
                    Issue.record("open succeeded")
                } catch let e as SOPError {
                    #expect(e.code == code && e.path == path)
                } catch { Issue.record("unexpected \(error)") }
            }
            var bad = original; bad[12] ^= 1
            try f.write(bad, at: 0); expectOpen(.corrupt)
            bad = original; bad[1] = 0
            try f.write(bad, at: 0); expectOpen(.corrupt)
            bad = original; bad[8] = 9
            bad.withUnsafeMutableBytes { b in
                b.storeLE(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[..<60])), at: 60)
            }
            try f.write(bad, at: 0); expectOpen(.unsupportedFormat)
            try f.write(original, at: 0)
            #expect(try LogSegment.open(path: path).number == 5)
            try f.truncate(to: 30); expectOpen(.corrupt)
        }
    }
}
