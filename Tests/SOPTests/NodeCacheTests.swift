import Foundation
@testable import SOP
import SOPBTree
import SOPCore
import Testing

/// The L1 cache's byte bound, second-chance eviction and removal of superseded versions.
@Suite struct NodeCacheTests {
    func key(_ i: UInt64) -> NodeCache.Key {
        NodeCache.Key(logical: SOPID(high: 1, low: i), type: ObjectIdentifier(Int.self))
    }

    func node(_ i: UInt64) -> EngineNode { BTreeNode(id: SOPID(high: 2, low: i)) }

    /// The blob of version `v` of node `i`.
    func blob(_ i: UInt64, _ v: UInt64 = 0) -> SOPID { SOPID(high: 3 + v, low: i) }

    /// Caches version `v` of node `i`, confirmed at epoch 1.
    func put(_ cache: NodeCache, _ i: UInt64, _ v: UInt64 = 0, cost: Int) {
        cache.put(key(i), node(100 * v + i), physical: blob(i, v), version: UInt32(v), epoch: 1, cost: cost)
    }

    /// The node of `i` when its blob is version `v`'s.
    func get(_ cache: NodeCache, _ i: UInt64, _ v: UInt64 = 0) -> EngineNode? {
        cache.get(key(i), physical: blob(i, v), version: UInt32(v), epoch: 1)
    }

    @Test func staysWithinItsBudgetAndSparesReferencedEntries() {
        let cache = NodeCache(capacity: 1_000)
        for i in 0..<10 { put(cache, UInt64(i), cost: 100) }
        #expect(cache.statistics.bytes == 1_000)
        #expect(cache.statistics.entries == 10)
        // Entry 0 is read: the next insertion evicts an unreferenced one, not 0.
        #expect(get(cache, 0)?.id == SOPID(high: 2, low: 0))
        put(cache, 10, cost: 100)
        #expect(cache.statistics.bytes == 1_000)
        #expect(get(cache, 0) != nil)
        #expect(get(cache, 10) != nil)
        // Which unreferenced entry the hand meets first depends on the table's layout.
        #expect((1..<10).filter { get(cache, UInt64($0)) == nil }.count == 1)
        // A large entry pushes out as many as it needs, never itself.
        put(cache, 11, cost: 950)
        #expect(cache.statistics.bytes <= 1_000)
        #expect(get(cache, 11) != nil)
        // Too large for the budget: not cached at all.
        put(cache, 12, cost: 1_001)
        #expect(get(cache, 12) == nil)
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
        for i in 0..<20 { put(cache, UInt64(i), cost: 100) }
        put(cache, 3, 1, cost: 300)
        #expect(cache.statistics.bytes == 2_200)
        #expect(get(cache, 3, 1)?.id == SOPID(high: 2, low: 103))
        #expect(get(cache, 3) == nil, "the old version's blob is no longer served")
        cache.remove([key(3), key(4), key(99)])
        #expect(cache.statistics.bytes == 1_800)
        #expect(cache.statistics.entries == 18)
        #expect(get(cache, 3) == nil && get(cache, 4) == nil)
        // Freed slots are reused.
        for i in 100..<150 { put(cache, UInt64(i), cost: 100) }
        #expect(cache.statistics.bytes == 6_800)
        #expect(get(cache, 149) != nil)
    }

    /// An entry serves a transaction without a registry lookup only at the handle epoch it
    /// was confirmed at; a lookup through the registry confirms it at the epoch read before.
    @Test func entriesAreCurrentOnlyAtTheEpochTheyWereConfirmedAt() {
        let cache = NodeCache(capacity: 10_000)
        cache.put(key(1), node(1), physical: blob(1), version: 7, epoch: 5, cost: 100)
        let hit = cache.current(key(1), epoch: 5)
        #expect(hit?.node.id == SOPID(high: 2, low: 1) && hit?.physical == blob(1) && hit?.version == 7)
        #expect(cache.current(key(1), epoch: 6) == nil, "a handle may have changed since epoch 5")
        // The registry (at epoch 6) still names the same blob: confirmed at 6, version updated.
        #expect(cache.get(key(1), physical: blob(1), version: 8, epoch: 6) != nil)
        #expect(cache.current(key(1), epoch: 6)?.version == 8)
        // The registry names another blob: no node, nothing confirmed.
        #expect(cache.get(key(1), physical: blob(1, 1), version: 9, epoch: 7) == nil)
        #expect(cache.current(key(1), epoch: 7) == nil)
        // A committed version is cached unconfirmed: its first reader asks the registry.
        cache.put(key(1), node(101), physical: blob(1, 1), version: 0, epoch: NodeCache.unconfirmed, cost: 100)
        #expect(cache.current(key(1), epoch: 7) == nil)
        #expect(cache.get(key(1), physical: blob(1, 1), version: 9, epoch: 7)?.id == SOPID(high: 2, low: 101))
        #expect(cache.current(key(1), epoch: 7)?.version == 9)
        #expect(cache.statistics.entries == 1 && cache.statistics.bytes == 100)
    }

