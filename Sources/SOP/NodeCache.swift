import Dispatch
import SOPBTree
import CSOPHints
import SOPCore
import Synchronization

/// The L1 cache: decoded nodes by logical ID, shared by every transaction of the process,
/// bounded in bytes, evicted by CLOCK (second chance).
///
/// Each entry names the blob its node was decoded from (a blob never changes once written,
/// so a decoded node is immutable and safe to share) and the registry version of that blob.
/// A transaction may use an entry without asking the registry only when the entry was
/// confirmed at the storage's current handle epoch (``StorageBackend/handleEpoch``): no
/// handle has changed since, so the entry's blob is still the node's current one. Otherwise
/// it asks the registry and then ``get(_:physical:version:epoch:)`` for that blob, which
/// confirms the entry at the epoch read before the registry lookup. The cache can never serve
/// a node other than the registry's current one.
///
/// The table is open-addressed (linear probing, entries stored in the slots): a lookup
/// touches the slot and the node, not a hash index, a key array, a value array and an entry
/// array as a dictionary beside an entry list would (at a million items each of those was a
/// cache miss per lookup). A hit only sets the entry's referenced bit; eviction sweeps a hand
/// over the slots, sparing (and clearing) each referenced entry once.
final class NodeCache: Sendable {
    struct Key: Hashable, Sendable {
        /// The node's logical ID.
        var logical: SOPID
        /// The decoded form (see ``KeySchema/tag``).
        var type: ObjectIdentifier

        /// Where the key's probe sequence starts in a table of `mask + 1` slots: the logical
        /// ID's fast hash (`SOPID._rawHashValue`) mixed with the form.
        @inline(__always)
        func home(_ mask: Int) -> Int {
            logical._rawHashValue(seed: Int(bitPattern: UInt(bitPattern: type))) & mask
        }
    }

    /// The epoch of an entry not yet confirmed against the registry.
    static let unconfirmed = UInt64.max

    private struct Slot {
        /// Occupied (tested on every probe: a flag, not the optional node, so a probe reads
        /// no reference).
        var used: Bool
        var key: Key
        var node: EngineNode?
        var physical: SOPID
        var epoch: UInt64
        var cost: Int
        var version: UInt32
        var referenced: Bool

        static let empty = Slot(used: false, key: Key(logical: .zero, type: ObjectIdentifier(Slot.self)), node: nil,
                                physical: .zero, epoch: NodeCache.unconfirmed, cost: 0, version: 0, referenced: false)
    }

    private struct Table {
        var slots = [Slot](repeating: .empty, count: 64)
        var mask = 63
        var count = 0
        var hand = 0
        var bytes = 0
        var hits = 0
        var misses = 0

        /// The slot holding `key`, if any.
        @inline(__always)
        func find(_ key: Key) -> Int? {
            var i = key.home(mask)
            while slots[i].used {
                if slots[i].key == key { return i }
                i = (i &+ 1) & mask
            }
            return nil
        }

        /// Empties slot `i`, shifting later entries of its probe run back (so lookups never
        /// need tombstones), and returns the node it held.
        mutating func remove(at i: Int) -> EngineNode? {
            let node = slots[i].node
            bytes -= slots[i].cost
            count -= 1
            var hole = i, j = i
            while true {
                j = (j &+ 1) & mask
                guard slots[j].used else { break }
                let home = slots[j].key.home(mask)
                // Entry j may fill the hole unless its home lies cyclically in (hole, j].
                let between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j)
                if !between {
                    slots[hole] = slots[j]
                    hole = j
                }
            }
            slots[hole] = .empty
            return node
        }

        /// Puts an entry in the first free slot of its probe sequence (the key is not present).
        mutating func insert(_ s: Slot) {
            if (count + 1) * 10 > (mask + 1) * 7 { grow() }
            var i = s.key.home(mask)
            while slots[i].used { i = (i &+ 1) & mask }
            slots[i] = s
            count += 1
            bytes += s.cost
        }

        mutating func grow() {
            let old = slots
            slots = [Slot](repeating: .empty, count: old.count * 2)
            mask = slots.count - 1
            hand = 0
            for s in old where s.used {
                var i = s.key.home(mask)
                while slots[i].used { i = (i &+ 1) & mask }
                slots[i] = s
            }
        }

