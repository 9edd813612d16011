import SOPBTree
import SOPCore
import Synchronization

/// The L1 cache: decoded nodes by physical ID, shared by every transaction of the process,
/// bounded in bytes, least recently used out first.
///
/// A blob never changes once written, so a decoded node is immutable and safe to share;
/// transactions always ask the registry which physical blob is current before looking here,
/// so the cache can never serve a stale node.
package final class NodeCache: Sendable {
    package struct Key: Hashable, Sendable {
        var physical: SOPID
        var type: ObjectIdentifier
    }

    private struct Entry {
        var key: Key
        var value: CachedNodeBase
        var cost: Int
        var prev: Int
        var next: Int
    }

    private struct LRU {
        var index: [Key: Int] = [:]
        var entries: [Entry] = []
        var free: [Int] = []
        var head = -1   // most recent
        var tail = -1   // least recent
        var bytes = 0
        var hits = 0
        var misses = 0

        mutating func unlink(_ i: Int) {
            let p = entries[i].prev, n = entries[i].next
            if p >= 0 { entries[p].next = n } else { head = n }
            if n >= 0 { entries[n].prev = p } else { tail = p }
        }

        mutating func pushFront(_ i: Int) {
            entries[i].prev = -1
            entries[i].next = head
            if head >= 0 { entries[head].prev = i }
            head = i
            if tail < 0 { tail = i }
        }
    }

    private let lru = Mutex(LRU())
    /// Placeholder left in a freed slot.
    private static let evicted = CachedNodeBase()
    /// The byte budget.
    package let capacity: Int

    package init(capacity: Int) {
        self.capacity = capacity
    }

    package func get(_ key: Key) -> CachedNodeBase? {
        lru.withLock { l in
            guard let i = l.index[key] else {
                l.misses += 1
                return nil
            }
            l.hits += 1
            if l.head != i {
                l.unlink(i)
                l.pushFront(i)
            }
            return l.entries[i].value
        }
    }

    package func put(_ key: Key, _ value: CachedNodeBase, cost: Int) {
        guard cost <= capacity else { return }
        lru.withLock { l in
            if let i = l.index[key] {
                l.bytes += cost - l.entries[i].cost
                l.entries[i].value = value
                l.entries[i].cost = cost
                l.unlink(i)
                l.pushFront(i)
            } else {
                let e = Entry(key: key, value: value, cost: cost, prev: -1, next: -1)
                let i: Int
                if let f = l.free.popLast() { l.entries[f] = e; i = f } else { l.entries.append(e); i = l.entries.count - 1 }
                l.index[key] = i
                l.pushFront(i)
                l.bytes += cost
            }
            while l.bytes > capacity, l.tail >= 0 {
                let t = l.tail
                l.unlink(t)
                l.bytes -= l.entries[t].cost
                l.index[l.entries[t].key] = nil
                l.entries[t].value = NodeCache.evicted   // drop the node
                l.free.append(t)
            }
        }
    }

    /// Bytes currently held, entries, hits and misses.
    package var statistics: (bytes: Int, entries: Int, hits: Int, misses: Int) {
        lru.withLock { ($0.bytes, $0.index.count, $0.hits, $0.misses) }
    }
}

/// A decoded node as the L1 cache holds it: a class, so a hit is an unchecked downcast (the
/// cache key carries the node's type) instead of a dynamic cast of an existential.
package class CachedNodeBase: @unchecked Sendable {
    // @unchecked: no state; subclasses are immutable.
    package init() {}
}

/// See ``CachedNodeBase``.
package final class CachedNode<K: Sendable>: CachedNodeBase, @unchecked Sendable {
    // @unchecked: immutable after init; the node is a value of Sendable parts.
    package let node: EngineNode<K>
    package init(_ node: EngineNode<K>) {
        self.node = node
        super.init()
    }
}
