import SOPCore
import Synchronization

/// In-process ``SOPCore/L2Cache``: a byte-bounded map with optional expiry. Eviction is
/// least-recently-inserted first (a FIFO ring with lazy deletion), which suits immutable
/// blobs that are read soon after they are written or first loaded.
public final class InMemoryL2Cache: L2Cache {
    private struct Entry {
        var value: [UInt8]
        var expires: ContinuousClock.Instant?
        var generation: UInt64
    }

    private struct State {
        var map: [String: Entry] = [:]
        var order: [(key: String, generation: UInt64)] = []
        var head = 0
        var bytes = 0
        var generation: UInt64 = 0
    }

    private let state = Mutex(State())
    /// The byte budget.
    public let capacity: Int

    /// Makes a cache holding at most `capacity` bytes of values.
    public init(capacity: Int) {
        self.capacity = capacity
    }

    public func get(_ key: String) async throws -> [UInt8]? {
        let now = ContinuousClock.now
        return state.withLock { s in
            guard let e = s.map[key] else { return nil }
            if let x = e.expires, x <= now {
                s.bytes -= e.value.count
                s.map[key] = nil
                return nil
            }
            return e.value
        }
    }

    public func set(_ key: String, _ value: [UInt8], ttl: Duration?) async throws {
        guard value.count <= capacity else { return }
        let expires = ttl.map { ContinuousClock.now + $0 }
        state.withLock { s in
            s.generation &+= 1
            if let old = s.map[key] { s.bytes -= old.value.count }
            s.map[key] = Entry(value: value, expires: expires, generation: s.generation)
            s.order.append((key, s.generation))
            s.bytes += value.count
            while s.bytes > capacity, s.head < s.order.count {
                let (k, g) = s.order[s.head]
                s.head += 1
                if let e = s.map[k], e.generation == g {
                    s.bytes -= e.value.count
                    s.map[k] = nil
                }
            }
            if s.head > 4096 && s.head * 2 > s.order.count {
                s.order.removeFirst(s.head)
                s.head = 0
            }
        }
    }

    public func delete(_ keys: [String]) async throws {
        state.withLock { s in
            for k in keys {
                if let e = s.map.removeValue(forKey: k) { s.bytes -= e.value.count }
            }
        }
    }

    /// Bytes and entries held.
    public var statistics: (bytes: Int, entries: Int) {
        state.withLock { ($0.bytes, $0.map.count) }
    }
}
