import Foundation
@testable import SOP
import SOPBTree
import SOPCore
import Testing

/// The L1 cache's byte bound, second-chance eviction and removal of superseded versions.
@Suite struct NodeCacheTests {
    func key(_ i: UInt64) -> NodeCache.Key {
        NodeCache.Key(physical: SOPID(high: 1, low: i), type: ObjectIdentifier(Int.self))
    }

    func node(_ i: UInt64) -> CachedNode { CachedNode(BTreeNode(id: SOPID(high: 2, low: i))) }

    @Test func staysWithinItsBudgetAndSparesReferencedEntries() {
        let cache = NodeCache(capacity: 1_000)
        for i in 0..<10 { cache.put(key(UInt64(i)), node(UInt64(i)), cost: 100) }
        #expect(cache.statistics.bytes == 1_000)
        #expect(cache.statistics.entries == 10)
        // Entry 0 is read: the next insertion evicts an unreferenced one, not 0.
        #expect(cache.get(key(0))?.node.id == SOPID(high: 2, low: 0))
        cache.put(key(10), node(10), cost: 100)
        #expect(cache.statistics.bytes == 1_000)
        #expect(cache.get(key(0)) != nil)
        #expect(cache.get(key(10)) != nil)
        #expect(cache.get(key(1)) == nil)
        // A large entry pushes out as many as it needs, never itself.
        cache.put(key(11), node(11), cost: 950)
        #expect(cache.statistics.bytes <= 1_000)
        #expect(cache.get(key(11)) != nil)
        // Too large for the budget: not cached at all.
        cache.put(key(12), node(12), cost: 1_001)
        #expect(cache.get(key(12)) == nil)
        let s = cache.statistics
        #expect(s.hits >= 4 && s.misses >= 2)
    }

    /// Commits drop the cached versions they supersede: rewriting the same leaves over and
    /// over leaves one cached version of each, not one per commit.
    @Test func commitsDropSupersededVersions() async throws {
        let dir = TempDir("l1")
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let s = try await tx.createStore("k", key: Int.self, value: String.self, options: StoreOptions(slotLength: 8))
            for i in 0..<40 { try await s.add(i, "v") }
        }
        let before = db.cacheStatistics.entries
        for round in 0..<60 {
            try await db.write { tx in
                let s = try await tx.openStore("k", key: Int.self, value: String.self)
                for i in 0..<40 { try await s.update(i, "v\(round)") }
            }
        }
        // 40 items in leaves of 8: at most ~10 leaves and a root.
        #expect(before <= 12)
        #expect(db.cacheStatistics.entries <= 12, "\(db.cacheStatistics.entries) cached nodes for ~10 live ones")
        let last = try await db.read { tx in try await tx.openStore("k", key: Int.self, value: String.self).get(39) }
        #expect(last == "v59")
        try await db.close()
    }

    @Test func replacingAndRemovingKeepTheByteCount() {
        let cache = NodeCache(capacity: 10_000)
        for i in 0..<20 { cache.put(key(UInt64(i)), node(UInt64(i)), cost: 100) }
        cache.put(key(3), node(33), cost: 300)
        #expect(cache.statistics.bytes == 2_200)
        #expect(cache.get(key(3))?.node.id == SOPID(high: 2, low: 33))
        cache.remove([key(3), key(4), key(99)])
        #expect(cache.statistics.bytes == 1_800)
        #expect(cache.statistics.entries == 18)
        #expect(cache.get(key(3)) == nil && cache.get(key(4)) == nil)
        // Freed slots are reused.
        for i in 100..<150 { cache.put(key(UInt64(i)), node(UInt64(i)), cost: 100) }
        #expect(cache.statistics.bytes == 6_800)
        #expect(cache.get(key(149)) != nil)
    }
}
