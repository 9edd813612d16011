import SOPBTree
import SOPCore

/// A node of a transaction's working set: the node as the transaction sees it (`nil` once
/// removed, or while the tree changes it in place), and, when it came from the committed
/// state, the registry version it was read at (re-checked at commit). One dictionary entry
/// for both: a node read costs one insertion, not two.
struct WorkNode {
    var node: EngineNode?
    var version: UInt32?
}

/// One store's working set inside one transaction: the B-tree's node repository.
///
/// Nodes fetched from the committed state are remembered with their registry version
/// (re-checked at commit) and kept for the rest of the transaction, so re-reading gives the
/// same answer. Changed, added and removed nodes stay here until the commit writes them.
///
/// Not generic: the application's key and value types stay at the API (``Store``); here keys
/// are ``EKey``s ordered and decoded by the store's ``KeySchema``.
final class TxNodeRepository: NodeRepository, StoreWork {
    typealias Key = EKey
    typealias Value = ValueBox

    unowned let transaction: Transaction
    /// The transaction's engine, held here so that a node lookup does not go through the
    /// unowned reference (an unowned-to-strong conversion and a retain per lookup).
    let engine: Engine
    let info: StoreInfo
    let isNew: Bool
    /// The application's key and value types this transaction opened the store with.
    let keyType: ObjectIdentifier
    let valueType: ObjectIdentifier
    let keyTypeName: String
    let valueTypeName: String
    /// How this store's nodes hold their keys (fixed for the transaction: nodes decoded with
    /// it are kept in ``nodes``).
    let schema: KeySchema
    /// The working set: every node this transaction read or changed.
    var nodes: [SOPID: WorkNode] = [:]
    var changes: [SOPID: NodeChange] = [:]
    var countDelta: Int64 = 0
    var observedCountVersion: UInt64?

    init<K, V>(transaction: Transaction, info: StoreInfo, isNew: Bool, key: K.Type, value: V.Type, schema: KeySchema) {
        self.transaction = transaction
        self.engine = transaction.engine
        self.info = info
        self.isNew = isNew
        self.keyType = ObjectIdentifier(K.self)
        self.valueType = ObjectIdentifier(V.self)
        self.keyTypeName = typeName(K.self)
        self.valueTypeName = typeName(V.self)
        self.schema = schema
    }

    var hasChanges: Bool { !changes.isEmpty || countDelta != 0 }

    /// A B-tree (with its own cursor) over this working set, ordered by `schema`.
    func makeTree(schema: KeySchema) -> BTree<TxNodeRepository> {
        BTree(rootID: info.rootID, slotLength: info.options.slotLength,
              internalSlotLength: info.options.effectiveInternalSlotLength, isUnique: info.options.isUnique,
              compare: schema.compare, compareInPlace: schema.compareInPlace, repository: self)
    }

    func fetch(_ id: SOPID) async throws -> EngineNode {
        switch try lookUp(id) {
        case .node(let n): return n
        case .load(let h, let epoch):
            let node = try await engine.loadNode(h, epoch: epoch, schema: schema)
            nodes[id] = WorkNode(node: node, version: h.version)
            return node
        }
    }

    /// From the working set or the L1 cache: no I/O, no suspension.
    func fetchIfCached(_ id: SOPID) throws -> EngineNode? {
        if case .node(let n) = try lookUp(id) { return n }
        return nil
    }

    private enum Found {
        case node(EngineNode)
        /// Not at hand: the committed node to load, and the handle epoch read before its
        /// handle (for the cache).
        case load(Handle, UInt64)
    }

    /// The node from the working set or L1 (recorded as fetched), or the handle to load it by.
    /// An L1 entry confirmed at the current handle epoch needs no registry lookup (see
    /// ``NodeCache``); otherwise the registry names the current blob, and L1 may hold it.
    private func lookUp(_ id: SOPID) throws -> Found {
        // One lookup, and one copy of the node (`nodes[id]?.node` copied the entry, then the node).
        if let i = nodes.index(forKey: id), let n = nodes.values[i].node { return .node(n) }
        if !changes.isEmpty, changes[id] == .removed {
            throw SOPError(.internalError, "node \(id) of store '\(info.name)' was fetched after it was removed")
        }
        let key = NodeCache.Key(logical: id, type: schema.tag)
        // Read before the registry: an entry confirmed at this value is current while it lasts.
        let epoch = engine.storage.handleEpoch
        if let (node, _, version) = engine.cache.current(key, epoch: epoch) {
            nodes[id] = WorkNode(node: node, version: version)
            return .node(node)
        }
        guard let h = engine.storage.handle(store: info.id, logicalID: id) else { throw gone(id) }
        guard let cached = engine.cache.get(key, physical: h.active, version: h.version, epoch: epoch) else {
            return .load(h, epoch)
        }
        nodes[id] = WorkNode(node: cached, version: h.version)
        return .node(cached)
    }

