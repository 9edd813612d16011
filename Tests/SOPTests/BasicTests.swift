import Foundation
import SOP
import Testing

struct Person: Codable, Sendable, Equatable {
    var born: Int
    var name: String?
}

@Suite struct BasicTests {
    @Test func quickstartWritesReadsAndSurvivesReopen() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        do {
            let db = try await Database.open(at: dir.db)
            try await db.write { tx in
                let s = try await tx.store("people", key: String.self, value: Person.self)
                #expect(try await s.add("ada", Person(born: 1815)))
                #expect(try await s.add("alan", Person(born: 1912)))
                #expect(try await s.add("ada", Person(born: 0)) == false)   // unique by default
            }
            let n = try await db.read { tx in try await tx.store("people", key: String.self, value: Person.self).count }
            #expect(n == 2)
            try await db.close()
        }
        let db = try await Database.open(at: dir.db)
        let ada = try await db.read { tx in
            try await tx.openStore("people", key: String.self, value: Person.self).get("ada")
        }
        #expect(ada == Person(born: 1815))
        #expect(db.stores().map(\.name) == ["people"])
        #expect(db.stores().first?.count == 2)
        let report = try await db.check()
        #expect(report.isClean, "\(report.problems)")
        try await db.close()
    }

    @Test func rollbackOnThrowAndExplicitRollback() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await db.write { tx in
                let s = try await tx.store("s", key: Int.self, value: String.self)
                try await s.add(1, "one")
                throw Boom()
            }
        }
        #expect(db.stores().isEmpty)   // store creation rolled back too
        let tx = try await db.beginTransaction()
        let s = try await tx.store("s", key: Int.self, value: String.self)
        try await s.add(1, "one")
        await tx.rollback()
        #expect(db.stores().isEmpty)
        // A transaction that ended refuses further use.
        await expectSOPError(.invalidState) { _ = try await s.add(2, "two") }
        try await db.close()
    }

    @Test func separateBlobValuesAreFetchedLazily() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        let big = String(repeating: "x", count: 10_000)
        try await db.write { tx in
            let s = try await tx.createStore("blobs", key: Int.self, value: String.self,
                                             options: StoreOptions(slotLength: 8, valuePlacement: .separateBlob))
            for i in 0..<50 { try await s.add(i, big + String(i)) }
        }
        try await db.close()
        let db2 = try await Database.open(at: dir.db)
        try await db2.read { tx in
            let s = try await tx.openStore("blobs", key: Int.self, value: String.self)
            #expect(try await s.get(7) == big + "7")
            var n = 0
            for try await item in s.range(from: 10, to: 19) {
                #expect(item.value == big + String(item.key))
                n += 1
            }
            #expect(n == 10)
        }
        try await db2.write { tx in
            let s = try await tx.openStore("blobs", key: Int.self, value: String.self)
            #expect(try await s.update(7, "small"))
        }
        #expect(try await db2.read { tx in try await tx.openStore("blobs", key: Int.self, value: String.self).get(7) } == "small")
        #expect(try await db2.check().isClean)
        try await db2.close()
    }

    @Test func rangesBothWaysWithBounds() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let s = try await tx.createStore("r", key: Int.self, value: Int.self, options: StoreOptions(slotLength: 4))
            for i in stride(from: 0, to: 100, by: 2) { try await s.add(i, i * 10) }
        }
        try await db.read { tx in
            let s = try await tx.openStore("r", key: Int.self, value: Int.self)
            var up: [Int] = []
            for try await it in s.range(from: 9, to: 21) { up.append(it.key) }
            #expect(up == [10, 12, 14, 16, 18, 20])
            var down: [Int] = []
            for try await it in s.range(from: 9, to: 21, descending: true) { down.append(it.key) }
            #expect(down == [20, 18, 16, 14, 12, 10])
            var all = 0
            for try await _ in s.range() { all += 1 }
            #expect(all == 50)
            #expect(try await s.find(51) == false)
            #expect(s.currentKey == 52)
            #expect(try await s.findLast(51) == false)
            #expect(s.currentKey == 50)
        }
        try await db.close()
    }

    /// A new store records its internal-node fan-out (the default, or the one asked for);
    /// options written before the field existed decode without it and keep the leaves' slot
    /// length for internal nodes.
    @Test func internalSlotLengthIsRecorded() async throws {
        let dir = TempDir("fanout")
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let a = try await tx.createStore("a", key: Int.self, value: Int.self, options: StoreOptions(slotLength: 4))
            let b = try await tx.createStore("b", key: Int.self, value: Int.self,
                                             options: StoreOptions(slotLength: 4, internalSlotLength: 5))
            for i in 0..<2_000 { try await a.add(i, i); try await b.add(i, i) }
        }
        try await db.close()
        let again = try await Database.open(at: dir.db)
        let infos = Dictionary(uniqueKeysWithValues: again.stores().map { ($0.name, $0.options) })
        #expect(infos["a"]?.internalSlotLength == StoreOptions.defaultInternalSlotLength(for: 4))
        #expect(infos["b"]?.internalSlotLength == 5)
        try await again.read { tx in
            for name in ["a", "b"] {
                let s = try await tx.openStore(name, key: Int.self, value: Int.self)
                try await s.checkInvariants()
                #expect(try await s.get(1_234) == 1_234)
            }
        }
        #expect(try await again.check().isClean)
        try await again.close()
        let old = #"{"slotLength":12,"isUnique":true,"valuePlacement":"inNode","description":""}"#
        let decoded = try JSONDecoder().decode(StoreOptions.self, from: Data(old.utf8))
        #expect(decoded.internalSlotLength == nil && decoded.effectiveInternalSlotLength == 12)
    }

    /// Stores of `String` keys and values in natural order iterate through their own decoding
    /// path: keys longer than 16 bytes and not ASCII, values with escapes (decoded the general
    /// way from that item on), separate values, bounds inside leaves, both directions, and a
    /// `String` store ordered by a comparator (which must not take that path) all agree with
    /// the items written. With an L1 cache too small to hold a leaf, every crossing to the
    /// next leaf loads it (the iterator's way without a suspension never applies).
    @Test(arguments: [(ValuePlacement.inNode, 256 << 20), (.separateBlob, 256 << 20), (.inNode, 1 << 10)])
    func stringRangesAcrossLeaves(placement: ValuePlacement, cacheBytes: Int) async throws {
        let dir = TempDir("sranges")
        defer { dir.cleanup() }
        var options = DatabaseOptions()
        options.nodeCacheBytes = cacheBytes
        let db = try await Database.open(at: dir.db, options: options)
        func key(_ i: Int) -> String {
            let k = String(format: "k%04d", i)
            switch i % 5 {
            case 0: return k + "-a-key-longer-than-sixteen-bytes"
            case 1: return k + "é"
            default: return k
            }
        }
        func value(_ i: Int) -> String {
            switch i % 7 {
            case 0: return "quote \" and backslash \\ \(i)"
            case 1: return "line\nbreak \(i) ü"
            default: return "value \(i)"
            }
        }
        let n = 400
        let storeOptions = StoreOptions(slotLength: 8, valuePlacement: placement)
        try await db.write { tx in
            let s = try await tx.store("s", key: String.self, value: String.self, options: storeOptions)
            let r = try await tx.store("r", key: String.self, value: String.self, options: storeOptions,
                                       compare: { a, b in a < b ? 1 : (b < a ? -1 : 0) })
            for i in (0..<n).reversed() {
                try await s.add(key(i), value(i))
                try await r.add(key(i), value(i))
            }
        }
        let sorted = (0..<n).sorted { key($0) < key($1) }
        try await db.read { tx in
            let s = try await tx.openStore("s", key: String.self, value: String.self)
            var all: [Int] = []
            for try await it in s.range() {
                let i = sorted[all.count]
                #expect(it.key == key(i) && it.value == value(i))
                all.append(i)
            }
            #expect(all == sorted)
            let from = key(103), to = key(297)
            var bounded: [String] = []
            for try await it in s.range(from: from, to: to) {
                #expect(it.value == value(Int(it.key.dropFirst().prefix(4))!))
                bounded.append(it.key)
            }
            #expect(bounded == sorted.map(key).filter { $0 >= from && $0 <= to })
            var down: [String] = []
            for try await it in s.range(to: to, descending: true) { down.append(it.key) }
            #expect(down == sorted.map(key).filter { $0 <= to }.reversed())
            // Reverse order by comparator: the general path.
            let r = try await tx.store("r", key: String.self, value: String.self,
                                       compare: { a, b in a < b ? 1 : (b < a ? -1 : 0) })
            var reversed: [String] = []
            for try await it in r.range() {
                #expect(it.value == value(Int(it.key.dropFirst().prefix(4))!))
                reversed.append(it.key)
            }
            #expect(reversed == sorted.map(key).reversed())
        }
        try await db.close()
    }

    /// A value that does not decode as the store's value type (written through the dynamic
    /// view) fails the iteration at that item: the items before it, in the same leaf, are
    /// handed out first, for `Int` stores (a leaf decoded as a batch) and `String` stores
    /// (decoded item by item).
    @Test func aValueThatDoesNotDecodeFailsTheIterationAtItsItem() async throws {
        let dir = TempDir("baditem")
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let n = try await tx.createStore("n", key: Int.self, value: Int.self, options: StoreOptions(slotLength: 8))
            let s = try await tx.createStore("s", key: String.self, value: String.self, options: StoreOptions(slotLength: 8))
            for i in 0..<40 {
                try await n.add(i, i)
                try await s.add(String(format: "k%02d", i), "v\(i)")
            }
        }
        try await db.write { tx in
            let changedN = try await tx.dynamicStore("n").update(.int(13), .string("not a number"))
            let changedS = try await tx.dynamicStore("s").update(.string("k13"), .int(5))
            #expect(changedN && changedS)
        }
        try await db.read { tx in
            var ints: [Int] = []
            let e1 = await expectSOPError(.typeMismatch) {
                for try await it in try await tx.openStore("n", key: Int.self, value: Int.self).range() { ints.append(it.key) }
            }
            #expect(e1 != nil && ints == Array(0..<13))
            var strings: [String] = []
            let e2 = await expectSOPError(.typeMismatch) {
                for try await it in try await tx.openStore("s", key: String.self, value: String.self).range() {
                    strings.append(it.key)
                }
            }
            #expect(e2 != nil && strings == (0..<13).map { String(format: "k%02d", $0) })
        }
        try await db.close()
    }

    /// Iteration hands out a leaf's items in one batch: every placement, both directions and
    /// bounds that fall inside leaves give the same items as point reads, and a transaction
    /// that ends mid-iteration stops it at the next item.
    @Test(arguments: [ValuePlacement.inNode, .separateBlob, .separateBlobWrittenAtOnce])
    func rangesAcrossLeaves(placement: ValuePlacement) async throws {
        let dir = TempDir("ranges")
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let s = try await tx.createStore("r", key: Int.self, value: String.self,
                                             options: StoreOptions(slotLength: 8, valuePlacement: placement))
            for i in (0..<300).reversed() { try await s.add(i * 3, "v\(i * 3)") }
        }
        try await db.read { tx in
            let s = try await tx.openStore("r", key: Int.self, value: String.self)
            var keys: [Int] = []
            for try await it in s.range(from: 100, to: 700) {
                #expect(it.value == "v\(it.key)")
                keys.append(it.key)
            }
            #expect(keys == Array(stride(from: 102, through: 699, by: 3)))
            var down: [Int] = []
            for try await it in s.range(to: 50, descending: true) { down.append(it.key) }
            #expect(down == Array(stride(from: 48, through: 0, by: -3)))
            var keysOnly: [Int] = []
            for try await k in s.keys(from: 100, to: 700) { keysOnly.append(k.key) }
            #expect(keysOnly == keys)
            var keysDown: [Int] = []
            for try await k in s.keys(from: 600, descending: true) { keysDown.append(k.key) }
            #expect(keysDown == Array(stride(from: 897, through: 600, by: -3)))
            var count = 0
            for try await it in s.range() {
                #expect(it.key == count * 3)
                count += 1
                if count == 120 { break }
            }
            #expect(count == 120)
        }
        let tx = try await db.beginTransaction(.forReading)
        let s = try await tx.openStore("r", key: Int.self, value: String.self)
        var seen = 0
        let e = await expectSOPError(.invalidState) {
            for try await _ in s.range() {
                seen += 1
                if seen == 3 { await tx.rollback() }
            }
        }
        #expect(e != nil && seen == 3)
        let tx2 = try await db.beginTransaction(.forReading)
        let s2 = try await tx2.openStore("r", key: Int.self, value: String.self)
        var seenKeys = 0
        let e2 = await expectSOPError(.invalidState) {
            for try await _ in s2.keys() {
                seenKeys += 1
                if seenKeys == 3 { await tx2.rollback() }
            }
        }
        #expect(e2 != nil && seenKeys == 3)
        try await db.close()
    }

    @Test func nonUniqueStoreKeepsDuplicatesInInsertionOrder() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let s = try await tx.createStore("d", key: String.self, value: Int.self,
                                             options: StoreOptions(slotLength: 4, isUnique: false))
            for i in 0..<20 { try await s.add("k", i) }
            try await s.add("j", -1)
        }
        try await db.read { tx in
            let s = try await tx.openStore("d", key: String.self, value: Int.self)
            #expect(s.count == 21)
            var vals: [Int] = []
            for try await it in s.range(from: "k", to: "k") { vals.append(it.value) }
            #expect(vals == Array(0..<20))
            #expect(try await s.find("k"))
            let id = s.currentID!
            #expect(try await s.currentValue() == 0)
            #expect(try await s.find("k", id: id))
        }
        try await db.close()
    }

    @Test func dropStoreIsTransactional() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let s = try await tx.store("a", key: Int.self, value: Int.self)
            for i in 0..<100 { try await s.add(i, i) }
        }
        let tx = try await db.beginTransaction()
        try await tx.dropStore("a")
        #expect(tx.storeNames().isEmpty)
        #expect(db.stores().map(\.name) == ["a"])     // not yet committed
        try await tx.commit()
        #expect(db.stores().isEmpty)
        try await db.close()
        let db2 = try await Database.open(at: dir.db)
        #expect(db2.stores().isEmpty)
        // Re-create under the same name: a new, empty store.
        try await db2.write { tx in
            let s = try await tx.store("a", key: Int.self, value: Int.self)
            #expect(s.count == 0)
            try await s.add(1, 1)
        }
        #expect(try await db2.check().isClean)
        try await db2.close()
    }

    @Test func checkpointAndLogReplayKeepEverything() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        var o = DatabaseOptions()
        o.checkpointBytes = 64 << 10   // checkpoint often
        let db = try await Database.open(at: dir.db, options: o)
        for batch in 0..<20 {
            try await db.write { tx in
                let s = try await tx.store("c", key: Int.self, value: String.self, options: StoreOptions(slotLength: 8))
                for i in 0..<100 { try await s.upsert(batch * 100 + i, "v\(batch)-\(i)") }
            }
        }
        try await db.close()
        let db2 = try await Database.open(at: dir.db, options: o)
        try await db2.read { tx in
            let s = try await tx.openStore("c", key: Int.self, value: String.self)
            #expect(s.count == 2000)
            #expect(try await s.get(1234) == "v12-34")
        }
        #expect(try await db2.check().isClean)
        try await db2.close()
    }
}

