import Foundation
import SOP
import Testing

/// The engine holds `String`, `Int` and `Int64` keys in native forms (bytes, integers) and
/// everything else as decoded objects beside their JSON. These tests pin the orders and the
/// round trips of every form, across a reopen (keys decoded from stored JSON).
@Suite struct KeyFormTests {
    /// Strings with escapes, non-ASCII text, canonically equivalent spellings and emoji.
    static let strings: [String] = [
        "", "a", "A", "ab", "a\"b", "a\\b", "a\nb", "a\u{1}", "tab\there", "zz", "~",
        "caf\u{E9}", "cafe\u{301}x", "cafd", "caf\u{E9}s", "\u{4E2D}\u{6587}", "\u{1F600}", "\u{1F600}a",
        "\u{212B}ngstr\u{F6}m", "\u{C5}x", "Z\u{327}", "\u{7F}", "k000000000000042",
    ]

    @Test func stringKeysFollowSwiftOrderAndSurviveReopen() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        var expected: [String] = []
        for s in Self.strings where !expected.contains(s) { expected.append(s) }
        expected.sort()
        do {
            let db = try await Database.open(at: dir.db)
            try await db.write { tx in
                let s = try await tx.store("s", key: String.self, value: Int.self, options: StoreOptions(slotLength: 4))
                for (i, k) in Self.strings.enumerated() { _ = try await s.add(k, i) }
                try await s.checkInvariants()
            }
            try await db.close()
        }
        let db = try await Database.open(at: dir.db)
        try await db.read { tx in
            let s = try await tx.openStore("s", key: String.self, value: Int.self)
            var seen: [String] = []
            for try await item in s.range() { seen.append(item.key) }
            #expect(seen == expected)
            // A canonically equivalent spelling finds the stored key (Swift's String equality).
            #expect(try await s.find("cafe\u{301}"))
            #expect(s.currentKey == "caf\u{E9}")
            #expect(try await s.get("a\"b") == 4)
            #expect(try await s.get("a\\b") == 5)
            #expect(try await s.get("a\nb") == 6)
            #expect(try await s.get("\u{1F600}a") == 17)
            #expect(try await s.get("missing") == nil)
            // Bounded ranges compare mixed ASCII / non-ASCII keys.
            var bounded: [String] = []
            for try await item in s.range(from: "caf", to: "cag") { bounded.append(item.key) }
            #expect(bounded == expected.filter { $0 >= "caf" && $0 <= "cag" })
            try await s.checkInvariants()
        }
        #expect(try await db.check().isClean)
        try await db.close()
    }

    @Test func integerKeysOrderNumericallyIncludingNegatives() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let ints = [0, -1, 1, Int.min, Int.max, -1_000_000, 999, -999, 42]
        let longs: [Int64] = [Int64.min, -5, 5, Int64.max, 0]
        do {
            let db = try await Database.open(at: dir.db)
            try await db.write { tx in
                let a = try await tx.store("ints", key: Int.self, value: String.self, options: StoreOptions(slotLength: 4))
                for i in ints { #expect(try await a.add(i, "v\(i)")) }
                let b = try await tx.store("longs", key: Int64.self, value: Int64.self, options: StoreOptions(slotLength: 4))
                for i in longs { #expect(try await b.add(i, i &* 2)) }
            }
            try await db.close()
        }
        let db = try await Database.open(at: dir.db)
        try await db.read { tx in
            let a = try await tx.openStore("ints", key: Int.self, value: String.self)
            var keys: [Int] = []
            for try await item in a.range() { keys.append(item.key) }
            #expect(keys == ints.sorted())
            #expect(try await a.get(Int.min) == "v\(Int.min)")
            var mid: [Int] = []
            for try await item in a.range(from: -999, to: 999) { mid.append(item.key) }
            #expect(mid == ints.sorted().filter { (-999...999).contains($0) })
            let b = try await tx.openStore("longs", key: Int64.self, value: Int64.self)
            var lk: [Int64] = []
            for try await item in b.range(descending: true) { lk.append(item.key) }
            #expect(lk == longs.sorted().reversed())
        }
        // The dynamic view reads the same stored JSON in the same order.
        try await db.read { tx in
            let d = try await tx.dynamicStore("ints")
            var dk: [JSONValue] = []
            for try await item in d.range() { dk.append(item.key) }
            #expect(dk == ints.sorted().map { JSONValue.int(Int64($0)) })
        }
        try await db.close()
    }

    @Test func comparatorKeysAndNaturalKeysOfOneStoreCannotMixInATransaction() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let s = try await tx.store("s", key: String.self, value: Int.self)
            _ = try await s.add("b", 1)
            // Same store, same types, another order: refused, nothing changed.
            await expectSOPError(.typeMismatch) {
                _ = try await tx.store("s", key: String.self, value: Int.self, compare: { a, b in a < b ? 1 : (a == b ? 0 : -1) })
            }
            #expect(try await s.get("b") == 1)
        }
        // A reversed comparator over String keys in a store of its own.
        try await db.write { tx in
            let r = try await tx.store("r", key: String.self, value: Int.self,
                                       compare: { a, b in a < b ? 1 : (a == b ? 0 : -1) })
            for (i, k) in ["a", "c", "b"].enumerated() { _ = try await r.add(k, i) }
        }
        try await db.read { tx in
            let r = try await tx.store("r", key: String.self, value: Int.self, compare: { a, b in a < b ? 1 : (a == b ? 0 : -1) })
            var keys: [String] = []
            for try await item in r.range() { keys.append(item.key) }
            #expect(keys == ["c", "b", "a"])
        }
        try await db.close()
    }
}
