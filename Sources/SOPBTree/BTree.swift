import CSOPHints
import SOPCore

/// A B+tree over a ``NodeRepository``, with a cursor.
///
/// Leaves hold ``BTreeItem``s; internal nodes hold ``Separator``s and child logical IDs.
/// Items are totally ordered by key (through the comparator), then by item ID, so duplicates
/// of one key (non-unique stores) come back in ID order.
///
/// The root's logical ID never changes: a root split moves the root's content into two new
/// nodes, and a root left with one child takes over that child's content.
///
/// Not `Sendable`: one task uses a tree at a time. The tree does no I/O itself; every node is
/// read with ``NodeRepository/fetch(_:)`` and every change is reported to the repository
/// (`add`, `update`, `remove`).
///
/// The cursor remembers the current item; after a mutation the tree re-locates it lazily (the
/// next time the cursor moves), so cursor moves stay correct across any mutation.
public final class BTree<Repo: NodeRepository> {
    /// The key type.
    public typealias Key = Repo.Key
    /// The value type.
    public typealias Value = Repo.Value
    /// A node of this tree.
    @usableFromInline typealias Node = BTreeNode<Key, Value>
    /// An item of this tree.
    @usableFromInline typealias Item = BTreeItem<Key, Value>

    /// One level of a root-to-leaf path: the node as fetched (or as last written by this tree)
    /// and the child index (internal nodes) or item index (the leaf).
    @usableFromInline struct Frame {
        @usableFromInline var node: Node
        @usableFromInline var index: Int
        @inlinable init(node: Node, index: Int) {
            self.node = node
            self.index = index
        }
    }

    /// What a descent looks for: the first item that is not "before" the bound.
    @usableFromInline enum Bound {
        /// Before: key < k.
        case lower(Key)
        /// Before: key <= k.
        case upper(Key)
        /// Before: (key, id) < (k, i).
        case exact(Key, SOPID)
        /// Nothing is before.
        case minimum
        /// Everything is before.
        case maximum
    }

    /// The root's logical ID (never changes).
    public let rootID: SOPID
    /// Most items per leaf.
    public let slotLength: Int
    /// Most separators per internal node (a wider fan-out than the leaves' keeps the tree
    /// shallow: fewer nodes to look up per descent, for a larger rewrite of a parent when a
    /// child splits or merges).
    public let internalSlotLength: Int
    /// Whether a key may appear at most once.
    public let isUnique: Bool
    /// Where nodes come from and where changes go.
    public let repository: Repo

    @usableFromInline let compare: (Key, Key) -> Int
    /// The same order over keys in place: binary searches pass pointers, so a probe copies
    /// (and retains) nothing.
    @usableFromInline let compareInPlace: (UnsafePointer<Key>, UnsafePointer<Key>) -> Int
    /// Byte offsets of the key in an item and in a separator.
    @usableFromInline let itemKeyOffset: Int
    @usableFromInline let separatorKeyOffset: Int
    /// Fewest items a non-root leaf may hold (``leafMinimum(slotLength:)``).
    @usableFromInline let minSize: Int
    /// Fewest separators a non-root internal node may hold.
    @usableFromInline let internalMinSize: Int

    /// The current item (nil: cursor invalid), unless ``currentInPath``.
    @usableFromInline var storedCurrent: Item?
    /// The current item is the one the path ends at (`path.last.node.items[path.last.index]`)
    /// and was not copied into ``storedCurrent``: crossing to a sibling leaf copies no item
    /// (the copy's retain of the leaf's value buffer was a locked write to a line not yet in
    /// cache, on every leaf a scan crosses). Code that changes `path` other than together with
    /// the current item calls ``materializeCurrent()`` first.
    @usableFromInline var currentInPath = false

    /// The current item (nil: cursor invalid).
    @inlinable var current: Item? {
        get {
            if currentInPath { return path[path.count - 1].node.items[path[path.count - 1].index] }
            return storedCurrent
        }
        set {
            storedCurrent = newValue
            currentInPath = false
        }
    }

    /// Whether the cursor is valid (``current`` is not `nil`), without copying the item.
    @inlinable var hasCurrent: Bool { currentInPath || storedCurrent != nil }

    /// Copies the current item out of the path (before the path changes without it).
    @inlinable func materializeCurrent() {
        if currentInPath { current = current }
    }
    /// Root-to-leaf path to `current`; valid only while `pathVersion == version`.
    @usableFromInline var path: [Frame] = []
    /// Bumped by every mutation.
    @usableFromInline var version: UInt64 = 1
    /// The `version` the path was built at (0: never).
    @usableFromInline var pathVersion: UInt64 = 0

    /// Guards against cycles in corrupt trees (a real tree of slot length >= 4 is far shallower).
    @inlinable static var maxDepth: Int { 64 }

    /// Makes a tree over an existing root node.
    ///
    /// - Parameters:
    ///   - rootID: the root node's logical ID (for a new store, the node made by ``emptyRoot(id:)``).
    ///   - slotLength: most items per leaf; the engine validates it (4...10,000).
    ///   - internalSlotLength: most separators per internal node (`nil`: `slotLength`).
    ///   - isUnique: whether ``add(_:_:id:)`` refuses a key that already exists.
    ///   - compare: the key order: negative, zero or positive.
    ///   - repository: the nodes.
    public init(rootID: SOPID, slotLength: Int, internalSlotLength: Int? = nil, isUnique: Bool,
                compare: @escaping (Key, Key) -> Int, repository: Repo) {
        self.rootID = rootID
        self.slotLength = slotLength
        self.internalSlotLength = internalSlotLength ?? slotLength
        self.internalMinSize = Swift.max(1, (internalSlotLength ?? slotLength) / 2)
        self.isUnique = isUnique
        self.compare = compare
        self.compareInPlace = { a, b in compare(a.pointee, b.pointee) }
        self.itemKeyOffset = MemoryLayout<Item>.offset(of: \Item.key)!
        self.separatorKeyOffset = MemoryLayout<Separator<Key>>.offset(of: \Separator<Key>.key)!
        self.repository = repository
        self.minSize = Self.leafMinimum(slotLength: slotLength)
    }

