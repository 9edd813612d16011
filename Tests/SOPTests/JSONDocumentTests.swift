import Foundation
import SOP
import Testing

/// A struct key ordered by an index specification: `last` ascending, `address.city`
/// descending, `age` ascending; `note` is metadata.
struct DocKey: Codable, Sendable, Equatable {
    struct Address: Codable, Sendable, Equatable { var city: String; var zip: Int }
    var last: String
    var age: Int
    var address: Address
    var note: String
}

struct Doc: Codable, Sendable, Equatable {
    var first: String
    var born: Int
}

let personSpec = try! IndexSpecification([.init("last"), .init("address.city", ascending: false), .init("age")])

func randomKey(_ rng: inout SplitMix64) -> DocKey {
    let lasts = ["ada", "bob", "Carol", "dave", "émile", "zoë", "Ω"]
    let cities = ["Paris", "oslo", "Rome", "lima", ""]
    return DocKey(last: lasts[Int(rng.next() % UInt64(lasts.count))],
                     age: Int(rng.next() % 100) - 10,
                     address: .init(city: cities[Int(rng.next() % UInt64(cities.count))], zip: Int(rng.next() % 1000)),
                     note: "n\(rng.next() % 1000)")
}

func json(_ k: DocKey) -> JSONValue {
    ["last": .string(k.last), "age": .int(Int64(k.age)),
     "address": ["city": .string(k.address.city), "zip": .int(Int64(k.address.zip))], "note": .string(k.note)]
}

/// Reference order of the specification, written independently of the engine.
func referenceLess(_ a: DocKey, _ b: DocKey) -> Bool {
    if a.last != b.last { return a.last < b.last }
    if a.address.city != b.address.city { return a.address.city > b.address.city }
    return a.age < b.age
}

@Suite struct IndexSpecificationTests {
    @Test func jsonFormRoundTripsExactly() throws {
        let text = #"[{"field":"last","ascending":true},{"field":"address.city","ascending":false}]"#
        let spec = try IndexSpecification(parsing: text)
        #expect(spec.description == text)
        #expect(spec.fields == [.init("last"), .init("address.city", ascending: false)])
        let encoded = try JSONEncoder().encode(spec)
        #expect(try JSONDecoder().decode(IndexSpecification.self, from: encoded) == spec)
    }

