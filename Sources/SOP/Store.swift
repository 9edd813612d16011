import SOPBTree
import SOPCore

/// One item of a store.
public struct Item<Key: Sendable, Value: Sendable>: Sendable {
    /// The key.
    public var key: Key
    /// The value.
    public var value: Value
    /// The item's ID (unique in the store; orders duplicates of one key by insertion).
    public var id: SOPID
}

/// A store (a named B-tree) as seen by one transaction: ordered keys of type `Key` mapped to
/// values of type `Value`, with a cursor.
///
/// Mutations return whether they changed anything. The cursor (``find(_:)``, ``first()``,
/// ``next()`` ...) is positioned on an item; ``currentKey``, ``currentValue()`` and
/// ``currentItem()`` read it. Iterate a range with ``range(from:to:descending:)``.
public final class Store<Key: Codable & Sendable, Value: Codable & Sendable>: @unchecked Sendable {
    // @unchecked: used by its transaction's task only, like the transaction itself.
    let transaction: Transaction
    let repository: TxNodeRepository
    let tree: BTree<TxNodeRepository>
    let ordering: KeyOrdering<Key>
    let valueCoder = JSONCoder<Value>()

    init(transaction: Transaction, repository: TxNodeRepository, ordering: KeyOrdering<Key>) {
        self.transaction = transaction
        self.repository = repository
        self.ordering = ordering
        self.tree = repository.makeTree(schema: ordering.schema)
    }

    /// The store's name.
    public var name: String { repository.info.name }
    /// The options the store was created with (``StoreOptions/indexSpecification`` included).
    public var options: StoreOptions {
        var o = repository.info.options
        o.indexSpecification = repository.info.indexSpecification
        return o
    }

    /// The store's index specification, when its keys are ordered by fields.
    public var indexSpecification: IndexSpecification? { repository.info.indexSpecification }

    /// Number of items, this transaction's changes included. Reading it makes the commit
    /// check that no other transaction changed the count meanwhile.
    public var count: Int64 {
        if !repository.isNew && repository.observedCountVersion == nil {
            repository.observedCountVersion = repository.info.countVersion
        }
        return repository.info.count + repository.countDelta
    }

    /// A key to store: validated, in the engine's form.
    private func box(_ k: Key) throws -> EKey { try ordering.toEngine(k, true) }

    /// A key to search for: validated, in the engine's form.
    func probe(_ k: Key) throws -> EKey { try ordering.toEngine(k, false) }

    private func boxValue(_ v: Value) async throws -> ValueBox {
        let b = try valueCoder.encode(v)
        // A blob (and a node) is at most one log record.
        guard b.count <= 1 << 30 else {
            throw SOPError(.invalidArgument, "a value of \(b.count) bytes exceeds the largest value, 1 GiB")
        }
        switch options.valuePlacement {
        case .inNode: return .inline(ValueBytes(b))
        case .separateBlob: return .pending(b)
        case .separateBlobWrittenAtOnce:
            return .blob(try await transaction.engine.storage.writeBlobs([b])[0])
        }
    }

    private func writable() throws { try transaction.checkUsable(writing: true) }
    private func readable() throws { try transaction.checkUsable(writing: false) }

    // MARK: Mutations

    /// Adds an item. In a unique store, returns `false` (and changes nothing) when the key exists.
    @discardableResult
    public func add(_ key: Key, _ value: Value) async throws -> Bool {
        try writable()
        let ok = try await tree.add(try box(key), try await boxValue(value), id: .timeOrdered())
        if ok { repository.countDelta += 1 }
        return ok
    }

    /// Adds an item only when no item has this key (in any store kind). Returns whether it added.
    @discardableResult
    public func addIfNotExists(_ key: Key, _ value: Value) async throws -> Bool {
        try writable()
        let ok = try await tree.addIfNotExists(try box(key), try await boxValue(value), id: .timeOrdered())
        if ok { repository.countDelta += 1 }
        return ok
    }

    /// Adds the item, or replaces the value of the first item with this key. Returns `true`
    /// when it added.
    @discardableResult
    public func upsert(_ key: Key, _ value: Value) async throws -> Bool {
        try writable()
        let added = try await tree.upsert(try box(key), try await boxValue(value), id: .timeOrdered())
        if added { repository.countDelta += 1 }
        return added
    }

