import Foundation
import SOPCore
import Synchronization

/// Tuning and behaviour of a ``FileStorage``.
public struct FileStorageOptions: Sendable {
    /// Registry blocks per segment file for stores created from now on (recorded in the database).
    public var hashMod: Int = 256
    /// Log bytes after which the committed state is checkpointed into the registry files.
    public var checkpointBytes: UInt64 = 64 << 20
    /// Log segment size after which a new segment is started. A segment is also the unit of
    /// compaction: only segments no longer appended to are compacted, so smaller segments
    /// reclaim dead space sooner (see `docs/performance.md`).
    public var segmentBytes: UInt64 = 64 << 20
    /// Create the database folder when it does not exist.
    public var createIfMissing: Bool = true
    /// Log space written ahead (as zeros) at a time, so commits append into allocated space
    /// and their `fdatasync` needs no metadata update. 0 turns it off.
    public var preallocateBytes: UInt64 = 8 << 20
    /// The file system (the real one, or a test double that injects faults).
    public var fileIO: any FileIO = PosixFileIO()
    /// Failpoints of the commit protocol and recovery (tests).
    public var failpoints = Failpoints()
    /// Clustered mode: several processes share the folder (a shared `flock`), each appends
    /// only to log segments it created, and commits are serialized by a lock outside this
    /// class (the caller holds it around ``catchUp()``, the commit and checkpoints).
    public var clustered = false
    /// Makes default options.
    public init() {}
}

/// Metadata file formats (JSON).
struct DatabaseFile: Codable {
    static let formatVersion = 1
    var format: Int
    var kind: String
    var hashMod: Int
    var createdAt: Int64
}

/// `checkpoint.json`. Format 1 (earlier builds): one pointer `segment`/`offset` (segments
/// before it are fully applied). Format 2: `segments` maps every log segment to the offset up
/// to which its commit records are applied (segments not named: from their start), and
/// `sequence` is the highest commit sequence applied.
struct CheckpointFile: Codable {
    var format: Int
    var segment: Int?
    var offset: UInt64?
    var segments: [String: UInt64]?
    var sequence: UInt64?
    /// Segments retired by a compaction whose deletion may not be durable yet: nothing refers
    /// to them, recovery skips them (and deletes them when present). Absent when empty.
    var retired: [Int]?
}

struct StoreListFile: Codable {
    struct Entry: Codable {
        var name: String
        var id: SOPID
        var dir: String
    }
    var format: Int
    var stores: [Entry]
}

/// The filesystem backend: one database folder holding
/// - `database.json` (format version, registry hash-mod), `stores.json` (the store list),
///   `checkpoint.json` (how far the log has been applied to the registry files);
/// - `stores/<name>.<id>/storeinfo.json` and `registry-N.reg` (4 KiB CRC-checked blocks,
///   two slots per block so an interrupted write never destroys the previous image);
/// - `log/NNNNNNNN.log`: append-only segments of framed records: blobs (nodes, values)
///   and commit records. A commit is decided when its record is durable (one `fdatasync`
///   covers the blobs written before it).
///
/// See `docs/format.md` and `docs/commit-protocol.md`.
public final class FileStorage: StorageBackend, @unchecked Sendable {
    // @unchecked: all mutable state is behind `state` (a Mutex) or `commitLock`.

    /// Record kinds in log segments.
    enum RecordKind: UInt8 {
        case blob = 1
        case commit = 2
    }

    /// The database folder (absolute).
    public let path: String
    let options: FileStorageOptions
    let pool: BlockingIOPool
    let files: any FileIO
    let failpoints: Failpoints
    private let directoryLock: any DirectoryLockHandle
    let commitLock = BlockingLock()
    /// Bytes of the current segment written ahead as zeros (guarded by `commitLock`).
    nonisolated(unsafe) private var preallocated: UInt64 = 0
    /// Bytes of the current segment allocated ahead (guarded by `commitLock`).
    nonisolated(unsafe) private var allocated: UInt64 = 0
    let state: Mutex<State>
    /// `State.handleEpoch`, stored (under `state`'s lock) after every apply that changes it,
    /// so that the hot path reads it without the lock.
    private let handleEpochMirror = Atomic<UInt64>(0)
    /// Set by the engine (standalone): see ``setCompactionHooks(readerHorizon:logGrew:)``.
    let hooks = Mutex<CompactionHooks>(CompactionHooks())
    /// Set by the first write-path failure: the process's view of the files is no longer
    /// trustworthy (a failed fsync may have lost data), so every later write is refused
    /// until the database is reopened and recovery decides from what is on disk.
    private let poison = Mutex<SOPError?>(nil)

    struct StoreState: Sendable {
        var info: StoreInfo
        var dir: String
        var registry: RegistryMap
        var infoDirty: Bool
    }

    struct State: @unchecked Sendable {
        // @unchecked: LogSegment/RegistryFile are thread-safe classes.
        var stores: [SOPID: StoreState] = [:]
        var byName: [String: SOPID] = [:]
        var segments: [Int: LogSegment] = [:]
        var currentSegment: Int = 1
        /// Clustered: this process's segment (created on first write), else nil.
        var ownSegment: Int?
        /// Per segment: the offset up to which its commit records are applied (the next
        /// catch-up scans from there).
        var applied: [Int: UInt64] = [:]
        /// The highest commit sequence applied.
        var lastSequence: UInt64 = 0
        var registryFiles: [String: RegistryFile] = [:]
        var catalogDirty = false
        var droppedDirs: [String] = []
        var logBytesSinceCheckpoint: UInt64 = 0
        /// See ``FileStorage/handleEpoch``: bumped by every applied record that changes a
        /// handle or drops a store.
        var handleEpoch: UInt64 = 0
        var closed = false
        var hashMod: Int = 256
        /// `database.json`'s creation time: tells a database from one re-created in its folder.
        var createdAt: Int64 = 0

