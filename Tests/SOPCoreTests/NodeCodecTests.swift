#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SOPCore
import Testing

typealias RawNode = NodeCodec.RawNode
typealias RawItem = NodeCodec.RawItem
typealias RawSeparator = NodeCodec.RawSeparator

private func id(_ n: UInt64) -> SOPID { SOPID(high: 0x0123_4567_89AB_CDEF, low: n) }
private func text(_ v: JSONValue) -> [UInt8] { Array(v.jsonText.utf8) }
private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Expects `decode` to throw SOPError with `code` (and, for corrupt, a "node: " message).
private func expectDecodeError(_ input: String, _ code: SOPError.Code = .corrupt,
                               sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        let node = try NodeCodec.decode(bytes(input))
        Issue.record("decoded \(input) as \(node)", sourceLocation: sourceLocation)
    } catch let e as SOPError {
        #expect(e.code == code, "\(input): \(e)", sourceLocation: sourceLocation)
        if code == .corrupt {
            #expect(e.message.hasPrefix("node: "), "\(e.message)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("\(error)", sourceLocation: sourceLocation)
    }
}

@Suite("NodeCodec")
struct NodeCodecTests {
    static let leaf = RawNode(id: id(1), items: [
        RawItem(key: text("apple"), id: id(2), value: .inline(text(["n": 1, "tags": ["x", nil]]))),
        RawItem(key: text(["a", 1]), id: id(3), value: .blob(id(4))),
        RawItem(key: text(-2.5), id: id(5), value: .inline(text("v\"\n"))),
    ])
    static let internalNode = RawNode(id: id(10), separators: [
        RawSeparator(key: text("m"), id: id(11)), RawSeparator(key: text(["z": true]), id: id(12)),
    ], children: [id(20), id(21), id(22)])

    @Test("the exact compact format")
    func exactFormat() {
        let h = "0123456789abcdef"
        let leaf = RawNode(id: id(1), items: [
            RawItem(key: text("k"), id: id(2), value: .inline(text(7))),
            RawItem(key: text(1), id: id(3), value: .blob(id(0xABC))),
        ])
        #expect(String(decoding: NodeCodec.encode(leaf), as: UTF8.self) ==
            #"{"format":1,"id":"\#(h)0000000000000001","items":[{"k":"k","id":"\#(h)0000000000000002","v":7},"#
            + #"{"k":1,"id":"\#(h)0000000000000003","vb":"\#(h)0000000000000abc"}],"separators":[],"children":[]}"#)
        let inner = RawNode(id: id(1), separators: [RawSeparator(key: text("s"), id: id(2))], children: [id(3), id(4)])
        #expect(String(decoding: NodeCodec.encode(inner), as: UTF8.self) ==
            #"{"format":1,"id":"\#(h)0000000000000001","items":[],"separators":[{"k":"s","id":"\#(h)0000000000000002"}],"#
            + #""children":["\#(h)0000000000000003","\#(h)0000000000000004"]}"#)
        let empty = RawNode(id: id(1))
        #expect(String(decoding: NodeCodec.encode(empty), as: UTF8.self) ==
            #"{"format":1,"id":"\#(h)0000000000000001","items":[],"separators":[],"children":[]}"#)
        #expect(NodeCodec.formatVersion == 1)
    }

    @Test("leaf, internal and empty nodes round-trip; output is valid JSON")
    func roundTrip() throws {
        for node in [Self.leaf, Self.internalNode, RawNode(id: .max)] {
            let encoded = NodeCodec.encode(node)
            #expect(encoded.count == NodeCodec.encodedSize(node))
            #expect(try NodeCodec.decode(encoded) == node)
            #expect(try NodeCodec.decode(encoded[...]) == node)
            _ = try JSONValue(parsing: encoded)
            var out = bytes("xyz")
            NodeCodec.encode(node, appendingTo: &out)
            #expect(Array(out.dropFirst(3)) == encoded)
            #expect(try NodeCodec.decode(out[3...]) == node)
        }
    }

