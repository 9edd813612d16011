import Foundation
import SOP
import Testing

/// Random operations through transactions, with random rollbacks and reopens, against a
/// sorted-array oracle; invariants checked after every transaction.
@Suite struct TransactionModelTests {
    struct Entry: Equatable {
        var key: Int
        var value: Int
    }

    static let cases: [(seed: UInt64, slot: Int, unique: Bool)] = (0..<13).map { (i: Int) -> (seed: UInt64, slot: Int, unique: Bool) in
        let seed = UInt64(100 + i)
        let slot = 4 + i
        let unique = i % 3 != 2
        return (seed: seed, slot: slot, unique: unique)
    }

    @Test(arguments: cases)
    func randomOperationsMatchTheOracle(_ c: (seed: UInt64, slot: Int, unique: Bool)) async throws {
        let dir = TempDir("model")
        defer { dir.cleanup() }
        var rng = SplitMix64(seed: c.seed)
        var oracle: [Entry] = []   // sorted by key; duplicates in insertion order
        var db = try await Database.open(at: dir.db)
        let options = StoreOptions(slotLength: c.slot, isUnique: c.unique)
        var ops = 0
        for round in 0..<60 {
            let rollback = Int.random(in: 0..<5, using: &rng) == 0
            var shadow = oracle
            let tx = try await db.beginTransaction()
            let s = try await tx.store("m", key: Int.self, value: Int.self, options: options)
            for _ in 0..<Int.random(in: 1...40, using: &rng) {
                ops += 1
                let k = Int.random(in: 0..<150, using: &rng)
                let v = Int.random(in: 0..<1_000_000, using: &rng)
                let lower = shadow.firstIndex { $0.key >= k } ?? shadow.count
                let exists = lower < shadow.count && shadow[lower].key == k
                switch Int.random(in: 0..<10, using: &rng) {
                case 0, 1, 2:
                    let added = try await s.add(k, v)
                    #expect(added == (!c.unique || !exists))
                    if added {
                        let upper = shadow.firstIndex { $0.key > k } ?? shadow.count
                        shadow.insert(Entry(key: k, value: v), at: upper)
                    }
                case 3:
                    let added = try await s.upsert(k, v)
                    #expect(added == !exists)
                    if exists { shadow[lower].value = v } else { shadow.insert(Entry(key: k, value: v), at: lower) }
                case 4:
                    #expect(try await s.update(k, v) == exists)
                    if exists { shadow[lower].value = v }
                case 5, 6:
                    #expect(try await s.remove(k) == exists)
                    if exists { shadow.remove(at: lower) }
                case 7:
                    #expect(try await s.find(k) == exists)
                    if lower < shadow.count {
                        #expect(s.currentKey == shadow[lower].key)
                        #expect(try await s.currentValue() == shadow[lower].value)
                    } else {
                        #expect(s.currentKey == nil)
                    }
                case 8:
                    let hi = k + Int.random(in: 0..<40, using: &rng)
                    var got: [Entry] = []
                    for try await it in s.range(from: k, to: hi) { got.append(Entry(key: it.key, value: it.value)) }
                    #expect(got == shadow.filter { $0.key >= k && $0.key <= hi })
                default:
                    let hi = k + Int.random(in: 0..<40, using: &rng)
                    var got: [Entry] = []
                    for try await it in s.range(from: k, to: hi, descending: true) {
                        got.append(Entry(key: it.key, value: it.value))
                    }
                    #expect(got == Array(shadow.filter { $0.key >= k && $0.key <= hi }.reversed()))
                }
            }
            #expect(s.count == Int64(shadow.count))
            try await s.checkInvariants()
            if rollback {
                await tx.rollback()
            } else {
                try await tx.commit()
                oracle = shadow
            }
            // Committed state as a fresh transaction sees it.
            try await db.read { tx in
                guard tx.storeNames().contains("m") else {
                    #expect(oracle.isEmpty)
                    return
                }
                let s = try await tx.openStore("m", key: Int.self, value: Int.self)
                try await s.checkInvariants()
                var all: [Entry] = []
                for try await it in s.range() { all.append(Entry(key: it.key, value: it.value)) }
                #expect(all == oracle)
            }
            if round % 15 == 14 {
                try await db.close()
                db = try await Database.open(at: dir.db)
            }
        }
        #expect(ops > 500)
        let report = try await db.check()
        #expect(report.isClean, "\(report.problems)")
        try await db.close()
    }
}
