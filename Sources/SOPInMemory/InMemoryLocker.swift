import SOPCore
import Synchronization

/// In-process ``SOPCore/Locker`` for standalone databases: a dictionary of key → (owner,
/// expiry) behind a mutex. Expired locks are taken over.
public final class InMemoryLocker: Locker {
    private struct Entry {
        var owner: SOPID
        var expires: ContinuousClock.Instant
    }

    private let table = Mutex<[String: Entry]>([:])

    /// Makes an empty lock table.
    public init() {}

    public func tryLock(_ keys: [String], owner: SOPID, ttl: Duration) async throws -> String? {
        let now = ContinuousClock.now
        return table.withLock { t -> String? in
            for k in keys {
                if let e = t[k], e.owner != owner, e.expires > now { return k }
            }
            for k in keys { t[k] = Entry(owner: owner, expires: now + ttl) }
            return nil
        }
    }

    public func unlock(_ keys: [String], owner: SOPID) async throws {
        table.withLock { t in
            for k in keys where t[k]?.owner == owner { t[k] = nil }
        }
    }

    public func owner(of key: String) async throws -> SOPID? {
        let now = ContinuousClock.now
        return table.withLock { t in
            guard let e = t[key], e.expires > now else { return nil }
            return e.owner
        }
    }

    /// Synchronous variant of ``owner(of:)`` for callers that hold no task context.
    public func currentOwner(of key: String) -> SOPID? {
        let now = ContinuousClock.now
        return table.withLock { t in
            guard let e = t[key], e.expires > now else { return nil }
            return e.owner
        }
    }

    /// Number of live locks (for tests and diagnostics).
    public var count: Int {
        let now = ContinuousClock.now
        return table.withLock { t in t.values.filter { $0.expires > now }.count }
    }
}
