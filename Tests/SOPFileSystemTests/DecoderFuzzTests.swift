import Foundation
import Testing
import SOPCore
@testable import SOPFileSystem

/// Iterations per fuzz test: 2,000 by default, `SOP_FUZZ_ITERATIONS=N` for longer runs.
func fuzzIterations(default n: Int = 2000) -> Int {
    if let s = ProcessInfo.processInfo.environment["SOP_FUZZ_ITERATIONS"], let v = Int(s), v > 0 { return v }
    return n
}

/// `CommitRecordCodec.decode` — what recovery runs on every commit record in the log — on
/// random bytes, mutated valid records and every truncation of valid records: a value or an
/// `SOPError(.corrupt)`, never a crash.
@Suite struct DecoderFuzzTests {
    static func randomID(_ g: inout SplitMix64) -> SOPID {
        Int.random(in: 0..<8, using: &g) == 0 ? .zero : SOPID(high: g.next(), low: g.next())
    }

    static let names = ["people", "cm-a", "x.y_z-1", "é", "😀", "a\"b", "\u{0}", String(repeating: "n", count: 128)]

    static func randomStoreInfo(_ g: inout SplitMix64) -> StoreInfo {
        let options = StoreOptions(slotLength: [4, 8, 128, 10_000].randomElement(using: &g)!,
                                   isUnique: Bool.random(using: &g),
                                   valuePlacement: ValuePlacement.allCases.randomElement(using: &g)!,
                                   description: Bool.random(using: &g) ? "" : names.randomElement(using: &g)!)
        var info = StoreInfo(name: names.randomElement(using: &g)!, options: options, keyType: "JSONValue",
                             valueType: "JSONValue", createdAt: Int64.random(in: 0...(1 << 45), using: &g))
        info.id = randomID(&g)       // not the initializer's random IDs: the run is reproducible
        info.rootID = randomID(&g)
        info.count = Int64.random(in: 0...1_000_000, using: &g)
        info.countVersion = UInt64.random(in: 0...1000, using: &g)
        return info
    }

    static func randomRecord(_ g: inout SplitMix64) -> CommitRecord {
        var r = CommitRecord(transactionID: randomID(&g))
        for _ in 0..<Int.random(in: 0...3, using: &g) { r.storeInfos.append(randomStoreInfo(&g)) }
        for _ in 0..<Int.random(in: 0...3, using: &g) { r.droppedStores.append(randomID(&g)) }
        let store = randomID(&g)
        for _ in 0..<Int.random(in: 0...12, using: &g) {
            let logical = randomID(&g)
            if Int.random(in: 0..<4, using: &g) == 0 {
                r.handles.append(HandleChange(store: store, logicalID: logical, handle: nil))
            } else {
                let h = Handle(logicalID: logical, physicalA: randomID(&g), physicalB: randomID(&g),
                               isActiveB: Bool.random(using: &g), version: UInt32.random(in: 1...UInt32.max, using: &g),
                               workInProgress: Int64.random(in: -1...(1 << 45), using: &g), isDeleted: Bool.random(using: &g))
                r.handles.append(HandleChange(store: store, logicalID: logical, handle: h))
            }
        }
        return r
    }

    static func mutate(_ bytes: inout [UInt8], _ g: inout SplitMix64) {
        guard !bytes.isEmpty else { return }
        switch Int.random(in: 0..<6, using: &g) {
        case 0:   // flip bits
            for _ in 0..<Int.random(in: 1...4, using: &g) {
                bytes[Int.random(in: 0..<bytes.count, using: &g)] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &g)
            }
        case 1:   // overwrite a run with random bytes
            let start = Int.random(in: 0..<bytes.count, using: &g)
            for i in start..<min(bytes.count, start + Int.random(in: 1...32, using: &g)) {
                bytes[i] = UInt8.random(in: 0...255, using: &g)
            }
        case 2:   // a 4-byte window (a count or a length, maybe) set to an extreme
            let at = Int.random(in: 0..<bytes.count, using: &g)
            let v: UInt32 = [0, 1, 2, 0x7F, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF,
                             UInt32(bytes.count), UInt32(bytes.count + 1)].randomElement(using: &g)!
            for i in 0..<4 where at + i < bytes.count { bytes[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
        case 3:   // a byte that may be an op or flag set to 0, 1, 2 or 0xFF
            bytes[Int.random(in: 0..<bytes.count, using: &g)] = [0, 1, 2, 0xFF].randomElement(using: &g)!
        case 4:   // insert bytes
            let at = Int.random(in: 0...bytes.count, using: &g)
            bytes.insert(contentsOf: randomBytes(Int.random(in: 1...8, using: &g), using: &g), at: at)
        default:  // delete a run
            let start = Int.random(in: 0..<bytes.count, using: &g)
            bytes.removeSubrange(start..<min(bytes.count, start + Int.random(in: 1...16, using: &g)))
        }
    }

    /// Decodes; a success must round-trip, a failure must be `.corrupt`. Returns whether it decoded.
    @discardableResult
    static func decode(_ bytes: [UInt8]) -> Bool {
        do {
            let r = try CommitRecordCodec.decode(bytes, path: "fuzz.log", offset: 64)
            #expect(try CommitRecordCodec.decode(CommitRecordCodec.encode(r), path: "fuzz.log", offset: 64) == r)
            return true
        } catch let e as SOPError {
            #expect(e.code == .corrupt, "\(e)")
            #expect(e.message.contains("fuzz.log"), "the error names the file: \(e)")
            return false
        } catch {
            Issue.record("not an SOPError: \(error)")
            return false
        }
    }

    @Test func commitRecordsNeverCrash() throws {
        var g = SplitMix64(seed: 31)
        var values = 0, errors = 0, truncations = 0
        for iteration in 0..<fuzzIterations() {
            let record = Self.randomRecord(&g)
            let valid = CommitRecordCodec.encode(record)
            #expect(try CommitRecordCodec.decode(valid, path: "fuzz.log", offset: 64) == record)
            // Every strict prefix is refused (for some records; one random cut for the others),
            // and so are trailing bytes.
            let cuts = iteration % 20 == 0 ? Array(0..<valid.count) : [Int.random(in: 0..<valid.count, using: &g)]
            for cut in cuts {
                #expect(!Self.decode(Array(valid[..<cut])), "a record truncated to \(cut) of \(valid.count) bytes decoded")
                truncations += 1
            }
            #expect(!Self.decode(valid + randomBytes(Int.random(in: 1...8, using: &g), using: &g)))

            var bytes: [UInt8]
            switch iteration % 4 {
            case 0:   // random bytes, half of them with the right version byte
                bytes = randomBytes(Int.random(in: 0...400, using: &g), using: &g)
                if !bytes.isEmpty && Bool.random(using: &g) { bytes[0] = CommitRecordCodec.version }
            default:  // a valid record, mutated
                bytes = valid
                for _ in 0..<Int.random(in: 1...3, using: &g) { Self.mutate(&bytes, &g) }
            }
            if Self.decode(bytes) { values += 1 } else { errors += 1 }
        }
        print("commit records: \(values) mutated inputs decoded, \(errors) refused, \(truncations) truncations refused")
        #expect(values > 0 && errors > 0)
    }
}
