import SOPBTree
import SOPCore
import Testing

/// The oracle: items sorted by (key, id), plus the cursor as an index (nil: invalid).
private struct Model {
    struct Entry: Equatable {
        var key: Int
        var id: SOPID
        var value: Int
    }

    var entries: [Entry] = []
    var cursor: Int?

    private func less(_ a: Entry, _ key: Int, _ id: SOPID) -> Bool {
        a.key < key || (a.key == key && a.id < id)
    }

    /// First index with entry.key >= key.
    func lower(_ key: Int) -> Int {
        var lo = 0, hi = entries.count
        while lo < hi { let m = (lo + hi) / 2; if entries[m].key < key { lo = m + 1 } else { hi = m } }
        return lo
    }

    /// First index with entry.key > key.
    func upper(_ key: Int) -> Int {
        var lo = 0, hi = entries.count
        while lo < hi { let m = (lo + hi) / 2; if entries[m].key <= key { lo = m + 1 } else { hi = m } }
        return lo
    }

    /// First index with (key, id) >= (key, id).
    func exact(_ key: Int, _ id: SOPID) -> Int {
        var lo = 0, hi = entries.count
        while lo < hi { let m = (lo + hi) / 2; if less(entries[m], key, id) { lo = m + 1 } else { hi = m } }
        return lo
    }

    func contains(_ key: Int) -> Bool {
        let i = lower(key)
        return i < entries.count && entries[i].key == key
    }

    mutating func insert(_ e: Entry) {
        let i = exact(e.key, e.id)
        entries.insert(e, at: i)
        cursor = i
    }

    mutating func remove(at i: Int) {
        entries.remove(at: i)
        cursor = i < entries.count ? i : nil
    }

    func at(_ i: Int?) -> Entry? {
        guard let i, i >= 0, i < entries.count else { return nil }
        return entries[i]
    }
}

private struct Run {
    let tree: BTree<IntRepo>
    let repo: IntRepo
    var model = Model()
    var rng: SplitMix64
    let unique: Bool
    let keySpace: Int
    var context = ""
    var nextIDLow: UInt64 = 0
    var mutations = 0
    var lookups = 0
    var maxHeight = 0
    var maxCount = 0

    init(seed: UInt64, slotLength: Int, internalSlotLength: Int? = nil, unique: Bool) {
        (tree, repo) = makeTree(slotLength: slotLength, internalSlotLength: internalSlotLength, unique: unique)
        rng = SplitMix64(seed: seed &* 1_000_003 &+ UInt64(slotLength) &* 7919 &+ (unique ? 1 : 0))
        self.unique = unique
        // Small key spaces so duplicates and misses are common; unique stores need more keys to grow.
        keySpace = unique ? 16 + Int(rng.next() % 300) : 8 + Int(rng.next() % 72)
    }

    mutating func newID() -> SOPID {
        nextIDLow += 1
        // Mostly time-ordered (growing) IDs, sometimes random ones so duplicates arrive out of ID order.
        if rng.next() % 4 == 0 { return SOPID(high: rng.next() >> 8, low: nextIDLow) }
        return SOPID(high: 1 << 56 + nextIDLow, low: nextIDLow)
    }

    mutating func randomKey() -> Int { Int(rng.next() % UInt64(keySpace)) }

    func checkCursor(_ what: String) throws {
        let expected = model.at(model.cursor)
        let got = tree.currentItem
        try ensure(expected?.key == got?.key && expected?.id == got?.id && expected?.value == got?.value,
                   "\(context) \(what): cursor \(String(describing: got.map { ($0.key, $0.id.low, $0.value) })) "
                       + "expected \(String(describing: expected.map { ($0.key, $0.id.low, $0.value) }))")
        try ensure(tree.currentKey == expected?.key && tree.currentValue == expected?.value,
                   "\(context) \(what): currentKey/currentValue disagree")
    }

    mutating func afterMutation(_ what: String) async throws {
        mutations += 1
        try checkCursor(what)
        do {
            try await tree.checkInvariants(expectedCount: Int64(model.entries.count))
        } catch {
            throw Mismatch(description: "\(context) \(what): \(error)")
        }
        try ensure(repo.violations.isEmpty, "\(context) \(what): repository misuse \(repo.violations)")
        maxHeight = max(maxHeight, repo.height)
        maxCount = max(maxCount, model.entries.count)
    }

