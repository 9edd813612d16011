import SOPBTree
import SOPCore
import Synchronization

/// The L1 cache: decoded nodes by physical ID, shared by every transaction of the process,
/// bounded in bytes, least recently used out first.
///
/// A blob never changes once written, so a decoded node is immutable and safe to share;
/// transactions always ask the registry which physical blob is current before looking here,
/// so the cache can never serve a stale node.
final class NodeCache: Sendable {
    struct Key: Hashable, Sendable {
        var physical: SOPID
        var type: ObjectIdentifier

        /// The physical ID's fast hash (see `SOPID._rawHashValue`) mixed with the form.
        func _rawHashValue(seed: Int) -> Int {
            physical._rawHashValue(seed: seed ^ Int(bitPattern: UInt(bitPattern: type)))
        }
    }

    private struct Entry {
        var key: Key
        var value: CachedNode
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
    private static let evicted = CachedNode(BTreeNode(id: .zero))
    /// The byte budget.
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    func get(_ key: Key) -> CachedNode? {
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

    func put(_ key: Key, _ value: CachedNode, cost: Int) {
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
    var statistics: (bytes: Int, entries: Int, hits: Int, misses: Int) {
        lru.withLock { ($0.bytes, $0.index.count, $0.hits, $0.misses) }
    }
}

/// A decoded node as the L1 cache holds it (a class: a hit hands out one reference).
final class CachedNode: Sendable {
    let node: EngineNode
    init(_ node: EngineNode) { self.node = node }
}