    /// The fewest items a non-root leaf may hold: a quarter of the slot length, at least two
    /// (and at most half). A leaf is rebalanced only below it, so a leaf emptied by random
    /// deletes is merged late (as LMDB merges pages below a quarter full): with half as the
    /// bar, a leaf that lost half its items rewrote its sibling and parent on most further
    /// deletes (`sop-prof delete 100000 1`: 10–30 % slower). Internal nodes keep half.
    public static func leafMinimum(slotLength: Int) -> Int {
        Swift.min(Swift.max(2, slotLength / 4), Swift.max(1, slotLength / 2))
    }

    /// Makes a tree whose order reads keys in place (see ``init(rootID:slotLength:internalSlotLength:isUnique:compare:repository:)``);
    /// `compareInPlace` must agree with `compare`.
    public init(rootID: SOPID, slotLength: Int, internalSlotLength: Int? = nil, isUnique: Bool,
                compare: @escaping (Key, Key) -> Int,
                compareInPlace: @escaping (UnsafePointer<Key>, UnsafePointer<Key>) -> Int,
                repository: Repo) {
        self.rootID = rootID
        self.slotLength = slotLength
        self.internalSlotLength = internalSlotLength ?? slotLength
        self.internalMinSize = Swift.max(1, (internalSlotLength ?? slotLength) / 2)
        self.isUnique = isUnique
        self.compare = compare
        self.compareInPlace = compareInPlace
        self.itemKeyOffset = MemoryLayout<Item>.offset(of: \Item.key)!
        self.separatorKeyOffset = MemoryLayout<Separator<Key>>.offset(of: \Separator<Key>.key)!
        self.repository = repository
        self.minSize = Self.leafMinimum(slotLength: slotLength)
    }

    /// The node a new, empty store starts with: an empty leaf with this ID.
    public static func emptyRoot(id: SOPID) -> BTreeNode<Key, Value> {
        BTreeNode(id: id)
    }

    // MARK: - Cursor (public)

    /// The item under the cursor; `nil` when the cursor is invalid.
    @inlinable public var currentItem: BTreeItem<Key, Value>? { current }
    /// The key under the cursor; `nil` when the cursor is invalid.
    @inlinable public var currentKey: Key? { current?.key }
    /// The value under the cursor; `nil` when the cursor is invalid.
    @inlinable public var currentValue: Value? { current?.value }

    /// Positions the cursor on the first item with `key` and returns `true`; otherwise on the
    /// first item greater than `key` (invalid if none) and returns `false`.
    @inlinable public func find(_ key: Key) async throws -> Bool {
        guard let item = try await seekForward(.lower(key)) else { return false }
        return compare(item.key, key) == 0
    }

    /// Positions the cursor on the item (`key`, `id`) and returns `true`; otherwise on its
    /// successor (invalid if none) and returns `false`.
    @inlinable public func find(_ key: Key, id: SOPID) async throws -> Bool {
        guard let item = try await seekForward(.exact(key, id)) else { return false }
        return item.id == id && compare(item.key, key) == 0
    }

    /// Positions the cursor on the last item with `key` and returns `true`; otherwise on the
    /// last item smaller than `key` (invalid if none) and returns `false`.
    @inlinable public func findLast(_ key: Key) async throws -> Bool {
        guard let item = try await seekBackward(.upper(key)) else { return false }
        return compare(item.key, key) == 0
    }

    /// Positions the cursor on the smallest item; `false` (cursor invalid) when the tree is empty.
    @inlinable public func first() async throws -> Bool {
        try await seekForward(.minimum) != nil
    }

    /// Positions the cursor on the largest item; `false` (cursor invalid) when the tree is empty.
    @inlinable public func last() async throws -> Bool {
        try await seekBackward(.maximum) != nil
    }

    /// Moves the cursor to the next item; `false` (cursor invalid) past the end or when the
    /// cursor was invalid.
    @inlinable public func next() async throws -> Bool {
        guard try await ensurePath() else { return false }
        materializeCurrent()
        let leafLevel = path.count - 1
        path[leafLevel].index += 1
        let i = path[leafLevel].index
        if i < path[leafLevel].node.items.count {
            current = path[leafLevel].node.items[i]
            return true
        }
        if try await Self.moveToNextLeaf(&path, self) {
            current = path[path.count - 1].node.items[0]
            return true
        }
        invalidateCursor()
        return false
    }

    /// Moves the cursor to the previous item; `false` (cursor invalid) before the start or
    /// when the cursor was invalid.
    @inlinable public func previous() async throws -> Bool {
        guard try await ensurePath() else { return false }
        materializeCurrent()
        let leafLevel = path.count - 1
        path[leafLevel].index -= 1
        let i = path[leafLevel].index
        if i >= 0 {
            current = path[leafLevel].node.items[i]
            return true
        }
        if try await Self.moveToPreviousLeaf(&path, self) {
            let leaf = path[path.count - 1]
            current = leaf.node.items[leaf.index]
            return true
        }
        invalidateCursor()
        return false
    }

    /// The value of the first item with `key`, or `nil`; the cursor does not move. Walks down
    /// keeping only the current node (no path, no cursor update); when the key is not in the
    /// leaf it lands in, the general search decides (the item may open the next leaf, or end
    /// the previous one in a unique store).
    @inlinable public func firstValue(forKey key: Key) async throws -> Value? {
        var node: Node
        if let n = try fetchCheckedIfCached(rootID) { node = n } else { node = try await fetchChecked(rootID) }
        var depth = 0
        while !node.isLeaf {
            depth += 1
            if depth > Self.maxDepth { throw corrupt("tree deeper than \(Self.maxDepth) levels", node.id) }
            let child = node.children[partition(node.separators, .lower(key))]
            if let n = try fetchCheckedIfCached(child) { node = n } else { node = try await fetchChecked(child) }
        }
        let i = partition(node.items, .lower(key))
        if i < node.items.count, itemKey(node.items, i, equals: key) {
            // The value alone, read in place (not a copy of the whole item).
            return node.items.withUnsafeBufferPointer { $0[i].value }
        }
        // As firstWithKey, without touching the cursor.
        let p = try await descend(.lower(key))
        let leaf = p[p.count - 1]
        if leaf.index < leaf.node.items.count {
            let item = leaf.node.items[leaf.index]
            return compare(item.key, key) == 0 ? item.value : nil
        }
        guard let fence = upperFence(p), compare(fence.key, key) == 0 else { return nil }
        var q = p
        guard try await Self.moveToNextLeaf(&q, self) else { return nil }
        let item = q[q.count - 1].node.items[0]
        return compare(item.key, key) == 0 ? item.value : nil
    }