        // Compaction (see Compaction.swift).
        /// Per segment: framed bytes of the blobs that are the active physical ID of a handle
        /// (live node blobs), maintained as commits are applied, rebuilt on open.
        var nodeLive: [Int: UInt64] = [:]
        /// Bumped when a segment is sealed and when a compaction commits; transactions record
        /// it when they begin (the engine's reader horizon is the smallest recorded value).
        var epoch: UInt64 = 0
        /// Per sealed segment: the epoch right after it was sealed (segments sealed before
        /// this process opened the database are absent: 0).
        var sealedEpoch: [Int: UInt64] = [:]
        /// Per segment sealed by this process: ``logBytesTotal`` when it was sealed (its age
        /// is the log written since).
        var sealedAtLogBytes: [Int: UInt64] = [:]
        /// Segments retired by a compaction, not yet deleted: the epoch right after the
        /// compaction commit (deleted once no transaction that began before it is active).
        var retired: [Int: UInt64] = [:]
        /// Segments this process deleted (a read of one is a stale transaction's, not damage).
        var deleted: Set<Int> = []
        /// Per sealed segment: live value-blob bytes found by the last census (an upper bound
        /// from then on: nothing new is written into a sealed segment).
        var valueCensus: [Int: UInt64] = [:]
        /// Log bytes appended since open (census staleness).
        var logBytesTotal: UInt64 = 0
        /// ``logBytesTotal`` at the last census (nil: none yet).
        var censusLogBytes: UInt64?
        var censusReadBytes: UInt64 = 0
        /// True while the current segment holds nothing but compaction output.
        var currentIsCompacted = true
    }

    private init(path: String, options: FileStorageOptions, pool: BlockingIOPool, lock: any DirectoryLockHandle,
                 state: State) {
        self.path = path
        self.options = options
        self.pool = pool
        self.files = options.fileIO
        self.failpoints = options.failpoints
        self.directoryLock = lock
        self.state = Mutex(state)
        handleEpochMirror.store(state.handleEpoch, ordering: .releasing)
    }

    // MARK: - Opening and recovery

    /// Opens (or creates) the database in `path`, recovering from whatever a crash left:
    /// committed records in the log are applied to the registry, an unfinished tail is cut.
    public static func open(at path: String, options: FileStorageOptions = .init(),
                            pool: BlockingIOPool = .shared) async throws -> FileStorage {
        try await pool.run {
            try openBlocking(at: FileSystem.absolutePath(path), options: options, pool: pool)
        }
    }

    private static func openBlocking(at path: String, options: FileStorageOptions,
                                     pool: BlockingIOPool) throws -> FileStorage {
        let fs = options.fileIO
        if !fs.exists(path) {
            guard options.createIfMissing else {
                throw SOPError(.notFound, "no database at \(path)", path: path)
            }
            try fs.createDirectory(path)
        }
        guard fs.isDirectory(path) else {
            throw SOPError(.invalidArgument, "\(path) is not a directory", path: path)
        }
        let dbFile = path + "/database.json"
        if !fs.exists(dbFile) {
            let entries = try fs.list(path)
            // What a creation interrupted by a crash can leave: the files it writes before
            // database.json and the temporary files of their atomic writes (`name.tmp-…`).
            let allowed: Set<String> = ["LOCK", "log", "stores", "stores.json", "checkpoint.json"]
            func leftByCreation(_ name: String) -> Bool {
                if allowed.contains(name) { return true }
                guard let r = name.range(of: ".tmp-") else { return false }
                let base = String(name[..<r.lowerBound])
                return base == "database.json" || base == "stores.json" || base == "checkpoint.json"
            }
            if let stray = entries.first(where: { !leftByCreation($0) }) {
                throw SOPError(.invalidArgument,
                               "\(path) is not a SOP database (no database.json; it holds '\(stray)')", path: path)
            }
            guard options.createIfMissing else {
                throw SOPError(.notFound, "no database at \(path)", path: path)
            }
        }
        let lock = options.clustered ? try fs.lockDirectoryShared(path) : try fs.lockDirectory(path)
        do {
            return try recover(path: path, options: options, pool: pool, lock: lock)
        } catch {
            lock.release()
            throw error
        }
    }