    /// Replaces the value of the first item with this key. Returns `false` when there is none.
    @discardableResult
    public func update(_ key: Key, _ value: Value) async throws -> Bool {
        try writable()
        return try await tree.update(try probe(key), try await boxValue(value))
    }

    /// Replaces the value of the item under the cursor. Returns `false` when the cursor is on none.
    @discardableResult
    public func updateCurrentValue(_ value: Value) async throws -> Bool {
        try writable()
        return try await tree.updateCurrentValue(try await boxValue(value))
    }

    /// Replaces the key of the item under the cursor with `key`, which must be equal to it in
    /// the store's order: for a store with an ``IndexSpecification`` this changes the
    /// fields that are not indexed (metadata) in place. Returns `false` when the cursor is on
    /// no item; throws ``SOPError/Code/invalidArgument`` (changing nothing) when `key` would
    /// move the item.
    @discardableResult
    public func updateCurrentKey(_ key: Key) async throws -> Bool {
        try writable()
        return try await tree.updateCurrentKey(try box(key))
    }

    /// Removes the first item with this key. Returns `false` when there is none.
    @discardableResult
    public func remove(_ key: Key) async throws -> Bool {
        try writable()
        let ok = try await tree.remove(try probe(key))
        if ok { repository.countDelta -= 1 }
        return ok
    }

    /// Removes the item with this key and ID.
    @discardableResult
    public func remove(_ key: Key, id: SOPID) async throws -> Bool {
        try writable()
        let ok = try await tree.remove(try probe(key), id: id)
        if ok { repository.countDelta -= 1 }
        return ok
    }

    /// Removes the item under the cursor; the cursor moves to its successor.
    @discardableResult
    public func removeCurrent() async throws -> Bool {
        try writable()
        let ok = try await tree.removeCurrent()
        if ok { repository.countDelta -= 1 }
        return ok
    }

    // MARK: Cursor

    /// Positions the cursor on the first item with `key` and returns `true`; otherwise on the
    /// first item after it (if any) and returns `false`.
    @discardableResult
    public func find(_ key: Key) async throws -> Bool {
        try readable()
        return try await tree.find(try probe(key))
    }

    /// Positions the cursor on the item with this key and ID.
    @discardableResult
    public func find(_ key: Key, id: SOPID) async throws -> Bool {
        try readable()
        return try await tree.find(try probe(key), id: id)
    }

    /// Positions the cursor on the last item with `key` (`true`), else on the last item
    /// before it (`false`).
    @discardableResult
    public func findLast(_ key: Key) async throws -> Bool {
        try readable()
        return try await tree.findLast(try probe(key))
    }

    /// Positions the cursor on the smallest item; `false` when the store is empty.
    @discardableResult
    public func first() async throws -> Bool {
        try readable()
        return try await tree.first()
    }

    /// Positions the cursor on the largest item; `false` when the store is empty.
    @discardableResult
    public func last() async throws -> Bool {
        try readable()
        return try await tree.last()
    }

    /// Moves the cursor to the next item; `false` past the end.
    @discardableResult
    public func next() async throws -> Bool {
        try readable()
        return try await tree.next()
    }

    /// Moves the cursor to the previous item; `false` before the start.
    @discardableResult
    public func previous() async throws -> Bool {
        try readable()
        return try await tree.previous()
    }

    /// The key under the cursor.
    public var currentKey: Key? { tree.currentKey.map(ordering.fromEngine) }

    /// The ID of the item under the cursor.
    public var currentID: SOPID? { tree.currentItem?.id }

    /// The value under the cursor (fetched from its own blob when stored separately).
    public func currentValue() async throws -> Value? {
        try readable()
        guard let v = tree.currentValue else { return nil }
        return try await decodeValue(v)
    }

    /// The item under the cursor.
    public func currentItem() async throws -> Item<Key, Value>? {
        try readable()
        guard let it = tree.currentItem else { return nil }
        return Item(key: ordering.fromEngine(it.key), value: try await decodeValue(it.value), id: it.id)
    }