    /// The items of the leaf the cursor is in and the cursor's index among them (`nil` when
    /// the cursor is invalid), for iterating a leaf at a time: the array is the node's own
    /// (copy-on-write), so this copies nothing.
    @inlinable public func cursorLeaf() async throws -> (items: [BTreeItem<Key, Value>], index: Int)? {
        guard try await ensurePath() else { return nil }
        let leaf = path[path.count - 1]
        return (leaf.node.items, leaf.index)
    }

    /// For walking a leaf at a time in ascending order: moves the cursor from its leaf to the
    /// first item of the next leaf, without a suspension, when the cursor's path is current
    /// and that leaf is the next child of the same parent and at hand (in the working set or
    /// cached). Returns the new leaf's items; `nil` when that does not apply (nothing moved:
    /// the caller goes the general way, ``moveWithinLeaf(toEnd:)`` then ``next()``).
    @inlinable public func moveToNextSiblingLeafIfCached() throws -> [BTreeItem<Key, Value>]? {
        guard hasCurrent, pathVersion == version, path.count >= 2 else { return nil }
        let leafLevel = path.count - 1
        let parent = leafLevel - 1
        let next = path[parent].index + 1
        guard next < path[parent].node.children.count,
              let node = try fetchCheckedIfCached(path[parent].node.children[next]), node.isLeaf else { return nil }
        guard !node.items.isEmpty else { throw corrupt("empty non-root leaf", node.id) }
        path[parent].index = next
        // The node moves into the path (its last use), and the items are read back from there:
        // returning `node.items` after the move kept a second copy of the node alive (a
        // retain and a release of each of its arrays per leaf crossed).
        path[leafLevel] = Frame(node: node, index: 0)
        storedCurrent = nil
        currentInPath = true
        return path[leafLevel].node.items
    }

    /// The ID of the leaf `ahead` places after the cursor's leaf (1: the next one; negative:
    /// before it) when it has the same parent; `nil` otherwise. Reads the path only (no
    /// fetch): for hints such as a scan's prefetching, never for navigation.
    @inlinable public func siblingLeafID(ahead: Int) -> SOPID? {
        let n = path.count
        guard n >= 2, hasCurrent else { return nil }
        let j = path[n - 2].index &+ ahead
        guard j >= 0, j < path[n - 2].node.children.count else { return nil }
        return path[n - 2].node.children[j]
    }

    /// Puts the cursor on the last (`toEnd`) or first item of its leaf, so that the next
    /// ``next()`` (or ``previous()``) crosses to the neighbouring leaf. `false` when the cursor
    /// is invalid.
    @inlinable public func moveWithinLeaf(toEnd: Bool) async throws -> Bool {
        guard try await ensurePath() else { return false }
        let leafLevel = path.count - 1
        let n = path[leafLevel].node.items.count
        guard n > 0 else { return false }
        path[leafLevel].index = toEnd ? n - 1 : 0
        current = path[leafLevel].node.items[path[leafLevel].index]
        return true
    }

    // MARK: - Mutations (public)

    /// Adds an item. Returns `false` (and changes nothing) when the store is unique and `key`
    /// exists (the cursor is then on the first item with `key`), or when an item with this
    /// exact (`key`, `id`) exists. On `true` the cursor is on the new item.
    @inlinable public func add(_ key: Key, _ value: Value, id: SOPID) async throws -> Bool {
        if isUnique { return try await addIfNotExists(key, value, id: id) }
        var p = try await descend(.exact(key, id))
        let leaf = p[p.count - 1]
        if leaf.index < leaf.node.items.count {
            let there = leaf.node.items[leaf.index]
            if there.id == id && compare(there.key, key) == 0 {
                setCursor(there, path: p)
                return false
            }
        }
        try await insert(Item(key: key, id: id, value: value), into: &p)
        return true
    }

    /// Adds an item only if no item with `key` exists (in unique and non-unique stores).
    /// On `false` the cursor is on the first item with `key`; on `true` on the new item.
    @inlinable public func addIfNotExists(_ key: Key, _ value: Value, id: SOPID) async throws -> Bool {
        var p = try await descend(.lower(key))
        if try await firstWithKey(key, &p) { return false }
        if !pathRoutes(p, key, id) { p = try await descend(.exact(key, id)) }
        try await insert(Item(key: key, id: id, value: value), into: &p)
        return true
    }

    /// Adds an item if no item with `key` exists (returns `true`), else replaces the value of
    /// the first item with `key` (returns `false`). The cursor is on the affected item.
    @inlinable public func upsert(_ key: Key, _ value: Value, id: SOPID) async throws -> Bool {
        var p = try await descend(.lower(key))
        if try await firstWithKey(key, &p) {
            try writeValue(value, at: &p)
            return false
        }
        if !pathRoutes(p, key, id) { p = try await descend(.exact(key, id)) }
        try await insert(Item(key: key, id: id, value: value), into: &p)
        return true
    }

    /// Replaces the value of the first item with `key`; `false` (cursor invalid) when there is
    /// none. On `true` the cursor is on the item.
    @inlinable public func update(_ key: Key, _ value: Value) async throws -> Bool {
        var p = try await descend(.lower(key))
        guard try await firstWithKey(key, &p) else {
            invalidateCursor()
            return false
        }
        try writeValue(value, at: &p)
        return true
    }

    /// Replaces the value of the item under the cursor; `false` when the cursor is invalid.
    @inlinable public func updateCurrentValue(_ value: Value) async throws -> Bool {
        guard try await ensurePath() else { return false }
        var p = path
        try writeValue(value, at: &p)
        return true
    }

    /// Replaces the key of the item under the cursor with one that compares equal to it (a key
    /// whose non-ordering fields changed). Throws ``SOPError/Code/invalidArgument`` when
    /// `compare(old, new) != 0` (the item would move). `false` when the cursor is invalid.
    @inlinable public func updateCurrentKey(_ key: Key) async throws -> Bool {
        guard let item = current else { return false }
        guard compare(item.key, key) == 0 else {
            throw SOPError(.invalidArgument, "updateCurrentKey cannot change the key's position in the order")
        }
        guard try await ensurePath() else { return false }
        var p = path
        let leafLevel = p.count - 1
        let i = p[leafLevel].index
        takeForChange(&p, leafLevel)
        p[leafLevel].node.items[i].key = key
        repository.update(p[leafLevel].node)
        version &+= 1
        setCursor(p[leafLevel].node.items[i], path: p)
        return true
    }

