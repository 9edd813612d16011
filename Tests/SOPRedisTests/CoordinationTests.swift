import SOPTestSupport
import SOPCore
import Testing

@testable import SOPRedis

/// RedisLocker, RedisL2Cache and RedisRestartDetector against a real server.
@Suite("Redis locker, L2 cache, restart detection (real server)", .serialized)
struct CoordinationTests {
    let a = SOPID.random()
    let b = SOPID.random()

    @Test func lockIsAllOrNothing() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url)
            let locker = try RedisLocker(client: client, namespace: "db1")
            #expect(try await locker.tryLock(["k1", "k2"], owner: a, ttl: .seconds(30)) == nil)
            #expect(try await locker.owner(of: "k1") == a)
            #expect(try await client.send(["GET", "sop:db1:L:k2"]).string == a.hex)
            // b wants k3 and k2: gets neither.
            #expect(try await locker.tryLock(["k3", "k2"], owner: b, ttl: .seconds(30)) == "k2")
            #expect(try await locker.owner(of: "k3") == nil)
            // Re-taking what one holds succeeds (and may add keys).
            #expect(try await locker.tryLock(["k2", "k3"], owner: a, ttl: .seconds(30)) == nil)
            #expect(try await locker.owner(of: "k3") == a)
            #expect(try await locker.tryLock([], owner: b, ttl: .seconds(1)) == nil)
            let e = await sopError { _ = try await locker.tryLock(["x"], owner: a, ttl: .zero) }
            #expect(e?.code == .invalidArgument)
            await client.close()
        }
    }

    @Test func onlyTheOwnerUnlocks() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url)
            let locker = try RedisLocker(client: client, namespace: "db1")
            #expect(try await locker.tryLock(["k1", "k2"], owner: a, ttl: .seconds(30)) == nil)
            try await locker.unlock(["k1", "k2"], owner: b)
            #expect(try await locker.owner(of: "k1") == a)
            #expect(try await locker.owner(of: "k2") == a)
            try await locker.unlock(["k1"], owner: a)
            #expect(try await locker.owner(of: "k1") == nil)
            #expect(try await locker.owner(of: "k2") == a)
            #expect(try await locker.tryLock(["k1"], owner: b, ttl: .seconds(30)) == nil)
            try await locker.unlock(["k1", "k2"], owner: a)
            #expect(try await locker.owner(of: "k1") == b)
            #expect(try await locker.owner(of: "k2") == nil)
            // A key that does not hold an owner ID is reported, not misread.
            _ = try await client.send(["SET", "sop:db1:L:junk", "not-an-id"])
            let e = await sopError { _ = try await locker.owner(of: "junk") }
            #expect(e?.code == .corrupt)
            await client.close()
        }
    }

    @Test func takeoverOnlyAfterTTLAndExtend() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url)
            let locker = try RedisLocker(client: client, namespace: "db1")
            #expect(try await locker.tryLock(["k"], owner: a, ttl: .milliseconds(1500)) == nil)
            #expect(try await locker.tryLock(["k"], owner: b, ttl: .seconds(30)) == "k")
            let pttl = try await client.send(["PTTL", "sop:db1:L:k"]).int ?? -9
            #expect(pttl > 0 && pttl <= 1500)
            try await Task.sleep(for: .milliseconds(1800))
            #expect(try await locker.owner(of: "k") == nil)
            #expect(try await locker.tryLock(["k"], owner: b, ttl: .seconds(30)) == nil)
            #expect(try await locker.owner(of: "k") == b)
            // extend: only by the owner of every key, all or nothing.
            #expect(try await locker.tryLock(["m"], owner: b, ttl: .seconds(5)) == nil)
            #expect(try await locker.extend(["k", "m"], owner: a, ttl: .seconds(100)) == false)
            #expect(try await client.send(["PTTL", "sop:db1:L:m"]).int ?? 0 <= 5000)
            #expect(try await locker.extend(["k", "m"], owner: b, ttl: .seconds(100)) == true)
            #expect(try await client.send(["PTTL", "sop:db1:L:m"]).int ?? 0 > 5000)
            #expect(try await locker.extend(["k", "gone"], owner: b, ttl: .seconds(100)) == false)
            await client.close()
        }
    }

    @Test func namespacesIsolateDatabases() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url)
            let ns1 = RedisNamespace.forDatabaseFolder("/data/one")
            let ns2 = RedisNamespace.forDatabaseFolder("/data/two")
            #expect(ns1 != ns2 && ns1.count == 16)
            let one = try RedisLocker(client: client, namespace: ns1)
            let two = try RedisLocker(client: client, namespace: ns2)
            #expect(try await one.tryLock(["store:orders"], owner: a, ttl: .seconds(30)) == nil)
            #expect(try await two.tryLock(["store:orders"], owner: b, ttl: .seconds(30)) == nil)
            #expect(try await one.owner(of: "store:orders") == a)
            #expect(try await two.owner(of: "store:orders") == b)
            let c1 = try RedisL2Cache(client: client, namespace: ns1)
            let c2 = try RedisL2Cache(client: client, namespace: ns2)
            try await c1.set("n", [1], ttl: nil)
            #expect(try await c2.get("n") == nil)
            #expect(throws: SOPError.self) { try RedisLocker(client: client, namespace: "has space") }
            #expect(throws: SOPError.self) { try RedisL2Cache(client: client, namespace: "") }
            await client.close()
        }
    }

    @Test func lockScriptSurvivesScriptFlush() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url)
            let locker = try RedisLocker(client: client, namespace: "db1")
            #expect(try await locker.tryLock(["k"], owner: a, ttl: .seconds(30)) == nil)
            _ = try await client.send(["SCRIPT", "FLUSH"])
            let before = client.roundTrips
            #expect(try await locker.tryLock(["k"], owner: b, ttl: .seconds(30)) == "k")  // NOSCRIPT, then EVAL
            #expect(client.roundTrips - before == 2)
            await client.close()
        }
    }

    @Test func roundTripsPerOperation() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url)
            let locker = try RedisLocker(client: client, namespace: "rt")
            let cache = try RedisL2Cache(client: client, namespace: "rt", slidingTTL: .seconds(60))
            let detector = try RedisRestartDetector(client: client, namespace: "rt")
            // Warm the script cache.
            _ = try await locker.tryLock(["w"], owner: a, ttl: .seconds(1))
            _ = try await locker.extend(["w"], owner: a, ttl: .seconds(1))
            try await locker.unlock(["w"], owner: a)
            func cost(_ op: () async throws -> Void) async throws -> Int {
                let n = client.roundTrips
                try await op()
                return client.roundTrips - n
            }
            let keys = (0..<50).map { "node\($0)" }
            #expect(try await cost { _ = try await locker.tryLock(keys, owner: a, ttl: .seconds(30)) } == 1)
            #expect(try await cost { _ = try await locker.extend(keys, owner: a, ttl: .seconds(30)) } == 1)
            #expect(try await cost { _ = try await locker.owner(of: "node1") } == 1)
            #expect(try await cost { try await locker.unlock(keys, owner: a) } == 1)
            #expect(try await cost { try await cache.set("x", [1, 2], ttl: .seconds(5)) } == 1)
            #expect(try await cost { _ = try await cache.get("x") } == 1)
            #expect(try await cost { try await cache.delete(["x", "y"]) } == 1)
            #expect(try await cost { _ = try await detector.check() } == 1)
            #expect(try await cost { _ = try await locker.tryLock([], owner: a, ttl: .seconds(30)) } == 0)
            await client.close()
        }
    }

    @Test func l2CacheValuesAndTTL() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url)
            let cache = try RedisL2Cache(client: client, namespace: "db1")
            let blob = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            try await cache.set("N1", blob, ttl: nil)
            #expect(try await cache.get("N1") == blob)
            #expect(try await client.send(["PTTL", "sop:db1:C:N1"]) == .integer(-1))
            try await cache.set("N2", [0, 13, 10], ttl: .milliseconds(200))
            #expect(try await cache.get("N2") == [0, 13, 10])
            try await cache.set("N3", [9], ttl: .zero)
            #expect(try await cache.get("N3") == nil)
            try await Task.sleep(for: .milliseconds(350))
            #expect(try await cache.get("N2") == nil)
            // A plain get leaves the TTL alone.
            try await cache.set("N4", [4], ttl: .seconds(10))
            _ = try await cache.get("N4")
            #expect((try await client.send(["PTTL", "sop:db1:C:N4"]).int ?? 0) <= 10_000)
            try await cache.delete(["N1", "N4", "absent"])
            #expect(try await cache.get("N1") == nil)
            #expect(try await cache.get("N4") == nil)
            try await cache.delete([])
            await client.close()
        }
    }

    @Test func l2SlidingTTL() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url)
            let sliding = try RedisL2Cache(client: client, namespace: "db1", slidingTTL: .seconds(60))
            try await sliding.set("N", [1], ttl: .seconds(10))
            #expect((try await client.send(["PTTL", "sop:db1:C:N"]).int ?? 0) <= 10_000)
            #expect(try await sliding.get("N") == [1])
            #expect((try await client.send(["PTTL", "sop:db1:C:N"]).int ?? 0) > 50_000)
            #expect(try await sliding.get("absent") == nil)
            // And a hit really keeps an entry alive past its original TTL.
            // Generous margins: the machine running this may be busy (sleeps overshoot).
            let short = try RedisL2Cache(client: client, namespace: "db1", slidingTTL: .milliseconds(1500))
            try await short.set("S", [2], ttl: .milliseconds(1500))
            for _ in 0..<3 {
                try await Task.sleep(for: .milliseconds(700))
                #expect(try await short.get("S") == [2])
            }
            try await Task.sleep(for: .milliseconds(2500))
            #expect(try await short.get("S") == nil)
            await client.close()
        }
    }

    @Test func restartDetectorSeesARestartedServer() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url)
            let detector = try RedisRestartDetector(client: client, namespace: "db1", ttl: .seconds(60))
            #expect(try await detector.check() == false)  // first check creates the token
            #expect(try await detector.check() == false)
            #expect((try await client.send(["PTTL", "sop:db1:notrestarted"]).int ?? 0) > 50_000)
            // Another process's detector shares the token.
            let other = try RedisRestartDetector(client: client, namespace: "db1", ttl: .seconds(60))
            #expect(try await other.check() == false)
            server.kill()
            try server.restart()
            #expect(try await detector.check() == true)
            #expect(try await detector.check() == false)
            _ = try await client.send(["FLUSHALL"])
            #expect(try await detector.check() == true)
            #expect(try await other.check() == false)  // the token is back
            await client.close()
        }
    }
}
