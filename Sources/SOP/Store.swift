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
    let repository: TxNodeRepository<Key, Value>
    let tree: BTree<TxNodeRepository<Key, Value>>
    let compare: @Sendable (Key, Key) -> Int

    init(transaction: Transaction, repository: TxNodeRepository<Key, Value>, compare: @escaping @Sendable (Key, Key) -> Int) {
        self.transaction = transaction
        self.repository = repository
        self.compare = compare
        self.tree = Store.makeTree(repository, compare: compare)
    }

    static func makeTree(_ repository: TxNodeRepository<Key, Value>,
                         compare: @escaping @Sendable (Key, Key) -> Int) -> BTree<TxNodeRepository<Key, Value>> {
        BTree(rootID: repository.info.rootID, slotLength: repository.info.options.slotLength,
              isUnique: repository.info.options.isUnique,
              compare: { a, b in compare(a.key, b.key) }, repository: repository)
    }

    /// The store's name.
    public var name: String { repository.info.name }
    /// The options the store was created with.
    public var options: StoreOptions { repository.info.options }

    /// Number of items, this transaction's changes included. Reading it makes the commit
    /// check that no other transaction changed the count meanwhile.
    public var count: Int64 {
        if !repository.isNew && repository.observedCountVersion == nil {
            repository.observedCountVersion = repository.info.countVersion
        }
        return repository.info.count + repository.countDelta
    }

    private func box(_ k: Key) throws -> KeyBox<Key> {
        let c = repository.keyCoder
        return KeyBox(key: k, bytes: c.cachesBytes ? try c.encode(k) : [])
    }

    private func probe(_ k: Key) -> KeyBox<Key> { KeyBox(key: k, bytes: []) }

    private func boxValue(_ v: Value) throws -> ValueBox {
        let b = try repository.valueCoder.encode(v)
        return options.valuePlacement == .inNode ? .inline(b) : .pending(b)
    }

    private func writable() throws { try transaction.checkUsable(writing: true) }
    private func readable() throws { try transaction.checkUsable(writing: false) }

    // MARK: Mutations

    /// Adds an item. In a unique store, returns `false` (and changes nothing) when the key exists.
    @discardableResult
    public func add(_ key: Key, _ value: Value) async throws -> Bool {
        try writable()
        let ok = try await tree.add(try box(key), try boxValue(value), id: .timeOrdered())
        if ok { repository.countDelta += 1 }
        return ok
    }

    /// Adds an item only when no item has this key (in any store kind). Returns whether it added.
    @discardableResult
    public func addIfNotExists(_ key: Key, _ value: Value) async throws -> Bool {
        try writable()
        let ok = try await tree.addIfNotExists(try box(key), try boxValue(value), id: .timeOrdered())
        if ok { repository.countDelta += 1 }
        return ok
    }

    /// Adds the item, or replaces the value of the first item with this key. Returns `true`
    /// when it added.
    @discardableResult
    public func upsert(_ key: Key, _ value: Value) async throws -> Bool {
        try writable()
        let added = try await tree.upsert(try box(key), try boxValue(value), id: .timeOrdered())
        if added { repository.countDelta += 1 }
        return added
    }

    /// Replaces the value of the first item with this key. Returns `false` when there is none.
    @discardableResult
    public func update(_ key: Key, _ value: Value) async throws -> Bool {
        try writable()
        return try await tree.update(probe(key), try boxValue(value))
    }

    /// Replaces the value of the item under the cursor. Returns `false` when the cursor is on none.
    @discardableResult
    public func updateCurrentValue(_ value: Value) async throws -> Bool {
        try writable()
        return try await tree.updateCurrentValue(try boxValue(value))
    }

    /// Removes the first item with this key. Returns `false` when there is none.
    @discardableResult
    public func remove(_ key: Key) async throws -> Bool {
        try writable()
        let ok = try await tree.remove(probe(key))
        if ok { repository.countDelta -= 1 }
        return ok
    }

    /// Removes the item with this key and ID.
    @discardableResult
    public func remove(_ key: Key, id: SOPID) async throws -> Bool {
        try writable()
        let ok = try await tree.remove(probe(key), id: id)
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
        return try await tree.find(probe(key))
    }

    /// Positions the cursor on the item with this key and ID.
    @discardableResult
    public func find(_ key: Key, id: SOPID) async throws -> Bool {
        try readable()
        return try await tree.find(probe(key), id: id)
    }

    /// Positions the cursor on the last item with `key` (`true`), else on the last item
    /// before it (`false`).
    @discardableResult
    public func findLast(_ key: Key) async throws -> Bool {
        try readable()
        return try await tree.findLast(probe(key))
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
    public var currentKey: Key? { tree.currentKey?.key }

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
        return Item(key: it.key.key, value: try await decodeValue(it.value), id: it.id)
    }

    /// The value of the first item with `key`, or `nil`.
    public func get(_ key: Key) async throws -> Value? {
        guard try await find(key) else { return nil }
        return try await currentValue()
    }

    func decodeValue(_ v: ValueBox) async throws -> Value {
        switch v {
        case .inline(let b), .pending(let b):
            return try repository.valueCoder.decode(b)
        case .blob(let id):
            let b = try await transaction.engine.readBlob(id)
            return try repository.valueCoder.decode(b)
        }
    }

    /// The items with `from <= key <= to` (either bound optional), in key order or reversed.
    /// Iteration uses its own cursor; the store's cursor is not moved.
    public func range(from: Key? = nil, to: Key? = nil, descending: Bool = false) -> ItemSequence<Key, Value> {
        ItemSequence(store: self, from: from, to: to, descending: descending, keysOnly: false)
    }

    /// Verifies the B-tree's invariants (order, bounds, fill, reachability, count) as this
    /// transaction sees it. Throws ``SOPError/Code/corrupt`` naming the first violation.
    public func checkInvariants() async throws {
        try readable()
        try await tree.checkInvariants(expectedCount: repository.info.count + repository.countDelta)
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
    let keysOnly: Bool

    /// The iterator.
    public func makeAsyncIterator() -> Iterator {
        Iterator(seq: self, tree: Store.makeTree(store.repository, compare: store.compare))
    }

    /// Walks the range with its own cursor.
    public struct Iterator: AsyncIteratorProtocol {
        let seq: ItemSequence
        let tree: BTree<TxNodeRepository<Key, Value>>
        var started = false
        var done = false

        init(seq: ItemSequence, tree: BTree<TxNodeRepository<Key, Value>>) {
            self.seq = seq
            self.tree = tree
        }

        /// The next item, or `nil` at the end of the range.
        public mutating func next() async throws -> Item<Key, Value>? {
            guard !done else { return nil }
            try seq.store.transaction.checkUsable(writing: false)
            let cmp = seq.store.compare
            let moved: Bool
            if !started {
                started = true
                if seq.descending {
                    if let to = seq.to { moved = try await tree.findLast(KeyBox(key: to, bytes: [])) || tree.currentItem != nil }
                    else { moved = try await tree.last() }
                } else {
                    if let from = seq.from { moved = try await tree.find(KeyBox(key: from, bytes: [])) || tree.currentItem != nil }
                    else { moved = try await tree.first() }
                }
            } else {
                moved = seq.descending ? try await tree.previous() : try await tree.next()
            }
            guard moved, let it = tree.currentItem else { done = true; return nil }
            if seq.descending, let from = seq.from, cmp(it.key.key, from) < 0 { done = true; return nil }
            if !seq.descending, let to = seq.to, cmp(it.key.key, to) > 0 { done = true; return nil }
            return Item(key: it.key.key, value: try await seq.store.decodeValue(it.value), id: it.id)
        }
    }
}