    /// Removes the first item with `key`; `false` (cursor invalid) when there is none. On
    /// `true` the cursor is on the removed item's successor (invalid if none).
    @inlinable public func remove(_ key: Key) async throws -> Bool {
        var p = try await descend(.lower(key))
        guard try await firstWithKey(key, &p) else {
            invalidateCursor()
            return false
        }
        try await removeItem(at: p)
        return true
    }

    /// Removes the item (`key`, `id`); `false` (cursor invalid) when there is none. On `true`
    /// the cursor is on the removed item's successor (invalid if none).
    @inlinable public func remove(_ key: Key, id: SOPID) async throws -> Bool {
        guard try await find(key, id: id) else {
            invalidateCursor()
            return false
        }
        try await removeItem(at: path)
        return true
    }

    /// Removes the item under the cursor; `false` when the cursor is invalid. On `true` the
    /// cursor is on the removed item's successor (invalid if none).
    @inlinable public func removeCurrent() async throws -> Bool {
        guard try await ensurePath() else { return false }
        try await removeItem(at: path)
        return true
    }

    // MARK: - Diagnostics (public)

    /// Walks the whole tree and throws ``SOPError/Code/corrupt`` ("<what> in node <id hex>")
    /// on the first violation: item order within and across nodes (strict (key, id) order; no
    /// two equal keys in unique stores), separator bounds, `children.count ==
    /// separators.count + 1`, leaves all at one depth, node sizes, every node reached exactly
    /// once, and (when `expectedCount` is given) the number of items. Returns the item count.
    ///
    /// A child the repository cannot fetch is reported as ``SOPError/Code/corrupt`` when the
    /// repository's error is not an ``SOPError`` or is ``SOPError/Code/notFound``; other
    /// ``SOPError``s (a conflict, I/O) are rethrown unchanged.
    @discardableResult
    public func checkInvariants(expectedCount: Int64? = nil) async throws -> Int64 {
        var state = CheckState()
        let root = try await fetchForCheck(rootID, parent: nil)
        try await check(root, depth: 0, lower: nil, upper: nil, state: &state)
        if let expectedCount, state.count != expectedCount {
            throw SOPError(.corrupt, "item count \(state.count) differs from expected \(expectedCount) in node \(rootID.hex)")
        }
        return state.count
    }

    /// The logical IDs of every node of the tree, root first (breadth first). Leaves are not
    /// fetched, except the leftmost one (to learn the tree's height).
    public func allNodeIDs() async throws -> [SOPID] {
        // Height from the leftmost path.
        var height = 0
        var node = try await fetchChecked(rootID)
        while !node.isLeaf {
            height += 1
            if height > Self.maxDepth { throw corrupt("tree deeper than \(Self.maxDepth) levels", node.id) }
            node = try await fetchChecked(node.children[0])
        }
        var result: [SOPID] = [rootID]
        var seen: Set<SOPID> = [rootID]
        var level: [SOPID] = [rootID]
        var depth = 0
        while depth < height {
            var nextLevel: [SOPID] = []
            for id in level {
                let n = try await fetchChecked(id)
                if n.isLeaf { throw corrupt("leaf above the leaf level", n.id) }
                for c in n.children {
                    guard seen.insert(c).inserted else { throw corrupt("child \(c.hex) reached twice", n.id) }
                    nextLevel.append(c)
                    result.append(c)
                }
            }
            level = nextLevel
            depth += 1
        }
        return result
    }

    // MARK: - Searching

    /// Index of the first item not before `bound` (binary search).
    @inlinable func partition(_ items: [Item], _ bound: Bound) -> Int {
        items.withUnsafeBufferPointer { b -> Int in
            guard let base = b.baseAddress else { return 0 }
            return search(UnsafeRawPointer(base), count: b.count, stride: MemoryLayout<Item>.stride,
                          keyOffset: itemKeyOffset, bound, separators: false) { base[$0].id }
        }
    }

    /// Whether `items[i]` has `key`, compared in place (no copy of the item's key).
    @inlinable @inline(__always)
    func itemKey(_ items: [Item], _ i: Int, equals key: Key) -> Bool {
        items.withUnsafeBufferPointer { b in
            withUnsafePointer(to: key) { kp in
                let p = (UnsafeRawPointer(b.baseAddress! + i) + itemKeyOffset).assumingMemoryBound(to: Key.self)
                return compareInPlace(p, kp) == 0
            }
        }
    }

    /// The child to descend into: the number of separators `s` with `s <= bound` (an item equal
    /// to a separator lives right of it). That child holds the first item not before `bound`,
    /// unless all its items are before it (then the next leaf's first item is the one).
    @inlinable func partition(_ seps: [Separator<Key>], _ bound: Bound) -> Int {
        seps.withUnsafeBufferPointer { b -> Int in
            guard let base = b.baseAddress else { return 0 }
            return search(UnsafeRawPointer(base), count: b.count, stride: MemoryLayout<Separator<Key>>.stride,
                          keyOffset: separatorKeyOffset, bound, separators: true) { base[$0].id }
        }
    }

    /// Binary search over `count` elements of `stride` bytes at `base`, each with its key at
    /// `keyOffset`. Items: the first not before `bound`. Separators: the number that route
    /// `bound` right of them (for `.exact`, a separator equal in key and ID; in a unique
    /// store, for `.lower`, a separator equal in key — it usually is that key's item — and
    /// `descend` checks the previous leaf when it is not).
    @inlinable @inline(__always)
    func search(_ base: UnsafeRawPointer, count: Int, stride: Int, keyOffset: Int, _ bound: Bound,
                separators: Bool, id: (Int) -> SOPID) -> Int {
        let cmp = compareInPlace
        @inline(__always) func key(_ i: Int) -> UnsafePointer<Key> {
            (base + i &* stride + keyOffset).assumingMemoryBound(to: Key.self)
        }
        var lo = 0, hi = count
        switch bound {
        case .minimum: return 0
        case .maximum: return count
        default: Self.prefetchProbes(base, count: count, stride: stride, keyOffset: keyOffset)
        }
        switch bound {
        case .minimum, .maximum: break // returned above
        case .exact(let k, let i):
            withUnsafePointer(to: k) { kp in
                while lo < hi {
                    let mid = (lo &+ hi) >> 1
                    let c = cmp(key(mid), kp)
                    let right = c < 0 || (c == 0 && (separators ? id(mid) <= i : id(mid) < i))
                    if right { lo = mid + 1 } else { hi = mid }
                }
            }
        case .lower(let k):
            let inclusive = separators && isUnique
            withUnsafePointer(to: k) { kp in
                while lo < hi {
                    let mid = (lo &+ hi) >> 1
                    let c = cmp(key(mid), kp)
                    if c < 0 || (inclusive && c == 0) { lo = mid + 1 } else { hi = mid }
                }
            }
        case .upper(let k):
            withUnsafePointer(to: k) { kp in
                while lo < hi {
                    let mid = (lo &+ hi) >> 1
                    if cmp(key(mid), kp) <= 0 { lo = mid + 1 } else { hi = mid }
                }
            }
        }
        return lo
    }