    /// Compaction's copies are served from the entries of the originals (unconfirmed until
    /// the registry names the copy).
    @Test func rebindingMovesEntriesToTheCopies() {
        let cache = NodeCache(capacity: 10_000)
        for i in 0..<10 { put(cache, UInt64(i), cost: 100) }
        cache.rebind([blob(3): blob(3, 9), blob(4): blob(4, 9), blob(77): blob(77, 9)])
        #expect(cache.current(key(3), epoch: 1) == nil)
        #expect(cache.current(key(5), epoch: 1) != nil)
        #expect(get(cache, 3) == nil)
        #expect(get(cache, 3, 9)?.id == SOPID(high: 2, low: 3))
        #expect(get(cache, 4, 9) != nil)
        #expect(cache.statistics.entries == 10)
    }

    /// The open-addressed table against a dictionary: random puts, replacements, removals and
    /// lookups in a small table (long probe runs, wrap-around, backward shifts on removal,
    /// growth), with a budget large enough that nothing is evicted.
    @Test(arguments: [1, 2, 3, 4])
    func theTableAgreesWithAModel(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let cache = NodeCache(capacity: Int.max / 2)
        var model: [UInt64: (version: UInt64, cost: Int)] = [:]
        // Few distinct keys, so that puts replace and removals hit.
        for step in 0..<20_000 {
            let i = rng.next() % 300
            switch rng.next() % 10 {
            case 0...4:
                let v = rng.next() % 4, cost = Int(rng.next() % 50) + 1
                put(cache, i, v, cost: cost)
                model[i] = (v, cost)
            case 5, 6:
                cache.remove([key(i)])
                model[i] = nil
            default:
                let v = model[i]?.version ?? 0
                let got = get(cache, i, v)
                if let m = model[i] {
                    #expect(got?.id == SOPID(high: 2, low: 100 * m.version + i), "step \(step) key \(i)")
                } else {
                    #expect(got == nil, "step \(step): removed key \(i) found")
                }
            }
            if step % 1_000 == 0 {
                #expect(cache.statistics.entries == model.count)
                #expect(cache.statistics.bytes == model.values.reduce(0) { $0 + $1.cost })
            }
        }
        for (i, m) in model {
            #expect(get(cache, i, m.version) != nil, "key \(i) lost")
        }
        #expect(cache.statistics.entries == model.count)
    }

    /// Eviction under a tight budget in a table with many entries: the budget holds, the
    /// newest entry survives, and every entry left is still found.
    @Test func evictionKeepsTheTableConsistent() {
        let cache = NodeCache(capacity: 5_000)
        var rng = SplitMix64(seed: 9)
        for step in 0..<5_000 {
            let i = rng.next() % 2_000
            put(cache, i, cost: Int(rng.next() % 90) + 10)
            #expect(get(cache, i) != nil, "step \(step): the entry just put was evicted")
            if step % 500 == 0 { #expect(cache.statistics.bytes <= 5_000) }
        }
        let s = cache.statistics
        #expect(s.bytes <= 5_000 && s.entries > 20)
        var found = 0
        for i in 0..<2_000 where get(cache, UInt64(i)) != nil { found += 1 }
        #expect(found == s.entries)
    }

    /// Nodes moved by compaction are read from the cache, not loaded again.
    @Test func compactionDoesNotReloadMovedNodes() async throws {
        let dir = TempDir("l1c")
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db, options: CompactionTests.options())
        try await CompactionTests.load(db, count: 3000, rounds: 3)
        try await CompactionTests.expectAll(db, count: 3000, round: 2)
        let loaded = db.readStatistics.nodeBlobReads
        let report = try await db.compact()
        #expect(report.bytesCopied > 0)
        try await CompactionTests.expectAll(db, count: 3000, round: 2)
        #expect(db.readStatistics.nodeBlobReads == loaded, "moved nodes were loaded again")
        try await db.close()
    }