    /// The value of the first item with `key`, or `nil`. The cursor does not move (use
    /// ``find(_:)`` and ``currentValue()`` to position it).
    public func get(_ key: Key) async throws -> Value? {
        try readable()
        guard let v = try await tree.firstValue(forKey: try probe(key)) else { return nil }
        if case .inline(let b) = v { return try valueCoder.decode(b) }
        return try await decodeValue(v)
    }

    func decodeValue(_ v: ValueBox) async throws -> Value {
        switch v {
        case .inline(let b):
            return try valueCoder.decode(b)
        case .pending(let b):
            return try valueCoder.decode(b)
        case .blob(let id):
            let cached = options.valuePlacement != .separateBlobWrittenAtOnce
            let b = try await transaction.engine.readValueBlob(id, cached: cached)
            return try valueCoder.decode(b)
        }
    }

    /// The items with `from <= key <= to` (either bound optional), in key order or reversed.
    /// Iteration uses its own cursor; the store's cursor is not moved.
    public func range(from: Key? = nil, to: Key? = nil, descending: Bool = false) -> ItemSequence<Key, Value> {
        ItemSequence(store: self, from: from, to: to, descending: descending)
    }

    /// Walks the items with `from <= key <= to` (either bound optional), in key order or
    /// reversed, handing `body` each item's key and value as **JSON text borrowed from the
    /// node** that holds them: nothing is decoded, copied or allocated per item (a `String`
    /// or `Int` key's text is written into one buffer reused for every item; a value kept in a
    /// blob of its own is read first). The buffers are valid only during the call — copy what you keep.
    /// `body` returns `false` to stop the walk. Returns how many items `body` was handed.
    ///
    /// What ``range(from:to:descending:)`` does with a `Codable` decode per item, this does
    /// as LMDB's cursor or SQLite's `sqlite3_column_blob` does: for exports, checksums,
    /// streaming JSON out, or filters over the text. Reads are recorded like any other (the
    /// transaction's commit re-checks them).
    ///
    /// ```swift
    /// var bytes = 0
    /// try await store.forEachJSON { key, value in
    ///     bytes += key.count + value.count
    ///     return true
    /// }
    /// ```
    @discardableResult
    public func forEachJSON(from: Key? = nil, to: Key? = nil, descending: Bool = false,
                            isolation: isolated (any Actor)? = #isolation,
                            _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool)
        async throws -> Int {
        var walker = RangeWalker(store: self, from: from, to: to, descending: descending)
        var keys = KeyText(schema: ordering.schema)
        defer { keys.deallocate() }
        let layout = JSONWalk.Layout()
        let cached = options.valuePlacement != .separateBlobWrittenAtOnce
        var count = 0
        while let first = try await walker.next() {
            // The leaf's first item in range, then the rest of it, then the leaves at hand.
            var blob: [UInt8]?
            if case .blob(let id) = first.value { blob = try await transaction.engine.readValueBlob(id, cached: cached) }
            guard try withUnsafePointer(to: first, { try JSONWalk.emit($0, blob: blob, &keys, layout, transaction, body) }) == true
            else { return count + 1 }
            count += 1
            var run = walker.takeRest()
            while true {
                var i = run.index
                while i != run.end {
                    // In place, up to the end of the leaf or an item whose value is in a blob.
                    let (at, stop) = try run.items.withUnsafeBufferPointer {
                        try JSONWalk.emitRun($0, from: i, to: run.end, step: run.step, &keys, layout, &count, transaction, body)
                    }
                    if stop { return count }
                    i = at
                    if i != run.end {
                        let item = run.items[i]
                        guard case .blob(let id) = item.value else { throw SOPError(.internalError, "a blob item without a blob") }
                        let b = try await transaction.engine.readValueBlob(id, cached: cached)
                        let more = try withUnsafePointer(to: item) { try JSONWalk.emit($0, blob: b, &keys, layout, transaction, body) }
                        count += 1
                        guard more == true else { return count }
                        i += run.step
                    }
                }
                guard let next = try walker.nextLeafIfCached() else { break }
                run = next
            }
        }
        return count
    }