    /// Asks for the lines a binary search over `count` elements of `stride` bytes at `base`
    /// will read, before it reads them, so that their misses overlap instead of following one
    /// another (each probe's line depends on the last comparison; a node not touched lately is
    /// in memory, not in the caches). A small node (a leaf's items) is asked for whole; a
    /// large one (an internal node's separators) for the probes of the first three steps.
    @inlinable @inline(__always)
    static func prefetchProbes(_ base: UnsafeRawPointer, count: Int, stride: Int, keyOffset: Int) {
        let bytes = count &* stride
        if bytes <= 2048 {
            sop_prefetch_range(base, bytes)
            return
        }
        var step = count >> 1, probes = 1
        while probes <= 4 {
            var j = 0
            while j < probes {
                let probe: Int = (2 &* j &+ 1) &* step
                let offset: Int = probe &* stride &+ keyOffset
                sop_prefetch(base + offset)
                j &+= 1
            }
            probes &<<= 1
            step >>= 1
        }
    }

    @inlinable func corrupt(_ what: String, _ id: SOPID) -> SOPError {
        SOPError(.corrupt, "\(what) in node \(id.hex)")
    }

    /// Fetches a node and checks what every use relies on: its ID, its shape.
    @inlinable func fetchChecked(_ id: SOPID) async throws -> Node {
        let node = try await repository.fetch(id)
        try checkShape(node, id)
        return node
    }

    /// The node if the repository has it at hand (no I/O, no suspension), checked; `nil`
    /// when it must be fetched with ``fetchChecked(_:)``.
    @inlinable @inline(__always) func fetchCheckedIfCached(_ id: SOPID) throws -> Node? {
        guard let node = try repository.fetchIfCached(id) else { return nil }
        try checkShape(node, id)
        return node
    }

    /// What every use of a fetched node relies on: its ID and its shape.
    @inlinable func checkShape(_ node: Node, _ id: SOPID) throws {
        guard node.id == id else { throw corrupt("node carries ID \(node.id.hex)", id) }
        if node.isLeaf {
            guard node.separators.isEmpty else { throw corrupt("leaf with separators", id) }
        } else {
            guard node.items.isEmpty else { throw corrupt("internal node with items", id) }
            guard node.children.count == node.separators.count + 1 else {
                throw corrupt("\(node.children.count) children for \(node.separators.count) separators", id)
            }
        }
    }

    /// The root-to-leaf path toward the first item not before `bound`. The leaf's index is the
    /// partition point in that leaf (it may equal the leaf's item count).
    @inlinable func descend(_ bound: Bound) async throws -> [Frame] {
        var frames: [Frame] = []
        // Nodes at hand are taken without an async call (most of a descent, most of the time).
        var node: Node
        if let n = try fetchCheckedIfCached(rootID) { node = n } else { node = try await fetchChecked(rootID) }
        frames.reserveCapacity(4)
        while !node.isLeaf {
            if frames.count >= Self.maxDepth { throw corrupt("tree deeper than \(Self.maxDepth) levels", node.id) }
            let i = partition(node.separators, bound)
            let child = node.children[i]
            frames.append(Frame(node: node, index: i))
            if let n = try fetchCheckedIfCached(child) { node = n } else { node = try await fetchChecked(child) }
        }
        if !frames.isEmpty && node.items.isEmpty { throw corrupt("empty non-root leaf", node.id) }
        frames.append(Frame(node: node, index: partition(node.items, bound)))
        if isUnique, case .lower(let k) = bound, frames[frames.count - 1].index == 0,
           let fence = lowerFence(frames), compare(fence.key, k) == 0,
           compare(node.items[0].key, k) != 0 {
            // Routed right of a separator with `k` whose item is gone: the item with `k`, if
            // any, may end the previous leaf.
            var q = frames
            if try await Self.moveToPreviousLeaf(&q, self) {
                let leaf = q[q.count - 1]
                if compare(leaf.node.items[leaf.index].key, k) == 0 { return q }
            }
        }
        return frames
    }

    /// Moves `p` (ending in a leaf) to index 0 of the next leaf; `false` (p unchanged) if none.
    @inlinable static func moveToNextLeaf(_ p: inout [Frame], _ tree: BTree) async throws -> Bool {
        var level = p.count - 2
        while level >= 0 && p[level].index >= p[level].node.children.count - 1 { level -= 1 }
        if level < 0 { return false }
        var q = Array(p[0...level])
        q[level].index += 1
        var id = q[level].node.children[q[level].index]
        while true {
            let node = try await tree.fetchChecked(id)
            if node.isLeaf {
                guard !node.items.isEmpty else { throw tree.corrupt("empty non-root leaf", id) }
                q.append(Frame(node: node, index: 0))
                break
            }
            if q.count >= maxDepth { throw tree.corrupt("tree deeper than \(maxDepth) levels", id) }
            q.append(Frame(node: node, index: 0))
            id = node.children[0]
        }
        p = q
        return true
    }

    /// Moves `p` (ending in a leaf) to the last item of the previous leaf; `false` (p unchanged) if none.
    @inlinable static func moveToPreviousLeaf(_ p: inout [Frame], _ tree: BTree) async throws -> Bool {
        var level = p.count - 2
        while level >= 0 && p[level].index <= 0 { level -= 1 }
        if level < 0 { return false }
        var q = Array(p[0...level])
        q[level].index -= 1
        var id = q[level].node.children[q[level].index]
        while true {
            let node = try await tree.fetchChecked(id)
            if node.isLeaf {
                guard !node.items.isEmpty else { throw tree.corrupt("empty non-root leaf", id) }
                q.append(Frame(node: node, index: node.items.count - 1))
                break
            }
            if q.count >= maxDepth { throw tree.corrupt("tree deeper than \(maxDepth) levels", id) }
            let last = node.children.count - 1
            q.append(Frame(node: node, index: last))
            id = node.children[last]
        }
        p = q
        return true
    }

