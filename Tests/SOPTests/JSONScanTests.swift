import Foundation
import SOP
import Testing

/// `Store.forEachJSON`: each item's key and value as JSON text borrowed from the node, for
/// every key form and value placement, agreeing with the typed range item for item.
@Suite struct JSONScanTests {
    struct Point: Codable, Sendable, Comparable, Hashable {
        var x: Int
        var y: Int
        static func < (a: Point, b: Point) -> Bool { (a.x, a.y) < (b.x, b.y) }
    }

    struct Doc: Codable, Sendable, Equatable {
        var name: String
        var tags: [String]
    }

    /// What `forEachJSON` hands out, decoded, against what `range` yields: the same items in
    /// the same order. `from`/`to`/`descending` as in `range`.
    func agree<K: Codable & Sendable & Equatable, V: Codable & Sendable & Equatable>(
        _ s: Store<K, V>, from: K? = nil, to: K? = nil, descending: Bool = false,
        sourceLocation: SourceLocation = #_sourceLocation) async throws -> Int {
        var typed: [(K, V)] = []
        for try await it in s.range(from: from, to: to, descending: descending) { typed.append((it.key, it.value)) }
        var texts: [(Data, Data)] = []
        let n = try await s.forEachJSON(from: from, to: to, descending: descending) { k, v in
            texts.append((Data(k), Data(v)))
            return true
        }
        #expect(n == typed.count, sourceLocation: sourceLocation)
        #expect(texts.count == typed.count, sourceLocation: sourceLocation)
        let decoder = JSONDecoder()
        for (i, (k, v)) in zip(texts.indices, texts) {
            let key = try decoder.decode(K.self, from: k)
            let value = try decoder.decode(V.self, from: v)
            #expect(key == typed[i].0 && value == typed[i].1, "item \(i)", sourceLocation: sourceLocation)
        }
        return n
    }

    @Test(arguments: [ValuePlacement.inNode, .separateBlob])
    func stringKeysOfEveryShape(placement: ValuePlacement) async throws {
        let dir = TempDir("jscan")
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        // Keys needing escapes, longer than 16 bytes, not ASCII; values with escapes.
        func key(_ i: Int) -> String {
            let k = String(format: "k%04d", i)
            switch i % 4 {
            case 0: return k + "-a-key-longer-than-sixteen-bytes"
            case 1: return k + "\"q\\"
            case 2: return k + "é\n"
            default: return k
            }
        }
        try await db.write { tx in
            let s = try await tx.createStore("s", key: String.self, value: String.self,
                                             options: StoreOptions(slotLength: 8, valuePlacement: placement))
            for i in 0..<300 { try await s.add(key(i), i % 3 == 0 ? "v\(i) \"quoted\" \\ é" : "v\(i)") }
            // Values not yet committed (pending blobs with separate placement) are handed out too.
            #expect(try await agree(s) == 300)
        }
        try await db.read { tx in
            let s = try await tx.openStore("s", key: String.self, value: String.self)
            #expect(try await agree(s) == 300)
            #expect(try await agree(s, descending: true) == 300)
            #expect(try await agree(s, from: key(17), to: key(230)) == 214)
            #expect(try await agree(s, from: key(17), to: key(230), descending: true) == 214)
            #expect(try await agree(s, from: "zzz") == 0)
            // The exact text of a plain item.
            var text: (String, String)?
            try await s.forEachJSON(from: key(7), to: key(7)) { k, v in
                text = (String(decoding: k, as: UTF8.self), String(decoding: v, as: UTF8.self))
                return true
            }
            #expect(text?.0 == "\"k0007\"" && text?.1 == "\"v7\"")
        }
        try await db.close()
    }

    @Test func intAndCustomKeysAndDocumentValues() async throws {
        let dir = TempDir("jscan2")
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let ints = try await tx.createStore("i", key: Int.self, value: Doc.self, options: StoreOptions(slotLength: 4))
            for i in -50..<50 { try await ints.add(i * 7, Doc(name: "n\(i)", tags: ["a", "b\(i)"])) }
            try await ints.add(Int.min, Doc(name: "min", tags: []))
            try await ints.add(Int.max, Doc(name: "max", tags: []))
            let points = try await tx.createStore("p", key: Point.self, value: Int.self, options: StoreOptions(slotLength: 4))
            for x in 0..<10 { for y in 0..<10 { try await points.add(Point(x: x, y: 9 - y), x * 10 + y) } }
        }
        try await db.read { tx in
            let ints = try await tx.openStore("i", key: Int.self, value: Doc.self)
            #expect(try await agree(ints) == 102)
            var extremes: [String] = []
            try await ints.forEachJSON { k, _ in
                extremes.append(String(decoding: k, as: UTF8.self))
                return extremes.count < 2
            }
            try await ints.forEachJSON(descending: true) { k, _ in
                extremes.append(String(decoding: k, as: UTF8.self))
                return false
            }
            #expect(extremes == ["-9223372036854775808", "-350", "9223372036854775807"])
            #expect(try await agree(ints, from: -7, to: 70, descending: true) == 12)
            let points = try await tx.openStore("p", key: Point.self, value: Int.self)
            #expect(try await agree(points) == 100)
            #expect(try await agree(points, from: Point(x: 3, y: 5), to: Point(x: 6, y: 0)) == 26)
        }
        try await db.close()
    }

    /// `false` stops the walk (in the first leaf, later, and on an item whose value is in a
    /// blob); a throw from the body ends it with that error; a finished transaction refuses.
    @Test func stopsThrowsAndRefuses() async throws {
        let dir = TempDir("jscan3")
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        struct Stop: Error {}
        for placement in [ValuePlacement.inNode, .separateBlob] {
            try await db.write { tx in
                let s = try await tx.createStore("s\(placement)", key: Int.self, value: String.self,
                                                 options: StoreOptions(slotLength: 4, valuePlacement: placement))
                for i in 0..<100 { try await s.add(i, "v\(i)") }
            }
            try await db.read { tx in
                let s = try await tx.openStore("s\(placement)", key: Int.self, value: String.self)
                for stopAt in [1, 2, 3, 37, 100] {
                    var seen = 0
                    let n = try await s.forEachJSON { _, _ in
                        seen += 1
                        return seen < stopAt
                    }
                    #expect(n == stopAt && seen == stopAt)
                }
                var seen = 0
                await #expect(throws: Stop.self) {
                    try await s.forEachJSON { _, _ in
                        seen += 1
                        if seen == 50 { throw Stop() }
                        return true
                    }
                }
                #expect(seen == 50)
            }
        }
        let tx = try await db.beginTransaction(.forReading)
        let s = try await tx.openStore("s\(ValuePlacement.inNode)", key: Int.self, value: String.self)
        try await tx.commit()
        await expectSOPError(.invalidState) { try await s.forEachJSON { _, _ in true } }
        try await db.close()
    }
}