        /// Evicts until the entries fit `capacity`, sparing `keep`; returns the evicted nodes.
        mutating func evict(to capacity: Int, keep: Key?, into out: inout [EngineNode]) {
            // At most two turns of the hand: the first clears every referenced bit it passes.
            // (A removal does not move the hand, so it does not count as a step: the entry
            // after it may have shifted into its slot.)
            var steps = 2 * slots.count
            while bytes > capacity, steps > 0 {
                if hand > mask { hand = 0 }
                let h = hand
                if slots[h].used, slots[h].key != keep, !slots[h].referenced, let n = remove(at: h) {
                    out.append(n)
                    continue
                }
                slots[h].referenced = false
                hand += 1
                steps -= 1
            }
        }
    }

    private let table = Mutex(Table())
    /// The byte budget.
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// The entry of `key` if it was confirmed at `epoch` (then its blob is the node's current
    /// one). Counts a hit; a `nil` counts nothing (the caller goes on to
    /// ``get(_:physical:version:epoch:)``).
    @inline(__always)
    func current(_ key: Key, epoch: UInt64) -> (node: EngineNode, physical: SOPID, version: UInt32)? {
        table.withLock { t in
            guard let i = t.find(key) else { return nil }
            // Through a pointer: the slot's fields are read in place, and only the node is
            // copied (a copy of the slot, or of a struct on its way out, retains the node's
            // arrays again).
            let hit = t.slots.withUnsafeMutableBufferPointer { b -> (node: EngineNode, physical: SOPID, version: UInt32)? in
                let slot = b.baseAddress! + i
                guard slot.pointee.epoch == epoch, slot.pointee.node != nil else { return nil }
                slot.pointee.referenced = true
                return (slot.pointee.node.unsafelyUnwrapped, slot.pointee.physical, slot.pointee.version)
            }
            if hit != nil { t.hits += 1 }
            return hit
        }
    }

    /// The node decoded from blob `physical`, which the registry named current for `key` after
    /// the handle epoch read `epoch`: the entry is confirmed at that epoch. Counts a hit or a miss.
    func get(_ key: Key, physical: SOPID, version: UInt32, epoch: UInt64) -> EngineNode? {
        table.withLock { t in
            let node = t.find(key).flatMap { i in
                t.slots.withUnsafeMutableBufferPointer { b -> EngineNode? in
                    guard b[i].physical == physical, let node = b[i].node else { return nil }
                    b[i].referenced = true
                    b[i].version = version
                    b[i].epoch = epoch
                    return node
                }
            }
            if node == nil { t.misses += 1 } else { t.hits += 1 }
            return node
        }
    }

    /// One entry for ``put(_:)``.
    struct Entry {
        var key: Key
        var node: EngineNode
        var physical: SOPID
        var version: UInt32 = 0
        /// The handle epoch read before the registry named `physical` current, or
        /// ``NodeCache/unconfirmed``.
        var epoch: UInt64 = NodeCache.unconfirmed
        var cost: Int
    }

    /// Prefetch hints for a scan entering a leaf, one stage of the leaves ahead each, so that
    /// each miss of a leaf's dependent chain — its slot, then its item array, then its value
    /// buffer — is requested a leaf's worth of work before it is needed: the slot `slotOf`
    /// lies in, the item array of `itemsOf` (whose slot a call one leaf earlier requested) and
    /// the values of `valuesOf` (whose items were requested a leaf earlier). Waits for nothing
    /// that was not requested before, changes nothing (not even a referenced bit or a count),
    /// and a key not cached is skipped. `itemLimit`: the most items a leaf holds.
    func prefetch(slotOf a: Key?, itemsOf b: Key?, valuesOf c: Key?, itemLimit: Int) {
        table.withLock { t in
            t.slots.withUnsafeBufferPointer { slots in
                let base = UnsafeRawPointer(slots.baseAddress!)
                if let a {
                    // The slot and the next (a probe run rarely goes further); a slot spans two lines.
                    sop_prefetch_range(base + a.home(t.mask) * MemoryLayout<Slot>.stride, 2 * MemoryLayout<Slot>.stride)
                }
                // The item array's address, read in place: a copy of the node would retain
                // its arrays, a write to the very lines not yet here.
                func itemArray(_ i: Int) -> UnsafeRawPointer? {
                    guard slots[i].used, slots[i].node != nil else { return nil }
                    return (base + i * MemoryLayout<Slot>.stride + itemsOffset).load(as: UnsafeRawPointer?.self)
                }
                if let b, let i = t.find(b), let items = itemArray(i) {
                    // The array's header and elements, by address: reading the count first
                    // would wait for the header's line.
                    sop_prefetch_range(items, arrayElementsOffset + itemLimit * MemoryLayout<BTreeItem<EKey, ValueBox>>.stride)
                }
                if let c, let i = t.find(c), let items = itemArray(i) {
                    // The header and the items were requested a leaf ago.
                    let count = items.load(fromByteOffset: arrayCountOffset, as: Int.self)
                    guard count > 0 else { return }
                    let stride = MemoryLayout<BTreeItem<EKey, ValueBox>>.stride
                    let first = (items + arrayElementsOffset + valueOffset).assumingMemoryBound(to: ValueBox.self)
                    let last = (items + arrayElementsOffset + (count - 1) * stride + valueOffset).assumingMemoryBound(to: ValueBox.self)
                    guard let v = first.pointee.inlineSpan else { return }
                    // The values lie in one buffer in item order (see ``NodeFormat/forCache(_:)``);
                    // otherwise only the first item's value.
                    var end = v.end
                    if let w = last.pointee.inlineSpan, w.storage == v.storage { end = w.end }
                    sop_prefetch_range(v.storage + arrayElementsOffset + v.start, end - v.start)
                }
            }
        }
    }

    /// Where a slot holds its node's item array (the node is stored in the slot). Constants
    /// of the instance, not globals: a global's lazy initialization is checked at every use.
    private let itemsOffset = MemoryLayout<Slot>.offset(of: \Slot.node)! + MemoryLayout<EngineNode>.offset(of: \EngineNode.items)!
    /// Where an item holds its value.
    private let valueOffset = MemoryLayout<BTreeItem<EKey, ValueBox>>.offset(of: \BTreeItem<EKey, ValueBox>.value)!

    /// Caches entries (replacing what their keys held) and evicts as needed; returns the nodes
    /// replaced or evicted, for the caller to release outside the lock (or hand to
    /// ``release(_:)``).
    @discardableResult
    func put(_ entries: [Entry]) -> [EngineNode] {
        var out: [EngineNode] = []
        table.withLock { t in
            for e in entries where e.cost <= capacity {
                let slot = Slot(used: true, key: e.key, node: e.node, physical: e.physical, epoch: e.epoch, cost: e.cost,
                                version: e.version, referenced: false)
                if let i = t.find(e.key) {
                    if let old = t.slots[i].node { out.append(old) }
                    t.bytes += e.cost - t.slots[i].cost
                    // A new version of a node in use stays referenced.
                    let referenced = t.slots[i].referenced
                    t.slots[i] = slot
                    t.slots[i].referenced = referenced
                } else {
                    // New entries start unreferenced: a node read once (a scan) goes first.
                    t.insert(slot)
                }
                t.evict(to: capacity, keep: e.key, into: &out)
            }
        }
        return out
    }

    /// Caches one entry (see ``put(_:)``); what it displaces is released here.
    func put(_ key: Key, _ node: EngineNode, physical: SOPID, version: UInt32, epoch: UInt64, cost: Int) {
        release(put([Entry(key: key, node: node, physical: physical, version: version, epoch: epoch, cost: cost)]))
    }

    /// Drops the entries of `keys` (nodes a commit removed: no new transaction can reach them,
    /// and left in place they would push live nodes out).
    func remove(_ keys: [Key]) {
        if keys.isEmpty { return }
        let dropped = table.withLock { t -> [EngineNode] in
            var out: [EngineNode] = []
            for key in keys {
                if let i = t.find(key), let n = t.remove(at: i) { out.append(n) }
            }
            return out
        }
        release(consume dropped)
    }

    /// Releases dropped nodes: a few here, more on a background queue (tearing down a leaf,
    /// a release per key and value buffer, then costs the committing transaction nothing).
    /// The caller hands its array over (`consuming`) and the queue empties the box it is
    /// moved into: had the queue merely captured a copy, it could finish before the caller
    /// dropped its own reference, and the caller would tear the nodes down after all.
    func release(_ nodes: consuming [EngineNode]) {
        if nodes.count < 16 { return }
        let garbage = Garbage(consume nodes)
        NodeCache.reaper.async { garbage.empty() }
    }

    /// Nodes on their way to the reaper (touched by the reaper only, once handed over).
    private final class Garbage: @unchecked Sendable {
        private var nodes: [EngineNode]
        init(_ nodes: consuming [EngineNode]) { self.nodes = consume nodes }
        func empty() { nodes = [] }
    }

    /// Compaction copied blobs (`moved`: old physical ID to new): entries decoded from an old
    /// blob now name its copy (same bytes, so the same node), unconfirmed until a
    /// transaction finds the copy current. Without this every moved node would be read and
    /// decoded again.
    func rebind(_ moved: [SOPID: SOPID]) {
        if moved.isEmpty { return }
        table.withLock { t in
            for i in 0...t.mask where t.slots[i].used {
                if let new = moved[t.slots[i].physical] {
                    t.slots[i].physical = new
                    t.slots[i].epoch = NodeCache.unconfirmed
                }
            }
        }
    }

    /// Where dropped nodes are released.
    private static let reaper = DispatchQueue(label: "sop.l1.reaper", qos: .utility)

    /// Bytes currently held, entries, hits and misses.
    var statistics: (bytes: Int, entries: Int, hits: Int, misses: Int) {
        table.withLock { ($0.bytes, $0.count, $0.hits, $0.misses) }
    }
}

/// The address of an array's storage object, read without touching the storage: for hints,
/// or to be read only while the array is known to be alive. The object starts with the
/// heap-object header (two words) and the count; the elements follow at
/// `arrayElementsOffset` (for elements aligned to at most a word, as all of the engine's are).
@inline(__always)
func objectAddress<T>(_ array: [T]) -> UnsafeRawPointer {
    unsafeBitCast(array, to: UnsafeRawPointer.self)
}

/// Where an array's storage object holds its count.
let arrayCountOffset = 2 * MemoryLayout<Int>.size
/// Where an array's storage object's elements start (count and capacity follow the header).
let arrayElementsOffset = 4 * MemoryLayout<Int>.size
