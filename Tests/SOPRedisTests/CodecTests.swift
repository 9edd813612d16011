import SOPTestSupport
import NIOCore
import SOPCore
import Testing

@testable import SOPRedis

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Every RESP2 and RESP3 type, each with the value it must decode to.
private let fixtures: [(String, [UInt8], RESPValue)] = [
    ("simple string", bytes("+OK\r\n"), .simpleString("OK")),
    ("empty simple string", bytes("+\r\n"), .simpleString("")),
    ("error", bytes("-ERR unknown command 'FOO'\r\n"), .error("ERR unknown command 'FOO'")),
    ("integer", bytes(":1000\r\n"), .integer(1000)),
    ("negative integer", bytes(":-9223372036854775808\r\n"), .integer(.min)),
    ("bulk string", bytes("$5\r\nhello\r\n"), .bulkString(bytes("hello"))),
    ("binary bulk string", [UInt8(ascii: "$"), UInt8(ascii: "4"), 13, 10, 0, 13, 10, 255, 13, 10], .bulkString([0, 13, 10, 255])),
    ("empty bulk string", bytes("$0\r\n\r\n"), .bulkString([])),
    ("null bulk string", bytes("$-1\r\n"), .bulkString(nil)),
    ("array", bytes("*2\r\n$3\r\nfoo\r\n:7\r\n"), .array([.bulkString(bytes("foo")), .integer(7)])),
    ("empty array", bytes("*0\r\n"), .array([])),
    ("null array", bytes("*-1\r\n"), .array(nil)),
    ("nested arrays", bytes("*2\r\n*1\r\n+a\r\n*2\r\n$-1\r\n*0\r\n"),
        .array([.array([.simpleString("a")]), .array([.bulkString(nil), .array([])])])),
    ("null", bytes("_\r\n"), .null),
    ("true", bytes("#t\r\n"), .boolean(true)),
    ("false", bytes("#f\r\n"), .boolean(false)),
    ("double", bytes(",3.14\r\n"), .double(3.14)),
    ("double exponent", bytes(",-1.5e3\r\n"), .double(-1500)),
    ("double inf", bytes(",inf\r\n"), .double(.infinity)),
    ("double -inf", bytes(",-inf\r\n"), .double(-.infinity)),
    ("big number", bytes("(3492890328409238509324850943850943825024385\r\n"), .bigNumber("3492890328409238509324850943850943825024385")),
    ("negative big number", bytes("(-12\r\n"), .bigNumber("-12")),
    ("bulk error", bytes("!21\r\nSYNTAX invalid syntax\r\n"), .bulkError("SYNTAX invalid syntax")),
    ("verbatim string", bytes("=15\r\ntxt:Some string\r\n"), .verbatimString(format: "txt", text: bytes("Some string"))),
    ("map", bytes("%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n"),
        .map([RESPPair(.simpleString("first"), .integer(1)), RESPPair(.simpleString("second"), .integer(2))])),
    ("set", bytes("~3\r\n+a\r\n:1\r\n#t\r\n"), .set([.simpleString("a"), .integer(1), .boolean(true)])),
    ("push", bytes(">2\r\n+message\r\n$2\r\nhi\r\n"), .push([.simpleString("message"), .bulkString(bytes("hi"))])),
    ("attribute skipped", bytes("|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.5\r\n*1\r\n:2\r\n"), .array([.integer(2)])),
    ("attribute inside array", bytes("*2\r\n|1\r\n+ttl\r\n:3\r\n:10\r\n:20\r\n"), .array([.integer(10), .integer(20)])),
    ("map of aggregates", bytes("%1\r\n*1\r\n_\r\n~1\r\n%0\r\n"), .map([RESPPair(.array([.null]), .set([.map([])]))])),
]

private func decodeStream(_ chunks: [[UInt8]], decoder: RESPDecoder = RESPDecoder()) throws -> [RESPValue] {
    var buffer = ByteBuffer()
    var out: [RESPValue] = []
    for c in chunks {
        buffer.writeBytes(c)
        while let v = try decoder.decode(&buffer) { out.append(v) }
    }
    #expect(buffer.readableBytes == 0)
    return out
}