    mutating func step(removeBias: Int, growing: Bool) async throws {
        var op = Int(rng.next() % 100)
        if growing && (38..<58).contains(op) { op -= 38 }  // removals become adds while growing
        let key = randomKey()
        let value = Int(rng.next() % 1_000_000)
        switch op {
        case 0..<22 where op >= removeBias / 2:
            let id = newID()
            let ok = try await tree.add(key, value, id: id)
            if unique && model.contains(key) {
                try ensure(!ok, "\(context) add(\(key)) should fail")
                model.cursor = model.lower(key)
            } else {
                try ensure(ok, "\(context) add(\(key)) should succeed")
                model.insert(.init(key: key, id: id, value: value))
            }
            try await afterMutation("add(\(key))")
        case 22..<28:
            let id = newID()
            let ok = try await tree.addIfNotExists(key, value, id: id)
            if model.contains(key) {
                try ensure(!ok, "\(context) addIfNotExists(\(key)) should fail")
                model.cursor = model.lower(key)
            } else {
                try ensure(ok, "\(context) addIfNotExists(\(key)) should succeed")
                model.insert(.init(key: key, id: id, value: value))
            }
            try await afterMutation("addIfNotExists(\(key))")
        case 28..<34:
            let id = newID()
            let inserted = try await tree.upsert(key, value, id: id)
            if model.contains(key) {
                try ensure(!inserted, "\(context) upsert(\(key)) should update")
                let i = model.lower(key)
                model.entries[i].value = value
                model.cursor = i
            } else {
                try ensure(inserted, "\(context) upsert(\(key)) should insert")
                model.insert(.init(key: key, id: id, value: value))
            }
            try await afterMutation("upsert(\(key))")
        case 34..<38:
            let ok = try await tree.update(key, value)
            try ensure(ok == model.contains(key), "\(context) update(\(key)) returned \(ok)")
            if ok {
                let i = model.lower(key)
                model.entries[i].value = value
                model.cursor = i
            } else {
                model.cursor = nil
            }
            try await afterMutation("update(\(key))")
        case 38..<46, 0..<22:
            let ok = try await tree.remove(key)
            try ensure(ok == model.contains(key), "\(context) remove(\(key)) returned \(ok)")
            if ok { model.remove(at: model.lower(key)) } else { model.cursor = nil }
            try await afterMutation("remove(\(key))")
        case 46..<52:
            // remove(key, id): usually an existing item, sometimes a miss.
            var k = key
            var id = SOPID(high: 3, low: rng.next())
            if !model.entries.isEmpty && rng.next() % 4 != 0 {
                let e = model.entries[Int(rng.next() % UInt64(model.entries.count))]
                k = e.key
                id = e.id
            }
            let ok = try await tree.remove(k, id: id)
            let i = model.exact(k, id)
            let exists = i < model.entries.count && model.entries[i].id == id
            try ensure(ok == exists, "\(context) remove(\(k), id:) returned \(ok)")
            if ok { model.remove(at: i) } else { model.cursor = nil }
            try await afterMutation("remove(\(k), id:)")
        case 52..<58:
            let ok = try await tree.removeCurrent()
            try ensure(ok == (model.cursor != nil), "\(context) removeCurrent returned \(ok)")
            if let c = model.cursor { model.remove(at: c) }
            try await afterMutation("removeCurrent")
        case 58..<62:
            let ok = try await tree.updateCurrentValue(value)
            try ensure(ok == (model.cursor != nil), "\(context) updateCurrentValue returned \(ok)")
            if let c = model.cursor { model.entries[c].value = value }
            try await afterMutation("updateCurrentValue")
        case 62..<64:
            if let c = model.cursor {
                let ok = try await tree.updateCurrentKey(model.entries[c].key)
                try ensure(ok, "\(context) updateCurrentKey failed")
                await #expect(throws: SOPError.self) { try await tree.updateCurrentKey(model.entries[c].key + 1) }
                try checkCursor("updateCurrentKey(rejected)")
                try await afterMutation("updateCurrentKey")
            } else {
                let ok = try await tree.updateCurrentKey(key)
                try ensure(!ok, "\(context) updateCurrentKey on invalid cursor")
            }
        case 64..<70:
            lookups += 1
            // firstValue(forKey:) agrees with the model and leaves the cursor alone.
            let value = try await tree.firstValue(forKey: key)
            let first = model.contains(key) ? model.entries[model.lower(key)].value : nil
            try ensure(value == first, "\(context) firstValue(\(key)) returned \(String(describing: value)), model \(String(describing: first))")
            try checkCursor("firstValue(\(key))")
            let found = try await tree.find(key)
            let i = model.lower(key)
            try ensure(found == model.contains(key), "\(context) find(\(key)) returned \(found)")
            model.cursor = i < model.entries.count ? i : nil
            try checkCursor("find(\(key))")
        case 70..<73:
            lookups += 1
            var k = key
            var id = SOPID(high: rng.next() >> 8, low: rng.next())
            if !model.entries.isEmpty && rng.next() % 2 == 0 {
                let e = model.entries[Int(rng.next() % UInt64(model.entries.count))]
                k = e.key
                id = e.id
            }
            let found = try await tree.find(k, id: id)
            let i = model.exact(k, id)
            try ensure(found == (i < model.entries.count && model.entries[i].id == id),
                       "\(context) find(\(k), id:) returned \(found)")
            model.cursor = i < model.entries.count ? i : nil
            try checkCursor("find(\(k), id:)")
        case 73..<79:
            lookups += 1
            let found = try await tree.findLast(key)
            let i = model.upper(key) - 1
            try ensure(found == model.contains(key), "\(context) findLast(\(key)) returned \(found)")
            model.cursor = i >= 0 ? i : nil
            try checkCursor("findLast(\(key))")
        case 79..<83:
            lookups += 1
            if rng.next() % 2 == 0 {
                let ok = try await tree.first()
                try ensure(ok == !model.entries.isEmpty, "\(context) first returned \(ok)")
                model.cursor = model.entries.isEmpty ? nil : 0
                try checkCursor("first")
            } else {
                let ok = try await tree.last()
                try ensure(ok == !model.entries.isEmpty, "\(context) last returned \(ok)")
                model.cursor = model.entries.isEmpty ? nil : model.entries.count - 1
                try checkCursor("last")
            }
        case 83..<93:
            // A short walk from wherever the cursor is (also after mutations).
            let steps = 1 + Int(rng.next() % 8)
            for _ in 0..<steps {
                lookups += 1
                let forward = rng.next() % 3 != 0
                let ok = forward ? try await tree.next() : try await tree.previous()
                if let c = model.cursor {
                    let n = forward ? c + 1 : c - 1
                    model.cursor = (n >= 0 && n < model.entries.count) ? n : nil
                }
                try ensure(ok == (model.cursor != nil), "\(context) \(forward ? "next" : "previous") returned \(ok)")
                try checkCursor(forward ? "next" : "previous")
            }
        case 93..<96:
            // Ascending scan from find(key) to the end.
            lookups += 1
            var ok = try await tree.find(key)
            var i = model.lower(key)
            _ = ok
            ok = tree.currentItem != nil
            while i < model.entries.count {
                try ensure(ok, "\(context) ascending scan from \(key) ended early at \(i)")
                let item = tree.currentItem!
                try ensure(item.key == model.entries[i].key && item.id == model.entries[i].id
                               && item.value == model.entries[i].value,
                           "\(context) ascending scan from \(key) differs at \(i)")
                ok = try await tree.next()
                i += 1
            }
            try ensure(!ok && tree.currentItem == nil, "\(context) ascending scan from \(key) ran past the end")
            model.cursor = nil
        case 96..<99:
            // Descending scan from findLast(key) to the start.
            lookups += 1
            _ = try await tree.findLast(key)
            var ok = tree.currentItem != nil
            var i = model.upper(key) - 1
            while i >= 0 {
                try ensure(ok, "\(context) descending scan from \(key) ended early at \(i)")
                let item = tree.currentItem!
                try ensure(item.key == model.entries[i].key && item.id == model.entries[i].id,
                           "\(context) descending scan from \(key) differs at \(i)")
                ok = try await tree.previous()
                i -= 1
            }
            try ensure(!ok && tree.currentItem == nil, "\(context) descending scan from \(key) ran past the start")
            model.cursor = nil
        default:
            // Full scans both ways.
            lookups += 1
            var ok = try await tree.first()
            var n = 0
            while ok {
                try ensure(tree.currentItem?.id == model.entries[n].id, "\(context) full scan differs at \(n)")
                n += 1
                ok = try await tree.next()
            }
            try ensure(n == model.entries.count, "\(context) full scan saw \(n) items")
            ok = try await tree.last()
            while ok {
                n -= 1
                try ensure(tree.currentItem?.id == model.entries[n].id, "\(context) reverse scan differs at \(n)")
                ok = try await tree.previous()
            }
            try ensure(n == 0, "\(context) reverse scan stopped at \(n)")
            model.cursor = nil
        }
    }

