import SOPBTree
import SOPCore

/// What the commit of a transaction needs from each store it used, whatever its types.
protocol StoreWork: AnyObject {
    var info: StoreInfo { get }
    var isNew: Bool { get }
    var countDelta: Int64 { get }
    var observedCountVersion: UInt64? { get }
    var fetchedVersions: [(id: SOPID, version: UInt32)] { get }
    var changes: [SOPID: NodeChange] { get }
    var keyTypeName: String { get }
    var valueTypeName: String { get }
    var hasChanges: Bool { get }
    /// Writes new separate values and returns the new nodes' encodings (added and updated).
    func prepareNodes() async throws -> [(id: SOPID, bytes: [UInt8])]
    /// Readies the changed nodes for the L1 cache (values re-packed, sizes counted) while the
    /// commit record is being written and synced; the transaction must not change after it.
    func prepareCache()
    /// Puts the committed nodes into the L1 cache with their new blobs (replacing the versions
    /// they supersede) and drops the removed ones.
    func publish(physical: [SOPID: SOPID])
}

enum NodeChange: Equatable {
    case added
    case updated
    case removed
}

/// A unit of work: reads see one consistent state (or the commit fails with a conflict),
/// and writes become visible and durable all at once when ``commit()`` returns.
///
/// A transaction is used by one task at a time (like a database connection). Concurrency
/// comes from running many transactions.
public final class Transaction: @unchecked Sendable {
    // @unchecked: documented single-task use; the engine it talks to is thread-safe.

    /// What a transaction may do and what its commit checks.
    public enum Mode: Sendable, Equatable {
        /// Reads only; the commit re-checks that everything read is unchanged.
        case forReading
        /// Reads and writes; the commit re-checks reads and applies writes atomically.
        case forWriting
        /// Writes without re-checking what was only read (nodes written are still checked).
        case noCheck
    }

    enum State: Equatable {
        case active
        case prepared
        case committed
        case rolledBack
    }

    let engine: Engine
    /// This transaction's ID (also the owner of its locks).
    public let id: SOPID
    /// The mode it was begun with.
    public let mode: Mode
    let maxDuration: Duration
    let deadline: ContinuousClock.Instant
    var state: State = .active
    var works: [String: TxNodeRepository] = [:]
    var dropped: [String: StoreInfo] = [:]
    private var heldLocks: [String] = []
    /// Clustered: this transaction holds the database's commit lock.
    private var holdsClusterLock = false
    private var preparedNodes: [(store: SOPID, id: SOPID, physical: SOPID)] = []
    private var deferredNodes: (blobs: [[UInt8]], owners: [(store: SOPID, id: SOPID)]) = ([], [])

    init(engine: Engine, mode: Mode, maxDuration: Duration) {
        self.engine = engine
        self.id = .timeOrdered()
        self.mode = mode
        self.maxDuration = maxDuration
        self.deadline = .now + maxDuration
        self.startHandleEpoch = engine.storage.handleEpoch
    }

    /// The storage's handle epoch when the transaction began: if it is unchanged at commit
    /// (standalone, no other transaction holding locks), no node this transaction read has
    /// changed, and the per-node re-check is skipped.
    let startHandleEpoch: UInt64

    /// True until the transaction commits or rolls back.
    public var isActive: Bool { state == .active }

    /// The per-item part of ``checkUsable(writing:)``: the state only (no clock read).
    @usableFromInline @inline(__always)
    func checkActive() throws {
        guard state == .active else { try checkUsable(writing: false); return }
    }

    func checkUsable(writing: Bool) throws {
        guard state == .active else {
            throw SOPError(.invalidState, "the transaction has already \(state == .committed ? "committed" : state == .prepared ? "begun to commit" : "rolled back")")
        }
        if writing && mode == .forReading {
            throw SOPError(.invalidState, "the transaction is read-only")
        }
        if ContinuousClock.now > deadline {
            throw SOPError(.timeout, "the transaction ran past its maximum duration of \(maxDuration)")
        }
    }

    // MARK: - Stores

    /// How the caller asks a store's keys to be ordered.
    enum RequestedOrder<K: Codable & Sendable> {
        /// The key type's `Comparable` order (given as a comparator for types without a
        /// native engine form).
        case natural(@Sendable (K, K) -> Int)
        /// A comparator the program passes.
        case comparator(@Sendable (K, K) -> Int)
        /// An index specification (`nil`: adopt the one the store has).
        case index(IndexSpecification?)
    }

