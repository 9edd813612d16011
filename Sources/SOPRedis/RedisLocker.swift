import SOPCore

/// ``SOPCore/Locker`` on Redis, for clustered databases: a lock is the key
/// `sop:<namespace>:L:<key>` holding the owner's ID (32 hex digits) with a `PX` time to live,
/// so a crashed owner's locks vanish by themselves and can then be taken over.
///
/// Every operation is one Lua script, so it is atomic on the server and costs one round trip
/// (two the first time a server sees the script): `tryLock` takes every key or none,
/// `unlock` and `extend` touch only keys the caller owns.
public final class RedisLocker: Locker {
    /// The connection pool used.
    public let client: RedisClient
    /// The key namespace (see ``RedisNamespace/forDatabaseFolder(_:)``).
    public let namespace: String
    private let prefix: String

    /// A locker whose keys live under `sop:<namespace>:L:`.
    public init(client: RedisClient, namespace: String) throws {
        try RedisNamespace.validate(namespace)
        self.client = client
        self.namespace = namespace
        self.prefix = "sop:\(namespace):L:"
    }

    /// The Redis key of lock `key`.
    public func redisKey(_ key: String) -> String { prefix + key }

    /// Returns the 1-based index of the first key held by another owner, or 0 after taking
    /// (or re-taking, refreshing the TTL) every key.
    static let tryLockScript = RedisScript(
        """
        local owner = ARGV[1]
        for i, k in ipairs(KEYS) do
          local v = redis.call('GET', k)
          if v and v ~= owner then return i end
        end
        for _, k in ipairs(KEYS) do
          redis.call('SET', k, owner, 'PX', ARGV[2])
        end
        return 0
        """)

    /// Deletes the keys whose value is the owner; returns how many.
    static let unlockScript = RedisScript(
        """
        local n = 0
        for _, k in ipairs(KEYS) do
          if redis.call('GET', k) == ARGV[1] then
            redis.call('DEL', k)
            n = n + 1
          end
        end
        return n
        """)

    /// If the owner holds every key, sets their TTL and returns 1; otherwise changes nothing
    /// and returns 0.
    static let extendScript = RedisScript(
        """
        for _, k in ipairs(KEYS) do
          if redis.call('GET', k) ~= ARGV[1] then return 0 end
        end
        for _, k in ipairs(KEYS) do
          redis.call('PEXPIRE', k, ARGV[2])
        end
        return 1
        """)

    private static func milliseconds(_ ttl: Duration) throws -> String {
        guard ttl > .zero else { throw SOPError(.invalidArgument, "lock TTL must be positive, not \(ttl)") }
        return String(ttl.sopMilliseconds)
    }

    public func tryLock(_ keys: [String], owner: SOPID, ttl: Duration) async throws -> String? {
        guard !keys.isEmpty else { return nil }
        let reply = try await client.run(
            Self.tryLockScript, keys: keys.map(redisKey), args: [owner.hex, try Self.milliseconds(ttl)])
        guard let i = reply.int, i >= 0, i <= keys.count else {
            throw SOPError(.io, "redis protocol error: unexpected reply \(reply) to the lock script")
        }
        return i == 0 ? nil : keys[Int(i) - 1]
    }

    public func unlock(_ keys: [String], owner: SOPID) async throws {
        guard !keys.isEmpty else { return }
        _ = try await client.run(Self.unlockScript, keys: keys.map(redisKey), args: [owner.hex])
    }

    public func owner(of key: String) async throws -> SOPID? {
        let reply = try await client.send(["GET", redisKey(key)])
        if reply.isNull { return nil }
        guard let text = reply.string, let id = SOPID(hex: text) else {
            throw SOPError(.corrupt, "redis lock key \(redisKey(key)) holds \(reply), not an owner ID")
        }
        return id
    }

    /// Sets the TTL of every key to `ttl` if `owner` still holds them all (returns true);
    /// otherwise changes nothing and returns false — the owner has lost a lock.
    public func extend(_ keys: [String], owner: SOPID, ttl: Duration) async throws -> Bool {
        guard !keys.isEmpty else { return true }
        let reply = try await client.run(
            Self.extendScript, keys: keys.map(redisKey), args: [owner.hex, try Self.milliseconds(ttl)])
        return reply.int == 1
    }
}