    @Test func malformedSpecificationsAreRefused() throws {
        let bad: [(String, String)] = [
            ("[]", "empty"),
            (#"[{"field":"a","ascending":true},{"field":"a","ascending":false}]"#, "more than once"),
            (#"[{"field":"a..b","ascending":true}]"#, "malformed"),
            (#"[{"field":".a","ascending":true}]"#, "malformed"),
            (#"[{"field":"a.","ascending":true}]"#, "malformed"),
            (#"[{"field":"","ascending":true}]"#, "empty"),
            (#"[{"field":"a","ascending":"yes"}]"#, "ascending"),
            (#"[{"field":"a"}]"#, "ascending"),
            (#"[{"field":"a","ascending":true,"x":1}]"#, "unknown member"),
            (#"{"field":"a","ascending":true}"#, "JSON array"),
            (#"[{"field":"a","ascending":true"#, "not valid JSON"),
            ("[3]", "not an object"),
        ]
        for (text, message) in bad {
            do {
                _ = try IndexSpecification(parsing: text)
                Issue.record("accepted \(text)")
            } catch let e as SOPError {
                #expect(e.code == .invalidArgument)
                #expect(e.message.contains(message), "\(text): \(e.message)")
            }
        }
        // Decoding a persisted specification validates it too.
        #expect(throws: SOPError.self) {
            try JSONDecoder().decode(IndexSpecification.self, from: Data("[]".utf8))
        }
    }

    @Test func oldStoreInfoWithoutSpecificationStillDecodes() throws {
        let info = StoreInfo(name: "s", options: StoreOptions(), keyType: "Swift.String", valueType: "Swift.Int", createdAt: 1)
        let text = String(decoding: try JSONEncoder().encode(info), as: UTF8.self)
        #expect(!text.contains("indexSpecification"))   // nothing new written for stores without one
        let back = try JSONDecoder().decode(StoreInfo.self, from: Data(text.utf8))
        #expect(back == info && back.indexSpecification == nil)
        let withSpec = StoreInfo(name: "t", options: StoreOptions(indexSpecification: personSpec), keyType: "JSONValue",
                                 valueType: "JSONValue", createdAt: 1)
        #expect(withSpec.indexSpecification == personSpec && withSpec.options.indexSpecification == nil)
        #expect(try JSONDecoder().decode(StoreInfo.self, from: try JSONEncoder().encode(withSpec)) == withSpec)
    }

    @Test func metadataFieldsDoNotAffectOrder() throws {
        let a: JSONValue = ["last": "x", "address": ["city": "a"], "age": 3, "note": "one"]
        let b: JSONValue = ["note": "two", "age": 3, "address": ["city": "a", "zip": 9], "last": "x"]
        #expect(personSpec.compare(a, b) == 0)
        let c: JSONValue = ["last": "x", "address": ["city": "b"], "age": 1]
        #expect(personSpec.compare(a, c) > 0)    // city descending
        #expect(throws: SOPError.self) { try personSpec.validateKey(["last": "x", "age": 1]) }
        #expect(throws: SOPError.self) { try personSpec.validateKey("x") }
        #expect(throws: SOPError.self) { try personSpec.validateKey(["last": "x", "address": "flat", "age": 1]) }
    }
}

@Suite struct DynamicViewTests {
    /// Random keys through the dynamic view (one store) and the typed struct view (another)
    /// come back in the reference order of the specification, and both views agree.
    @Test(arguments: [1, 2, 3] as [UInt64])
    func randomKeysComeBackInSpecificationOrder(seed: UInt64) async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        var rng = SplitMix64(seed: seed)
        var keys: [DocKey] = []
        for _ in 0..<600 {
            let k = randomKey(&rng)
            if !keys.contains(where: { !referenceLess($0, k) && !referenceLess(k, $0) }) { keys.append(k) }
        }
        let expected = keys.sorted(by: referenceLess).map(json)
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            _ = try await tx.store("typed", key: DocKey.self, value: Doc.self, index: personSpec,
                                   options: StoreOptions(slotLength: 8))
            _ = try await tx.createStore("dynamic", key: JSONValue.self, value: JSONValue.self,
                                         options: StoreOptions(slotLength: 8, indexSpecification: personSpec))
        }
        // Two phases of writes so part of the tree comes back from disk.
        for half in [keys[..<300], keys[300...]] {
            try await db.write { tx in
                let t = try await tx.store("typed", key: DocKey.self, value: Doc.self, index: nil)
                let d = try await tx.dynamicStore("dynamic")
                for k in half {
                    #expect(try await t.add(k, Doc(first: k.note, born: k.age)))
                    #expect(try await d.add(json(k), ["first": .string(k.note)]))
                }
            }
        }
        try await db.close()
        let db2 = try await Database.open(at: dir.db)
        try await db2.read { tx in
            let t = try await tx.openStore("typed", key: DocKey.self, value: Doc.self, index: personSpec)
            var typed: [JSONValue] = []
            for try await it in t.range() { typed.append(json(it.key)) }
            #expect(typed == expected)
            var probe = keys[17]
            probe.note = "other"
            #expect(try await t.find(probe))
            #expect(t.currentKey == keys[17])
        }
        // The dynamic views, in their own transaction (one transaction opens a store with one
        // set of types).
        try await db2.read { tx in
            for (name, reversed) in [("typed", false), ("dynamic", false), ("dynamic", true)] {
                let d = try await tx.dynamicStore(name)
                var got: [JSONValue] = []
                for try await it in d.range(descending: reversed) { got.append(it.key) }
                #expect(got == (reversed ? expected.reversed() : expected), "\(name) reversed=\(reversed)")
                try await d.checkInvariants()
            }
            // A point lookup by a key with different metadata.
            var probe = keys[17]
            probe.note = "other"
            #expect(try await tx.dynamicStore("dynamic").get(json(probe)) == ["first": .string(keys[17].note)])
            // A bounded range through the dynamic view of the typed store.
            let lo = expected[100], hi = expected[200]
            var bounded = 0
            for try await _ in try await tx.dynamicStore("typed").range(from: lo, to: hi) { bounded += 1 }
            #expect(bounded == 101)
        }
        let report = try await db2.check()
        #expect(report.isClean, "\(report.problems)")
        #expect(report.stores.allSatisfy { $0.orderChecked })
        try await db2.close()
    }

    @Test func typedOpenOfASpecifiedStoreUsesTheSpecification() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        let spec = try IndexSpecification([.init("n", ascending: false)])
        try await db.write { tx in
            let s = try await tx.createStore("s", key: JSONValue.self, value: Int.self,
                                             options: StoreOptions(indexSpecification: spec))
            for i in 0..<20 { try await s.add(["n": .int(Int64(i))], i) }
        }
        try await db.read { tx in
            // Opened as JSONValue keys without passing anything: ordered by the persisted spec.
            let s = try await tx.openStore("s", key: JSONValue.self, value: Int.self)
            var got: [Int] = []
            for try await it in s.range() { got.append(it.value) }
            #expect(got == Array((0..<20).reversed()))
            #expect(s.indexSpecification == spec && s.options.indexSpecification == spec)
        }
        // Opening with a different spec, or asking for one from a store without: invalidArgument.
        try await db.write { tx in
            _ = try await tx.store("plain", key: String.self, value: Int.self)
        }
        try await db.read { tx in
            let other = try IndexSpecification([.init("n")])
            await expectSOPError(.invalidArgument) {
                _ = try await tx.openStore("s", key: JSONValue.self, value: Int.self, index: other)
            }
            await expectSOPError(.invalidArgument) {
                _ = try await tx.openStore("plain", key: String.self, value: Int.self, index: nil)
            }
        }
        try await db.close()
    }

    /// A store written by a typed program: read and edited through the dynamic view (a value,
    /// a metadata key field), then re-read by the typed program.
    @Test func typedStoreIsReadAndEditedThroughTheDynamicView() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        var rng = SplitMix64(seed: 9)
        var keys: [DocKey] = []
        while keys.count < 50 {
            let k = randomKey(&rng)
            if !keys.contains(where: { !referenceLess($0, k) && !referenceLess(k, $0) }) { keys.append(k) }
        }
        try await db.write { tx in
            let s = try await tx.store("people", key: DocKey.self, value: Doc.self, index: personSpec)
            for k in keys { try await s.add(k, Doc(first: "f", born: k.age)) }
        }
        let target = keys.sorted(by: referenceLess)[10]
        // Dynamic edit: a value, and the metadata field of a key in place.
        try await db.write { tx in
            let d = try await tx.dynamicStore("people")
            #expect(try await d.update(json(target), ["first": "edited", "born": 1815]))
            #expect(try await d.find(json(target)))
            var k = d.currentKey!
            guard case .object(var o) = k else { Issue.record("not an object"); return }
            o["note"] = "dynamic note"
            k = .object(o)
            #expect(try await d.updateCurrentKey(k))
            // Changing an indexed field is refused and changes nothing.
            o["age"] = .int(Int64(target.age + 1000))
            await expectSOPError(.invalidArgument) { _ = try await d.updateCurrentKey(.object(o)) }
        }
        try await db.read { tx in
            let s = try await tx.openStore("people", key: DocKey.self, value: Doc.self, index: nil)
            #expect(s.count == 50)
            #expect(try await s.find(target))
            var expectedKey = target
            expectedKey.note = "dynamic note"
            #expect(s.currentKey == expectedKey)
            #expect(try await s.currentValue() == Doc(first: "edited", born: 1815))
        }
        // The typed program edits a metadata field through updateCurrentKey too.
        try await db.write { tx in
            let s = try await tx.openStore("people", key: DocKey.self, value: Doc.self, index: nil)
            #expect(try await s.find(target))
            var k = target
            k.note = "typed note"
            #expect(try await s.updateCurrentKey(k))
            k.last = "zzz"
            await expectSOPError(.invalidArgument) { _ = try await s.updateCurrentKey(k) }
        }
        try await db.read { tx in
            let d = try await tx.dynamicStore("people")
            #expect(try await d.find(json(target)))
            #expect(d.currentKey?["note"] == "typed note")
        }
        #expect(try await db.check().isClean)
        try await db.close()
    }

    @Test func dynamicViewOfScalarTypedStores() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        struct Opaque: Codable, Sendable, Comparable {
            var v: Int
            static func < (a: Opaque, b: Opaque) -> Bool { a.v > b.v }    // reversed: not JSON order
        }
        try await db.write { tx in
            let s = try await tx.store("names", key: String.self, value: Int.self, options: StoreOptions(slotLength: 4))
            for (i, n) in ["b", "a", "d", "c", "é", "E"].enumerated() { try await s.add(n, i) }
            let o = try await tx.store("opaque", key: Opaque.self, value: Int.self)
            for i in 0..<5 { try await o.add(Opaque(v: i), i) }
        }
        try await db.write { tx in
            let d = try await tx.dynamicStore("names")
            var got: [String] = []
            for try await k in d.keys() { if case .string(let s) = k.key { got.append(s) } }
            #expect(got == ["a", "b", "c", "d", "é", "E"].sorted())
            #expect(try await d.upsert("aa", 42))
            // A key of another JSON kind than the store's String keys is refused.
            await expectSOPError(.invalidArgument) { _ = try await d.add(5, 1) }
            let o = try await tx.dynamicStore("opaque")
            var walked = 0
            for try await _ in o.range() { walked += 1 }
            #expect(walked == 5)
            // Its order is the program's: the dynamic view refuses to search or add.
            await expectSOPError(.invalidArgument) { _ = try await o.find(["v": 1]) }
            await expectSOPError(.invalidArgument) { _ = try await o.add(["v": 9], 9) }
        }
        try await db.read { tx in
            let s = try await tx.openStore("names", key: String.self, value: Int.self)
            #expect(try await s.get("aa") == 42)
            #expect(s.count == 7)
        }
        try await db.close()
    }

    @Test func badKeysChangeNothing() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let s = try await tx.createStore("s", key: JSONValue.self, value: JSONValue.self,
                                             options: StoreOptions(indexSpecification: personSpec))
            try await s.add(["last": "a", "age": 1, "address": ["city": "x"]], 1)
        }
        let bad: [(JSONValue, String)] = [
            (["last": "a", "age": 1], "key is missing indexed field 'address.city'"),
            (["last": "a", "address": ["city": "x"]], "key is missing indexed field 'age'"),
            (["last": "a", "age": 1, "address": "x"], "key is missing indexed field 'address.city'"),
            ("a", "not a JSON object"),
        ]
        for (k, message) in bad {
            await #expect(throws: SOPError.self) {
                try await db.write { tx in
                    let s = try await tx.dynamicStore("s")
                    do { try await s.upsert(k, 2) } catch let e as SOPError {
                        #expect(e.code == .invalidArgument && e.message.contains(message), "\(e.message)")
                        throw e
                    }
                }
            }
            try await db.read { tx in
                let s = try await tx.dynamicStore("s")
                await expectSOPError(.invalidArgument) { _ = try await s.find(k) }
                #expect(s.count == 1)
            }
        }
        // A typed struct key without an indexed field (its encoding lacks the member).
        struct Partial: Codable, Sendable { var last: String }
        await expectSOPError(.invalidArgument) {
            try await db.write { tx in
                let s = try await tx.store("partial", key: Partial.self, value: Int.self, index: personSpec)
                try await s.add(Partial(last: "x"), 1)
            }
        }
        // Opening a struct-keyed store without an index specification and none persisted.
        await expectSOPError(.invalidArgument) {
            try await db.write { tx in
                _ = try await tx.store("nospec", key: Partial.self, value: Int.self, index: nil)
            }
        }
        #expect(db.stores().map(\.name) == ["s"])
        #expect(try await db.check().isClean)
        try await db.close()
    }

    @Test func pagingForwardAndBackward() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let db = try await Database.open(at: dir.db)
        try await db.write { tx in
            let s = try await tx.store("n", key: Int.self, value: Int.self, options: StoreOptions(slotLength: 4))
            for i in 0..<100 { try await s.add(i, i * 10) }
        }
        try await db.read { tx in
            let s = try await tx.openStore("n", key: Int.self, value: Int.self)
            #expect(try await s.page(from: nil, offset: 0, size: 3).map(\.key) == [0, 1, 2])
            #expect(try await s.page(from: 40, offset: 5, size: 3).map(\.key) == [45, 46, 47])
            #expect(try await s.page(from: 40, offset: 5, size: 3, descending: true).map(\.key) == [35, 34, 33])
            #expect(try await s.page(from: nil, offset: 0, size: 2, descending: true).map(\.value) == [990, 980])
            #expect(try await s.page(from: 98, offset: 0, size: 10).map(\.key) == [98, 99])
            await expectSOPError(.invalidArgument) { _ = try await s.page(from: nil, offset: -1, size: 1) }
        }
        try await db.close()
    }
}