    /// Opens the store `name`, creating it (with `options`, or defaults) when this
    /// transaction is for writing and it does not exist yet.
    ///
    /// A store with an ``IndexSpecification`` (persisted when it was created, see
    /// ``StoreOptions/indexSpecification``) orders its keys by it, whatever `K` is: the keys'
    /// JSON encodings are compared field by field.
    public func store<K: Codable & Sendable & Comparable, V: Codable & Sendable>(
        _ name: String, key: K.Type, value: V.Type, options: StoreOptions? = nil
    ) async throws -> Store<K, V> {
        try await store(name, key: key, value: value, options: options, create: mode != .forReading, mustCreate: false,
                        order: .natural({ a, b in a < b ? -1 : (b < a ? 1 : 0) }))
    }

    /// Opens (or, when writing, creates) a store whose keys are ordered by `compare`
    /// (negative, zero or positive like `strcmp`). The comparator is not persisted: every
    /// program opening the store must pass the same one. (A store created with an
    /// ``IndexSpecification`` is ordered by it instead.)
    public func store<K: Codable & Sendable, V: Codable & Sendable>(
        _ name: String, key: K.Type, value: V.Type, options: StoreOptions? = nil,
        compare: @escaping @Sendable (K, K) -> Int
    ) async throws -> Store<K, V> {
        try await store(name, key: key, value: value, options: options, create: mode != .forReading, mustCreate: false,
                        order: .comparator(compare))
    }

    /// Opens (or, when writing, creates) a store of `Codable` keys — structs need not be
    /// `Comparable` — ordered by an index specification over their JSON encodings, so a
    /// program's typed view and the dynamic view (``dynamicStore(_:)``, the `sop` tool) agree.
    ///
    /// A new store persists `index`. An existing store must have been created with the same
    /// specification (`nil` adopts whatever it has); otherwise ``SOPError/Code/invalidArgument``.
    /// Every key must encode as a JSON object with the indexed fields.
    ///
    /// ```swift
    /// struct PersonKey: Codable, Sendable { var last: String; var first: String; var note: String }
    /// let spec = try IndexSpecification([.init("last"), .init("first")])
    /// let people = try await tx.store("people", key: PersonKey.self, value: Person.self, index: spec)
    /// ```
    public func store<K: Codable & Sendable, V: Codable & Sendable>(
        _ name: String, key: K.Type, value: V.Type, index: IndexSpecification?, options: StoreOptions? = nil
    ) async throws -> Store<K, V> {
        try await store(name, key: key, value: value, options: options, create: mode != .forReading, mustCreate: false,
                        order: .index(index))
    }

    /// Opens an existing store; ``SOPError/Code/notFound`` when it does not exist.
    public func openStore<K: Codable & Sendable & Comparable, V: Codable & Sendable>(
        _ name: String, key: K.Type, value: V.Type
    ) async throws -> Store<K, V> {
        try await store(name, key: key, value: value, options: nil, create: false, mustCreate: false,
                        order: .natural({ a, b in a < b ? -1 : (b < a ? 1 : 0) }))
    }

    /// Opens an existing store ordered by an index specification (`nil` adopts the store's);
    /// see ``store(_:key:value:index:options:)``.
    public func openStore<K: Codable & Sendable, V: Codable & Sendable>(
        _ name: String, key: K.Type, value: V.Type, index: IndexSpecification?
    ) async throws -> Store<K, V> {
        try await store(name, key: key, value: value, options: nil, create: false, mustCreate: false,
                        order: .index(index))
    }

    /// Creates a store; ``SOPError/Code/alreadyExists`` when the name is taken.
    public func createStore<K: Codable & Sendable & Comparable, V: Codable & Sendable>(
        _ name: String, key: K.Type, value: V.Type, options: StoreOptions = .init()
    ) async throws -> Store<K, V> {
        try await store(name, key: key, value: value, options: options, create: true, mustCreate: true,
                        order: .natural({ a, b in a < b ? -1 : (b < a ? 1 : 0) }))
    }