    /// The keys (with their item IDs) with `from <= key <= to`, in key order or reversed,
    /// without reading or decoding any value: with ``ValuePlacement/separateBlob`` no value
    /// blob is read, so a scan over keys (filtering on the metadata they carry) costs only the
    /// nodes. Iteration uses its own cursor; the store's cursor is not moved.
    public func keys(from: Key? = nil, to: Key? = nil, descending: Bool = false) -> KeySequence<Key, Value> {
        KeySequence(store: self, from: from, to: to, descending: descending)
    }

    /// One page of items for tools: starting at the first item `>= key` (descending: the
    /// last item `<= key`; `nil`: the first or last item), skips `offset` items and returns
    /// at most `size`, in the direction asked. The store's cursor is not moved.
    /// - Throws: ``SOPError/Code/invalidArgument`` for a negative offset or a size outside 0...100,000.
    public func page(from key: Key?, offset: Int, size: Int, descending: Bool = false) async throws -> [Item<Key, Value>] {
        guard offset >= 0 else { throw SOPError(.invalidArgument, "page offset must not be negative") }
        guard (0...100_000).contains(size) else { throw SOPError(.invalidArgument, "page size must be 0...100000") }
        var walker = RangeWalker(store: self, from: descending ? nil : key, to: descending ? key : nil,
                                 descending: descending)
        var skipped = 0
        var out: [Item<Key, Value>] = []
        out.reserveCapacity(size)
        while out.count < size, let it = try await walker.next() {
            if skipped < offset { skipped += 1; continue }
            out.append(Item(key: ordering.fromEngine(it.key), value: try await decodeValue(it.value), id: it.id))
        }
        return out
    }

    /// Verifies the B-tree's invariants (order, bounds, fill, reachability, count) as this
    /// transaction sees it. Throws ``SOPError/Code/corrupt`` naming the first violation.
    public func checkInvariants() async throws {
        try readable()
        try await tree.checkInvariants(expectedCount: repository.info.count + repository.countDelta)
    }
}