    /// Prefetch hints for a scan entering a leaf (see ``NodeCache/prefetch(slotOf:itemsOf:valuesOf:itemLimit:)``):
    /// the leaves one, two and three ahead of it in the walk's direction.
    func prefetch(_ one: SOPID?, _ two: SOPID?, _ three: SOPID?) {
        let tag = schema.tag
        engine.cache.prefetch(slotOf: three.map { NodeCache.Key(logical: $0, type: tag) },
                              itemsOf: two.map { NodeCache.Key(logical: $0, type: tag) },
                              valuesOf: one.map { NodeCache.Key(logical: $0, type: tag) },
                              itemLimit: info.options.slotLength)
    }

    /// The tree changed under this transaction (a node it was led to no longer exists).
    private func gone(_ id: SOPID) -> SOPError {
        SOPError(.conflict, "transaction conflict: node \(id) of store '\(info.name)' no longer exists")
    }

    func add(_ node: EngineNode) {
        nodes[node.id, default: WorkNode()].node = node
        changes[node.id] = .added
    }

    func update(_ node: EngineNode) {
        nodes[node.id, default: WorkNode()].node = node
        if changes[node.id] != .added { changes[node.id] = .updated }
    }

    func detach(_ id: SOPID) {
        nodes[id]?.node = nil
    }

    func remove(_ id: SOPID) {
        // A node read from the committed state keeps its version (the commit re-checks it).
        if let version = nodes[id]?.version { nodes[id] = WorkNode(node: nil, version: version) } else { nodes[id] = nil }
        if changes[id] == .added { changes[id] = nil } else { changes[id] = .removed }
    }

    /// The committed nodes this transaction read and the versions it read them at.
    var fetchedVersions: [(id: SOPID, version: UInt32)] {
        nodes.compactMap { id, w in w.version.map { (id, $0) } }
    }

    /// Takes a node out of the working set (its entry stays), leaving the caller the only
    /// holder of its arrays.
    private func takeNode(_ id: SOPID) -> EngineNode? {
        guard let i = nodes.index(forKey: id) else { return nil }
        let n = nodes.values[i].node
        nodes.values[i].node = nil
        return n
    }

    func newNodeID() -> SOPID { .random() }

    // MARK: StoreWork

    func prepareNodes() async throws -> [(id: SOPID, bytes: [UInt8])] {
        // Separate values first: the nodes refer to them by physical ID.
        var pending: [(node: SOPID, index: Int, bytes: [UInt8])] = []
        if info.options.valuePlacement != .inNode {
            for (id, c) in changes where c != .removed {
                guard let n = nodes[id]?.node else { continue }
                for i in n.items.indices {
                    if case .pending(let b) = n.items[i].value { pending.append((id, i, b)) }
                }
            }
        }
        if !pending.isEmpty {
            let ids = try await engine.storage.writeBlobs(pending.map(\.bytes))
            for (p, blob) in zip(pending, ids) { nodes[p.node]!.node!.items[p.index].value = .blob(blob) }
        }
        var changed: [EngineNode] = []
        changed.reserveCapacity(changes.count)
        for (id, c) in changes where c != .removed {
            guard let n = takeNode(id) else {
                for n in changed { nodes[n.id]?.node = n }
                throw SOPError(.internalError, "changed node \(id) is missing")
            }
            changed.append(n)
        }
        let encoded = NodeFormat.encodeAll(changed, schema: schema)
        var out: [(id: SOPID, bytes: [UInt8])] = []
        out.reserveCapacity(changed.count)
        var failure: (any Error)?
        for (i, n) in changed.enumerated() {
            switch encoded[i] {
            case .success(let bytes):
                out.append((n.id, bytes))
            case .failure(let error):
                failure = failure ?? error
            }
            nodes[n.id]?.node = n
        }
        if let failure { throw failure }
        return out
    }

    /// The changed nodes as the cache will hold them, and the cache keys of the nodes removed
    /// (see ``prepareCache()``).
    private var readyForCache: [(id: SOPID, node: EngineNode, cost: Int)] = []
    private var removedKeys: [NodeCache.Key] = []

    func prepareCache() {
        removedKeys.removeAll()
        for (id, c) in changes where c == .removed {
            removedKeys.append(NodeCache.Key(logical: id, type: schema.tag))
        }
        readyForCache.removeAll()
        readyForCache.reserveCapacity(changes.count)
        for (id, c) in changes where c != .removed {
            // Taken out of the working set (the transaction ends with this commit, whether it
            // succeeds or not), so that re-packing the leaf's values can change its item array
            // in place rather than copy it.
            guard let n = takeNode(id) else { continue }
            let cached = NodeFormat.forCache(n)
            readyForCache.append((id, cached, NodeFormat.cost(cached)))
        }
    }

    /// Caches the committed nodes under their new blobs (replacing the versions they
    /// supersede, which no new transaction can reach) and drops the removed ones. The new
    /// entries are unconfirmed: the first transaction to use one asks the registry once.
    func publish(physical: [SOPID: SOPID]) {
        let cache = engine.cache
        var entries: [NodeCache.Entry] = []
        entries.reserveCapacity(readyForCache.count)
        for r in readyForCache {
            guard let p = physical[r.id] else { continue }
            entries.append(NodeCache.Entry(key: NodeCache.Key(logical: r.id, type: schema.tag), node: r.node,
                                           physical: p, cost: r.cost))
        }
        cache.release(cache.put(entries))
        cache.remove(removedKeys)
        removedKeys = []
        readyForCache = []
    }
}