    /// Opens any existing store without its program's types: keys and values as ``JSONValue``
    /// (decoded straight from the stored JSON), in the order the store's own program uses.
    ///
    /// - A store with an ``IndexSpecification`` is ordered by it; keys must be objects with
    ///   the indexed fields.
    /// - Otherwise keys are ordered by ``JSONValue``'s total order, which equals Swift's order
    ///   for `String`, integer, floating-point and `Bool` keys; keys of another JSON kind than
    ///   the store's key type are refused. A store whose keys are of another type (ordered by
    ///   a comparator only its program has) can be walked (`first`, `next`, `range`/`keys`
    ///   without bounds, `updateCurrentValue`) but keys cannot be added, searched for or removed.
    ///
    /// Values written through this view must still decode as the program's value type.
    /// ``SOPError/Code/notFound`` when the store does not exist; ``SOPError/Code/typeMismatch``
    /// when this transaction already opened it with its types.
    public func dynamicStore(_ name: String) async throws -> Store<JSONValue, JSONValue> {
        try checkUsable(writing: false)
        try StoreName.validate(name)
        let repo: TxNodeRepository
        let ordering: KeyOrdering<JSONValue>
        if let w = works[name] {
            guard w.keyType == ObjectIdentifier(JSONValue.self), w.valueType == ObjectIdentifier(JSONValue.self) else {
                throw SOPError(.typeMismatch,
                               "store '\(name)' is already open in this transaction as \(w.keyTypeName) → \(w.valueTypeName)")
            }
            ordering = Transaction.dynamicOrdering(w.info)
            try Transaction.checkSameForm(w, ordering.schema)
            repo = w
        } else {
            guard dropped[name] == nil, let info = engine.storage.storeInfo(named: name) else {
                throw SOPError(.notFound, "store '\(name)' does not exist")
            }
            ordering = Transaction.dynamicOrdering(info)
            repo = TxNodeRepository(transaction: self, info: info, isNew: false, key: JSONValue.self,
                                    value: JSONValue.self, schema: ordering.schema)
            works[name] = repo
        }
        return Store(transaction: self, repository: repo, ordering: ordering)
    }

    private static func dynamicOrdering(_ info: StoreInfo) -> KeyOrdering<JSONValue> {
        info.indexSpecification.map { .json($0) } ?? .dynamic(keyType: info.keyType)
    }

    /// A store opened twice in one transaction must hold its keys the same way both times
    /// (its nodes are decoded once, for the first opening).
    private static func checkSameForm(_ w: TxNodeRepository, _ schema: KeySchema) throws {
        guard w.schema.tag == schema.tag else {
            throw SOPError(.typeMismatch,
                           "store '\(w.info.name)' is already open in this transaction with another key order")
        }
    }

    /// The ordering of a store given what it persisted and what the caller asked for.
    private func ordering<K: Codable & Sendable>(_ info: StoreInfo, _ order: RequestedOrder<K>) throws -> KeyOrdering<K> {
        switch (info.indexSpecification, order) {
        case (let spec?, .comparator), (let spec?, .natural):
            return .typed(spec)
        case (let spec?, .index(let asked)):
            if let asked, asked != spec {
                throw SOPError(.invalidArgument,
                               "store '\(info.name)' is ordered by index specification \(spec), not \(asked)")
            }
            return .typed(spec)
        case (nil, .natural(let c)):
            return .natural(c)
        case (nil, .comparator(let c)):
            return .comparator(c)
        case (nil, .index(let asked)):
            throw SOPError(.invalidArgument,
                           "store '\(info.name)' has no index specification\(asked == nil ? "" : " (it was created without one)"); open it with its key order")
        }
    }

    func store<K: Codable & Sendable, V: Codable & Sendable>(
        _ name: String, key: K.Type, value: V.Type, options: StoreOptions?, create: Bool, mustCreate: Bool,
        order: RequestedOrder<K>
    ) async throws -> Store<K, V> {
        try checkUsable(writing: mustCreate)
        try StoreName.validate(name)
        if let o = options { try o.validate() }
        let kName = typeName(K.self), vName = typeName(V.self)
        if let w = works[name] {
            if mustCreate { throw SOPError(.alreadyExists, "store '\(name)' already exists") }
            guard w.keyType == ObjectIdentifier(K.self), w.valueType == ObjectIdentifier(V.self) else {
                throw SOPError(.typeMismatch,
                               "store '\(name)' is already open in this transaction as \(w.keyTypeName) → \(w.valueTypeName)")
            }
            let ord = try ordering(w.info, order)
            try Transaction.checkSameForm(w, ord.schema)
            return Store(transaction: self, repository: w, ordering: ord)
        }
        let committed = dropped[name] == nil ? engine.storage.storeInfo(named: name) : nil
        if let info = committed {
            if mustCreate { throw SOPError(.alreadyExists, "store '\(name)' already exists") }
            let anyKey = K.self == JSONValue.self, anyValue = V.self == JSONValue.self
            guard anyKey || info.keyType == kName, anyValue || info.valueType == vName else {
                throw SOPError(.typeMismatch,
                               "store '\(name)' holds \(info.keyType) → \(info.valueType), not \(kName) → \(vName)")
            }
            let ord = try ordering(info, order)
            let repo = TxNodeRepository(transaction: self, info: info, isNew: false, key: K.self, value: V.self,
                                        schema: ord.schema)
            works[name] = repo
            return Store(transaction: self, repository: repo, ordering: ord)
        }
        guard create else { throw SOPError(.notFound, "store '\(name)' does not exist") }
        try checkUsable(writing: true)
        var o = options ?? StoreOptions()
        try o.validate()
        if case .index(let asked?) = order {
            if let given = o.indexSpecification, given != asked {
                throw SOPError(.invalidArgument,
                               "the index specification \(asked) differs from the options' \(given)")
            }
            o.indexSpecification = asked
        }
        let info = StoreInfo(name: name, options: o, keyType: kName, valueType: vName,
                             createdAt: SystemClock().nowMilliseconds())
        let ord = try ordering(info, order)
        let repo = TxNodeRepository(transaction: self, info: info, isNew: true, key: K.self, value: V.self,
                                    schema: ord.schema)
        repo.add(BTreeNode(id: info.rootID))
        works[name] = repo
        return Store(transaction: self, repository: repo, ordering: ord)
    }