@Suite("RESP codec")
struct CodecTests {
    @Test("every RESP2/RESP3 type decodes to its value", arguments: fixtures.indices)
    func fixture(_ i: Int) throws {
        let (name, input, expected) = fixtures[i]
        let (values, rest) = try RESPDecoder().decodeAll(input)
        #expect(values == [expected], "\(name)")
        #expect(rest == 0, "\(name)")
    }

    @Test func nanDouble() throws {
        let (values, _) = try RESPDecoder().decodeAll(bytes(",nan\r\n"))
        guard case .double(let d) = values.first else {
            Issue.record("not a double: \(values)")
            return
        }
        #expect(d.isNaN)
    }

    @Test func attributesKeptWhenAsked() throws {
        var d = RESPDecoder()
        d.keepAttributes = true
        let (values, _) = try d.decodeAll(bytes("|1\r\n+ttl\r\n:3\r\n+OK\r\n"))
        #expect(values == [.attributed(attributes: [RESPPair(.simpleString("ttl"), .integer(3))], value: .simpleString("OK"))])
        #expect(values[0].string == "OK")
    }

    @Test func accessors() {
        #expect(RESPValue.bulkString(bytes("12")).int == 12)
        #expect(RESPValue.bulkString(nil).isNull)
        #expect(RESPValue.array(nil).isNull)
        #expect(RESPValue.null.isNull)
        #expect(RESPValue.bulkError("X y").errorMessage == "X y")
        #expect(RESPValue.error("E").isError)
        #expect(RESPValue.set([.integer(1)]).elements == [.integer(1)])
    }

    /// All fixtures in one stream, cut in two at every byte, and fed one byte at a time.
    @Test func splitReadsAtEveryByteBoundary() throws {
        let stream = fixtures.flatMap(\.1)
        let expected = fixtures.map(\.2)
        #expect(try decodeStream([stream]) == expected)
        for cut in 0...stream.count {
            let got = try decodeStream([Array(stream[..<cut]), Array(stream[cut...])])
            #expect(got == expected, "cut at \(cut)")
            if got != expected { break }
        }
        #expect(try decodeStream(stream.map { [$0] }) == expected)
    }

    @Test func partialReplyConsumesNothing() throws {
        var buffer = ByteBuffer(bytes: bytes("*2\r\n$3\r\nfoo\r\n:7"))
        #expect(try RESPDecoder().decode(&buffer) == nil)
        #expect(buffer.readableBytes == 15)
        buffer.writeBytes(bytes("\r\n+next"))
        #expect(try RESPDecoder().decode(&buffer) == .array([.bulkString(bytes("foo")), .integer(7)]))
        #expect(try RESPDecoder().decode(&buffer) == nil)
        #expect(buffer.readableBytes == 5)
    }

    static let malformed: [(String, String)] = [
        ("bad type byte", "?foo\r\n"),
        ("bad type byte after a good reply", "+OK\r\nXfoo\r\n"),
        ("non-numeric length", "$abc\r\n"),
        ("empty length", "*\r\n"),
        ("negative bulk length", "$-2\r\n"),
        ("negative array length", "*-5\r\n"),
        ("null map", "%-1\r\n"),
        ("null set", "~-1\r\n"),
        ("null bulk error", "!-1\r\n"),
        ("plus sign in length", "$+3\r\nabc\r\n"),
        ("bulk without CRLF", "$3\r\nabcX\r\n"),
        ("CR without LF", "+OK\rX"),
        ("bare LF", "+OK\n"),
        ("integer overflow", ":99999999999999999999\r\n"),
        ("integer with junk", ":12a\r\n"),
        ("overlong bulk", "$536870913\r\n"),
        ("huge length", "$99999999999999999999999\r\n"),
        ("bad boolean", "#x\r\n"),
        ("bad double", ",abc\r\n"),
        ("empty double", ",\r\n"),
        ("null with content", "_x\r\n"),
        ("bad big number", "(12x\r\n"),
        ("short verbatim", "=3\r\nabc\r\n"),
        ("verbatim without colon", "=5\r\nabcde\r\n"),
        ("streamed string", "$?\r\n;4\r\nabcd\r\n;0\r\n"),
        ("streamed array", "*?\r\n:1\r\n.\r\n"),
        ("nesting too deep", String(repeating: "*1\r\n", count: 65) + ":1\r\n"),
        ("attribute chain too deep", String(repeating: "|0\r\n", count: 70) + ":1\r\n"),
        ("bad element in array", "*2\r\n:1\r\n^x\r\n"),
    ]