@Suite struct ValuePlacementTests {
    @Test(arguments: [ValuePlacement.small, .medium, .big])
    func presetsStoreAndReadValues(_ placement: ValuePlacement) async throws {
        let dir = TempDir("placement")
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        let big = String(repeating: "v", count: 5000)
        try await db.write { tx in
            let s = try await tx.createStore("p", key: Int.self, value: String.self,
                                             options: StoreOptions(slotLength: 8, valuePlacement: placement))
            for i in 0..<40 { try await s.add(i, big + String(i)) }
        }
        // A rolled-back write of a big value leaves nothing visible.
        let tx = try await db.beginTransaction()
        try await tx.openStore("p", key: Int.self, value: String.self).update(3, "rolled back")
        await tx.rollback()
        try await db.close()
        let db2 = try await Database.open(at: dir.db)
        for _ in 0..<2 {
            try await db2.read { tx in
                let s = try await tx.openStore("p", key: Int.self, value: String.self)
                #expect(try await s.get(3) == big + "3")
                #expect(try await s.get(39) == big + "39")
            }
        }
        let stats = db2.readStatistics
        let cachedValues = db2.blobCacheEntries   // standalone, L2 holds separately stored values only
        switch placement {
        case .inNode:
            #expect(stats.valueBlobReads == 0)
        case .separateBlob:
            #expect(stats.valueBlobReads == 4)
            #expect(cachedValues == 2)          // medium: cached in L2
        case .separateBlobWrittenAtOnce:
            #expect(stats.valueBlobReads == 4)
            #expect(cachedValues == 0)          // big: never cached
        }
        #expect(try await db2.check().isClean)
        try await db2.close()
    }
}