    /// Drops a store and everything in it when the transaction commits.
    public func dropStore(_ name: String) async throws {
        try checkUsable(writing: true)
        try StoreName.validate(name)
        if let w = works[name] {
            works[name] = nil
            if !w.isNew { dropped[name] = w.info }
            return
        }
        guard let info = engine.storage.storeInfo(named: name), dropped[name] == nil else {
            throw SOPError(.notFound, "store '\(name)' does not exist")
        }
        dropped[name] = info
    }

    /// Names of the stores as this transaction sees them.
    public func storeNames() -> [String] {
        var names = Set(engine.storage.stores().map(\.name))
        for (n, w) in works where w.isNew { names.insert(n) }
        for n in dropped.keys { names.remove(n) }
        return names.sorted()
    }

    // MARK: - Commit

    /// Commits: phase 1 then phase 2. When this returns the changes are durable.
    /// Throws ``SOPError/Code/conflict`` (retryable) when another transaction changed what
    /// this one read or wrote; the transaction is then rolled back.
    public func commit() async throws {
        // One step for the common case: nodes are encoded in phase 1 but written together
        // with the commit record (one write, one sync).
        try await phase1(deferNodeWrites: true)
        try await phase2Commit()
    }

    private var hasWrites: Bool {
        !dropped.isEmpty || works.values.contains { $0.hasChanges || $0.isNew }
    }

    /// Phase 1 of a two-phase commit: locks what is written, re-checks every version read,
    /// and writes the new nodes. After it succeeds, ``phase2Commit()`` cannot conflict.
    public func phase1Commit() async throws {
        try await phase1(deferNodeWrites: false)
    }

    private func phase1(deferNodeWrites: Bool) async throws {
        try checkUsable(writing: false)
        do {
            let fp = engine.options.failpoints
            if let cluster = engine.cluster {
                // Clustered: commits are serialized by one lock per database; inside it, catch
                // up from the other processes' logs, then validate as usual.
                if hasWrites || !works.isEmpty || !dropped.isEmpty {
                    try await cluster.acquire(owner: id, deadline: deadline)
                    holdsClusterLock = true
                    try await engine.fileStorage?.catchUp()
                }
            } else if hasWrites { try await lockWriteSet() }
            try await fp.hitAsync("commit.afterLock")
            if mode != .noCheck || hasWrites { try await validate() }
            try await fp.hitAsync("commit.afterValidate")
            try await writeNodes(deferred: deferNodeWrites)
            state = .prepared
        } catch {
            await release()
            state = .rolledBack
            throw error
        }
    }

    /// Phase 2: the commit point (one durable log record), then the registry flips and
    /// locks are released.
    public func phase2Commit() async throws {
        guard state == .prepared else {
            throw SOPError(.invalidState, "phase2Commit needs a successful phase1Commit first")
        }
        do {
            if hasWrites { try await writeCommitRecord() }
            state = .committed
            try await engine.options.failpoints.hitAsync("commit.beforeUnlock")
        } catch let crash as FailpointCrash {
            throw crash     // a simulated crash: the process is "gone", its locks die with it
        } catch {
            state = .rolledBack
            await release()
            throw error
        }
        await release()
    }