    private static func recover(path: String, options: FileStorageOptions, pool: BlockingIOPool,
                                lock: any DirectoryLockHandle) throws -> FileStorage {
        let fs = options.fileIO
        let dbFile = path + "/database.json"
        var st = State()
        if !fs.exists(dbFile) {
            try initialize(path: path, options: options)
        }
        // Leftovers of interrupted atomic writes and file creations are never part of the
        // database: the real file is only ever renamed into place complete.
        try removeTemporaryFiles(in: path, fs)
        if !options.clustered {
            // Clustered, another process may be creating a segment under a temporary name.
            try removeTemporaryFiles(in: path + "/log", fs)
        }
        let db: DatabaseFile = try readJSON(dbFile, fs)
        guard db.format == DatabaseFile.formatVersion, db.kind == "sop-database" else {
            throw SOPError(.unsupportedFormat, "database format \(db.format) is not supported (this build reads 1)", path: dbFile)
        }
        guard db.hashMod >= 1 && db.hashMod <= 1_000_000 else {
            throw SOPError(.corrupt, "database.json has an invalid hashMod \(db.hashMod)", path: dbFile)
        }
        st.hashMod = db.hashMod
        st.createdAt = db.createdAt
        let cp: CheckpointFile = try readJSON(path + "/checkpoint.json", fs)
        let list: StoreListFile = try readJSON(path + "/stores.json", fs)
        for e in list.stores {
            let dir = path + "/stores/" + e.dir
            let infoPath = dir + "/storeinfo.json"
            let info: StoreInfo = try readJSON(infoPath, fs)
            guard info.id == e.id, info.name == e.name else {
                throw SOPError(.corrupt, "storeinfo.json does not match stores.json for store '\(e.name)'", path: infoPath)
            }
            var reg = RegistryMap(hashMod: db.hashMod, capacity: RegistryFile.capacity)
            guard fs.isDirectory(dir) else {
                throw SOPError(.corrupt, "the folder of store '\(e.name)' is missing", path: dir)
            }
            try removeTemporaryFiles(in: dir, fs)
            for name in try fs.list(dir) where name.hasPrefix("registry-") && name.hasSuffix(".reg") {
                let f = try RegistryFile.open(path: dir + "/" + name, io: fs)
                guard f.hashMod == db.hashMod else {
                    throw SOPError(.corrupt, "registry file has hashMod \(f.hashMod), database has \(db.hashMod)", path: f.path)
                }
                let blocks = try f.readAllBlocks()
                for (i, hs) in blocks.enumerated() where !hs.isEmpty {
                    do { try reg.load(segment: f.segmentIndex, block: i, hs) } catch let e as SOPError {
                        throw SOPError(.corrupt, e.message, path: f.path)
                    }
                }
                st.registryFiles[f.path] = f
            }
            st.stores[info.id] = StoreState(info: info, dir: dir, registry: reg, infoDirty: false)
            st.byName[info.name] = info.id
        }
        // The log: replay commit records written after the checkpoint (from every segment, in
        // commit sequence order), cut unfinished tails.
        let logDir = path + "/log"
        try options.failpoints.hit("recovery.afterLoad")
        // Segments a compaction retired: nothing refers to them and nothing in them needs
        // replaying (checkpoint.json names them only after the compaction commit is applied
        // to the registry files). One still present (its deletion was interrupted, or a power
        // loss undid it) is deleted now; clustered opens leave files alone.
        let retired = Set(cp.retired ?? [])
        var present = try fs.list(logDir).compactMap { n -> Int? in
            n.hasSuffix(".log") ? Int(n.dropLast(4)) : nil
        }
        if !retired.isEmpty && present.contains(where: retired.contains) {
            if !options.clustered {
                for n in present where retired.contains(n) { try fs.remove(logDir + "/" + segmentName(n)) }
                try fs.syncDirectory(logDir)
            }
            present.removeAll(where: retired.contains)
        }
        let numbers = present.sorted()
        guard let lastNumber = numbers.last else {
            throw SOPError(.corrupt, "the log has no segment", path: logDir)
        }
        var starts: [Int: UInt64] = [:]
        if let map = cp.segments {
            for (k, v) in map {
                if let n = Int(k), retired.contains(n) { continue }
                guard let n = Int(k), numbers.contains(n) else {
                    throw SOPError(.corrupt, "log segment \(k) named by checkpoint.json is missing", path: logDir)
                }
                starts[n] = max(v, UInt64(LogSegment.headerSize))
            }
        } else {
            guard let cpSegment = cp.segment, numbers.contains(cpSegment) else {
                throw SOPError(.corrupt, "log segment \(cp.segment ?? -1) named by checkpoint.json is missing", path: logDir)
            }
            starts[cpSegment] = max(cp.offset ?? 64, UInt64(LogSegment.headerSize))
        }
        var found: [Found] = []
        var lastCommitEnds: [Int: UInt64] = [:]
        for n in numbers {
            let seg = try LogSegment.open(path: logDir + "/" + segmentName(n), io: fs)
            st.segments[n] = seg
            if cp.segments == nil, let cpSegment = cp.segment, n < cpSegment {
                st.applied[n] = seg.end     // before the old-style pointer: fully applied
                continue
            }
            let start = starts[n] ?? UInt64(LogSegment.headerSize)
            lastCommitEnds[n] = try scanCommits(seg, from: start, into: &found)
        }
        found.sort(by: Found.precedes)
        for f in found {
            apply(f.record, to: &st, root: path)
            if let q = f.record.sequence { st.lastSequence = max(st.lastSequence, q) }
        }
        st.lastSequence = max(st.lastSequence, cp.sequence ?? 0)
        let replayed = found.count
        for (n, end) in lastCommitEnds { st.applied[n] = end }
        try options.failpoints.hit("recovery.afterReplay")
        if !options.clustered {
            // Anything after a segment's last complete commit belongs to a commit that never
            // happened: cut it so new records follow the last decided one. (Clustered, other
            // processes may be appending: their segments are left alone.)
            for n in numbers {
                guard let seg = st.segments[n], let end = lastCommitEnds[n], seg.end > end else { continue }
                try seg.truncate(to: end)
                try seg.dataSync()
            }
        }
        try options.failpoints.hit("recovery.afterTruncate")
        st.currentSegment = lastNumber
        if options.clustered { st.ownSegment = nil }
        st.nodeLive = liveNodeBytes(st.stores)
        st.currentIsCompacted = false
        let storage = FileStorage(path: path, options: options, pool: pool, lock: lock, state: st)
        if replayed > 0 || list.stores.count != st.stores.count {
            try storage.checkpointBlocking()
        }
        try storage.removeOrphanStoreDirectories()
        return storage
    }

