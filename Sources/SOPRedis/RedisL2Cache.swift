import SOPCore
import Synchronization

/// ``SOPCore/L2Cache`` on Redis, for clustered databases: binary values under
/// `sop:<namespace>:C:<key>`, each operation one command (one round trip).
///
/// With a `slidingTTL`, every hit (`GETEX … PX`) resets the entry's time to live to that
/// duration, so entries in use stay cached and idle ones expire.
public final class RedisL2Cache: L2Cache {
    /// The connection pool used.
    public let client: RedisClient
    /// The key namespace (see ``RedisNamespace/forDatabaseFolder(_:)``).
    public let namespace: String
    /// The TTL a hit refreshes the entry to; nil: reads leave TTLs alone.
    public let slidingTTL: Duration?
    private let prefix: String

    /// A cache whose keys live under `sop:<namespace>:C:`.
    public init(client: RedisClient, namespace: String, slidingTTL: Duration? = nil) throws {
        try RedisNamespace.validate(namespace)
        if let slidingTTL, slidingTTL <= .zero {
            throw SOPError(.invalidArgument, "sliding TTL must be positive")
        }
        self.client = client
        self.namespace = namespace
        self.slidingTTL = slidingTTL
        self.prefix = "sop:\(namespace):C:"
    }

    /// The Redis key of cache entry `key`.
    public func redisKey(_ key: String) -> String { prefix + key }

    /// `GET`, or `GETEX key PX <slidingTTL>` (Redis 6.2+) when sliding.
    public func get(_ key: String) async throws -> [UInt8]? {
        let reply: RESPValue
        if let slidingTTL {
            reply = try await client.send(["GETEX", redisKey(key), "PX", String(slidingTTL.sopMilliseconds)])
        } else {
            reply = try await client.send(["GET", redisKey(key)])
        }
        if reply.isNull { return nil }
        guard case .bulkString(let bytes?) = reply else {
            throw SOPError(.io, "redis protocol error: unexpected reply \(reply) to GET")
        }
        return bytes
    }

    /// `SET key value [PX ttl]`. A TTL of zero or less stores nothing (the entry would be
    /// expired at once).
    public func set(_ key: String, _ value: [UInt8], ttl: Duration?) async throws {
        var args: [[UInt8]] = [Array("SET".utf8), Array(redisKey(key).utf8), value]
        if let ttl {
            guard ttl > .zero else { return }
            args += [Array("PX".utf8), Array(String(ttl.sopMilliseconds).utf8)]
        }
        _ = try await client.send(args)
    }

    /// `UNLINK` (the server frees memory in the background).
    public func delete(_ keys: [String]) async throws {
        guard !keys.isEmpty else { return }
        _ = try await client.send(["UNLINK"] + keys.map(redisKey))
    }
}

/// Notices that Redis lost its data (restarted without persistence, or was flushed), which
/// also loses every lock: keeps a token `sop:<namespace>:notrestarted` with a sliding TTL.
///
/// Call ``check()`` periodically (more often than the TTL). It returns true when the token
/// had vanished since the previous successful check — the caller then re-creates the locks
/// of its in-flight commits before anything else commits. The first check creates the token
/// and returns false. One round trip per check.
public final class RedisRestartDetector: Sendable {
    /// The connection pool used.
    public let client: RedisClient
    /// The token's Redis key.
    public let key: String
    /// The token's time to live, renewed by every check.
    public let ttl: Duration
    private let token = SOPID.random().hex
    private let checkedOnce = Atomic<Bool>(false)

    /// A detector for `namespace`; `ttl` defaults to 24 hours.
    public init(client: RedisClient, namespace: String, ttl: Duration = .seconds(24 * 3600)) throws {
        try RedisNamespace.validate(namespace)
        guard ttl > .zero else { throw SOPError(.invalidArgument, "restart token TTL must be positive") }
        self.client = client
        self.key = "sop:\(namespace):notrestarted"
        self.ttl = ttl
    }

    /// Slides the token's TTL, re-creating it if it is gone; true when it was gone and this is
    /// not the first check.
    public func check() async throws -> Bool {
        let ms = String(ttl.sopMilliseconds)
        let replies = try await client.pipeline([
            ["PEXPIRE", key, ms],
            ["SET", key, token, "NX", "PX", ms],
        ])
        for r in replies { _ = try RedisClient.checked(r) }
        let existed = replies[0].int == 1
        let first = !checkedOnce.exchange(true, ordering: .relaxed)
        return !existed && !first
    }
}
