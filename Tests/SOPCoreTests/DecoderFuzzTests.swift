import Foundation
import SOPCore
import Testing

/// Iterations per fuzz test: 2,000 by default, `SOP_FUZZ_ITERATIONS=N` for longer runs.
func fuzzIterations(default n: Int = 2000) -> Int {
    if let s = ProcessInfo.processInfo.environment["SOP_FUZZ_ITERATIONS"], let v = Int(s), v > 0 { return v }
    return n
}

/// Random and mutated inputs to the decoders in SOPCore must give a value or an error —
/// `SOPError` for `Handle`, `DecodingError` for `StoreInfo` — never a crash.
@Suite struct CoreDecoderFuzzTests {
    static func randomID(_ g: inout SplitMix64) -> SOPID {
        switch Int.random(in: 0..<4, using: &g) {
        case 0: return .zero
        case 1: return .max
        default: return SOPID(high: g.next(), low: g.next())
        }
    }

    static func randomHandle(_ g: inout SplitMix64) -> Handle {
        Handle(logicalID: randomID(&g), physicalA: randomID(&g), physicalB: randomID(&g),
               isActiveB: Bool.random(using: &g), version: UInt32.random(in: 0...UInt32.max, using: &g),
               workInProgress: [0, 1, -1, .max, .min, Int64.random(in: .min ... .max, using: &g)].randomElement(using: &g)!,
               isDeleted: Bool.random(using: &g))
    }