    /// A commit record found by a scan.
    struct Found {
        var segment: Int
        var offset: UInt64
        var end: UInt64
        var record: CommitRecord
        /// Commit order: by sequence (records without one — format 1, standalone — first, in
        /// log order), then by place in the log.
        static func precedes(_ a: Found, _ b: Found) -> Bool {
            (a.record.sequence ?? 0, a.segment, a.offset) < (b.record.sequence ?? 0, b.segment, b.offset)
        }
    }

    /// Collects the complete commit records of `seg` from `start`; returns the end of the last
    /// one (or `start`).
    static func scanCommits(_ seg: LogSegment, from start: UInt64, into found: inout [Found]) throws -> UInt64 {
        var lastCommitEnd = start
        _ = try seg.scan(from: start) { offset, kind, payload in
            guard kind == RecordKind.commit.rawValue else { return }
            let record = try CommitRecordCodec.decode(payload, path: seg.path, offset: offset)
            let end = offset + LogSegment.framedSize(payloadLength: payload.count)
            found.append(Found(segment: seg.number, offset: offset, end: end, record: record))
            lastCommitEnd = end
        }
        return lastCommitEnd
    }

    static func segmentName(_ n: Int) -> String {
        let s = String(n)
        return String(repeating: "0", count: max(0, 8 - s.count)) + s + ".log"
    }

    private static func removeTemporaryFiles(in dir: String, _ fs: any FileIO) throws {
        guard fs.isDirectory(dir) else { return }
        for name in try fs.list(dir) where name.contains(".tmp-") { try fs.remove(dir + "/" + name) }
    }

    private static func initialize(path: String, options: FileStorageOptions) throws {
        let fs = options.fileIO
        try fs.createDirectory(path + "/log")
        try fs.createDirectory(path + "/stores")
        let logDir = path + "/log"
        for n in try fs.list(logDir) { try fs.remove(logDir + "/" + n) }
        let seg = try LogSegment.create(path: logDir + "/" + segmentName(1), number: 1, io: fs)
        seg.close()
        try writeJSON(StoreListFile(format: 1, stores: []), to: path + "/stores.json", fs)
        try writeJSON(CheckpointFile(format: 2, segments: ["1": 64], sequence: 0), to: path + "/checkpoint.json", fs)
        // database.json last: its presence says the folder is a complete, empty database.
        try writeJSON(DatabaseFile(format: DatabaseFile.formatVersion, kind: "sop-database",
                                   hashMod: options.hashMod, createdAt: SystemClock().nowMilliseconds()),
                      to: path + "/database.json", fs)
    }

    static func readJSON<T: Decodable>(_ path: String, _ fs: any FileIO) throws -> T {
        let bytes: [UInt8]
        do { bytes = try fs.readFile(path) } catch let e as SOPError where e.code == .io {
            throw SOPError(.corrupt, "cannot read \(path): \(e.message)", path: path)
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            throw SOPError(.corrupt, "\(path) is not valid: \(error)", path: path)
        }
    }

