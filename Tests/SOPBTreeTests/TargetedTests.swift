import SOPBTree
import SOPCore
import Testing

private func id(_ n: Int) -> SOPID { SOPID(high: 1, low: UInt64(n)) }

/// Fills a tree with keys 0..<count in a shuffled order (ID = key + 1).
private func filled(slotLength: Int, unique: Bool = true, count: Int, seed: UInt64 = 42) async throws
    -> (BTree<IntRepo>, IntRepo) {
    let (tree, repo) = makeTree(slotLength: slotLength, unique: unique)
    var rng = SplitMix64(seed: seed)
    for k in Array(0..<count).shuffled(using: &rng) {
        #expect(try await tree.add(k, k * 10, id: id(k + 1)))
    }
    try await tree.checkInvariants(expectedCount: Int64(count))
    return (tree, repo)
}

private func expectCorrupt(_ tree: BTree<IntRepo>, _ what: String) async {
    do {
        try await tree.checkInvariants()
        Issue.record("checkInvariants accepted a tree with \(what)")
    } catch let e as SOPError {
        #expect(e.code == .corrupt, "\(what): \(e)")
        #expect(e.message.contains(" in node "), "\(what): \(e.message)")
    } catch {
        Issue.record("\(what): unexpected error \(error)")
    }
}