    /// Positions the cursor on the first item not before `bound`; returns it (nil: invalid).
    @inlinable func seekForward(_ bound: Bound) async throws -> Item? {
        var p = try await descend(bound)
        let leaf = p[p.count - 1]
        if leaf.index < leaf.node.items.count {
            setCursor(leaf.node.items[leaf.index], path: p)
        } else if try await Self.moveToNextLeaf(&p, self) {
            setCursor(p[p.count - 1].node.items[0], path: p)
        } else {
            invalidateCursor()
        }
        return current
    }

    /// Positions the cursor on the last item before `bound`; returns it (nil: invalid).
    @inlinable func seekBackward(_ bound: Bound) async throws -> Item? {
        var p = try await descend(bound)
        let leafLevel = p.count - 1
        if p[leafLevel].index > 0 {
            p[leafLevel].index -= 1
            setCursor(p[leafLevel].node.items[p[leafLevel].index], path: p)
        } else if try await Self.moveToPreviousLeaf(&p, self) {
            let leaf = p[p.count - 1]
            setCursor(leaf.node.items[leaf.index], path: p)
        } else {
            invalidateCursor()
        }
        return current
    }

    @inlinable func setCursor(_ item: Item, path p: [Frame]) {
        current = item
        path = p
        pathVersion = version
    }

    /// Makes the node at `p[level]` the only holder of its arrays before an in-place change:
    /// the cursor's path and the repository let go of it (without this, every change of a
    /// leaf copied all its items). Only right before a change that cannot fail and that ends
    /// with the node recorded again (`repository.update` or `add`); the cursor is set anew
    /// by the change.
    @inlinable func takeForChange(_ p: inout [Frame], _ level: Int) {
        materializeCurrent()
        if !path.isEmpty {
            path = []
            pathVersion = 0
        }
        repository.detach(p[level].node.id)
    }

    @inlinable func invalidateCursor() {
        current = nil
        path = []
        pathVersion = 0
    }

    /// Makes `path` point at `current` again after a mutation; `false` when the cursor is invalid.
    @inlinable func ensurePath() async throws -> Bool {
        guard let item = current else { return false }
        if pathVersion == version { return true }
        var p = try await descend(.exact(item.key, item.id))
        let leaf = p[p.count - 1]
        if leaf.index < leaf.node.items.count {
            let there = leaf.node.items[leaf.index]
            guard there.id == item.id else {
                throw SOPError(.internalError, "the cursor's item \(item.id.hex) is no longer in the tree")
            }
            setCursor(there, path: p)
            return true
        }
        guard try await Self.moveToNextLeaf(&p, self), p[p.count - 1].node.items[0].id == item.id else {
            throw SOPError(.internalError, "the cursor's item \(item.id.hex) is no longer in the tree")
        }
        setCursor(p[p.count - 1].node.items[0], path: p)
        return true
    }

    /// The separator bounding the leaf of `p` from below (nil: the leaf is the first one).
    @inlinable func lowerFence(_ p: [Frame]) -> Separator<Key>? {
        var level = p.count - 2
        while level >= 0 {
            let f = p[level]
            if f.index > 0 { return f.node.separators[f.index - 1] }
            level -= 1
        }
        return nil
    }

    /// The separator bounding the leaf of `p` from above (nil: the leaf is the last one).
    @inlinable func upperFence(_ p: [Frame]) -> Separator<Key>? {
        var level = p.count - 2
        while level >= 0 {
            let f = p[level]
            if f.index < f.node.separators.count { return f.node.separators[f.index] }
            level -= 1
        }
        return nil
    }

    /// `p` comes from `descend(.lower(key))`. When an item with `key` exists, moves `p` onto
    /// the first one, sets the cursor there and returns `true`. Otherwise returns `false` and
    /// leaves `p` and the cursor alone. Fetches the next leaf only when the first item with
    /// `key` could be there (the leaf's upper fence has `key`).
    @inlinable func firstWithKey(_ key: Key, _ p: inout [Frame]) async throws -> Bool {
        let leaf = p[p.count - 1]
        if leaf.index < leaf.node.items.count {
            let item = leaf.node.items[leaf.index]
            guard compare(item.key, key) == 0 else { return false }
            setCursor(item, path: p)
            return true
        }
        // Every item of the next leaf is >= the fence: with a fence key other than `key`, no
        // item with `key` follows.
        guard let fence = upperFence(p), compare(fence.key, key) == 0 else { return false }
        var q = p
        guard try await Self.moveToNextLeaf(&q, self) else { return false }
        let item = q[q.count - 1].node.items[0]
        guard compare(item.key, key) == 0 else { return false }
        p = q
        setCursor(item, path: p)
        return true
    }

    /// Whether a path built for `.lower(key)` also leads where `.exact(key, id)` would go (used
    /// once no item with `key` exists, so the leaf position is the same for both).
    @inlinable func pathRoutes(_ p: [Frame], _ key: Key, _ id: SOPID) -> Bool {
        for f in p.dropLast() {
            let i = f.index
            if i > 0 {
                let s = f.node.separators[i - 1]
                if order(s.key, s.id, key, id) > 0 { return false }
            }
            if i < f.node.separators.count {
                let s = f.node.separators[i]
                if order(s.key, s.id, key, id) <= 0 { return false }
            }
        }
        return true
    }

    // MARK: - Mutating

    /// Replaces the value of the leaf item `p` points at and leaves the cursor there.
    @inlinable func writeValue(_ value: Value, at p: inout [Frame]) throws {
        let leafLevel = p.count - 1
        let i = p[leafLevel].index
        guard i < p[leafLevel].node.items.count else {
            throw SOPError(.internalError, "B-tree value update outside a leaf")
        }
        takeForChange(&p, leafLevel)
        p[leafLevel].node.items[i].value = value
        repository.update(p[leafLevel].node)
        version &+= 1
        setCursor(p[leafLevel].node.items[i], path: p)
    }

