#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Locks that coordinate committing transactions. Standalone databases use an in-process
/// implementation (`SOPInMemory.InMemoryLocker`); clustered ones use Redis.
///
/// Keys are strings scoped by the caller (database folder, store, node). A lock has an owner
/// (a transaction ID) and a time to live, after which another owner may take it over: a
/// crashed owner never blocks others for longer than its transaction's maximum duration.
public protocol Locker: Sendable {
    /// Takes every key for `owner`, or none: returns the first key held by someone else.
    /// Re-taking a key the owner already holds succeeds.
    func tryLock(_ keys: [String], owner: SOPID, ttl: Duration) async throws -> String?
    /// Releases the keys that `owner` holds; keys held by others are left alone.
    func unlock(_ keys: [String], owner: SOPID) async throws
    /// The live owner of `key`, if any.
    func owner(of key: String) async throws -> SOPID?
}

/// A source of wall-clock time, injectable so tests can move time.
public protocol Clock: Sendable {
    /// Milliseconds since 1970.
    func nowMilliseconds() -> Int64
}

/// The real clock.
public struct SystemClock: Clock {
    /// Makes the real clock.
    public init() {}
    /// Milliseconds since 1970 from `CLOCK_REALTIME`.
    public func nowMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

/// A shared cache of encoded bytes (nodes, separately stored values) between the per-process
/// L1 of decoded nodes and storage. Standalone: in-process (`SOPInMemory.InMemoryL2Cache`);
/// clustered: Redis. Entries are immutable blobs keyed by physical ID, so the cache never
/// needs invalidation — only eviction.
public protocol L2Cache: Sendable {
    /// The bytes stored under `key`, if still cached.
    func get(_ key: String) async throws -> [UInt8]?
    /// Stores bytes under `key` for at most `ttl` (nil: until evicted).
    func set(_ key: String, _ value: [UInt8], ttl: Duration?) async throws
    /// Removes keys.
    func delete(_ keys: [String]) async throws
}