@Suite struct TargetedTests {
    /// Crossing to a sibling leaf leaves the item under the cursor in the path (no copy); every
    /// use of the cursor afterwards sees that item.
    @Test func cursorAfterCrossingToASiblingLeaf() async throws {
        // Leaves of at most 4 items under one root (fan-out 64): every leaf but the last has a
        // sibling to cross to.
        let (tree, repo) = makeTree(slotLength: 4, internalSlotLength: 64, unique: true)
        var rng = SplitMix64(seed: 7)
        for k in Array(0..<60).shuffled(using: &rng) { #expect(try await tree.add(k, k * 10, id: id(k + 1))) }
        #expect(repo.height == 2)
        repo.servesCached = true
        #expect(try await tree.first())
        let second = try #require(try tree.moveToNextSiblingLeafIfCached())
        let k0 = second[0].key
        #expect(k0 > 0 && tree.currentKey == k0 && tree.currentItem?.id == id(k0 + 1) && tree.currentValue == k0 * 10)
        #expect(try await tree.next())
        #expect(tree.currentKey == k0 + 1)
        #expect(try await tree.previous())
        #expect(tree.currentKey == k0)
        // Cross again: change the value under the cursor, then its key's non-ordering part.
        let third = try #require(try tree.moveToNextSiblingLeafIfCached())
        let k1 = third[0].key
        #expect(k1 > k0 && tree.currentKey == k1)
        #expect(try await tree.updateCurrentValue(-1))
        #expect(tree.currentKey == k1 && tree.currentValue == -1)
        #expect(try await tree.updateCurrentKey(k1))
        // Cross again and remove the item under the cursor: the cursor moves to its successor.
        #expect(try await tree.find(k1))
        let fourth = try #require(try tree.moveToNextSiblingLeafIfCached())
        let k2 = fourth[0].key
        #expect(try await tree.removeCurrent())
        #expect(tree.currentKey == k2 + 1)
        #expect(try await !tree.find(k2))
        #expect(try await tree.find(k1) && tree.currentValue == -1)
        // Crossing, then a descent elsewhere, then crossing back from there.
        #expect(try await tree.find(0))
        let again = try #require(try tree.moveToNextSiblingLeafIfCached())
        #expect(again[0].key == k0 && tree.currentKey == k0)
        try await tree.checkInvariants(expectedCount: 59)
        #expect(repo.violations.isEmpty)
    }

    @Test func rootSplitAndCollapseKeepRootID() async throws {
        let (tree, repo) = makeTree(slotLength: 4, unique: true)
        let rootID = repo.rootID
        for k in 0..<4 { _ = try await tree.add(k, k, id: id(k + 1)) }
        #expect(repo.nodes.count == 1 && repo.nodes[rootID]!.isLeaf)
        _ = try await tree.add(4, 4, id: id(5))  // fifth item: the root splits
        let root = repo.nodes[rootID]!
        #expect(!root.isLeaf && root.children.count == 2 && root.separators.count == 1)
        #expect(repo.nodes.count == 3)
        #expect(root.separators[0].key == 2 && root.separators[0].id == id(3))
        #expect(repo.nodes[root.children[0]]!.items.map(\.key) == [0, 1])
        #expect(repo.nodes[root.children[1]]!.items.map(\.key) == [2, 3, 4])
        #expect(tree.currentKey == 4)
        // Grow to three levels, then shrink back to a lone leaf.
        for k in 5..<200 { _ = try await tree.add(k, k, id: id(k + 1)) }
        try await tree.checkInvariants(expectedCount: 200)
        #expect(repo.height >= 3)
        #expect(repo.nodes[rootID] != nil)
        for k in 0..<197 {
            #expect(try await tree.remove(k))
            try await tree.checkInvariants(expectedCount: Int64(199 - k))
            #expect(repo.nodes[rootID] != nil)
        }
        #expect(repo.nodes.count == 1)
        #expect(repo.nodes[rootID]!.items.map(\.key) == [197, 198, 199])
        #expect(try await tree.allNodeIDs() == [rootID])
        #expect(repo.violations.isEmpty)
    }

    @Test(arguments: [4, 5, 7, 16, 64])
    func deletingEverythingReclaimsAllNodes(slotLength: Int) async throws {
        let (tree, repo) = try await filled(slotLength: slotLength, count: 2_000)
        let ids = try await tree.allNodeIDs()
        #expect(Set(ids) == Set(repo.nodes.keys) && ids.count == repo.nodes.count)
        #expect(repo.nodes.count > 2_000 / slotLength)
        var rng = SplitMix64(seed: UInt64(slotLength))
        for k in Array(0..<2_000).shuffled(using: &rng) {
            #expect(try await tree.remove(k, id: id(k + 1)))
        }
        try await tree.checkInvariants(expectedCount: 0)
        #expect(repo.nodes.count == 1)
        let root = repo.nodes[repo.rootID]!
        #expect(root.isLeaf && root.items.isEmpty)
        let r1 = try await tree.first() == false
        #expect(r1 && tree.currentItem == nil)
        #expect(try await tree.last() == false)
        #expect(repo.violations.isEmpty)
    }

    @Test func insertsThenDeletesWithCursorReturnToOneNode() async throws {
        let (tree, repo) = try await filled(slotLength: 6, unique: false, count: 1_000)
        // Delete everything through the cursor: removeCurrent leaves it on the successor.
        var ok = try await tree.first()
        var removed = 0
        while ok {
            #expect(tree.currentKey == removed)
            #expect(try await tree.removeCurrent())
            removed += 1
            ok = tree.currentItem != nil
        }
        #expect(removed == 1_000)
        #expect(repo.nodes.count == 1)
        #expect(try await tree.removeCurrent() == false)
        // And again from the back.
        for k in 0..<500 { _ = try await tree.add(k, k, id: id(k + 1)) }
        _ = try await tree.last()
        #expect(try await tree.removeCurrent())
        #expect(tree.currentItem == nil)  // the last item has no successor
        while try await tree.last() { _ = try await tree.removeCurrent() }
        #expect(repo.nodes.count == 1)
        #expect(repo.violations.isEmpty)
    }

    @Test func duplicatesComeBackInIDOrder() async throws {
        let (tree, _) = makeTree(slotLength: 4, unique: false)
        var rng = SplitMix64(seed: 7)
        // 60 duplicates of key 5 with IDs inserted in random order, among other keys.
        let dupIDs = (1...60).map { SOPID(high: 9, low: UInt64($0)) }
        var other = 1_000
        for dup in dupIDs.shuffled(using: &rng) {
            #expect(try await tree.add(5, Int(dup.low), id: dup))
            other += 1
            let k = Int(rng.next() % 10)
            #expect(try await tree.add(k < 5 ? k : k + 1, 0, id: SOPID(high: 10, low: UInt64(other))))
        }
        try await tree.checkInvariants(expectedCount: 120)
        var seen: [SOPID] = []
        var ok = try await tree.find(5)
        #expect(ok)
        while ok, tree.currentKey == 5 {
            seen.append(tree.currentItem!.id)
            ok = try await tree.next()
        }
        #expect(seen == dupIDs)
        // Backwards from the last duplicate.
        #expect(try await tree.findLast(5))
        #expect(tree.currentItem?.id == dupIDs.last)
        // Time-ordered IDs keep insertion order.
        let (t2, _) = makeTree(slotLength: 5, unique: false)
        var inserted: [SOPID] = []
        for i in 0..<50 {
            let tid = SOPID.timeOrdered()
            inserted.append(tid)
            _ = try await t2.add(1, i, id: tid)
        }
        var values: [Int] = []
        ok = try await t2.first()
        while ok { values.append(t2.currentValue!); ok = try await t2.next() }
        #expect(values == Array(0..<50))
        // update/remove/upsert act on the first duplicate.
        #expect(try await tree.update(5, -1))
        #expect(tree.currentItem?.id == dupIDs[0] && tree.currentValue == -1)
        #expect(try await tree.upsert(5, -2, id: SOPID(high: 99, low: 1)) == false)
        #expect(tree.currentItem?.id == dupIDs[0] && tree.currentValue == -2)
        #expect(try await tree.remove(5))
        let r2 = try await tree.find(5)
        #expect(r2 && tree.currentItem?.id == dupIDs[1])
        #expect(try await tree.addIfNotExists(5, 0, id: SOPID(high: 99, low: 2)) == false)
    }

    @Test func uniqueStoreRefusesExistingKey() async throws {
        let (tree, _) = try await filled(slotLength: 4, count: 100)
        #expect(try await tree.add(50, 0, id: id(1_000)) == false)
        #expect(tree.currentItem?.id == id(51))  // the cursor is on the existing item
        let r3 = try await tree.find(50)
        #expect(r3 && tree.currentValue == 500)
        #expect(try await tree.upsert(50, 7, id: id(1_001)) == false)
        #expect(try await tree.upsert(100, 7, id: id(1_002)) == true)
        try await tree.checkInvariants(expectedCount: 101)
    }

    @Test func updateCurrentKeyRejectsOrderingChange() async throws {
        struct Tagged { var n: Int; var tag: String }
        let repo = MemoryRepository<Tagged, Int>()
        let tree = BTree(rootID: repo.rootID, slotLength: 4, isUnique: true,
                         compare: { a, b in a.n < b.n ? -1 : (a.n == b.n ? 0 : 1) }, repository: repo)
        for k in 0..<20 { _ = try await tree.add(Tagged(n: k, tag: "old"), k, id: id(k + 1)) }
        #expect(try await tree.find(Tagged(n: 7, tag: "")))
        // Same position in the order: accepted, stored, cursor stays.
        #expect(try await tree.updateCurrentKey(Tagged(n: 7, tag: "new")))
        #expect(tree.currentKey?.tag == "new" && tree.currentKey?.n == 7)
        let r4 = try await tree.next()
        #expect(r4 && tree.currentKey?.n == 8)
        let r5 = try await tree.find(Tagged(n: 7, tag: ""))
        #expect(r5 && tree.currentKey?.tag == "new")
        // An ordering change is rejected and changes nothing.
        do {
            _ = try await tree.updateCurrentKey(Tagged(n: 30, tag: "moved"))
            Issue.record("an ordering change was accepted")
        } catch let e as SOPError {
            #expect(e.code == .invalidArgument)
        }
        #expect(tree.currentKey?.n == 7 && tree.currentKey?.tag == "new")
        let r6 = try await tree.next()
        #expect(r6 && tree.currentKey?.n == 8)
        try await tree.checkInvariants(expectedCount: 20)
        // Invalid cursor: false.
        _ = try await tree.last()
        _ = try await tree.next()
        #expect(try await tree.updateCurrentKey(Tagged(n: 1, tag: "")) == false)
        #expect(try await tree.updateCurrentValue(1) == false)
        #expect(try await tree.next() == false)
        #expect(try await tree.previous() == false)
    }

    @Test(arguments: [false, true])
    func pointOperationsFetchOnlyTheRootToLeafPath(unique: Bool) async throws {
        let (tree, repo) = try await filled(slotLength: 8, unique: unique, count: 3_000)
        var height = repo.height
        #expect(height >= 4)
        var rng = SplitMix64(seed: 3)
        var count = 3_000
        for n in 0..<300 {
            let k = Int(rng.next() % 3_000)
            if unique {
                // Key lookups: the path only (also for keys that are separators).
                repo.fetchCount = 0
                #expect(try await tree.find(k))
                #expect(repo.fetchCount == height, "find(\(k))")
                repo.fetchCount = 0
                #expect(try await tree.findLast(k))
                #expect(repo.fetchCount == height, "findLast(\(k))")
                repo.fetchCount = 0
                #expect(try await tree.update(k, n))
                #expect(repo.fetchCount == height, "update(\(k))")
                // A new key (possibly splitting): the path only.
                repo.fetchCount = 0
                #expect(try await tree.add(3_000 + n * 7 % 1_000, 0, id: SOPID(high: 2, low: rng.next())))
                #expect(repo.fetchCount == height, "add")
            } else {
                repo.fetchCount = 0
                #expect(try await tree.find(k, id: id(k + 1)))
                #expect(repo.fetchCount == height, "find(\(k), id:)")
                // An insert (possibly splitting): the path only.
                repo.fetchCount = 0
                #expect(try await tree.add(k, 0, id: SOPID(high: 2, low: rng.next())))
                #expect(repo.fetchCount == height, "add(\(k))")
            }
            count += 1
            // The cursor survives the insert without a new descent: at most the next leaf's path.
            repo.fetchCount = 0
            _ = try await tree.next()
            #expect(repo.fetchCount < height, "next after add")
            height = repo.height
        }
        try await tree.checkInvariants(expectedCount: Int64(count))
    }

    @Test func checkInvariantsDetectsSwappedItems() async throws {
        let (tree, repo) = try await filled(slotLength: 4, count: 60)
        let root = repo.nodes[repo.rootID]!
        var leafID = root.children[1]
        while !repo.nodes[leafID]!.isLeaf { leafID = repo.nodes[leafID]!.children[0] }
        repo.nodes[leafID]!.items.swapAt(0, 1)
        await expectCorrupt(tree, "two items swapped")
        repo.nodes[leafID]!.items.swapAt(0, 1)
        try await tree.checkInvariants(expectedCount: 60)
        // An item moved to a neighbouring leaf (order across nodes / separator bounds).
        let item = repo.nodes[leafID]!.items.removeLast()
        repo.nodes[leafID]!.items.insert(item, at: 0)
        await expectCorrupt(tree, "an item out of order")
    }

    @Test func checkInvariantsDetectsDuplicateKeyInUniqueStore() async throws {
        let (tree, repo) = try await filled(slotLength: 4, count: 30)
        let root = repo.nodes[repo.rootID]!
        var leafID = root.children[0]
        while !repo.nodes[leafID]!.isLeaf { leafID = repo.nodes[leafID]!.children[0] }
        var leaf = repo.nodes[leafID]!
        leaf.items[1].key = leaf.items[0].key  // ids still ordered, keys equal
        leaf.items[1].id = SOPID(high: leaf.items[0].id.high, low: leaf.items[0].id.low + 100)
        repo.nodes[leafID] = leaf
        await expectCorrupt(tree, "a duplicate key in a unique store")
    }

    @Test func checkInvariantsDetectsWrongChildCount() async throws {
        let (tree, repo) = try await filled(slotLength: 4, count: 60)
        repo.nodes[repo.rootID]!.children.removeLast()
        await expectCorrupt(tree, "children.count != separators.count + 1")
        // Lookups throw .corrupt too instead of trapping.
        do {
            _ = try await tree.find(59)
            Issue.record("find in a corrupt tree succeeded")
        } catch let e as SOPError {
            #expect(e.code == .corrupt)
        }
    }

    @Test func checkInvariantsDetectsMissingAndSharedChildren() async throws {
        let (tree, repo) = try await filled(slotLength: 4, count: 60)
        let root = repo.nodes[repo.rootID]!
        let victim = root.children[1]
        let saved = repo.nodes.removeValue(forKey: victim)!
        await expectCorrupt(tree, "a missing child")
        repo.nodes[victim] = saved
        try await tree.checkInvariants(expectedCount: 60)
        // A child referenced twice (the other one unreachable).
        repo.nodes[repo.rootID]!.children[1] = root.children[0]
        await expectCorrupt(tree, "a child reached twice")
        repo.nodes[repo.rootID] = root
        // A wrong expected count.
        await #expect(throws: SOPError(.corrupt, "item count 60 differs from expected 61 in node \(repo.rootID.hex)")) {
            try await tree.checkInvariants(expectedCount: 61)
        }
        // An underfull leaf.
        var leafID = root.children[0]
        while !repo.nodes[leafID]!.isLeaf { leafID = repo.nodes[leafID]!.children[0] }
        repo.nodes[leafID]!.items.removeLast(repo.nodes[leafID]!.items.count - 1)
        await expectCorrupt(tree, "an underfull leaf")
    }