    /// Grow, churn, shrink, then empty the tree completely.
    mutating func run(steps: Int) async throws -> Int {
        for s in 0..<steps {
            context = "step \(s):"
            // removeBias: 0 while growing, higher while shrinking (turns adds into removes).
            let removeBias = s < steps * 2 / 5 ? 0 : (s < steps * 7 / 10 ? 14 : 44)
            try await step(removeBias: removeBias, growing: s < steps / 3)
        }
        // Empty the tree: remove from the front with removeCurrent, or by key.
        context = "draining:"
        while !model.entries.isEmpty {
            if rng.next() % 2 == 0 {
                let e = model.entries[Int(rng.next() % UInt64(model.entries.count))]
                let ok = try await tree.remove(e.key, id: e.id)
                try ensure(ok, "\(context) remove(key, id) failed")
                model.remove(at: model.exact(e.key, e.id))
            } else {
                _ = try await tree.first()
                let ok = try await tree.removeCurrent()
                try ensure(ok, "\(context) removeCurrent failed")
                model.remove(at: 0)
            }
            try await afterMutation("drain")
        }
        try ensure(repo.nodes.count == 1, "\(context) \(repo.nodes.count) nodes left after emptying")
        let root = repo.nodes[repo.rootID]
        try ensure(root != nil && root!.isLeaf && root!.items.isEmpty, "\(context) root is not an empty leaf")
        return mutations + lookups
    }
}

