import SOPCore
import SOPInMemory
import Testing

@Suite struct InMemoryTests {
    @Test func lockerIsAllOrNothingOwnerOnlyAndExpires() async throws {
        let l = InMemoryLocker()
        let a = SOPID.random(), b = SOPID.random()
        #expect(try await l.tryLock(["x", "y"], owner: a, ttl: .seconds(60)) == nil)
        #expect(try await l.tryLock(["x", "y"], owner: a, ttl: .seconds(60)) == nil)   // re-entrant for the owner
        #expect(try await l.tryLock(["z", "y"], owner: b, ttl: .seconds(60)) == "y")
        #expect(try await l.owner(of: "z") == nil)                                    // nothing taken on failure
        try await l.unlock(["x"], owner: b)                                            // not b's: ignored
        #expect(try await l.owner(of: "x") == a)
        try await l.unlock(["x", "y"], owner: a)
        #expect(l.count == 0)
        #expect(try await l.tryLock(["t"], owner: a, ttl: .milliseconds(20)) == nil)
        try await Task.sleep(for: .milliseconds(40))
        #expect(try await l.tryLock(["t"], owner: b, ttl: .seconds(60)) == nil)       // taken over after the TTL
        #expect(try await l.owner(of: "t") == b)
    }

    @Test func l2CacheIsBoundedInBytesAndExpires() async throws {
        let c = InMemoryL2Cache(capacity: 1000)
        for i in 0..<20 { try await c.set("k\(i)", [UInt8](repeating: UInt8(i), count: 100), ttl: nil) }
        #expect(c.statistics.bytes <= 1000)
        #expect(try await c.get("k0") == nil)
        #expect(try await c.get("k19") == [UInt8](repeating: 19, count: 100))
        try await c.set("big", [UInt8](repeating: 0, count: 2000), ttl: nil)   // larger than the budget: not kept
        #expect(try await c.get("big") == nil)
        try await c.set("short", [1], ttl: .milliseconds(10))
        try await Task.sleep(for: .milliseconds(30))
        #expect(try await c.get("short") == nil)
        try await c.delete(["k19"])
        #expect(try await c.get("k19") == nil)
    }
}