    static func mutate(_ bytes: inout [UInt8], _ g: inout SplitMix64) {
        guard !bytes.isEmpty else { return }
        switch Int.random(in: 0..<5, using: &g) {
        case 0:
            for _ in 0..<Int.random(in: 1...4, using: &g) {
                bytes[Int.random(in: 0..<bytes.count, using: &g)] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &g)
            }
        case 1:
            let start = Int.random(in: 0..<bytes.count, using: &g)
            for i in start..<min(bytes.count, start + Int.random(in: 1...16, using: &g)) {
                bytes[i] = UInt8.random(in: 0...255, using: &g)
            }
        case 2:
            bytes.removeSubrange(Int.random(in: 0...bytes.count, using: &g)...)
        case 3:
            let at = Int.random(in: 0...bytes.count, using: &g)
            bytes.insert(contentsOf: (0..<Int.random(in: 1...8, using: &g)).map { _ in
                UInt8.random(in: 0...255, using: &g)
            }, at: at)
        default:
            let start = Int.random(in: 0..<bytes.count, using: &g)
            let end = min(bytes.count, start + Int.random(in: 1...8, using: &g))
            bytes.removeSubrange(start..<end)
        }
    }

    @Test func handlesNeverCrash() throws {
        var g = SplitMix64(seed: 21)
        var values = 0, errors = 0
        for iteration in 0..<fuzzIterations() {
            // A buffer holding a handle at some offset: random bytes, or a valid encoding
            // with random flag bytes.
            let prefix = Int.random(in: 0...3, using: &g) == 0 ? Int.random(in: 1...70, using: &g) : 0
            var bytes = (0..<prefix).map { _ in UInt8.random(in: 0...255, using: &g) }
            if iteration % 2 == 0 {
                bytes += (0..<Handle.encodedSize).map { _ in UInt8.random(in: 0...255, using: &g) }
            } else {
                Self.randomHandle(&g).encode(into: &bytes)
                for flag in [prefix + 48, prefix + 61] where Bool.random(using: &g) {
                    bytes[flag] = [0, 1, 2, 0x7F, 0x80, 0xFF, UInt8.random(in: 0...255, using: &g)].randomElement(using: &g)!
                }
            }
            if iteration % 5 == 0 { bytes.removeLast(Int.random(in: 0...bytes.count, using: &g)) }
            let offset: Int
            switch Int.random(in: 0..<10, using: &g) {
            case 0: offset = Int.random(in: -100...(-1), using: &g)
            case 2: offset = [Int.max, Int.max - 61, Int.max - Int.random(in: 0...100, using: &g), Int.min].randomElement(using: &g)!
            case 1: offset = Int.random(in: 0...(bytes.count + 100), using: &g)
            default: offset = prefix
            }
            let fits = offset >= 0 && offset <= bytes.count - Handle.encodedSize
            let flagsOK = fits && bytes[offset + 48] <= 1 && bytes[offset + 61] <= 1
            do {
                let h = try Handle(decoding: bytes, at: offset)
                #expect(fits && flagsOK)
                var again: [UInt8] = []
                h.encode(into: &again)
                #expect(again == Array(bytes[offset..<offset + Handle.encodedSize]), "a decoded handle re-encodes to its bytes")
                #expect(try Handle(decoding: again, at: 0) == h)
                values += 1
            } catch let e as SOPError {
                #expect(e.code == .corrupt)
                #expect(!(fits && flagsOK), "a valid handle was refused: \(e)")
                errors += 1
            }
        }
        print("handles: \(values) decoded, \(errors) refused")
        #expect(values > 0 && errors > 0)
    }

    static let names = ["people", "a", "cm-a", "x.y_z-1", "", "é", "😀", "a\"b", "\\", "\u{0}", String(repeating: "n", count: 200)]
    static let fields = ["format", "name", "id", "options", "rootID", "count", "countVersion", "keyType",
                         "valueType", "createdAt", "slotLength", "isUnique", "valuePlacement", "description"]

    static func randomStoreInfo(_ g: inout SplitMix64) -> StoreInfo {
        let options = StoreOptions(slotLength: [4, 8, 128, 10_000, 0, -1, .max].randomElement(using: &g)!,
                                   isUnique: Bool.random(using: &g),
                                   valuePlacement: ValuePlacement.allCases.randomElement(using: &g)!,
                                   description: names.randomElement(using: &g)!)
        var info = StoreInfo(name: names.randomElement(using: &g)!, options: options,
                             keyType: names.randomElement(using: &g)!, valueType: "JSONValue",
                             createdAt: Int64.random(in: .min ... .max, using: &g))
        info.id = randomID(&g)
        info.rootID = randomID(&g)
        info.count = [0, 1, -1, .max, .min].randomElement(using: &g)!
        info.countVersion = [0, 1, .max].randomElement(using: &g)!
        return info
    }

    /// Replaces, removes or adds one member somewhere in a JSON object tree.
    static func mutateJSON(_ v: JSONValue, _ g: inout SplitMix64, depth: Int = 0) -> JSONValue {
        guard case .object(let o) = v, !o.isEmpty || depth == 0 else {
            return RandomJSON.value(&g)
        }
        var members = o.members
        switch Int.random(in: 0..<4, using: &g) {
        case 0 where !members.isEmpty:   // a random value for a member (or deeper)
            let i = Int.random(in: 0..<members.count, using: &g)
            members[i].value = Bool.random(using: &g) ? mutateJSON(members[i].value, &g, depth: depth + 1) : RandomJSON.value(&g)
        case 1 where !members.isEmpty:   // drop a member
            members.remove(at: Int.random(in: 0..<members.count, using: &g))
        case 2 where !members.isEmpty:   // duplicate a member with another value
            let i = Int.random(in: 0..<members.count, using: &g)
            members.append((key: members[i].key, value: RandomJSON.value(&g)))
        default:                         // an extra or re-typed field
            members.append((key: fields.randomElement(using: &g)!, value: RandomJSON.value(&g)))
        }
        return .object(JSONObject(members))
    }

    @Test func storeInfosNeverCrash() throws {
        var g = SplitMix64(seed: 22)
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let dec = JSONDecoder()
        var values = 0, errors = 0
        for iteration in 0..<fuzzIterations() {
            let valid = try enc.encode(Self.randomStoreInfo(&g))
            #expect(try dec.decode(StoreInfo.self, from: valid) == dec.decode(StoreInfo.self, from: valid))
            var bytes: [UInt8]
            switch iteration % 4 {
            case 0:   // random bytes, sometimes starting like an object
                bytes = (0..<Int.random(in: 0...300, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
                if Bool.random(using: &g) { bytes.insert(UInt8(ascii: "{"), at: 0) }
            case 1:   // random JSON
                bytes = Array(RandomJSON.value(&g).jsonText.utf8)
            case 2:   // valid JSON with members replaced, removed, duplicated or added
                var v = try JSONValue(parsing: Array(valid))
                for _ in 0..<Int.random(in: 1...3, using: &g) { v = Self.mutateJSON(v, &g) }
                bytes = Array(v.jsonText.utf8)
            default:  // valid JSON with bytes mutated
                bytes = Array(valid)
                for _ in 0..<Int.random(in: 1...3, using: &g) { Self.mutate(&bytes, &g) }
            }
            do {
                let info = try dec.decode(StoreInfo.self, from: Data(bytes))
                // Whatever decodes encodes and decodes to itself.
                #expect(try dec.decode(StoreInfo.self, from: enc.encode(info)) == info)
                values += 1
            } catch is DecodingError {
                errors += 1
            }
        }
        print("store infos: \(values) decoded, \(errors) refused")
        #expect(values > 0 && errors > 0)
    }
}