    /// Abandons the transaction: nothing it wrote becomes visible. Safe to call more than once.
    public func rollback() async {
        guard state == .active || state == .prepared else { return }
        state = .rolledBack
        await release()
    }

    /// Standalone: this transaction's registration with compaction (see
    /// `CompactionCoordinator`), ended when the transaction ends.
    var compactionToken: UInt64?

    deinit {
        if let t = compactionToken { engine.compaction.unregister(t) }
    }

    private func endCompactionRegistration() {
        if let t = compactionToken {
            compactionToken = nil
            engine.compaction.unregister(t)
        }
    }

    private func release() async {
        if state == .committed || state == .rolledBack { endCompactionRegistration() }
        if holdsClusterLock, let cluster = engine.cluster {
            holdsClusterLock = false
            await cluster.release(owner: id)
        }
        guard !heldLocks.isEmpty else { return }
        let keys = heldLocks
        heldLocks = []
        try? await engine.locker.unlock(keys, owner: id)
        engine.lockHolders.subtract(1, ordering: .sequentiallyConsistent)
    }

    private func lockWriteSet() async throws {
        // In a deterministic order (stores by name, nodes by ID: sorting IDs is cheaper than
        // sorting the key strings); the lock is all-or-nothing, so order is not for deadlocks.
        var keys: [String] = []
        var names: [String] = []
        for (name, w) in works {
            if w.isNew { names.append(Engine.lockKey(storeName: name)) }
        }
        for name in dropped.keys { names.append(Engine.lockKey(storeName: name)) }
        keys.append(contentsOf: names.sorted())
        for w in works.values.sorted(by: { $0.info.name < $1.info.name }) {
            var nodes: [SOPID] = []
            nodes.reserveCapacity(w.changes.count)
            for (node, c) in w.changes where c != .added { nodes.append(node) }
            nodes.sort()
            keys.reserveCapacity(keys.count + nodes.count)
            for node in nodes { keys.append(Engine.lockKey(store: w.info.id, node: node)) }
        }
        if keys.isEmpty { return }
        engine.lockHolders.add(1, ordering: .sequentiallyConsistent)
        if let busy = try await engine.locker.tryLock(keys, owner: id, ttl: maxDuration) {
            engine.lockHolders.subtract(1, ordering: .sequentiallyConsistent)
            throw SOPError(.conflict, "another transaction is committing a change to the same data (\(busy))")
        }
        heldLocks = keys
    }

    private func conflict(_ why: String) -> SOPError {
        SOPError(.conflict, "transaction conflict: \(why)")
    }

    private func validate() async throws {
        let storage = engine.storage
        // Versions first, then locks: a lock seen is a commit in flight. With no other
        // transaction holding locks at all (standalone only knows), skip the lock look-ups.
        // Clustered, this transaction holds the database's commit lock: no commit is in flight.
        let othersMayHoldLocks = engine.cluster == nil
            && (engine.lockHolders.load(ordering: .sequentiallyConsistent) > (heldLocks.isEmpty ? 0 : 1)
                || !engine.lockCountIsExact)
        // Standalone, every handle change is applied in this process: an unchanged epoch means
        // no node read has changed since the transaction began. A commit in flight (locks held
        // by another transaction) may be about to change one, so then the nodes are checked.
        let nodesUnchanged = engine.cluster == nil && !othersMayHoldLocks
            && storage.handleEpoch == startHandleEpoch
        for (name, w) in works {
            let current = storage.storeInfo(named: name)
            if w.isNew {
                if current != nil { throw conflict("store '\(name)' was created by another transaction") }
                continue
            }
            guard let current, current.id == w.info.id else {
                throw conflict("store '\(name)' was dropped or re-created")
            }
            if othersMayHoldLocks, let owner = try await engine.locker.owner(of: Engine.lockKey(storeName: name)),
               owner != id {
                throw conflict("store '\(name)' is being dropped")
            }
            if let seen = w.observedCountVersion, seen != current.countVersion {
                throw conflict("the count of store '\(name)' changed")
            }
            if nodesUnchanged { continue }
            for (node, version) in w.fetchedVersions {
                let written = w.changes[node] != nil
                if mode == .noCheck && !written { continue }
                guard let h = storage.handle(store: w.info.id, logicalID: node), h.version == version else {
                    throw conflict("node \(node) of store '\(name)' changed")
                }
                if !written, othersMayHoldLocks,
                   let owner = try await engine.locker.owner(of: Engine.lockKey(store: w.info.id, node: node)),
                   owner != id {
                    throw conflict("node \(node) of store '\(name)' is being committed by another transaction")
                }
            }
        }
        for (name, info) in dropped {
            guard storage.storeInfo(named: name)?.id == info.id else {
                throw conflict("store '\(name)' was dropped or re-created")
            }
        }
    }

