import SOPCore
import Synchronization
import SOPFileSystem
import SOPInMemory
import SOPRedis

/// How processes sharing a database coordinate.
public enum Coordination: Sendable, Equatable {
    /// One process owns the database (an OS file lock enforces it); locks and caches live in
    /// that process. The embedded default: no servers.
    case standalone
    /// Many processes (on one host or many, over shared storage) open the same folder and
    /// coordinate through the Redis at this URL (`redis://[user:password@]host[:port][/db]`):
    /// one commit lock per database serializes commits, each process catches up from the
    /// others' log segments, and Redis caches blobs. Data is never kept in Redis.
    case redis(String)
}

/// Options of an open database.
public struct DatabaseOptions: Sendable {
    /// How processes coordinate.
    public var coordination: Coordination = .standalone
    /// Create the folder (and an empty database in it) when missing. When `false`, opening a
    /// missing database throws ``SOPError/Code/notFound``.
    public var createIfMissing = true
    /// Byte budget of the L1 cache of decoded nodes.
    public var nodeCacheBytes = 256 << 20
    /// Byte budget of the in-process L2 cache of encoded blobs (nodes evicted from L1 and
    /// separately stored values). 0 turns it off.
    public var blobCacheBytes = 64 << 20
    /// The longest a transaction may run; locks it holds expire after this.
    public var maxTransactionDuration: Duration = .seconds(15 * 60)
    /// How many times ``Database/write(maxAttempts:_:)`` runs its closure when commits conflict.
    public var maxWriteAttempts = 20
    /// Log bytes after which the committed state is checkpointed into the registry files.
    public var checkpointBytes: UInt64 = 64 << 20
    /// Log segment size after which a new segment is started. Segments are the unit of
    /// compaction: smaller ones give dead space back sooner, at the cost of more files.
    public var logSegmentBytes: UInt64 = 64 << 20
    /// Standalone: compact log segments in the background (after checkpoints and when a
    /// segment fills) whenever a sealed segment holds less than a quarter live data. Clustered
    /// databases are never compacted. See ``Database/compact()``.
    public var automaticCompaction = true
    /// The live fraction below which automatic compaction takes a sealed segment: the space
    /// bound (sealed segments are at least this live) against the copying (up to this fraction
    /// of every segment is written again); see `docs/performance.md`.
    package var compactionThreshold = 0.25
    /// Log bytes written after a segment was sealed before automatic compaction takes it:
    /// meanwhile more of it dies, so less is copied. The default (one segment) keeps the
    /// throughput of write-heavy phases (compacting young segments cost 15–20 % of it in the
    /// benchmark) for somewhat more space; 0 gives the smallest folder. See
    /// `docs/performance.md`.
    public var compactionMinAgeBytes: UInt64 = 64 << 20
    /// Clustered mode: time to live of the database's commit lock in Redis (extended before
    /// each commit point). A process that dies holding it blocks commits for at most this long.
    public var clusterLockTTL: Duration = .seconds(10)
    /// The file system (tests inject faults or simulate power loss through it).
    package var fileIO: any FileIO = PosixFileIO()
    /// Failpoints of the commit protocol and recovery (tests).
    package var failpoints = Failpoints()
    /// Registry blocks per segment file for a new database (tests use small files).
    package var registryHashMod = 256
    /// Log space written ahead at a time (tests use little).
    package var preallocateBytes: UInt64 = 8 << 20

    /// Default options.
    public init() {}
}

/// The shared, process-wide side of an open database: storage, locks, the L1 cache.
final class Engine: Sendable {
    let storage: any StorageBackend
    let locker: any Locker
    let cache: NodeCache
    let l2: (any L2Cache)?
    /// Time to live of L2 entries (nil: until evicted).
    let l2TTL: Duration?
    /// Prefix of L2 keys: physical IDs are unique only within one creation of a database, and
    /// a shared (Redis) cache can outlive a database deleted and re-created in the same folder.
    let l2Prefix: String
    /// Clustered mode: the commit lock and catch-up (nil standalone).
    let cluster: ClusterCoordinator?
    let fileStorage: FileStorage?
    let options: DatabaseOptions
    let path: String
    /// Transactions between taking their first lock and releasing their last. When none
    /// other than the caller is there, no lock can be held by another transaction, and a
    /// validation may skip looking up the locks of what it read.
    let lockHolders = Atomic<Int>(0)
    /// True when every lock holder is in this process (standalone), so ``lockHolders`` is exact.
    var lockCountIsExact: Bool { options.coordination == .standalone }
    /// Reads counted for tests and measurements (value blobs fetched, node blobs loaded).
    let reads = Mutex(ReadStatistics())
    /// Active transactions and compaction runs (standalone; see Compaction.swift).
    let compaction = CompactionCoordinator()