    /// Inserts `item` at the leaf position of `p` (from a descent for `.exact(key, id)`), splits
    /// overfull nodes up to the root, and puts the cursor on the item (keeping `p` pointing at
    /// it through the splits, so cursor moves need no new descent).
    @inlinable func insert(_ item: Item, into p: inout [Frame]) async throws {
        version &+= 1
        var level = p.count - 1
        takeForChange(&p, level)
        p[level].node.items.insert(item, at: p[level].index)
        while true {
            let node = p[level].node
            if size(node) <= capacity(node) {
                repository.update(node)
                break
            }
            let idx = p[level].index
            var left = node
            var rightItems: [Item] = [], rightSeps: [Separator<Key>] = [], rightChildren: [SOPID] = []
            let up: Separator<Key>
            let goesRight: Bool
            let newIndex: Int
            if node.isLeaf {
                let mid = node.items.count / 2
                left.items = Array(node.items[..<mid])
                rightItems = Array(node.items[mid...])
                up = Separator(key: rightItems[0].key, id: rightItems[0].id)
                goesRight = idx >= mid
                newIndex = goesRight ? idx - mid : idx
            } else {
                let mid = node.separators.count / 2
                up = node.separators[mid]
                left.separators = Array(node.separators[..<mid])
                left.children = Array(node.children[...mid])
                rightSeps = Array(node.separators[(mid + 1)...])
                rightChildren = Array(node.children[(mid + 1)...])
                goesRight = idx > mid
                newIndex = goesRight ? idx - mid - 1 : idx
            }
            let right = Node(id: repository.newNodeID(), items: rightItems, separators: rightSeps,
                             children: rightChildren)
            if level == 0 {
                // The root keeps its ID: both halves move to new nodes.
                let l = Node(id: repository.newNodeID(), items: left.items, separators: left.separators,
                             children: left.children)
                repository.add(l)
                repository.add(right)
                let root = Node(id: rootID, separators: [up], children: [l.id, right.id])
                repository.update(root)
                p[0] = Frame(node: goesRight ? right : l, index: newIndex)
                p.insert(Frame(node: root, index: goesRight ? 1 : 0), at: 0)
                break
            }
            repository.update(left)
            repository.add(right)
            p[level] = Frame(node: goesRight ? right : left, index: newIndex)
            level -= 1
            let ci = p[level].index
            repository.detach(p[level].node.id)
            p[level].node.separators.insert(up, at: ci)
            p[level].node.children.insert(right.id, at: ci + 1)
            if goesRight { p[level].index = ci + 1 }
        }
        setCursor(item, path: p)
    }

    /// Removes the item `p` points at, rebalances, and puts the cursor on its successor.
    @inlinable func removeItem(at p: consuming [Frame]) async throws {
        var p = p
        let leafLevel = p.count - 1
        let pos = p[leafLevel].index
        guard pos < p[leafLevel].node.items.count else {
            throw SOPError(.internalError, "B-tree removal outside a leaf")
        }
        // In place unless the leaf will need rebalancing (which may fail fetching a sibling,
        // and must leave the repository's node as it was).
        if leafLevel == 0 || p[leafLevel].node.items.count - 1 >= minSize { takeForChange(&p, leafLevel) }
        let removed = p[leafLevel].node.items.remove(at: pos)
        version &+= 1
        let leaf = p[leafLevel].node
        if leafLevel == 0 || leaf.items.count >= minSize {
            repository.update(leaf)
            if pos < leaf.items.count {
                setCursor(leaf.items[pos], path: p)
            } else {
                p[leafLevel].index = leaf.items.count
                if try await Self.moveToNextLeaf(&p, self) {
                    setCursor(p[p.count - 1].node.items[0], path: p)
                } else {
                    invalidateCursor()
                }
            }
            return
        }
        let successor: Item? = pos < leaf.items.count ? leaf.items[pos] : nil
        try await rebalance(p)
        if let successor {
            current = successor
            pathVersion = 0
        } else {
            _ = try await seekForward(.exact(removed.key, removed.id))
        }
    }

    @inlinable func size(_ n: Node) -> Int { n.isLeaf ? n.items.count : n.separators.count }
    /// Most items (leaf) or separators (internal node) `n` may hold.
    @inlinable func capacity(_ n: Node) -> Int { n.isLeaf ? slotLength : internalSlotLength }
    /// Fewest items or separators `n` may hold unless it is the root.
    @inlinable func minimum(_ n: Node) -> Int { n.isLeaf ? minSize : internalMinSize }

