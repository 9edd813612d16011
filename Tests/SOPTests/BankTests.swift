import Foundation
import SOP
import Testing

/// 8 concurrent tasks × 200 transfers: the total stays constant and every committed
/// transfer is visible (its journal entry exists and balances agree with the journal).
@Suite struct BankTests {
    struct Transfer: Codable, Sendable {
        var from: Int
        var to: Int
        var amount: Int
    }

    @Test func concurrentTransfersKeepTheTotal() async throws {
        let dir = TempDir("bank")
        defer { dir.cleanup() }
        let accounts = 20, initial = 1_000
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let a = try await tx.createStore("accounts", key: Int.self, value: Int.self, options: StoreOptions(slotLength: 4))
            for i in 0..<accounts { try await a.add(i, initial) }
            _ = try await tx.createStore("journal", key: SOPID.self, value: Transfer.self, options: StoreOptions(slotLength: 16))
        }
        let committed = try await withThrowingTaskGroup(of: Int.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    var rng = SplitMix64(seed: UInt64(worker + 1))
                    var done = 0
                    for _ in 0..<200 {
                        let from = Int.random(in: 0..<accounts, using: &rng)
                        var to = Int.random(in: 0..<accounts, using: &rng)
                        if to == from { to = (to + 1) % accounts }
                        let amount = Int.random(in: 1...50, using: &rng)
                        let moved = try await db.write(maxAttempts: 1000) { tx -> Bool in
                            let a = try await tx.openStore("accounts", key: Int.self, value: Int.self)
                            let j = try await tx.openStore("journal", key: SOPID.self, value: Transfer.self)
                            let fb = try await a.get(from)!, tb = try await a.get(to)!
                            guard fb >= amount else { return false }
                            try await a.update(from, fb - amount)
                            try await a.update(to, tb + amount)
                            try await j.add(.timeOrdered(), Transfer(from: from, to: to, amount: amount))
                            return true
                        }
                        if moved { done += 1 }
                    }
                    return done
                }
            }
            var total = 0
            for try await n in group { total += n }
            return total
        }
        try await db.read { tx in
            let a = try await tx.openStore("accounts", key: Int.self, value: Int.self)
            let j = try await tx.openStore("journal", key: SOPID.self, value: Transfer.self)
            var balances: [Int: Int] = [:]
            for try await it in a.range() { balances[it.key] = it.value }
            #expect(balances.values.reduce(0, +) == accounts * initial)
            #expect(j.count == Int64(committed))
            var expected = [Int](repeating: initial, count: accounts)
            var entries = 0
            for try await t in j.range() {
                expected[t.value.from] -= t.value.amount
                expected[t.value.to] += t.value.amount
                entries += 1
            }
            #expect(entries == committed)
            for i in 0..<accounts { #expect(balances[i] == expected[i]) }
            try await a.checkInvariants()
            try await j.checkInvariants()
        }
        #expect(committed > 0)
        #expect(try await db.check().isClean)
        try await db.close()
    }
}