    /// A leaf is rebalanced only below a quarter of the slot length (at least two items), not
    /// below half: random deletes then leave siblings and parents alone far longer.
    @Test func leavesAreRebalancedBelowAQuarter() async throws {
        #expect(BTree<IntRepo>.leafMinimum(slotLength: 4) == 2)
        #expect(BTree<IntRepo>.leafMinimum(slotLength: 8) == 2)
        #expect(BTree<IntRepo>.leafMinimum(slotLength: 20) == 5)
        #expect(BTree<IntRepo>.leafMinimum(slotLength: 500) == 125)
        let (tree, repo) = try await filled(slotLength: 20, count: 400)
        // The leftmost leaf, its right sibling and their parent.
        var parentID = repo.rootID
        while !repo.nodes[repo.nodes[parentID]!.children[0]]!.isLeaf { parentID = repo.nodes[parentID]!.children[0] }
        let parentBefore = repo.nodes[parentID]!
        let leafID = parentBefore.children[0]
        let siblingID = parentBefore.children[1]
        let siblingBefore = repo.nodes[siblingID]!.items.map(\.key)
        var keys = repo.nodes[leafID]!.items.map(\.key)
        #expect(keys.count >= 10)
        // Down to five items: nothing but the leaf changes.
        var removed = 0
        while keys.count > 5 {
            #expect(try await tree.remove(keys.removeLast()))
            removed += 1
        }
        #expect(repo.nodes[leafID]!.items.map(\.key) == keys)
        #expect(repo.nodes[siblingID]!.items.map(\.key) == siblingBefore)
        #expect(repo.nodes[parentID]!.separators.map(\.key) == parentBefore.separators.map(\.key))
        try await tree.checkInvariants(expectedCount: Int64(400 - removed))
        // Below it: the leaf borrows from its sibling or merges with it.
        #expect(try await tree.remove(keys.removeLast()))
        try await tree.checkInvariants(expectedCount: Int64(399 - removed))
        let leafNow = repo.nodes[leafID]?.items.count ?? 0
        #expect(leafNow == 0 || leafNow >= 5)
        #expect(repo.nodes[siblingID]?.items.map(\.key) != siblingBefore)
        #expect(repo.violations.isEmpty)
    }

    @Test func checkInvariantsDetectsUnevenDepthAndBadSeparator() async throws {
        let (tree, repo) = try await filled(slotLength: 4, count: 200)
        let root = repo.nodes[repo.rootID]!
        // Separator out of its bounds.
        repo.nodes[repo.rootID]!.separators[0].key = 10_000
        await expectCorrupt(tree, "a separator out of bounds")
        repo.nodes[repo.rootID] = root
        // Replace an internal child by one of its own leaves: leaves at two depths.
        let child = repo.nodes[root.children[0]]!
        #expect(!child.isLeaf)
        repo.nodes[repo.rootID]!.children[0] = child.children[0]
        await expectCorrupt(tree, "leaves at different depths")
    }
}