    /// Encodes the changed nodes; writes them now, or (`deferred`) keeps them for the commit
    /// record's write.
    private func writeNodes(deferred: Bool) async throws {
        var blobs: [[UInt8]] = []
        var owners: [(store: SOPID, id: SOPID)] = []
        for w in works.values where w.hasChanges {
            for n in try await w.prepareNodes() {
                blobs.append(n.bytes)
                owners.append((w.info.id, n.id))
            }
        }
        if deferred {
            deferredNodes = (blobs, owners)
            return
        }
        let ids = try await engine.storage.writeBlobs(blobs)
        preparedNodes = zip(owners, ids).map { ($0.store, $0.id, $1) }
    }

    private func writeCommitRecord() async throws {
        let txID = id
        let nodes = preparedNodes
        var adds: [SOPID: [(SOPID, NodeChange)]] = [:]
        var infos: [(info: StoreInfo, isNew: Bool, delta: Int64)] = []
        for w in works.values {
            infos.append((w.info, w.isNew, w.countDelta))
            adds[w.info.id] = w.changes.map { ($0.key, $0.value) }
        }
        let droppedIDs = dropped.values.map(\.id)
        let changeSets = adds
        let storeStates = infos
        let written = Dictionary(nodes.map { ($0.id, $0.physical) }, uniquingKeysWith: { a, _ in a })
        let deferred = deferredNodes
        @Sendable func locations(_ ids: [SOPID]) -> [SOPID: SOPID] {
            var physical = written
            for (o, p) in zip(deferred.owners, ids) { physical[o.id] = p }
            return physical
        }
        if let cluster = engine.cluster {
            try await engine.options.failpoints.hitAsync("cluster.beforeFence")
            try await cluster.verify(owner: id)
        }
        let storage = engine.storage
        let prepare: @Sendable ([SOPID], any CommittedState) throws -> CommitRecord = { ids, view in
            let physical = locations(ids)
            var record = CommitRecord(transactionID: txID, droppedStores: droppedIDs)
            for s in storeStates {
                if s.isNew {
                    var info = s.info
                    info.count = s.delta
                    info.countVersion = 1
                    record.storeInfos.append(info)
                } else if s.delta != 0 {
                    guard var info = view.storeInfo(id: s.info.id) else {
                        throw SOPError(.conflict, "transaction conflict: store '\(s.info.name)' was dropped")
                    }
                    info.count += s.delta
                    info.countVersion &+= 1
                    record.storeInfos.append(info)
                }
                for (node, change) in changeSets[s.info.id] ?? [] {
                    switch change {
                    case .added:
                        guard let p = physical[node] else { throw SOPError(.internalError, "node \(node) was not written") }
                        record.handles.append(HandleChange(store: s.info.id, logicalID: node,
                                                           handle: Handle(logicalID: node, physical: p)))
                    case .updated:
                        guard let p = physical[node], var h = view.handle(store: s.info.id, logicalID: node) else {
                            throw SOPError(.internalError, "node \(node) lost its handle while locked")
                        }
                        h.flip(to: p)
                        record.handles.append(HandleChange(store: s.info.id, logicalID: node, handle: h))
                    case .removed:
                        record.handles.append(HandleChange(store: s.info.id, logicalID: node, handle: nil))
                    }
                }
            }
            return record
        }
        let ids: [SOPID]
        if works.values.reduce(0, { $0 + $1.changes.count }) >= 16 {
            // The commit (one write and one sync, on the I/O pool) runs while this task readies
            // the nodes for the cache. (Not for a few nodes: the child task's start would cost
            // more than it overlaps.)
            async let committed = storage.commit(blobs: deferred.blobs, prepare)
            for w in works.values where w.hasChanges { w.prepareCache() }
            ids = try await committed
        } else {
            ids = try await storage.commit(blobs: deferred.blobs, prepare)
            for w in works.values where w.hasChanges { w.prepareCache() }
        }
        let physical = locations(ids)
        for w in works.values where w.hasChanges { w.publish(physical: physical) }
    }
}

func typeName(_ t: Any.Type) -> String {
    if t == JSONValue.self { return "JSONValue" }
    return String(reflecting: t)
}