    init(storage: any StorageBackend, locker: any Locker, cache: NodeCache, l2: (any L2Cache)?,
         options: DatabaseOptions, path: String, cluster: ClusterCoordinator? = nil, l2TTL: Duration? = nil) {
        self.storage = storage
        self.fileStorage = storage as? FileStorage
        self.locker = locker
        self.cache = cache
        self.l2 = l2
        self.l2TTL = l2TTL
        self.l2Prefix = "B" + String((storage as? FileStorage)?.createdAt ?? 0, radix: 36) + ":"
        self.cluster = cluster
        self.options = options
        self.path = path
    }

    /// Loads a committed node that the L1 cache did not have (see
    /// ``TxNodeRepository``): reads the blob, decodes it and caches it, confirmed at `epoch`
    /// (the handle epoch read before the registry returned `handle`).
    func loadNode(_ handle: Handle, epoch: UInt64, schema: KeySchema) async throws -> EngineNode {
        // Standalone, the L2 is in this process: caching node blobs there would only
        // duplicate L1 (and the OS page cache), so nodes go through it only when it is shared.
        let bytes = options.coordination == .standalone
            ? try await storage.readBlob(handle.active) : try await readBlob(handle.active)
        reads.withLock { $0.nodeBlobReads += 1; $0.nodeBlobBytes += bytes.count }
        let node: EngineNode
        do {
            node = try NodeFormat.decode(bytes, expectedID: handle.logicalID, schema: schema)
        } catch let e as SOPError where e.code == .corrupt || e.code == .unsupportedFormat {
            throw SOPError(e.code, "node \(handle.logicalID): \(e.message)", path: e.path ?? path)
        }
        // Cached with its values in a buffer of their own (the blob read also holds keys and
        // IDs: kept, it would cost the cache 70 % more than the values).
        let cached = NodeFormat.forCache(node)
        cache.put(NodeCache.Key(logical: handle.logicalID, type: schema.tag), cached,
                  physical: handle.active, version: handle.version, epoch: epoch, cost: NodeFormat.cost(cached))
        return cached
    }

    /// Reads a separately stored value (through the L2 cache), counting it.
    func readValueBlob(_ physical: SOPID, cached: Bool = true) async throws -> [UInt8] {
        let bytes = cached ? try await readBlob(physical) : try await storage.readBlob(physical)
        reads.withLock { $0.valueBlobReads += 1; $0.valueBlobBytes += bytes.count }
        return bytes
    }

    /// Reads a blob through the L2 cache.
    func readBlob(_ physical: SOPID) async throws -> [UInt8] {
        guard let l2 else { return try await storage.readBlob(physical) }
        let key = l2Prefix + physical.hex
        // The cache is an optimisation: when it fails (Redis down), read the log.
        if let hit = try? await l2.get(key) { return hit }
        let bytes = try await storage.readBlob(physical)
        try? await l2.set(key, bytes, ttl: l2TTL)
        return bytes
    }

    /// `N:<store hex>:<node hex>`, built in one buffer (a commit makes one per changed node).
    static func lockKey(store: SOPID, node: SOPID) -> String {
        var b: [UInt8] = []
        b.reserveCapacity(67)
        b.append(UInt8(ascii: "N"))
        b.append(UInt8(ascii: ":"))
        NodeFormat.appendHex(store, to: &b)
        b.append(UInt8(ascii: ":"))
        NodeFormat.appendHex(node, to: &b)
        return String(decoding: b, as: UTF8.self)
    }
    static func lockKey(storeName: String) -> String { "S:\(storeName)" }
}

/// An open SOP database: named B-trees of `Codable` keys and values with ACID transactions.
///
/// ```swift
/// let db = try await Database.open(at: "/data/app")
/// try await db.write { tx in
///     let people = try await tx.store("people", key: String.self, value: Person.self)
///     try await people.add("ada", Person(born: 1815))
/// }
/// ```
public final class Database: Sendable {
    let engine: Engine