    /// A leaf's values as the cache keeps them: one buffer, in item order (what a scan reads
    /// without waiting for memory), unless they already are.
    @Test func cachedLeavesKeepTheirValuesInOneBufferInItemOrder() throws {
        func leaf(_ values: [ValueBytes]) -> EngineNode {
            let items = values.enumerated().map { i, v in
                BTreeItem(key: EKey(int: Int64(i)), id: SOPID(high: 9, low: UInt64(i)), value: ValueBox.inline(v))
            }
            return BTreeNode(id: SOPID(high: 8, low: 1), items: items)
        }
        func parts(_ n: EngineNode) -> (bases: Set<UnsafeRawPointer?>, starts: [Int], texts: [[UInt8]]) {
            var bases: Set<UnsafeRawPointer?> = []
            var starts: [Int] = []
            var texts: [[UInt8]] = []
            for item in n.items {
                guard case .inline(let v) = item.value else { continue }
                bases.insert(v.storage.withUnsafeBytes { UnsafeRawPointer($0.baseAddress) })
                starts.append(Int(v.start))
                texts.append(v.withBytes { Array($0) })
            }
            return (bases, starts, texts)
        }
        let shared: [UInt8] = Array("\"a\"\"bb\"\"ccc\"".utf8)
        let a = ValueBytes(shared, 0..<3), b = ValueBytes(shared, 3..<7), c = ValueBytes(shared, 7..<12)
        let own = ValueBytes(Array("\"new\"".utf8))
        let expected = [Array("\"a\"".utf8), Array("\"new\"".utf8), Array("\"bb\"".utf8), Array("\"ccc\"".utf8)]

        // One buffer, in order: kept as it is (no copy).
        let inOrder = parts(NodeFormat.forCache(leaf([a, b, c])))
        #expect(inOrder.bases == [shared.withUnsafeBytes { UnsafeRawPointer($0.baseAddress) }])
        #expect(inOrder.starts == [0, 3, 7])

        // A value in a buffer of its own between them (a commit's new value): packed.
        let mixed = parts(NodeFormat.forCache(leaf([a, own, b, c])))
        #expect(mixed.bases.count == 1)
        #expect(mixed.starts == [0, 3, 8, 12])
        #expect(mixed.texts == expected)

        // One buffer, out of item order: packed in item order.
        let swapped = parts(NodeFormat.forCache(leaf([b, a, c])))
        #expect(swapped.bases.count == 1)
        #expect(swapped.starts == [0, 4, 7])
        #expect(swapped.texts == [expected[2], expected[0], expected[3]])
    }

    /// A scan has the cache prefetch the leaves ahead of it, reading their slots and arrays by
    /// address: leaves replaced by other transactions' commits and evicted (a cache of a few
    /// leaves) while the scan walks, in both directions, must neither crash it nor change what
    /// it reads — the leaves it walks come from the committed state it began with, or its
    /// commit fails the re-check.
    @Test(arguments: [false, true])
    func scansWhileTheLeavesAheadAreReplacedAndEvicted(descending: Bool) async throws {
        let dir = TempDir("l1scan")
        defer { dir.cleanup() }
        var options = DatabaseOptions()
        options.nodeCacheBytes = 24 << 10
        let db = try await Database.open(at: dir.db, options: options)
        let n = 2_000
        func key(_ i: Int) -> String { String(format: "k%05d", i) }
        try await db.write { tx in
            let s = try await tx.createStore("kv", key: String.self, value: String.self)
            for i in 0..<n { try await s.add(key(i), "v\(i)") }
        }
        let tx = try await db.beginTransaction(.forReading)
        let s = try await tx.openStore("kv", key: String.self, value: String.self)
        var seen: [String] = []
        var rewrites = 0
        for try await item in s.range(descending: descending) {
            let id = Int(item.key.dropFirst())!
            #expect(item.value == "v\(id)" || item.value == "w\(id)")
            seen.append(item.key)
            if seen.count % 50 == 0 {
                // Rewrite a stretch of leaves ahead of the scan and push the rest out.
                let at = descending ? n - seen.count - 200 : seen.count + 100
                try await db.write { w in
                    let ws = try await w.openStore("kv", key: String.self, value: String.self)
                    for i in stride(from: max(0, at), to: min(n, at + 100), by: 7) {
                        _ = try await ws.update(key(i), "w\(i)")
                    }
                    // And the first item the scan saw: its commit must now fail the re-check.
                    let first = Int(seen[0].dropFirst())!
                    _ = try await ws.update(seen[0], "w\(first)")
                }
                rewrites += 1
            }
        }
        #expect(rewrites > 10)
        #expect(seen.count == n)
        #expect(seen == (descending ? (0..<n).reversed().map(key) : (0..<n).map(key)))
        await #expect(throws: SOPError.self) { try await tx.commit() }
        try await db.close()
    }
}