    @Test("decoding tolerates whitespace, member reordering and escaped member names")
    func tolerantDecoding() throws {
        // Re-serialize through JSONValue with pretty whitespace and members reversed.
        let encoded = NodeCodec.encode(Self.leaf)
        let value = try JSONValue(parsing: encoded)
        func reversed(_ v: JSONValue) -> JSONValue {
            switch v {
            case .object(let o): return .object(JSONObject(o.members.reversed().map { ($0.key, reversed($0.value)) }))
            case .array(let a): return .array(a.map(reversed))
            default: return v
            }
        }
        // Reversal also reorders members inside keys/values; compare against the same transform.
        let rewritten = reversed(value)
        var spaced = ""
        for c in rewritten.jsonText {
            spaced.append(c)
            if c == "," || c == ":" || c == "[" || c == "{" { spaced.append(" \n\t\r ") }
        }
        let node = try NodeCodec.decode(bytes(" \n" + spaced + "\n "))
        #expect(node.id == Self.leaf.id)
        #expect(node.items.count == 3)
        for (got, want) in zip(node.items, Self.leaf.items) {
            #expect(got.id == want.id)
            #expect(try JSONValue(parsing: got.key) == JSONValue(parsing: want.key))
            switch (got.value, want.value) {
            case let (.inline(g), .inline(w)): #expect(try JSONValue(parsing: g) == JSONValue(parsing: w))
            case let (.blob(g), .blob(w)): #expect(g == w)
            default: Issue.record("value kind changed")
            }
        }
        // Key and value texts are exact slices, whitespace inside them included.
        let h = String(repeating: "a", count: 32)
        let raw = #"{ "id" : "\#(h)" , "children":[], "\u0066ormat" : 1, "separators":[], "items" : [ { "v" : [ 1 , 2 ] , "id" : "\#(h.uppercased())" , "k" : "x" } ] }"#
        let n = try NodeCodec.decode(bytes(raw))
        #expect(n.items == [RawItem(key: bytes("\"x\""), id: SOPID(hex: h)!, value: .inline(bytes("[ 1 , 2 ]")))])
    }