    static func writeJSON<T: Encodable>(_ value: T, to path: String, _ fs: any FileIO) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try enc.encode(value)
        try fs.atomicWrite(path, Array(data))
    }

    private func removeOrphanStoreDirectories() throws {
        let known = state.withLock { st in Set(st.stores.values.map { $0.dir }) }
        let root = path + "/stores"
        for name in try files.list(root) where !known.contains(root + "/" + name) {
            try files.removeTree(root + "/" + name)
        }
    }

    /// True after a write failed: the database must be reopened before it accepts writes.
    public var needsReopen: Bool { poison.withLock { $0 != nil } }

    /// Throws when an earlier write failed (see ``poison``).
    func checkNotPoisoned() throws {
        if let e = poison.withLock({ $0 }) { throw e }
    }

    /// Runs a write-path step; a failure poisons the storage.
    func guarded<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            poison.withLock { p in
                if p == nil {
                    let why = (error as? SOPError)?.message ?? "\(error)"
                    p = SOPError(.io, "the database must be reopened after a failed write (\(why))", path: path)
                }
            }
            throw error
        }
    }

    // MARK: - Applying commits

    static func apply(_ r: CommitRecord, to st: inout State, root: String) {
        if !r.handles.isEmpty || !r.droppedStores.isEmpty { st.handleEpoch &+= 1 }
        for info in r.storeInfos {
            if var s = st.stores[info.id] {
                s.info = info
                s.infoDirty = true
                st.stores[info.id] = s
            } else {
                let dir = root + "/stores/" + info.name + "." + String(info.id.hex.prefix(12))
                st.stores[info.id] = StoreState(
                    info: info, dir: dir,
                    registry: RegistryMap(hashMod: st.hashMod, capacity: RegistryFile.capacity), infoDirty: true)
                st.byName[info.name] = info.id
                st.catalogDirty = true
            }
        }
        for c in r.handles {
            guard st.stores[c.store] != nil else { continue }
            if let old = st.stores[c.store]!.registry[c.logicalID] { st.countLive(old.active, -1) }
            if let h = c.handle {
                st.countLive(h.active, 1)
                st.stores[c.store]!.registry.put(h)
            } else {
                st.stores[c.store]!.registry.remove(c.logicalID)
            }
        }
        for id in r.droppedStores {
            guard let s = st.stores.removeValue(forKey: id) else { continue }
            for h in s.registry.handles.values { st.countLive(h.active, -1) }
            if st.byName[s.info.name] == id { st.byName[s.info.name] = nil }
            st.droppedDirs.append(s.dir)
            st.catalogDirty = true
        }
    }

    // MARK: - StorageBackend

    public func stores() -> [StoreInfo] {
        state.withLock { st in st.stores.values.map(\.info) }.sorted { $0.name < $1.name }
    }

    public func storeInfo(named name: String) -> StoreInfo? {
        state.withLock { st in st.byName[name].flatMap { st.stores[$0]?.info } }
    }

    public func storeInfo(id: SOPID) -> StoreInfo? {
        state.withLock { st in st.stores[id]?.info }
    }

    public func handle(store: SOPID, logicalID: SOPID) -> Handle? {
        // A mutating call reaches the registry through the dictionary's in-place accessor; a
        // plain read would copy the whole store state (retaining every field) per lookup.
        // (Through `values[index]`, whose `_modify` accessor yields the entry in place: the
        // optional-chained `stores[store]?` form still copied the store's state here.)
        state.withLock { st in
            guard let i = st.stores.index(forKey: store) else { return nil }
            return st.stores.values[i].registry.peek(logicalID)
        }
    }

    public var handleEpoch: UInt64 {
        handleEpochMirror.load(ordering: .acquiring)
    }

    public func handles(store: SOPID) -> [Handle] {
        state.withLock { st in st.stores[store].map { Array($0.registry.handles.values) } ?? [] }
    }

    /// Physical IDs are locations: high = segment << 32 | payload length, low = record offset.
    static func physicalID(segment: Int, offset: UInt64, length: Int) -> SOPID {
        SOPID(high: UInt64(segment) << 32 | UInt64(length), low: offset)
    }

    static func location(of id: SOPID) -> (segment: Int, offset: UInt64, length: Int) {
        (Int(id.high >> 32), id.low, Int(id.high & 0xFFFF_FFFF))
    }

    /// The open segment a blob is in.
    private func segment(holding id: SOPID, _ loc: (segment: Int, offset: UInt64, length: Int)) throws -> LogSegment {
        let (seg, deleted) = state.withLock { ($0.segments[loc.segment], $0.deleted.contains(loc.segment)) }
        if let seg { return seg }
        if deleted {
            // Only a transaction older than the compaction could still hold this location
            // (segments are deleted once none is left, so this is a safety net).
            throw SOPError(.conflict, "transaction conflict: blob \(id) was in log segment \(loc.segment), which a compaction removed")
        }
        throw SOPError(.corrupt, "blob \(id) names log segment \(loc.segment), which does not exist", path: path + "/log")
    }

    public func readBlob(_ id: SOPID) async throws -> [UInt8] {
        let loc = FileStorage.location(of: id)
        let seg = try segment(holding: id, loc)
        return try await pool.run {
            try seg.readRecord(at: loc.offset, payloadLength: loc.length, expectedKind: RecordKind.blob.rawValue)
        }
    }

    /// Reads a blob on the calling thread (for `check` and tools already off the cooperative pool).
    func readBlobBlocking(_ id: SOPID) throws -> [UInt8] {
        let loc = FileStorage.location(of: id)
        let seg = try segment(holding: id, loc)
        return try seg.readRecord(at: loc.offset, payloadLength: loc.length, expectedKind: RecordKind.blob.rawValue)
    }

    public func writeBlobs(_ blobs: [[UInt8]]) async throws -> [SOPID] {
        if blobs.isEmpty { return [] }
        return try await pool.run { [self] in
            try commitLock.withLock {
                try checkNotPoisoned()
                let seg = try openSegmentForAppend()
                let offsets = try guarded { () throws -> [UInt64] in
                    try failpoints.hit("blob.beforeWrite")
                    let o = try seg.appendBatch(blobs.map { (kind: RecordKind.blob.rawValue, payload: $0) })
                    try failpoints.hit("blob.afterWrite")
                    return o
                }
                var ids: [SOPID] = []
                ids.reserveCapacity(blobs.count)
                var bytes: UInt64 = 0
                for (i, o) in offsets.enumerated() {
                    ids.append(FileStorage.physicalID(segment: seg.number, offset: o, length: blobs[i].count))
                    bytes += LogSegment.framedSize(payloadLength: blobs[i].count)
                }
                state.withLock { st in
                    st.logBytesSinceCheckpoint += bytes
                    st.logBytesTotal += bytes
                    st.currentIsCompacted = false
                }
                return ids
            }
        }
    }

    /// The segment new records go to. Caller holds `commitLock`. Clustered, that is a segment
    /// this process created (claimed on first use).
    func openSegmentForAppend() throws -> LogSegment {
        let (closed, current, own) = state.withLock { st in
            (st.closed, st.segments[st.currentSegment], st.ownSegment.flatMap { st.segments[$0] })
        }
        guard !closed else { throw SOPError(.invalidState, "the database is closed", path: path) }
        if options.clustered {
            if let own { return own }
            return try claimSegment()
        }
        guard let current else { throw SOPError(.internalError, "current log segment is missing", path: path) }
        return current
    }

    /// Clustered: creates a new segment numbered after every existing one (an exclusive create:
    /// retried when another process took the number) and makes it this process's.
    private func claimSegment() throws -> LogSegment {
        let logDir = path + "/log"
        for _ in 0..<1000 {
            let highest = try files.list(logDir).compactMap { n -> Int? in
                n.hasSuffix(".log") ? Int(n.dropLast(4)) : nil
            }.max() ?? 0
            let n = highest + 1
            do {
                let seg = try LogSegment.createExclusive(path: logDir + "/" + FileStorage.segmentName(n), number: n, io: files)
                state.withLock { st in
                    st.segments[n] = seg
                    st.ownSegment = n
                    st.applied[n] = UInt64(LogSegment.headerSize)
                }
                return seg
            } catch let e as SOPError where e.code == .alreadyExists {
                continue
            }
        }
        throw SOPError(.io, "cannot claim a new log segment (too many concurrent claims)", path: logDir)
    }

    /// Clustered: applies the commits other processes made since the last catch-up, in
    /// sequence order. The caller holds the cluster's commit lock, so every commit with a
    /// lower sequence is complete on disk (a torn record of a dead process ends its segment
    /// and is never completed).
    public func catchUp() async throws {
        try await pool.run { [self] in
            try commitLock.withLock {
                try checkNotPoisoned()
                try catchUpLocked(contiguousOnly: false)
            }
        }
    }

    /// Clustered, without the cluster's lock: applies only the commits that directly follow
    /// the last applied sequence (a later one may be on disk before an earlier one is seen).
    public func catchUpOptimistically() async throws {
        try await pool.run { [self] in
            try commitLock.withLock {
                try checkNotPoisoned()
                try catchUpLocked(contiguousOnly: true)
            }
        }
    }

    private func catchUpLocked(contiguousOnly: Bool) throws {
        guard options.clustered else { return }
        let logDir = path + "/log"
        let (known, own, applied) = state.withLock { st in (st.segments, st.ownSegment, st.applied) }
        var segs = known
        for name in try files.list(logDir) where name.hasSuffix(".log") {
            guard let n = Int(name.dropLast(4)), segs[n] == nil else { continue }
            segs[n] = try LogSegment.open(path: logDir + "/" + name, io: files)
        }
        var found: [Found] = []
        for (n, seg) in segs where n != own {
            _ = try FileStorage.scanCommits(seg, from: applied[n] ?? UInt64(LogSegment.headerSize), into: &found)
        }
        found.sort(by: Found.precedes)
        let root = path
        state.withLock { st in
            for (n, seg) in segs where st.segments[n] == nil { st.segments[n] = seg }
            for f in found {
                let q = f.record.sequence ?? 0
                if contiguousOnly && q > st.lastSequence + 1 { break }
                FileStorage.apply(f.record, to: &st, root: root)
                st.lastSequence = max(st.lastSequence, q)
                st.logBytesSinceCheckpoint += f.end - (st.applied[f.segment] ?? f.offset)
                st.applied[f.segment] = f.end
            }
            handleEpochMirror.store(st.handleEpoch, ordering: .releasing)
        }
    }

    private struct View: CommittedState {
        let storage: FileStorage
        func storeInfo(named name: String) -> StoreInfo? { storage.storeInfo(named: name) }
        func storeInfo(id: SOPID) -> StoreInfo? { storage.storeInfo(id: id) }
        func handle(store: SOPID, logicalID: SOPID) -> Handle? { storage.handle(store: store, logicalID: logicalID) }
    }

    public func commit(_ prepare: @escaping @Sendable (any CommittedState) throws -> CommitRecord) async throws {
        try await commit(blobs: []) { _, view in try prepare(view) }
    }

    @discardableResult
    public func commit(blobs: [[UInt8]],
                       _ prepare: @escaping @Sendable ([SOPID], any CommittedState) throws -> CommitRecord) async throws -> [SOPID] {
        let result = try await pool.run { [self] in
            try commitLock.withLock { try commitLocked(blobs: blobs, prepare) }
        }
        if result.needCheckpoint {
            // The commit is durable whatever happens here: a failed checkpoint poisons the
            // storage (later writes fail until reopened, and recovery replays the log), but
            // it does not turn this commit into an error the caller might retry.
            do { try await checkpoint() } catch let crash as FailpointCrash { throw crash } catch {}
        }
        if result.needCheckpoint || result.rotated { logGrew() }
        return result.ids
    }

    /// What ``commitLocked(blobs:compaction:_:)`` did.
    struct CommitResult {
        var ids: [SOPID] = []
        /// False when the record was empty (nothing written).
        var written = false
        var needCheckpoint = false
        /// The commit filled its segment and a new one was started.
        var rotated = false
    }

    /// A commit; the caller holds `commitLock`. `compaction`: the commit only moves blobs
    /// (the current segment stays "compaction output only"). An empty record is not written
    /// unless `allowEmpty`.
    func commitLocked(blobs: [[UInt8]], compaction: Bool = false, allowEmpty: Bool = false,
                      _ prepare: ([SOPID], any CommittedState) throws -> CommitRecord) throws -> CommitResult {
        try checkNotPoisoned()
        let seg = try openSegmentForAppend()
        // Where the blobs will land: appends are serialized by `commitLock`, so the
        // offsets are known before writing, and the record can name them.
        var offsets: [UInt64] = []
        offsets.reserveCapacity(blobs.count)
        let start = seg.end
        var at = start
        for b in blobs {
            offsets.append(at)
            at += LogSegment.framedSize(payloadLength: b.count)
        }
        let ids = zip(offsets, blobs).map { FileStorage.physicalID(segment: seg.number, offset: $0, length: $1.count) }
        var record = try prepare(ids, View(storage: self))
        if record.isEmpty && blobs.isEmpty && !allowEmpty { return CommitResult() }
        record.sequence = state.withLock { $0.lastSequence } + 1
        let payload = CommitRecordCodec.encode(record)
        return try guarded {
            try failpoints.hit("blob.beforeWrite")
            try failpoints.hit("commit.beforeRecordWrite")
            let recordEnd = at + LogSegment.framedSize(payloadLength: payload.count)
            // Small commits append into zeros written ahead: their sync then flushes data
            // only (no file-metadata journal commit). Large commits append into space
            // allocated ahead: growing a file a page at a time costs ~10x the copy itself,
            // and writing zeros first would double their bytes.
            let small = recordEnd - start < 256 << 10
            if options.preallocateBytes > 0 && recordEnd > max(preallocated, allocated) {
                if small {
                    preallocated = recordEnd + options.preallocateBytes
                    try seg.preallocate(to: preallocated)
                } else {
                    allocated = recordEnd + max(4 * options.preallocateBytes, 2 * (recordEnd - start))
                    try seg.allocate(to: allocated)
                }
            }
            var batch = blobs.map { (kind: RecordKind.blob.rawValue, payload: $0) }
            batch.append((kind: RecordKind.commit.rawValue, payload: payload))
            let written = try seg.appendBatch(batch)   // blobs and the record: one write
            guard Array(written.dropLast()) == offsets else {
                throw SOPError(.internalError, "log append landed at unexpected offsets", path: seg.path)
            }
            try failpoints.hit("blob.afterWrite")
            try failpoints.hit("commit.afterRecordWrite")
            try seg.dataSync()      // the commit point
            try failpoints.hit("commit.afterRecordSync")
            let root = path
            let size = seg.end
            let bytes = state.withLock { st -> UInt64 in
                FileStorage.apply(record, to: &st, root: root)
                handleEpochMirror.store(st.handleEpoch, ordering: .releasing)
                st.lastSequence = record.sequence ?? st.lastSequence
                st.applied[seg.number] = recordEnd
                let appended = (at - start) + LogSegment.framedSize(payloadLength: payload.count)
                st.logBytesSinceCheckpoint += appended
                st.logBytesTotal += appended
                if !compaction { st.currentIsCompacted = false }
                return st.logBytesSinceCheckpoint
            }
            try failpoints.hit("commit.afterApply")
            var result = CommitResult(ids: ids, written: true, needCheckpoint: bytes >= options.checkpointBytes)
            if size >= options.segmentBytes {
                try rotateSegment(after: seg)
                result.rotated = true
            }
            return result
        }
    }

    /// Starts a new log segment. Caller holds `commitLock`; everything in `seg` is synced.
    func rotateSegment(after seg: LogSegment) throws {
        // Cut the zeros written ahead: a finished segment ends with its last record.
        try seg.truncate(to: seg.end)
        try seg.dataSync()
        preallocated = 0
        allocated = 0
        if options.clustered {
            _ = try claimSegment()
            return
        }
        let n = seg.number + 1
        let next = try LogSegment.create(path: path + "/log/" + FileStorage.segmentName(n), number: n, io: files)
        state.withLock { st in
            st.segments[n] = next
            st.currentSegment = n
            // Transactions that begin from now on cannot write into the sealed segment.
            st.epoch += 1
            st.sealedEpoch[seg.number] = st.epoch
            st.sealedAtLogBytes[seg.number] = st.logBytesTotal
            st.currentIsCompacted = true
        }
    }

    public func checkpoint() async throws {
        try await pool.run { [self] in try checkpointBlocking() }
    }

    /// Writes dirty registry blocks and store infos, then moves the checkpoint pointer.
    /// Torn-write safe: blocks alternate between two slots, and until `checkpoint.json`
    /// moves, recovery re-applies the log over whatever was written.
    func checkpointBlocking() throws {
        try commitLock.withLock {
            try checkNotPoisoned()
            try guarded { try checkpointLocked() }
        }
    }

    func checkpointLocked() throws {
        try failpoints.hit("checkpoint.begin")
        let snapshot = state.withLock { st in st }
        var touched: [String: (file: RegistryFile, blocks: [(index: Int, handles: [Handle])])] = [:]
        // Clustered, other processes checkpoint too: read each registry file's slot state
        // afresh rather than trusting what this process last wrote.
        var regFiles = options.clustered ? [:] : snapshot.registryFiles
        for (id, s) in snapshot.stores {
            if !files.exists(s.dir) { try files.createDirectory(s.dir) }
            for slot in s.registry.dirty.sorted(by: { ($0.segment, $0.block) < ($1.segment, $1.block) }) {
                let fpath = s.dir + "/registry-\(slot.segment).reg"
                let f: RegistryFile
                if let existing = regFiles[fpath] { f = existing } else {
                    f = files.exists(fpath)
                        ? try RegistryFile.open(path: fpath, io: files)
                        : try RegistryFile.create(path: fpath, hashMod: s.registry.hashMod, segmentIndex: slot.segment,
                                                  io: files)
                    regFiles[fpath] = f
                }
                touched[fpath, default: (f, [])].blocks.append((slot.block, s.registry.contents(of: slot)))
            }
            if s.infoDirty {
                try FileStorage.writeJSON(s.info, to: s.dir + "/storeinfo.json", files)
            }
            _ = id
        }
        for t in touched.values {
            try t.file.writeBlocks(t.blocks) { try failpoints.hit("checkpoint.betweenRegistrySlots") }
        }
        try failpoints.hit("checkpoint.afterRegistryWrite")
        try failpoints.hit("checkpoint.afterStoreInfo")
        if snapshot.catalogDirty {
            let entries = snapshot.stores.values
                .map { StoreListFile.Entry(name: $0.info.name, id: $0.info.id,
                                           dir: String($0.dir.split(separator: "/").last!)) }
                .sorted { $0.name < $1.name }
            try FileStorage.writeJSON(StoreListFile(format: 1, stores: entries), to: path + "/stores.json", files)
        }
        try failpoints.hit("checkpoint.afterCatalog")
        var map: [String: UInt64] = [:]
        for (n, seg) in snapshot.segments {
            map[String(n)] = snapshot.applied[n] ?? seg.end
        }
        let retired = snapshot.retired.keys.sorted()
        try FileStorage.writeJSON(CheckpointFile(format: 2, segments: map, sequence: snapshot.lastSequence,
                                                 retired: retired.isEmpty ? nil : retired),
                                  to: path + "/checkpoint.json", files)
        try failpoints.hit("checkpoint.afterPointer")
        for dir in snapshot.droppedDirs { try files.removeTree(dir) }
        try failpoints.hit("checkpoint.afterDropCleanup")
        if options.clustered {
            for f in regFiles.values { f.close() }
            regFiles = [:]
        }
        state.withLock { st in
            st.registryFiles = regFiles
            for id in snapshot.stores.keys where st.stores[id] != nil {
                st.stores[id]!.registry.dirty.removeAll()
                st.stores[id]!.infoDirty = false
            }
            st.catalogDirty = false
            st.droppedDirs.removeAll()
            st.logBytesSinceCheckpoint = 0
        }
    }

    public func close() async throws {
        let already = state.withLock { $0.closed }
        if already { return }
        var failure: (any Error)?
        // Clustered, checkpoints need the cluster's commit lock: the caller runs them while
        // holding it (``checkpoint()``); a close just lets go (the log is replayed by others).
        if poison.withLock({ $0 }) == nil && !options.clustered {
            do { try await checkpoint() } catch { failure = error }
        }
        try await pool.run { [self] in
            commitLock.withLock {
                let (segs, regs) = state.withLock { st -> ([LogSegment], [RegistryFile]) in
                    st.closed = true
                    return (Array(st.segments.values), Array(st.registryFiles.values))
                }
                for s in segs { s.close() }
                for r in regs { r.close() }
                directoryLock.release()
            }
        }
        if let failure { throw failure }
    }

    // MARK: - Diagnostics

    /// When the database was created (from `database.json`): physical IDs are unique only
    /// within one creation, so caches shared between processes key blobs by both.
    public var createdAt: Int64 { state.withLock { $0.createdAt } }

    /// Total bytes of log records since the last checkpoint.
    public var logBytesSinceCheckpoint: UInt64 { state.withLock { $0.logBytesSinceCheckpoint } }

    /// The files of the database (for `check`): registry files and log segments.
    public var logSegmentPaths: [String] {
        state.withLock { st in st.segments.keys.sorted().map { st.segments[$0]!.path } }
    }
}