    @Test("malformed input is a protocol error", arguments: malformed.indices)
    func malformedInput(_ i: Int) {
        let (name, input) = Self.malformed[i]
        do {
            let (values, rest) = try RESPDecoder().decodeAll(bytes(input))
            Issue.record("\(name): decoded \(values), \(rest) bytes left, no error")
        } catch let e as SOPError {
            #expect(e.code == .io, "\(name)")
            #expect(e.message.hasPrefix("redis protocol error: "), "\(name): \(e.message)")
        } catch {
            Issue.record("\(name): \(error)")
        }
    }

    @Test func nestingAtTheLimitIsAccepted() throws {
        let input = String(repeating: "*1\r\n", count: 64) + ":1\r\n"
        var expected = RESPValue.integer(1)
        for _ in 0..<64 { expected = .array([expected]) }
        #expect(try RESPDecoder().decodeAll(bytes(input)).values == [expected])
    }

    @Test func configurableLimits() throws {
        var d = RESPDecoder()
        d.maxAggregateCount = 10
        d.maxBulkLength = 4
        d.maxLineLength = 8
        #expect(throws: SOPError.self) { try d.decodeAll(bytes("*11\r\n")) }
        #expect(throws: SOPError.self) { try d.decodeAll(bytes("%11\r\n")) }
        #expect(throws: SOPError.self) { try d.decodeAll(bytes("$5\r\n")) }
        #expect(try d.decodeAll(bytes("$4\r\nabcd\r\n")).values == [.bulkString(bytes("abcd"))])
        // A line that outgrows the limit before its CRLF arrives is refused, not awaited.
        #expect(throws: SOPError.self) { try d.decodeAll(bytes("+abcdefghijklmnop")) }
        // A big announced length reserves nothing: 10 elements announced, none sent.
        #expect(try d.decodeAll(bytes("*10\r\n")).rest == 5)
    }

    @Test func encoder() throws {
        #expect(RESPEncoder.encode(["SET", "k", "v"]) == bytes("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"))
        #expect(RESPEncoder.encode(["GET", "é"]) == bytes("*2\r\n$3\r\nGET\r\n$2\r\né\r\n"))
        var b = ByteBuffer()
        RESPEncoder.writeCommand([bytes("SET"), [0, 13, 10, 255], []], into: &b)
        #expect(Array(b.readableBytesView) == bytes("*3\r\n$3\r\nSET\r\n$4\r\n") + [0, 13, 10, 255] + bytes("\r\n$0\r\n\r\n"))
        var c = ByteBuffer()
        RESPEncoder.writeCommand([ByteBuffer(string: "PING")], into: &c)
        #expect(Array(c.readableBytesView) == bytes("*1\r\n$4\r\nPING\r\n"))
        // A command is itself valid RESP: an array of bulk strings.
        let (values, _) = try RESPDecoder().decodeAll(RESPEncoder.encode(["A", "", "bc"]))
        #expect(values == [.array([.bulkString(bytes("A")), .bulkString([]), .bulkString(bytes("bc"))])])
    }