    @Test("unknown format values are unsupportedFormat, even when the rest differs")
    func unsupportedFormat() {
        let h = String(repeating: "0", count: 31) + "1"
        expectDecodeError(#"{"format":2,"id":"\#(h)","items":[],"separators":[],"children":[]}"#, .unsupportedFormat)
        expectDecodeError(#"{"format":0,"id":"\#(h)","items":[],"separators":[],"children":[]}"#, .unsupportedFormat)
        expectDecodeError(#"{"nodes":{"x":1},"format":3}"#, .unsupportedFormat)
        expectDecodeError(#"{"id":"\#(h)","items":[{"key":1}],"format":2}"#, .unsupportedFormat)
    }

    static let h1 = String(repeating: "0", count: 31) + "1"
    static let malformed: [String] = {
        let h = h1
        let tail = #","separators":[],"children":[]}"#
        let head = #"{"format":1,"id":"\#(h)","items":"#
        return [
            "", "   ", "null", "[]", "{}", "{", #"{"format":1"#,
            #"{"format":1,"items":[],"separators":[],"children":[]}"#,                         // missing id
            #"{"id":"\#(h)","items":[],"separators":[],"children":[]}"#,                       // missing format
            #"{"format":1,"id":"\#(h)","separators":[],"children":[]}"#,                       // missing items
            #"{"format":1,"id":"\#(h)","items":[],"children":[]}"#,                            // missing separators
            #"{"format":1,"id":"\#(h)","items":[],"separators":[]}"#,                          // missing children
            #"{"format":"1","id":"\#(h)","items":[],"separators":[],"children":[]}"#,          // format type
            #"{"format":1.0,"id":"\#(h)","items":[],"separators":[],"children":[]}"#,
            #"{"format":1,"id":"xyz","items":[],"separators":[],"children":[]}"#,              // bad id
            #"{"format":1,"id":"\#(h)0","items":[],"separators":[],"children":[]}"#,
            #"{"format":1,"id":1,"items":[],"separators":[],"children":[]}"#,
            #"{"format":1,"id":"\#(h)","items":{},"separators":[],"children":[]}"#,           // wrong types
            #"{"format":1,"id":"\#(h)","items":[],"separators":null,"children":[]}"#,
            #"{"format":1,"id":"\#(h)","items":[],"separators":[],"children":"x"}"#,
            #"{"format":1,"id":"\#(h)","items":[],"separators":[],"children":[1]}"#,
            #"{"format":1,"format":1,"id":"\#(h)","items":[],"separators":[],"children":[]}"#, // duplicates
            #"{"format":1,"id":"\#(h)","id":"\#(h)","items":[],"separators":[],"children":[]}"#,
            #"{"format":1,"id":"\#(h)","items":[],"separators":[],"children":[],"extra":0}"#,  // unknown
            #"{"format":1,"id":"\#(h)","items":[],"separators":[],"children":[]} x"#,          // trailing
            #"{"format":1,"id":"\#(h)","items":[],"separators":[],"children":[]}{}"#,
            #"{"format":1,"id":"\#(h)","items":[],"separators":[],"children":[],}"#,
            #"{"format":1 "id":"\#(h)","items":[],"separators":[],"children":[]}"#,
            head + "[{}]" + tail,                                                                  // item shapes
            head + "[1]" + tail,
            head + #"[{"k":1,"id":"\#(h)"}]"# + tail,                                              // no value
            head + #"[{"k":1,"v":1}]"# + tail,                                                     // no id
            head + #"[{"id":"\#(h)","v":1}]"# + tail,                                              // no key
            head + #"[{"k":1,"id":"\#(h)","v":1,"vb":"\#(h)"}]"# + tail,                          // two values
            head + #"[{"k":1,"k":2,"id":"\#(h)","v":1}]"# + tail,
            head + #"[{"k":1,"id":"\#(h)","v":1,"x":1}]"# + tail,
            head + #"[{"k":,"id":"\#(h)","v":1}]"# + tail,                                         // bad key text
            head + #"[{"k":01,"id":"\#(h)","v":1}]"# + tail,
            head + #"[{"k":1,"id":"\#(h)","v":[1,}]"# + tail,                                      // bad value text
            head + #"[{"k":1,"id":"\#(h)","v":tru}]"# + tail,
            head + #"[{"k":1,"id":"\#(h)","vb":12}]"# + tail,
            head + #"[{"k":1,"id":"\#(h)","v":1},]"# + tail,
            head + #"[{"k":1,"id":"\#(h)","v":1}"# + tail,
            // Internal-node invariants.
            #"{"format":1,"id":"\#(h)","items":[],"separators":[{"k":1,"id":"\#(h)"}],"children":["\#(h)"]}"#,
            #"{"format":1,"id":"\#(h)","items":[],"separators":[],"children":["\#(h)","\#(h)"]}"#,
            #"{"format":1,"id":"\#(h)","items":[],"separators":[{"k":1,"id":"\#(h)"}],"children":[]}"#,
            #"{"format":1,"id":"\#(h)","items":[{"k":1,"id":"\#(h)","v":1}],"separators":[],"children":["\#(h)"]}"#,
            #"{"format":1,"id":"\#(h)","items":[],"separators":[{"k":1,"id":"\#(h)","v":2}],"children":["\#(h)","\#(h)"]}"#,
            #"{"format":1,"id":"\#(h)","items":[],"separators":[{"id":"\#(h)"}],"children":["\#(h)","\#(h)"]}"#,
        ]
    }()

    @Test("malformed nodes throw corrupt", arguments: malformed)
    func malformedNodes(_ input: String) {
        expectDecodeError(input)
    }

    @Test("truncations of a valid node all throw corrupt")
    func truncations() {
        let encoded = NodeCodec.encode(Self.leaf)
        for n in 0..<encoded.count {
            #expect(throws: SOPError.self) { try NodeCodec.decode(Array(encoded[..<n])) }
        }
    }

    @Test("seeded fuzz: 3,000 random and mutated inputs never crash decode")
    func fuzz() throws {
        var g = SplitMix64(seed: 2024)
        var decoded = 0, rejected = 0
        let alphabet = Array("{}[]\",:\\ 0123456789abcdefkvbidxu-.etrn".utf8)
        for round in 0..<3_000 {
            var input: [UInt8]
            if round % 10 == 0 {
                // Pure noise, biased toward JSON punctuation.
                input = (0..<Int.random(in: 0...200, using: &g)).map { _ in
                    Bool.random(using: &g) ? alphabet.randomElement(using: &g)! : UInt8.random(in: 0...255, using: &g)
                }
            } else {
                input = NodeCodec.encode(Self.randomNode(&g))
                let mutations = Int.random(in: 1...4, using: &g)
                for _ in 0..<mutations where !input.isEmpty {
                    let at = Int.random(in: 0..<input.count, using: &g)
                    switch Int.random(in: 0..<6, using: &g) {
                    case 0: input[at] = UInt8.random(in: 0...255, using: &g)
                    case 1: input[at] = alphabet.randomElement(using: &g)!
                    case 2: input.remove(at: at)
                    case 3: input.insert(alphabet.randomElement(using: &g)!, at: at)
                    case 4: input.removeSubrange(at..<min(input.count, at + Int.random(in: 1...20, using: &g)))
                    default:
                        let from = Int.random(in: 0..<input.count, using: &g)
                        let chunk = input[from..<min(input.count, from + Int.random(in: 1...40, using: &g))]
                        input.insert(contentsOf: chunk, at: at)
                    }
                }
            }
            do {
                let node = try NodeCodec.decode(input)
                decoded += 1
                // Whatever decodes must re-encode to something that decodes to the same node.
                #expect(try NodeCodec.decode(NodeCodec.encode(node)) == node)
            } catch let e as SOPError {
                #expect(e.code == .corrupt || e.code == .unsupportedFormat)
                rejected += 1
            }
        }
        print("NodeCodec fuzz: \(decoded) decoded, \(rejected) rejected")
        #expect(decoded + rejected == 3_000)
    }

    static func randomNode(_ g: inout SplitMix64) -> RawNode {
        let rid = { (g: inout SplitMix64) in SOPID(high: g.next(), low: g.next()) }
        if Bool.random(using: &g) {
            let items = (0..<Int.random(in: 0...5, using: &g)).map { _ in
                RawItem(key: text(RandomJSON.value(&g)), id: rid(&g),
                        value: Bool.random(using: &g) ? .inline(text(RandomJSON.value(&g))) : .blob(rid(&g)))
            }
            return RawNode(id: rid(&g), items: items)
        }
        let n = Int.random(in: 0...4, using: &g)
        return RawNode(id: rid(&g),
                       separators: (0..<n).map { _ in RawSeparator(key: text(RandomJSON.value(&g)), id: rid(&g)) },
                       children: (0...n).map { _ in rid(&g) })
    }

    @Test("encode/decode throughput (prints MB/s; no assertions on time)")
    func throughput() throws {
        var g = SplitMix64(seed: 1)
        let letters = Array("abcdefghijklmnopqrstuvwxyz0123456789".utf8)
        func randomString(_ n: Int) -> [UInt8] {
            var s: [UInt8] = []
            JSONBytes.appendString(String(decoding: (0..<n).map { _ in letters.randomElement(using: &g)! },
                                          as: UTF8.self), to: &s)
            return s
        }
        let node = RawNode(id: .timeOrdered(), items: (0..<500).map { _ in
            RawItem(key: randomString(16), id: .timeOrdered(), value: .inline(randomString(100)))
        })
        let encoded = NodeCodec.encode(node)
        #expect(try NodeCodec.decode(encoded) == node)
        #if DEBUG
        let rounds = 50
        let mode = "debug build; run `swift test -c release` for real numbers"
        #else
        let rounds = 2_000
        let mode = "release build"
        #endif
        func seconds(_ body: () throws -> Void) rethrows -> Double {
            var t0 = timespec(), t1 = timespec()
            clock_gettime(CLOCK_MONOTONIC, &t0)
            try body()
            clock_gettime(CLOCK_MONOTONIC, &t1)
            return Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) / 1e9
        }
        var sink = 0
        let enc = seconds {
            for _ in 0..<rounds { sink &+= NodeCodec.encode(node).count }
        }
        let dec = try seconds {
            for _ in 0..<rounds { sink &+= try NodeCodec.decode(encoded).items.count }
        }
        let mb = Double(encoded.count * rounds) / 1_000_000
        print("NodeCodec throughput (\(mode)): node \(encoded.count) bytes, 500 items; "
            + "encode \(Int(mb / enc)) MB/s, decode \(Int(mb / dec)) MB/s [sink \(sink)]")
    }
}