    /// The database folder (absolute).
    public var path: String { engine.path }

    private init(engine: Engine) {
        self.engine = engine
    }

    /// Opens the database in the folder `path`, creating it when it does not exist (unless
    /// `options.createIfMissing` is off), and recovers whatever a crash left half done.
    ///
    /// Standalone, the process holds an OS lock on the folder until ``close()`` or exit; a
    /// second process gets ``SOPError/Code/databaseLocked``.
    public static func open(at path: String, options: DatabaseOptions = .init()) async throws -> Database {
        var fo = FileStorageOptions()
        fo.createIfMissing = options.createIfMissing
        fo.checkpointBytes = options.checkpointBytes
        fo.fileIO = options.fileIO
        fo.failpoints = options.failpoints
        fo.hashMod = options.registryHashMod
        fo.preallocateBytes = options.preallocateBytes
        fo.segmentBytes = options.logSegmentBytes
        if case .redis(let url) = options.coordination {
            return try await openClustered(at: path, url: url, options: options, fileOptions: fo)
        }
        let storage = try await FileStorage.open(at: path, options: fo)
        let engine = Engine(storage: storage, locker: InMemoryLocker(), cache: NodeCache(capacity: options.nodeCacheBytes),
                            l2: options.blobCacheBytes > 0 ? InMemoryL2Cache(capacity: options.blobCacheBytes) : nil,
                            options: options, path: storage.path)
        engine.startCompaction()
        return Database(engine: engine)
    }

    private static func openClustered(at path: String, url: String, options: DatabaseOptions,
                                      fileOptions: FileStorageOptions) async throws -> Database {
        var fo = fileOptions
        fo.clustered = true
        // No zeros written ahead: other processes scan this process's segment up to its
        // size, and would read through the zeros at every catch-up.
        fo.preallocateBytes = 0
        // The namespace comes from the canonical path; a missing folder is created later,
        // under the commit lock (nothing is written when Redis cannot be reached).
        var folder = FileSystem.absolutePath(path)
        if FileSystem.exists(folder) {
            folder = canonicalPath(folder)
        } else {
            let parent = FileSystem.parentDirectory(of: folder)
            let name = String(folder.dropFirst(parent.count).drop { $0 == "/" })
            if FileSystem.exists(parent) {
                let cp = canonicalPath(parent)
                folder = (cp == "/" ? "" : cp) + "/" + name
            }
        }
        let cluster = try ClusterCoordinator(url: url, namespace: RedisNamespace.forDatabaseFolder(folder),
                                             lockTTL: options.clusterLockTTL)
        // Loaded under the commit lock: no other process checkpoints or commits meanwhile.
        let owner = SOPID.random()
        let storage: FileStorage
        do {
            try await cluster.acquire(owner: owner, deadline: .now + options.maxTransactionDuration)
        } catch {
            await cluster.client.close()
            throw error
        }
        do {
            storage = try await FileStorage.open(at: folder, options: fo)
            await cluster.release(owner: owner)
        } catch {
            await cluster.release(owner: owner)
            await cluster.client.close()
            throw error
        }
        let engine = Engine(storage: storage, locker: InMemoryLocker(), cache: NodeCache(capacity: options.nodeCacheBytes),
                            l2: cluster.l2, options: options, path: storage.path, cluster: cluster,
                            l2TTL: .seconds(600))
        return Database(engine: engine)
    }

    /// Opens the database with the given coordination (see ``Coordination``).
    public static func open(at path: String, coordination: Coordination) async throws -> Database {
        var o = DatabaseOptions()
        o.coordination = coordination
        return try await open(at: path, options: o)
    }

    /// Checkpoints and releases the database. Transactions still running fail afterwards.
    public func close() async throws {
        if let cluster = engine.cluster {
            do { try await engine.storage.close() } catch {
                await cluster.client.close()
                throw error
            }
            await cluster.client.close()
            return
        }
        await engine.compaction.close()
        try await engine.storage.close()
    }

    /// Redis round trips made by this database's client (clustered mode; 0 standalone).
    public var redisRoundTrips: Int { engine.cluster?.client.roundTrips ?? 0 }

