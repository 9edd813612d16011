import Dispatch
import SOPBTree
import SOPCore
import Synchronization

/// The L1 cache: decoded nodes by physical ID, shared by every transaction of the process,
/// bounded in bytes, evicted by CLOCK (second chance): a hit only sets the entry's
/// referenced bit, so a read touches one entry instead of relinking three in a list (at a
/// million items those were three more cache misses per lookup); eviction sweeps a hand over
/// the entries, sparing (and clearing) each referenced one once.
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
        var referenced: Bool
        var occupied: Bool
    }

    private struct Clock {
        var index: [Key: Int] = [:]
        var entries: [Entry] = []
        var free: [Int] = []
        var hand = 0
        var bytes = 0
        var hits = 0
        var misses = 0

        /// Frees slot `i`, returning the node it held (to be released by the caller).
        @discardableResult
        mutating func drop(_ i: Int) -> CachedNode {
            let node = entries[i].value
            index[entries[i].key] = nil
            bytes -= entries[i].cost
            entries[i].value = NodeCache.evicted
            entries[i].cost = 0
            entries[i].occupied = false
            entries[i].referenced = false
            free.append(i)
            return node
        }
    }

    private let clock = Mutex(Clock())
    /// Placeholder left in a freed slot.
    private static let evicted = CachedNode(BTreeNode(id: .zero))
    /// The byte budget.
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    func get(_ key: Key) -> CachedNode? {
        clock.withLock { c in
            guard let i = c.index[key] else {
                c.misses += 1
                return nil
            }
            c.hits += 1
            c.entries[i].referenced = true
            return c.entries[i].value
        }
    }

    func put(_ key: Key, _ value: CachedNode, cost: Int) {
        guard cost <= capacity else { return }
        clock.withLock { c in
            let mine: Int
            if let i = c.index[key] {
                c.bytes += cost - c.entries[i].cost
                c.entries[i].value = value
                c.entries[i].cost = cost
                c.entries[i].referenced = true
                mine = i
            } else {
                // New entries start unreferenced: a node read once (a scan) goes first.
                let e = Entry(key: key, value: value, cost: cost, referenced: false, occupied: true)
                let i: Int
                if let f = c.free.popLast() { c.entries[f] = e; i = f } else { c.entries.append(e); i = c.entries.count - 1 }
                c.index[key] = i
                c.bytes += cost
                mine = i
            }
            // At most two sweeps: the first clears every referenced bit it passes.
            var steps = 2 * c.entries.count
            while c.bytes > capacity, steps > 0 {
                steps -= 1
                if c.hand >= c.entries.count { c.hand = 0 }
                let h = c.hand
                c.hand += 1
                guard c.entries[h].occupied, h != mine else { continue }
                if c.entries[h].referenced {
                    c.entries[h].referenced = false
                } else {
                    c.drop(h)
                }
            }
        }
    }

    /// Takes the entries of `keys` out, returning their nodes (for the caller to release).
    private func take(_ keys: [Key]) -> [CachedNode] {
        clock.withLock { c in
            var out: [CachedNode] = []
            out.reserveCapacity(keys.count)
            for key in keys {
                guard let i = c.index[key] else { continue }
                out.append(c.drop(i))
            }
            return out
        }
    }

    /// Drops entries (the superseded versions of nodes a commit rewrote or removed, or the
    /// originals of nodes compaction moved: no new transaction can reach them, and left in
    /// place they would push live nodes out). The nodes are released on a background queue:
    /// tearing down a leaf (a release per key and value buffer) costs the caller nothing.
    func remove(_ keys: [Key]) {
        if keys.isEmpty { return }
        let dropped = take(keys)
        if dropped.isEmpty { return }
        NodeCache.reaper.async { withExtendedLifetime(dropped) {} }
    }

    /// ``remove(_:)`` done entirely on the background queue (the committing transaction does
    /// not wait for it; until it runs, the superseded entries only take room), or here for a
    /// few keys (cheaper than waking the queue's thread).
    func removeLater(_ keys: [Key]) {
        if keys.isEmpty { return }
        if keys.count < 16 {
            withExtendedLifetime(take(keys)) {}
            return
        }
        NodeCache.reaper.async { [self] in withExtendedLifetime(take(keys)) {} }
    }

    /// Where dropped nodes are released.
    private static let reaper = DispatchQueue(label: "sop.l1.reaper", qos: .utility)

    /// Bytes currently held, entries, hits and misses.
    var statistics: (bytes: Int, entries: Int, hits: Int, misses: Int) {
        clock.withLock { ($0.bytes, $0.index.count, $0.hits, $0.misses) }
    }
}

/// A decoded node as the L1 cache holds it (a class: a hit hands out one reference).
final class CachedNode: Sendable {
    let node: EngineNode
    init(_ node: EngineNode) { self.node = node }
}
