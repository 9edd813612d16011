import SOPTestSupport
import NIOCore
import SOPCore
import Testing

@testable import SOPRedis

/// Against a real `redis-server` started per test (see ``RedisServer``). Serialized: the
/// timing checks (timeouts, TTLs) must not compete for the 2 cores with each other.
@Suite("Redis client (real server)", .serialized)
struct ClientTests {
    @Test func setGetBinaryValues() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url)
            let all = (0...255).map { UInt8($0) }
            #expect(try await client.send([Array("SET".utf8), Array("bin key".utf8), all]) == .simpleString("OK"))
            #expect(try await client.send(["GET", "bin key"]) == .bulkString(all))
            _ = try await client.send([Array("SET".utf8), Array("empty".utf8), []])
            #expect(try await client.send(["GET", "empty"]) == .bulkString([]))
            #expect(try await client.send(["GET", "missing"]) == .bulkString(nil))
            let big = [UInt8](repeating: 7, count: 1 << 20)
            _ = try await client.send([ByteBuffer(string: "SET"), ByteBuffer(string: "big"), ByteBuffer(bytes: big)])
            #expect(try await client.send(["GET", "big"]).bytes == big)
            #expect(try await client.send(["STRLEN", "big"]) == .integer(1 << 20))
            await client.close()
        }
    }

    @Test func errorRepliesThrow() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url)
            let e = await sopError { _ = try await client.send(["NOSUCHCOMMAND", "x"]) }
            #expect(e?.code == .io)
            #expect(e?.message.hasPrefix("redis error: ERR unknown command") == true, "\(String(describing: e))")
            // In a pipeline the error stays in place and the other commands ran.
            let r = try await client.pipeline([["SET", "a", "1"], ["INCR", "a", "extra"], ["GET", "a"]])
            #expect(r[0] == .simpleString("OK") && r[1].isError && r[2] == .bulkString(Array("1".utf8)))
            #expect(throws: SOPError.self) { try RedisClient.checked(r[1]) }
            await client.close()
        }
    }

    @Test func pipelineOfAThousandCommandsIsOneRoundTrip() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, poolSize: 2)
            let before = client.roundTrips
            let sets = (0..<1000).map { ["SET", "k\($0)", "v\($0)"] }
            let r1 = try await client.pipeline(sets)
            #expect(r1.count == 1000 && r1.allSatisfy { $0 == .simpleString("OK") })
            let r2 = try await client.pipeline((0..<1000).map { ["GET", "k\($0)"] })
            #expect(r2 == (0..<1000).map { .bulkString(Array("v\($0)".utf8)) })
            #expect(client.roundTrips - before == 2)
            // Many tasks share the two connections, replies matched in order.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<400 {
                    group.addTask {
                        let v = try await client.send(["GET", "k\(i % 1000)"])
                        #expect(v == .bulkString(Array("v\(i % 1000)".utf8)))
                    }
                }
                try await group.waitForAll()
            }
            #expect(client.roundTrips - before == 402)
            await client.close()
        }
    }

    @Test func authAndWrongPassword() async throws {
        try await withRedisServer(["--requirepass", "s3cret"]) { server in
            let good = try RedisClient(url: "redis://:s3cret@127.0.0.1:\(server.port)")
            #expect(try await good.send(["PING"]) == .simpleString("PONG"))
            let withUser = try RedisClient(url: "redis://default:s3cret@127.0.0.1:\(server.port)")
            #expect(try await withUser.send(["PING"]) == .simpleString("PONG"))
            let resp3 = try RedisClient(url: "redis://:s3cret@127.0.0.1:\(server.port)", useRESP3: true)
            #expect(try await resp3.send(["PING"]) == .simpleString("PONG"))

            let wrong = try RedisClient(url: "redis://:nope@127.0.0.1:\(server.port)")
            let e = await sopError { _ = try await wrong.send(["PING"]) }
            #expect(e?.code == .io)
            #expect(e?.message.contains("redis authentication failed at 127.0.0.1:\(server.port)") == true, "\(String(describing: e))")
            #expect(e?.message.contains("WRONGPASS") == true, "\(String(describing: e))")

            let none = try RedisClient(url: server.url)
            let n = await sopError { _ = try await none.send(["GET", "x"]) }
            #expect(n?.message.hasPrefix("redis error: NOAUTH") == true, "\(String(describing: n))")
            for c in [good, withUser, resp3, wrong, none] { await c.close() }
        }
    }

    @Test func selectDatabase() async throws {
        try await withRedisServer { server in
            let db3 = try RedisClient(url: server.url + "/3")
            let db0 = try RedisClient(url: server.url)
            _ = try await db3.send(["SET", "where", "three"])
            #expect(try await db0.send(["GET", "where"]).isNull)
            #expect(try await db3.send(["GET", "where"]).string == "three")
            let again = try RedisClient(url: server.url + "/3")
            #expect(try await again.send(["GET", "where"]).string == "three")
            let bad = try RedisClient(url: server.url + "/99")
            let e = await sopError { _ = try await bad.send(["PING"]) }
            #expect(e?.message.contains("cannot select redis database 99") == true, "\(String(describing: e))")
            for c in [db3, db0, again, bad] { await c.close() }
        }
    }

    @Test func resp3Negotiation() async throws {
        try await withRedisServer { server in
            let v3 = try RedisClient(url: server.url, useRESP3: true)
            let v2 = try RedisClient(url: server.url)
            _ = try await v3.send(["HSET", "h", "f", "1"])
            #expect(try await v3.send(["HGETALL", "h"]) == .map([RESPPair(.bulkString(Array("f".utf8)), .bulkString(Array("1".utf8)))]))
            #expect(try await v2.send(["HGETALL", "h"]) == .array([.bulkString(Array("f".utf8)), .bulkString(Array("1".utf8))]))
            #expect(try await v3.send(["GET", "nothing"]) == .null)
            #expect(try await v2.send(["GET", "nothing"]) == .bulkString(nil))
            // The server's own RESP3 types, through the real socket.
            #expect(try await v3.send(["DEBUG", "PROTOCOL", "true"]) == .boolean(true))
            #expect(try await v3.send(["DEBUG", "PROTOCOL", "double"]) == .double(3.141))
            #expect(try await v3.send(["DEBUG", "PROTOCOL", "bignum"]).string == "1234567999999999999999999999999999999")
            #expect(try await v3.send(["DEBUG", "PROTOCOL", "verbatim"]).string == "This is a verbatim\nstring")
            #expect(try await v3.send(["DEBUG", "PROTOCOL", "set"]).elements?.count == 3)
            #expect(try await v3.send(["DEBUG", "PROTOCOL", "attrib"]).string == "Some real reply following the attribute")
            await v3.close()
            await v2.close()
        }
    }

    @Test func commandTimeout() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, poolSize: 1, commandTimeout: .milliseconds(200))
            #expect(try await client.send(["PING"]) == .simpleString("PONG"))
            let start = ContinuousClock.now
            let e = await sopError { _ = try await client.send(["DEBUG", "SLEEP", "6"]) }
            let elapsed = ContinuousClock.now - start
            #expect(e?.code == .io)
            #expect(e?.message == "redis command DEBUG timed out after 200 ms", "\(String(describing: e))")
            // The 6 s sleep was cut short (the margin is wide: parallel CPU-bound suites can
            // delay this task's resumption by seconds on a 2-core machine).
            #expect(elapsed < .seconds(5), "took \(elapsed)")
            // Once the server is awake again, the client works on a new connection.
            try await Task.sleep(for: .milliseconds(6200))
            #expect(try await client.send(["PING"]) == .simpleString("PONG"))
            // A pipeline has one deadline for the whole batch.
            let p = await sopError { _ = try await client.pipeline([["ping"], ["DEBUG", "SLEEP", "2"]]) }
            #expect(p?.message == "redis command PING (first of 2 pipelined) timed out after 200 ms", "\(String(describing: p))")
            try await Task.sleep(for: .milliseconds(2200))
            #expect(try await client.pipeline([["PING"]]) == [.simpleString("PONG")])
            await client.close()
        }
    }

    @Test func serverKilledThenRestarted() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, poolSize: 2)
            _ = try await client.send(["SET", "k", "v"])
            // A command in flight when the server dies fails with a clear error.
            async let inFlight: SOPError? = sopError { _ = try await client.send(["DEBUG", "SLEEP", "1"]) }
            try await Task.sleep(for: .milliseconds(100))
            server.kill()
            let e1 = await inFlight
            #expect(e1?.code == .io)
            #expect(e1?.message.contains("redis command DEBUG failed: connection to 127.0.0.1:\(server.port)") == true, "\(String(describing: e1))")
            // While it is down: cannot connect, quickly. (A pooled connection whose close the
            // client has not noticed yet may first report itself lost.)
            var e2: SOPError?
            for _ in 0..<3 {
                e2 = await sopError { _ = try await client.send(["GET", "k"]) }
                if e2?.message.hasPrefix("cannot connect") == true { break }
                #expect(e2?.message.contains("connection to 127.0.0.1:\(server.port) was lost") == true, "\(String(describing: e2))")
            }
            #expect(e2?.message.hasPrefix("cannot connect to redis at 127.0.0.1:\(server.port): ") == true, "\(String(describing: e2))")
            // Back on the same port (empty: no persistence): the client reconnects by itself.
            try server.restart()
            for _ in 0..<4 {  // every pooled connection
                #expect(try await client.send(["GET", "k"]).isNull)
            }
            _ = try await client.send(["SET", "k", "again"])
            #expect(try await client.send(["GET", "k"]).string == "again")
            await client.close()
        }
    }

    @Test func unreachableServerFailsQuickly() async throws {
        let port = try RedisServer.freePort()
        let client = try RedisClient(url: "redis://127.0.0.1:\(port)")
        let start = ContinuousClock.now
        let e = await sopError { _ = try await client.send(["PING"]) }
        #expect(ContinuousClock.now - start < .seconds(1))
        #expect(e?.code == .io)
        #expect(e?.message == "cannot connect to redis at 127.0.0.1:\(port): connection refused", "\(String(describing: e))")
        await client.close()
        let closed = await sopError { _ = try await client.send(["PING"]) }
        #expect(closed?.code == .invalidState)
    }
}