    /// Starts a transaction. Prefer ``read(_:)`` and ``write(maxAttempts:_:)``, which commit,
    /// roll back and retry for you.
    public func beginTransaction(_ mode: Transaction.Mode = .forWriting,
                                 maxDuration: Duration? = nil) async throws -> Transaction {
        let d = maxDuration ?? engine.options.maxTransactionDuration
        guard d > .zero else { throw SOPError(.invalidArgument, "a transaction's maximum duration must be positive") }
        // Clustered: pick up what other processes committed (only complete prefixes of the
        // commit order), so the transaction starts from a recent state.
        if engine.cluster != nil, let fs = engine.fileStorage { try await fs.catchUpOptimistically() }
        let tx = Transaction(engine: engine, mode: mode, maxDuration: d)
        // Standalone: the transaction keeps old log segments from being compacted or deleted
        // while it may still write into or read from them.
        if engine.cluster == nil, let fs = engine.fileStorage {
            tx.compactionToken = engine.compaction.register { fs.compactionEpoch }
        }
        return tx
    }

    /// Runs `body` in a read-only transaction and commits it (which re-checks that nothing
    /// read has changed). Re-runs on a conflict.
    @discardableResult
    public func read<T>(isolation: isolated (any Actor)? = #isolation,
                        _ body: (Transaction) async throws -> T) async throws -> T {
        try await run(.forReading, maxAttempts: engine.options.maxWriteAttempts, body)
    }

    /// Runs `body` in a transaction for writing: commits when it returns, rolls back when it
    /// throws, and re-runs it (up to `maxAttempts` times, with jittered back-off) when the
    /// commit conflicts with another transaction. The closure re-reads fresh data each time.
    @discardableResult
    public func write<T>(maxAttempts: Int? = nil, isolation: isolated (any Actor)? = #isolation,
                         _ body: (Transaction) async throws -> T) async throws -> T {
        try await run(.forWriting, maxAttempts: maxAttempts ?? engine.options.maxWriteAttempts, body)
    }

    private func run<T>(_ mode: Transaction.Mode, maxAttempts: Int, isolation: isolated (any Actor)? = #isolation,
                        _ body: (Transaction) async throws -> T) async throws -> T {
        let attempts = max(1, maxAttempts)
        var attempt = 0
        while true {
            attempt += 1
            let tx = try await beginTransaction(mode)
            do {
                let result = try await body(tx)
                try await tx.commit()
                return result
            } catch let e as SOPError where e.isRetryable && attempt < attempts {
                await tx.rollback()
                // Jittered exponential back-off: 1 ms, 2 ms, 4 ms ... capped at 100 ms.
                let cap = min(100, 1 << min(attempt - 1, 7))
                try await Task.sleep(for: .microseconds(Int.random(in: 500...(cap * 1000))))
            } catch {
                await tx.rollback()
                throw error
            }
        }
    }

    /// The stores of the database as last committed, sorted by name.
    public func stores() -> [StoreInfo] {
        engine.storage.stores()
    }

    /// Blobs read since the database was opened (tests and measurements): separately stored
    /// values fetched, and nodes loaded because they were not in the L1 cache.
    /// True after a failed write: the database refuses writes until it is reopened (and
    /// recovery decides from what is on disk).
    public var needsReopen: Bool { (engine.storage as? FileStorage)?.needsReopen ?? false }

    /// Entries in the in-process L2 blob cache (tests).
    package var blobCacheEntries: Int {
        (engine.l2 as? InMemoryL2Cache)?.statistics.entries ?? 0
    }

    package var readStatistics: ReadStatistics {
        engine.reads.withLock { $0 }
    }

    /// Statistics of the L1 node cache.
    public var cacheStatistics: (bytes: Int, entries: Int, hits: Int, misses: Int) {
        engine.cache.statistics
    }
}

/// Counts of blobs read by an open database (see ``Database/readStatistics``).
package struct ReadStatistics: Sendable, Equatable {
    /// Separately stored values fetched (from the L2 cache or the log).
    package var valueBlobReads = 0
    /// Their bytes.
    package var valueBlobBytes = 0
    /// Nodes loaded that were not in the L1 cache.
    package var nodeBlobReads = 0
    /// Their encoded bytes.
    package var nodeBlobBytes = 0
}