private enum ProcessInfoLite {
    static let verbose = false
}

@Suite struct ModelTests {
    /// Random steps per (slot length, mode) before the tree is drained.
    static let steps = 1000

    /// Random operations against a sorted-array oracle, unique and non-unique, slot lengths
    /// 4...16, invariants checked after every mutation. Even seeds give internal nodes the
    /// leaves' slot length; odd seeds another one in 4...16 (smaller or larger).
    @Test(arguments: 1...20)
    func randomOperationsMatchModel(seed: Int) async throws {
        var total = 0
        for slotLength in 4...16 {
            let fanOut = seed % 2 == 0 ? slotLength : 4 + (seed &* 7 + slotLength * 5) % 13
            for unique in [false, true] {
                var run = Run(seed: UInt64(seed), slotLength: slotLength, internalSlotLength: fanOut, unique: unique)
                let label = "seed \(seed) slot \(slotLength) internal \(fanOut) unique \(unique)"
                run.context = label
                do {
                    total += try await run.run(steps: Self.steps)
                } catch let m as Mismatch {
                    throw Mismatch(description: "\(label) \(m.description)")
                }
                if slotLength == 4 && fanOut <= 6 && !unique {
                    // The walk must have built and torn down a tree of several levels.
                    #expect(run.maxHeight >= 3, "max height \(run.maxHeight), max count \(run.maxCount)")
                }
                if ProcessInfoLite.verbose {
                    print("\(label): height \(run.maxHeight) count \(run.maxCount) ops \(run.mutations)+\(run.lookups)")
                }
            }
        }
        #expect(total >= 26 * Self.steps)
    }
}