@Suite struct KeysOnlyScanTests {
    /// A keys-only scan of a store with separately stored values reads no value blob; the
    /// measurement (printed) compares it with a full scan, each on a freshly opened database.
    @Test func keysOnlyScanReadsNoValueBlob() async throws {
        let dir = TempDir()
        defer { dir.cleanup() }
        let n = 10_000
        let payload = String(repeating: "x", count: 4096)
        var o = DatabaseOptions()
        o.blobCacheBytes = 0
        let db = try await Database.open(at: dir.db, options: o)
        for batch in 0..<(n / 2_000) {
            try await db.write { tx in
                let s = try await tx.store("docs", key: JSONValue.self, value: String.self, options: StoreOptions(
                    slotLength: 128, valuePlacement: .separateBlob,
                    indexSpecification: try IndexSpecification([.init("id")])))
                for i in (batch * 2_000)..<((batch + 1) * 2_000) {
                    try await s.add(["id": .int(Int64(i)), "tag": .string(i % 7 == 0 ? "seven" : "other")], payload)
                }
            }
        }
        try await db.close()

        func measure(_ keysOnly: Bool) async throws -> (ReadStatistics, Int, Duration) {
            let db = try await Database.open(at: dir.db, options: o)
            let clock = ContinuousClock()
            var tagged = 0
            let elapsed = try await clock.measure {
                try await db.read { tx in
                    let s = try await tx.openStore("docs", key: JSONValue.self, value: String.self, index: nil)
                    if keysOnly {
                        for try await k in s.keys() where k.key["tag"] == "seven" { tagged += 1 }
                    } else {
                        for try await it in s.range() where it.key["tag"] == "seven" && it.value.count == 4096 { tagged += 1 }
                    }
                }
            }
            let stats = db.readStatistics
            try await db.close()
            return (stats, tagged, elapsed)
        }
        let (keys, keyTagged, keyTime) = try await measure(true)
        let (full, fullTagged, fullTime) = try await measure(false)
        #expect(keys.valueBlobReads == 0 && keys.valueBlobBytes == 0)
        #expect(full.valueBlobReads == n)
        #expect(keyTagged == fullTagged && keyTagged == (n + 6) / 7)
        print("keys-only scan of \(n) items (4 KiB separate values): \(keys.nodeBlobReads) node reads, "
              + "\(keys.nodeBlobBytes) node bytes, \(keys.valueBlobReads) value reads, \(keyTime)")
        print("full scan: \(full.nodeBlobReads) node reads, \(full.nodeBlobBytes) node bytes, "
              + "\(full.valueBlobReads) value reads, \(full.valueBlobBytes) value bytes, \(fullTime); "
              + "bytes ratio \(Double(full.nodeBlobBytes + full.valueBlobBytes) / Double(max(1, keys.nodeBlobBytes)))x")
    }
}
