/// One registry change of a commit: the new handle of a node, or its removal.
public struct HandleChange: Sendable, Equatable {
    /// The store (its incarnation ID) the node belongs to.
    public var store: SOPID
    /// The node's logical ID.
    public var logicalID: SOPID
    /// The handle after the commit; `nil` removes the node.
    public var handle: Handle?

    /// Makes a change.
    public init(store: SOPID, logicalID: SOPID, handle: Handle?) {
        self.store = store
        self.logicalID = logicalID
        self.handle = handle
    }
}

/// What one commit changes, as written to the log at the commit point. Every field holds
/// absolute values (whole store infos, whole handles), so applying a record twice is harmless.
public struct CommitRecord: Sendable, Equatable {
    /// The committing transaction.
    public var transactionID: SOPID
    /// Stores created or changed (count, ...) by the commit: their infos after it.
    public var storeInfos: [StoreInfo]
    /// Stores dropped by the commit (their incarnation IDs).
    public var droppedStores: [SOPID]
    /// Registry changes.
    public var handles: [HandleChange]
    /// The commit's position in the database's global commit order (assigned by storage when
    /// the record is written; `nil` for records of format version 1, which are ordered by
    /// their place in the log).
    public var sequence: UInt64?

    /// Makes a record.
    public init(transactionID: SOPID, storeInfos: [StoreInfo] = [], droppedStores: [SOPID] = [],
                handles: [HandleChange] = []) {
        self.transactionID = transactionID
        self.storeInfos = storeInfos
        self.droppedStores = droppedStores
        self.handles = handles
    }

    /// True when the record changes nothing.
    public var isEmpty: Bool { storeInfos.isEmpty && droppedStores.isEmpty && handles.isEmpty }
}

/// Read access to the committed state, handed to a commit's preparation step while the
/// commit lock is held (so what it sees cannot change before the record is written).
public protocol CommittedState {
    /// The committed info of the store with this name.
    func storeInfo(named name: String) -> StoreInfo?
    /// The committed info of the store with this incarnation ID.
    func storeInfo(id: SOPID) -> StoreInfo?
    /// The committed handle of a node.
    func handle(store: SOPID, logicalID: SOPID) -> Handle?
}

/// The durable side of a database: blobs, the registry, the store catalog and the commit
/// log. The engine talks to storage only through this port.
public protocol StorageBackend: AnyObject, Sendable {
    /// Committed stores, sorted by name.
    func stores() -> [StoreInfo]
    /// The committed info of one store.
    func storeInfo(named name: String) -> StoreInfo?
    /// The committed info of the store with this incarnation ID.
    func storeInfo(id: SOPID) -> StoreInfo?
    /// The committed handle of a node, or `nil` when the node does not exist.
    func handle(store: SOPID, logicalID: SOPID) -> Handle?
    /// A number that grows whenever a committed handle changes or a store is dropped (the new
    /// value is published before the handles' lock is released). A handle read after a
    /// reading of this value is current for as long as the value stays the same: a
    /// transaction whose begin and commit read the same value needs no per-node re-check, and
    /// the L1 cache serves a node it confirmed at the current value without a registry
    /// lookup. Cheap to read (no lock).
    var handleEpoch: UInt64 { get }
    /// Every committed handle of a store (for checks and for dropping).
    func handles(store: SOPID) -> [Handle]
    /// Reads a blob. Throws ``SOPError/Code/corrupt`` naming the file when it fails its checksum.
    func readBlob(_ id: SOPID) async throws -> [UInt8]
    /// Writes blobs (not yet durable: the commit that references them makes them so) and
    /// returns their physical IDs, in order.
    func writeBlobs(_ blobs: [[UInt8]]) async throws -> [SOPID]
    /// The commit point. Under the commit lock, `prepare` builds the record from the committed
    /// state (or throws to abort: nothing is written); the record is then made durable and
    /// applied. When this returns, the commit survives a crash or power loss.
    func commit(_ prepare: @escaping @Sendable (any CommittedState) throws -> CommitRecord) async throws
    /// Like ``commit(_:)``, but first writes `blobs` in the same locked step (one write and
    /// one sync for a whole commit); `prepare` gets their physical IDs, in order, and so
    /// does the caller.
    @discardableResult
    func commit(blobs: [[UInt8]],
                _ prepare: @escaping @Sendable ([SOPID], any CommittedState) throws -> CommitRecord) async throws -> [SOPID]
    /// Writes the committed state into the registry and catalog files so the log can be reused.
    func checkpoint() async throws
    /// Checkpoints and releases the database (its lock file). Further calls fail.
    func close() async throws
}