    /// 2,000 seeded random and mutated inputs: each decodes, waits for more, or throws a
    /// protocol error — never crashes, hangs or throws anything else.
    @Test func fuzz() {
        var rng = SplitMix64(seed: 0x5EED_2ED1)
        let alphabet = bytes("+-:$*_#,(!=%~>|\r\n0123456789-?tfabc")
        let seeds = fixtures.map(\.1)
        var outcomes = (values: 0, waiting: 0, errors: 0)
        for round in 0..<2000 {
            var input: [UInt8]
            if round % 2 == 0 {
                let n = Int(rng.next() % 48)
                input = (0..<n).map { _ in
                    rng.next() % 4 == 0 ? UInt8(truncatingIfNeeded: rng.next()) : alphabet[Int(rng.next() % UInt64(alphabet.count))]
                }
            } else {
                input = seeds[Int(rng.next() % UInt64(seeds.count))] + seeds[Int(rng.next() % UInt64(seeds.count))]
                for _ in 0...(rng.next() % 4) {
                    guard !input.isEmpty else { break }
                    let at = Int(rng.next() % UInt64(input.count))
                    switch rng.next() % 4 {
                    case 0: input[at] = UInt8(truncatingIfNeeded: rng.next())
                    case 1: input.remove(at: at)
                    case 2: input.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: at)
                    default: input = Array(input[..<at])
                    }
                }
            }
            var buffer = ByteBuffer(bytes: input)
            do {
                var steps = 0
                while let _ = try RESPDecoder().decode(&buffer) {
                    outcomes.values += 1
                    steps += 1
                    #expect(steps <= input.count, "no progress on \(input)")
                    if steps > input.count { break }
                }
                outcomes.waiting += 1
            } catch let e as SOPError {
                outcomes.errors += 1
                #expect(e.code == .io && e.message.hasPrefix("redis protocol error: "), "\(e)")
            } catch {
                Issue.record("unexpected error \(error) for \(input)")
            }
        }
        // The generator reaches all three outcomes.
        #expect(outcomes.values > 100 && outcomes.waiting > 100 && outcomes.errors > 100, "\(outcomes)")
    }

    @Test func sha1() {
        #expect(sha1Hex([]) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(sha1Hex(bytes("abc")) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(sha1Hex(bytes(String(repeating: "a", count: 1000))) == "291e9a6c66994949b57ba5e650361e98fc36b1ba")
    }
}


@Suite("Redis URL")
struct ConfigurationTests {
    @Test func parses() throws {
        let a = try RedisConfiguration(url: "redis://localhost")
        #expect(a.host == "localhost" && a.port == 6379 && a.database == 0 && a.password == nil && a.user == nil)
        let b = try RedisConfiguration(url: "redis://alice:p%40ss@10.0.0.1:7000/3")
        #expect(b.host == "10.0.0.1" && b.port == 7000 && b.database == 3 && b.user == "alice" && b.password == "p@ss")
        let c = try RedisConfiguration(url: "redis://:secret@h:1/")
        #expect(c.user == nil && c.password == "secret" && c.port == 1 && c.database == 0)
        let d = try RedisConfiguration(url: "redis://[::1]:6380/2")
        #expect(d.host == "::1" && d.port == 6380 && d.database == 2 && d.address == "[::1]:6380")
    }

    @Test func refuses() {
        for bad in ["http://h", "redis://", "redis://h:0", "redis://h:x", "redis://h/x", "redis://h:1?a=b", "redis://[::1"] {
            #expect(throws: SOPError.self, "\(bad)") { try RedisConfiguration(url: bad) }
        }
        do {
            _ = try RedisConfiguration(url: "rediss://h:6380")
            Issue.record("rediss accepted")
        } catch let e as SOPError {
            #expect(e.code == .invalidArgument && e.message.contains("TLS") && e.message.contains("not supported"))
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func errorMessagesHidePasswords() {
        do {
            _ = try RedisConfiguration(url: "redis://u:hunter2@h:x")
        } catch let e as SOPError {
            #expect(!e.message.contains("hunter2"), "\(e.message)")
        } catch {
            Issue.record("\(error)")
        }
    }
}