/// The JSON text of keys, written into one buffer reused for every item (see
/// ``Store/forEachJSON(from:to:descending:isolation:_:)``); a custom key's text is its own.
struct KeyText {
    let schema: KeySchema
    private var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)

    init(schema: KeySchema) {
        self.schema = schema
    }

    func deallocate() { buffer.deallocate() }

    private mutating func reserve(_ n: Int) {
        if n <= buffer.count { return }
        buffer.deallocate()
        buffer = .allocate(byteCount: max(n, 2 * buffer.count), alignment: 8)
    }

    /// Calls `body` with the JSON text of the key at `k`.
    @inline(__always)
    mutating func withText<R>(_ k: UnsafePointer<EKey>, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        switch schema.form {
        case .custom:
            return try k.pointee.bytes.withUnsafeBytes(body)
        case .int:
            // At most 20 characters (a sign and 19 digits), written backwards from byte 24.
            var m = k.pointee.int.magnitude
            var at = 24
            repeat {
                at -= 1
                buffer[at] = 0x30 + UInt8(m % 10)
                m /= 10
            } while m > 0
            if k.pointee.int < 0 { at -= 1; buffer[at] = 0x2D }
            return try body(UnsafeRawBufferPointer(rebasing: buffer[at..<24]))
        case .string:
            let n = k.pointee.withUTF8 { u -> Int in
                // Nothing to escape (the common case): the UTF-8 between quotes.
                var plain = true
                for c in u where c < 0x20 || c == 0x22 || c == 0x5C { plain = false; break }
                if plain {
                    reserve(u.count + 2)
                    buffer[0] = 0x22
                    if let from = u.baseAddress { (buffer.baseAddress! + 1).copyMemory(from: from, byteCount: u.count) }
                    buffer[u.count + 1] = 0x22
                    return u.count + 2
                }
                var text: [UInt8] = []
                JSONBytes.appendString(utf8: u, to: &text)
                reserve(text.count)
                text.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                return text.count
            }
            return try body(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
    }
}

/// The per-item steps of ``Store/forEachJSON(from:to:descending:isolation:_:)``: items read
/// in place in their leaf's array (no copy, so no retain per item).
enum JSONWalk {
    /// Where an item holds its key and its value (read once per walk: a global's lazy
    /// initialization check per item showed in profiles).
    struct Layout {
        let key = MemoryLayout<BTreeItem<EKey, ValueBox>>.offset(of: \BTreeItem<EKey, ValueBox>.key)!
        let value = MemoryLayout<BTreeItem<EKey, ValueBox>>.offset(of: \BTreeItem<EKey, ValueBox>.value)!
    }

    /// Hands `item` to `body` (`blob`: its value's text when the value is in a blob); `nil`
    /// when the value is in a blob not given, else what `body` returned.
    @inline(__always)
    static func emit(_ item: UnsafePointer<BTreeItem<EKey, ValueBox>>, blob: [UInt8]?, _ keys: inout KeyText,
                     _ layout: Layout,
                     _ transaction: Transaction,
                     _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool) throws -> Bool? {
        try transaction.checkActive()
        let raw = UnsafeRawPointer(item)
        let key = (raw + layout.key).assumingMemoryBound(to: EKey.self)
        let value = (raw + layout.value).assumingMemoryBound(to: ValueBox.self)
        return try keys.withText(key) { k -> Bool? in
            if let v = value.pointee.inlineBytesInPlace() { return try body(k, UnsafeRawBufferPointer(v)) }
            if case .pending(let b) = value.pointee { return try b.withUnsafeBytes { try body(k, $0) } }
            return try blob.map { b in try b.withUnsafeBytes { try body(k, $0) } }
        }
    }

    /// Hands `items[i]`, `items[i + step]` ... (up to, not including, `end`) to `body`; stops
    /// at an item whose value is in a blob. Returns where it stopped and whether `body` asked
    /// to stop; `count` counts the items handed out.
    static func emitRun(_ items: UnsafeBufferPointer<BTreeItem<EKey, ValueBox>>, from i: Int, to end: Int, step: Int,
                        _ keys: inout KeyText, _ layout: Layout, _ count: inout Int, _ transaction: Transaction,
                        _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool) throws -> (Int, Bool) {
        var j = i
        while j != end {
            guard let more = try emit(items.baseAddress! + j, blob: nil, &keys, layout, transaction, body) else { return (j, false) }
            count += 1
            if !more { return (j, true) }
            j += step
        }
        return (j, false)
    }
}

/// Walks `from...to` (either bound optional) with its own cursor, yielding the raw items.
///
/// It works a leaf at a time: the leaf's item array (shared, not copied) is the buffer, and
/// the tree is asked only to cross to the next leaf, so most items cost no call into the
/// tree. The transaction's state is checked for every item, its deadline once per leaf.
@usableFromInline
struct RangeWalker<Key: Codable & Sendable, Value: Codable & Sendable> {
    let store: Store<Key, Value>
    let from: Key?
    let to: Key?
    let descending: Bool
    let tree: BTree<TxNodeRepository>
    let compare: @Sendable (EKey, EKey) -> Int
    var lower: EKey?
    var upper: EKey?
    var started = false
    var done = false
    /// The current leaf's items and the index of the next one to yield (descending: the
    /// index of the next one, walking down; -1 when the leaf is used up).
    var buffer: [BTreeItem<EKey, ValueBox>] = []
    var index = 0

    init(store: Store<Key, Value>, from: Key?, to: Key?, descending: Bool) {
        self.store = store
        self.from = from
        self.to = to
        self.descending = descending
        self.tree = store.repository.makeTree(schema: store.ordering.schema)
        self.compare = store.ordering.schema.compare
    }

    /// Loads the cursor's leaf into the buffer; `false` when the cursor is invalid.
    private mutating func loadLeaf() async throws -> Bool {
        guard let leaf = try await tree.cursorLeaf() else { return false }
        buffer = leaf.items
        index = leaf.index
        prefetchAhead()
        return true
    }

    /// Asks the cache to bring the leaves ahead of the one just entered closer (a stage of
    /// each; see `NodeCache.prefetch`): a scan otherwise waits on each leaf's dependent chain
    /// of misses — slot, item array, value buffer — when it crosses into it.
    private func prefetchAhead() {
        let d = descending ? -1 : 1
        store.repository.prefetch(tree.siblingLeafID(ahead: d), tree.siblingLeafID(ahead: 2 * d),
                                  tree.siblingLeafID(ahead: 3 * d))
    }

    /// The next item when it is in the current leaf (no call into the tree, no suspension);
    /// `nil` when the leaf is used up or the walk has not started or is done.
    @inline(__always)
    mutating func nextInLeaf() throws -> BTreeItem<EKey, ValueBox>?? {
        guard started, !done, index >= 0, index < buffer.count else { return nil }
        try store.transaction.checkActive()
        let it = buffer[index]
        index += descending ? -1 : 1
        if descending, let lower, compare(it.key, lower) < 0 { done = true; return .some(nil) }
        if !descending, let upper, compare(it.key, upper) > 0 { done = true; return .some(nil) }
        return .some(it)
    }

    /// The rest of the current leaf's items that lie in the range, as the leaf's items and
    /// the indices to walk (`index`, `index + step` ... up to, not including, `end`). The
    /// walk moves past them, and is done when the range ends inside the leaf.
    mutating func takeRest() -> (items: [BTreeItem<EKey, ValueBox>], index: Int, end: Int, step: Int) {
        guard started, !done, index >= 0, index < buffer.count else { return ([], 0, 0, 1) }
        let start = index
        var i = index
        if descending {
            if let lower {
                while i >= 0, compare(buffer[i].key, lower) >= 0 { i -= 1 }
                if i >= 0 { done = true }
            } else {
                i = -1
            }
        } else {
            if let upper {
                while i < buffer.count, compare(buffer[i].key, upper) <= 0 { i += 1 }
                if i < buffer.count { done = true }
            } else {
                i = buffer.count
            }
        }
        index = i
        return (buffer, start, i, descending ? -1 : 1)
    }

    /// Ascending walks: when the current leaf is used up and the next one is a sibling at
    /// hand, crosses to it without a suspension and returns the range's items in it as
    /// ``takeRest()`` does; `nil` when that does not apply (nothing moved).
    mutating func nextLeafIfCached() throws -> (items: [BTreeItem<EKey, ValueBox>], index: Int, end: Int, step: Int)? {
        guard started, !done, !descending, index >= buffer.count else { return nil }
        try store.transaction.checkUsable(writing: false)
        guard try crossToSiblingIfCached() else { return nil }
        return takeRest()
    }

    /// Ascending: makes the next leaf the current one when it is a sibling at hand (see
    /// `BTree.moveToNextSiblingLeafIfCached()`); `false` when it is not (nothing moved).
    private mutating func crossToSiblingIfCached() throws -> Bool {
        guard !descending, let items = try tree.moveToNextSiblingLeafIfCached() else { return false }
        buffer = items
        index = 0
        prefetchAhead()
        return true
    }

    mutating func next() async throws -> BTreeItem<EKey, ValueBox>? {
        if let fast = try nextInLeaf() { return fast }
        guard !done else { return nil }
        try store.transaction.checkActive()
        if !started {
            started = true
            try store.transaction.checkUsable(writing: false)
            lower = try from.map { try store.probe($0) }
            upper = try to.map { try store.probe($0) }
            let moved: Bool
            if descending {
                if let upper { moved = try await tree.findLast(upper) || tree.currentItem != nil }
                else { moved = try await tree.last() }
            } else {
                if let lower { moved = try await tree.find(lower) || tree.currentItem != nil }
                else { moved = try await tree.first() }
            }
            guard moved, try await loadLeaf() else { done = true; return nil }
        } else {
            // The leaf is used up: cross to the neighbour (the deadline is checked here);
            // ascending, to a sibling at hand without a suspension when possible.
            try store.transaction.checkUsable(writing: false)
            if try !crossToSiblingIfCached() {
                guard try await tree.moveWithinLeaf(toEnd: !descending),
                      try await (descending ? tree.previous() : tree.next()),
                      try await loadLeaf() else { done = true; return nil }
            }
        }
        // The leaf just loaded has the next item (or the range ends in it).
        guard let item = try nextInLeaf() else { done = true; return nil }
        return item
    }
}

/// An ordered range of a store's items, iterated with `for try await`.
public struct ItemSequence<Key: Codable & Sendable, Value: Codable & Sendable>: AsyncSequence {
    /// Yields items.
    public typealias Element = Item<Key, Value>
    let store: Store<Key, Value>
    let from: Key?
    let to: Key?
    let descending: Bool

    /// The iterator.
    public func makeAsyncIterator() -> Iterator {
        Iterator(walker: RangeWalker(store: store, from: from, to: to, descending: descending))
    }

    /// Walks the range with its own cursor, a leaf at a time. ``next()`` is inlinable
    /// (specialized in the caller's module): within a leaf it makes no call into the engine
    /// and no suspension. For `String` keys and values in natural order it makes each item's
    /// two strings straight from the leaf as it hands the item out (no generic code, no
    /// intermediate copy); other stores have a leaf's items decoded together into a batch.
    public struct Iterator: AsyncIteratorProtocol {
        @usableFromInline var walker: RangeWalker<Key, Value>
        /// `String` stores: the current leaf's items; those still to hand out are at
        /// `position`, `position + step` ... up to (not including) `end` (`step` is −1
        /// walking down).
        @usableFromInline var leaf: [BTreeItem<EKey, ValueBox>] = []
        @usableFromInline var position = 0
        @usableFromInline var end = 0
        @usableFromInline var step = 1
        /// Other stores: the current leaf's decoded items, and the index of the next one.
        @usableFromInline var batch: [Item<Key, Value>] = []
        @usableFromInline var batchPosition = 0
        /// A failure to decode an item of the batch's leaf, thrown when that item is reached.
        @usableFromInline var pending: (any Error)?
        /// Keys and values are `String`s and keys are in their natural order.
        @usableFromInline let plainStrings: Bool
        @usableFromInline let transaction: Transaction

        init(walker: RangeWalker<Key, Value>) {
            self.walker = walker
            self.transaction = walker.store.transaction
            self.plainStrings = Key.self == String.self && Value.self == String.self
                && walker.store.ordering.schema.form == .string
        }

        /// The next item, or `nil` at the end of the range.
        @inlinable
        public mutating func next() async throws -> Item<Key, Value>? {
            if Key.self == String.self, Value.self == String.self, plainStrings {
                if try position != end || (crossLeafIfCached() && position != end) {
                    try transaction.checkActive()
                    if let it = StringItems.item(leaf, position) {
                        position &+= step
                        return unsafeBitCast(it, to: Item<Key, Value>.self)
                    }
                }
            } else if batchPosition < batch.count {
                try transaction.checkActive()
                batchPosition += 1
                return batch[batchPosition - 1]
            }
            return try await nextSlow()
        }

        /// `String` stores: moves to the next leaf without a suspension when it is at hand
        /// (see ``RangeWalker/nextLeafIfCached()``); `false` when it is not (nothing moved).
        @usableFromInline
        mutating func crossLeafIfCached() throws -> Bool {
            do {
                guard let rest = try walker.nextLeafIfCached() else { return false }
                (leaf, position, end, step) = rest
                return true
            } catch {
                position = end
                walker.done = true
                throw error
            }
        }

        /// The next item the general way (an item of a `String` store that is not a plain
        /// string in the node, decoded through the store's coders), or the first of the next
        /// leaf.
        @usableFromInline
        mutating func nextSlow() async throws -> Item<Key, Value>? {
            if let e = pending {
                pending = nil
                walker.done = true
                throw e
            }
            do {
                if position != end {
                    try transaction.checkActive()
                    let it = leaf[position]
                    position += step
                    return try await item(it, walker.store)
                }
                batch.removeAll(keepingCapacity: true)
                batchPosition = 0
                guard let first = try await walker.next() else {
                    leaf = []
                    position = 0
                    end = 0
                    return nil
                }
                let rest = walker.takeRest()
                if plainStrings {
                    (leaf, position, end, step) = rest
                    if let it = StringItems.item(leaf, position - step) {
                        return unsafeBitCast(it, to: Item<Key, Value>.self)
                    }
                    return try await item(first, walker.store)
                }
                batch.reserveCapacity(1 + abs(rest.end - rest.index))
                batch.append(try await item(first, walker.store))
                var i = rest.index
                do {
                    while i != rest.end {
                        batch.append(try await item(rest.items[i], walker.store))
                        i += rest.step
                    }
                } catch {
                    pending = error
                }
                batchPosition = 1
                return batch[0]
            } catch {
                // A failed walk or decode ends the iteration.
                position = end
                batch.removeAll()
                walker.done = true
                throw error
            }
        }

        private func item(_ it: BTreeItem<EKey, ValueBox>, _ store: Store<Key, Value>) async throws -> Item<Key, Value> {
            if case .inline(let b) = it.value {
                return Item(key: store.ordering.fromEngine(it.key), value: try store.valueCoder.decode(b), id: it.id)
            }
            return Item(key: store.ordering.fromEngine(it.key), value: try await store.decodeValue(it.value), id: it.id)
        }
    }
}

/// A key of a store and its item's ID (what a keys-only scan yields).
public struct KeyEntry<Key: Sendable>: Sendable {
    /// The key.
    public var key: Key
    /// The item's ID.
    public var id: SOPID
}

/// An ordered range of a store's keys, iterated with `for try await`; values are never read.
public struct KeySequence<Key: Codable & Sendable, Value: Codable & Sendable>: AsyncSequence {
    /// Yields keys and item IDs.
    public typealias Element = KeyEntry<Key>
    let store: Store<Key, Value>
    let from: Key?
    let to: Key?
    let descending: Bool

    /// The iterator.
    public func makeAsyncIterator() -> Iterator {
        Iterator(walker: RangeWalker(store: store, from: from, to: to, descending: descending))
    }

    /// Walks the range with its own cursor, a leaf at a time: a leaf's keys are decoded
    /// together (no value is read), and ``next()`` (inlinable) hands them out without a call
    /// into the engine or a suspension.
    public struct Iterator: AsyncIteratorProtocol {
        @usableFromInline var walker: RangeWalker<Key, Value>
        /// The keys of the current leaf, and the index of the next one to hand out.
        @usableFromInline var batch: [KeyEntry<Key>] = []
        @usableFromInline var position = 0
        @usableFromInline let transaction: Transaction

        init(walker: RangeWalker<Key, Value>) {
            self.walker = walker
            self.transaction = walker.store.transaction
        }

        /// The next key, or `nil` at the end of the range.
        @inlinable
        public mutating func next() async throws -> KeyEntry<Key>? {
            if position < batch.count {
                try transaction.checkActive()
                position += 1
                return batch[position - 1]
            }
            return try await nextLeaf()
        }

        /// Decodes the next leaf's keys into the batch and returns the first.
        @usableFromInline
        mutating func nextLeaf() async throws -> KeyEntry<Key>? {
            batch.removeAll(keepingCapacity: true)
            position = 0
            guard let first = try await walker.next() else { return nil }
            let ordering = walker.store.ordering
            batch.append(KeyEntry(key: ordering.fromEngine(first.key), id: first.id))
            // The rest of the leaf (the transaction's state is checked as each is handed out).
            while let more = try? walker.nextInLeaf(), let it = more {
                batch.append(KeyEntry(key: ordering.fromEngine(it.key), id: it.id))
            }
            position = 1
            return batch[0]
        }
    }
}

/// The decoding of items for stores of `String` keys and values in natural order (see
/// ``ItemSequence/Iterator``): non-generic, called from the iterator's inlined `next()`.
@usableFromInline
enum StringItems {
    /// `items[i]` as strings, or `nil` when its value is not in the node or is not a plain
    /// JSON string (escapes): then the caller decodes it the general way.
    @usableFromInline
    static func item(_ items: [BTreeItem<EKey, ValueBox>], _ i: Int) -> Item<String, String>? {
        items.withUnsafeBufferPointer { b -> Item<String, String>? in
            // `items` (alive for this closure) holds the value's buffer.
            guard let json = b[i].value.inlineBytesInPlace(), let value = JSONCoder<String>.plainString(json) else {
                return nil
            }
            return Item(key: b[i].key.withUTF8 { String(decoding: $0, as: UTF8.self) }, value: value, id: b[i].id)
        }
    }
}