    /// Rebalances after a removal: `p`'s leaf (already edited, not yet written) is below the
    /// minimum. Borrows from or merges with a sibling, level by level, and collapses the root.
    @inlinable func rebalance(_ p: [Frame]) async throws {
        var level = p.count - 1
        var node = p[level].node
        while true {
            if level == 0 {
                if !node.isLeaf && node.children.count == 1 {
                    // Only child: its content moves into the root (which keeps its ID).
                    let child = try await fetchChecked(node.children[0])
                    repository.update(Node(id: rootID, items: child.items, separators: child.separators,
                                           children: child.children))
                    repository.remove(child.id)
                } else {
                    repository.update(node)
                }
                return
            }
            if size(node) >= minimum(node) {
                repository.update(node)
                return
            }
            var parent = p[level - 1].node
            let ci = p[level - 1].index
            if ci > 0 {
                var left = try await fetchChecked(parent.children[ci - 1])
                guard left.isLeaf == node.isLeaf else { throw corrupt("sibling of another level", left.id) }
                if size(left) > minimum(left) {
                    // Half the difference moves (at least one): moving a single entry would
                    // leave the node at its minimum, so that the next removal from it
                    // rewrites the sibling and the parent again.
                    let k = Swift.max(1, (size(left) - size(node)) / 2)
                    if node.isLeaf {
                        node.items.insert(contentsOf: left.items.suffix(k), at: 0)
                        left.items.removeLast(k)
                        parent.separators[ci - 1] = Separator(key: node.items[0].key, id: node.items[0].id)
                    } else {
                        // The parent's separator comes down (after the left's last k - 1, which
                        // move with their children); the left's k-th from last goes up.
                        let m = left.separators.count
                        node.separators.insert(contentsOf: left.separators[(m - k + 1)...] + [parent.separators[ci - 1]], at: 0)
                        node.children.insert(contentsOf: left.children.suffix(k), at: 0)
                        parent.separators[ci - 1] = left.separators[m - k]
                        left.separators.removeLast(k)
                        left.children.removeLast(k)
                    }
                    repository.update(left)
                    repository.update(node)
                    repository.update(parent)
                    return
                }
                if node.isLeaf {
                    left.items.append(contentsOf: node.items)
                } else {
                    left.separators.append(parent.separators[ci - 1])
                    left.separators.append(contentsOf: node.separators)
                    left.children.append(contentsOf: node.children)
                }
                parent.separators.remove(at: ci - 1)
                parent.children.remove(at: ci)
                repository.remove(node.id)
                if level - 1 == 0 && parent.children.count == 1 {
                    // Root collapse: the merged node's content becomes the root's.
                    repository.update(Node(id: rootID, items: left.items, separators: left.separators,
                                           children: left.children))
                    repository.remove(left.id)
                    return
                }
                repository.update(left)
            } else {
                guard parent.children.count > 1 else { throw corrupt("internal node with one child", parent.id) }
                let right = try await fetchChecked(parent.children[1])
                guard right.isLeaf == node.isLeaf else { throw corrupt("sibling of another level", right.id) }
                if size(right) > minimum(right) {
                    var right = right
                    let k = Swift.max(1, (size(right) - size(node)) / 2)
                    if node.isLeaf {
                        node.items.append(contentsOf: right.items.prefix(k))
                        right.items.removeFirst(k)
                        parent.separators[0] = Separator(key: right.items[0].key, id: right.items[0].id)
                    } else {
                        // The parent's separator comes down; the right's k-th goes up.
                        node.separators.append(parent.separators[0])
                        node.separators.append(contentsOf: right.separators.prefix(k - 1))
                        node.children.append(contentsOf: right.children.prefix(k))
                        parent.separators[0] = right.separators[k - 1]
                        right.separators.removeFirst(k)
                        right.children.removeFirst(k)
                    }
                    repository.update(right)
                    repository.update(node)
                    repository.update(parent)
                    return
                }
                if node.isLeaf {
                    node.items.append(contentsOf: right.items)
                } else {
                    node.separators.append(parent.separators[0])
                    node.separators.append(contentsOf: right.separators)
                    node.children.append(contentsOf: right.children)
                }
                parent.separators.remove(at: 0)
                parent.children.remove(at: 1)
                repository.remove(right.id)
                if level - 1 == 0 && parent.children.count == 1 {
                    repository.update(Node(id: rootID, items: node.items, separators: node.separators,
                                           children: node.children))
                    repository.remove(node.id)
                    return
                }
                repository.update(node)
            }
            node = parent
            level -= 1
        }
    }

    // MARK: - Checking

    struct CheckState {
        var count: Int64 = 0
        var leafDepth: Int?
        var seen: Set<SOPID> = []
        var lastItem: (key: Key, id: SOPID, leaf: SOPID)?
    }

    func fetchForCheck(_ id: SOPID, parent: SOPID?) async throws -> Node {
        do {
            return try await fetchChecked(id)
        } catch let e as SOPError where e.code != .notFound {
            throw e
        } catch {
            throw corrupt("missing child \(id.hex)", parent ?? id)
        }
    }

    /// (a.key, a.id) compared with (b.key, b.id).
    @inlinable func order(_ ak: Key, _ ai: SOPID, _ bk: Key, _ bi: SOPID) -> Int {
        let c = compare(ak, bk)
        if c != 0 { return c }
        return ai == bi ? 0 : (ai < bi ? -1 : 1)
    }

    func check(_ node: Node, depth: Int, lower: Separator<Key>?, upper: Separator<Key>?,
                       state: inout CheckState) async throws {
        let id = node.id
        guard state.seen.insert(id).inserted else { throw corrupt("node reached more than once", id) }
        if depth > Self.maxDepth { throw corrupt("tree deeper than \(Self.maxDepth) levels", id) }
        let isRoot = depth == 0
        if node.isLeaf {
            if let d = state.leafDepth {
                guard d == depth else { throw corrupt("leaf at depth \(depth), others at \(d)", id) }
            } else {
                state.leafDepth = depth
            }
            guard node.items.count <= slotLength else {
                throw corrupt("\(node.items.count) items exceed slot length \(slotLength)", id)
            }
            if !isRoot && node.items.count < minSize {
                throw corrupt("\(node.items.count) items below the minimum \(minSize)", id)
            }
            for (i, item) in node.items.enumerated() {
                if let last = state.lastItem {
                    let c = order(last.key, last.id, item.key, item.id)
                    guard c < 0 else {
                        throw corrupt(i == 0 ? "item out of order with node \(last.leaf.hex)" : "items out of order at \(i)", id)
                    }
                    if isUnique && compare(last.key, item.key) == 0 {
                        throw corrupt(i == 0 ? "duplicate key in unique store, also in node \(last.leaf.hex)"
                                             : "duplicate key in unique store at \(i)", id)
                    }
                }
                if let lower, order(item.key, item.id, lower.key, lower.id) < 0 {
                    throw corrupt("item \(i) below its separator bound", id)
                }
                if let upper, order(item.key, item.id, upper.key, upper.id) >= 0 {
                    throw corrupt("item \(i) not below its separator bound", id)
                }
                state.lastItem = (item.key, item.id, id)
            }
            state.count += Int64(node.items.count)
            return
        }
        let seps = node.separators
        guard seps.count <= internalSlotLength else {
            throw corrupt("\(seps.count) separators exceed the internal slot length \(internalSlotLength)", id)
        }
        if isRoot {
            guard node.children.count >= 2 else { throw corrupt("internal root with \(node.children.count) child", id) }
        } else if seps.count < internalMinSize {
            throw corrupt("\(seps.count) separators below the minimum \(internalMinSize)", id)
        }
        for i in seps.indices {
            if i > 0 && order(seps[i - 1].key, seps[i - 1].id, seps[i].key, seps[i].id) >= 0 {
                throw corrupt("separators out of order at \(i)", id)
            }
            if let lower, order(seps[i].key, seps[i].id, lower.key, lower.id) < 0 {
                throw corrupt("separator \(i) below its parent's bound", id)
            }
            if let upper, order(seps[i].key, seps[i].id, upper.key, upper.id) >= 0 {
                throw corrupt("separator \(i) not below its parent's bound", id)
            }
        }
        for (i, childID) in node.children.enumerated() {
            let child = try await fetchForCheck(childID, parent: id)
            try await check(child, depth: depth + 1,
                            lower: i == 0 ? lower : seps[i - 1],
                            upper: i < seps.count ? seps[i] : upper,
                            state: &state)
        }
    }
}