/// A blocking mutual-exclusion lock for code running on I/O threads (never on the
/// cooperative pool, where blocking would starve other tasks).
final class BlockingLock: @unchecked Sendable {
    private var m = pthread_mutex_t()
    init() { pthread_mutex_init(&m, nil) }
    deinit { pthread_mutex_destroy(&m) }
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&m)
        defer { pthread_mutex_unlock(&m) }
        return try body()
    }
}

extension FileStorage {
    /// Reads every log segment end to end and reports records that fail their checksums
    /// before a segment's end (a torn tail is cut on open, so any such record is damage), and
    /// references into log segments that do not exist or that a compaction retired.
    ///
    /// Clustered, a segment may end with a record another process is writing now, or with the
    /// torn record of a process that died, which a scan cannot tell from damage: the segments
    /// are not scanned then (every referenced blob is still read and verified by `check`; run
    /// `sop check` standalone, which cuts dead tails on open, for the full verification).
    public func verifyLog() async throws -> [String] {
        if options.clustered { return [] }
        let references = try await referenceProblems()
        return try await pool.run { [self] in
            // Each segment's end as of a moment no append is in flight (appends hold the
            // commit lock): what commits or a compaction append meanwhile is not judged.
            let segs = commitLock.withLock {
                state.withLock { st in st.segments.keys.sorted().map { (st.segments[$0]!, st.segments[$0]!.end) } }
            }
            var problems: [String] = []
            for (s, size) in segs {
                let end = try s.scan(from: 64) { _, _, _ in }
                if end < size {
                    problems.append("\(s.path): unreadable record at offset \(end) (\(size - end) bytes to the end fail their checksums)")
                }
            }
            return problems + references
        }
    }
}
