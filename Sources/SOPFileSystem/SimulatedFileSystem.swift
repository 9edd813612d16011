import SOPCore

/// A test double of ``FileIO``: an in-memory file system that tracks what is durable, so a
/// test can cut the power at any moment, fail the N-th operation, or crash the "process".
///
/// - Every file keeps its durable bytes (as of its last `fsync`/`fdatasync`) and the writes
///   made since. A power loss keeps the durable bytes plus, optionally, a random prefix of the
///   later writes, the last of them possibly torn.
/// - Directory entries (creations, renames, removals) become durable when their directory is
///   synced; a power loss reverts the rest.
/// - A process crash (`kill -9`) keeps everything written: the page cache survives.
/// - ``failOperation`` fails the N-th operation from now with EIO (or ENOSPC, or a short
///   write), like a disk error; ``freeze()`` makes every later operation fail, which is how a
///   crashed process stops touching files.
///
/// Used by the crash-safety tests; never by the engine itself.
package final class SimulatedFileSystem: FileIO, @unchecked Sendable {
    // @unchecked: all state is behind `lock`.

    package enum Fault: Sendable {
        case eio
        case enospc
        /// A write stores only half its bytes, then fails.
        case shortWrite
    }

    final class Node {
        var durable: [UInt8]
        var current: [UInt8]
        /// Writes since the last sync, in order (offset, bytes); a truncate is (size, nil).
        var pending: [(offset: UInt64, bytes: [UInt8]?)] = []

        init(durable: [UInt8] = [], current: [UInt8] = []) {
            self.durable = durable
            self.current = current
        }
    }

    struct State {
        var current: [String: Node] = [:]
        var durable: [String: Node] = [:]
        var directories: Set<String> = ["/"]
        var locks: Set<String> = []
        var operations = 0
        var failAt: Int?
        var fault: Fault = .eio
        var frozen = false
        var predicate: (@Sendable (String, String) -> Bool)?
        var predicateFault: Fault = .eio
    }

    private let mutex = BlockingLock()
    private var state = State()
    private var lock: LockedState { LockedState(owner: self) }

    /// `lock.withLock { s in ... }` over `state`, like a Mutex (the state holds classes, which
    /// `Mutex` would require to be sent).
    struct LockedState {
        let owner: SimulatedFileSystem
        func withLock<T>(_ body: (inout State) throws -> T) rethrows -> T {
            try owner.mutex.withLock { try body(&owner.state) }
        }
    }

    package init() {}

    // MARK: Control

    /// Fails the `n`-th file operation from now (1 = the next one) with `fault`.
    package func failOperation(_ n: Int, with fault: Fault = .eio) {
        lock.withLock { s in
            s.failAt = s.operations + n
            s.fault = fault
        }
    }

    /// Fails every operation for which `predicate(operation, path)` is true (operation names
    /// as in the errors: "pwrite", "fsync", "rename", ...) with `fault`; `nil` stops it.
    package func failWhen(_ fault: Fault = .eio, _ predicate: (@Sendable (String, String) -> Bool)?) {
        lock.withLock { s in
            s.predicate = predicate
            s.predicateFault = fault
        }
    }

    /// Operations performed so far.
    package var operationCount: Int { lock.withLock { $0.operations } }

    /// Makes every later operation fail (a crashed process does no more I/O).
    package func freeze() {
        lock.withLock { $0.frozen = true }
    }

    /// The files as a restarted machine would find them after `kill -9` of the process:
    /// everything written is there.
    package func afterProcessCrash() -> SimulatedFileSystem {
        let next = SimulatedFileSystem()
        lock.withLock { s in
            next.lock.withLock { n in
                n.directories = s.directories
                var copies: [ObjectIdentifier: Node] = [:]
                for (p, node) in s.current {
                    let c = copies[ObjectIdentifier(node)] ?? Node(durable: node.current, current: node.current)
                    copies[ObjectIdentifier(node)] = c
                    n.current[p] = c
                    n.durable[p] = c
                }
            }
        }
        return next
    }

    /// The files after a power loss: durable namespace and bytes; with `rng`, each file also
    /// keeps a random prefix of its unsynced writes, the last one possibly torn.
    package func afterPowerLoss<G: RandomNumberGenerator>(using rng: inout G, keepSomeUnsynced: Bool) -> SimulatedFileSystem {
        let next = SimulatedFileSystem()
        var plan: [(String, [UInt8])] = []
        lock.withLock { s in
            for (p, node) in s.durable {
                var bytes = node.durable
                if keepSomeUnsynced && !node.pending.isEmpty {
                    let keep = Int.random(in: 0...node.pending.count, using: &rng)
                    for (i, w) in node.pending.prefix(keep).enumerated() {
                        var data = w.bytes
                        if i == keep - 1, let d = data, d.count > 1, Bool.random(using: &rng) {
                            data = Array(d.prefix(Int.random(in: 1..<d.count, using: &rng)))   // torn
                        }
                        SimulatedFileSystem.apply(offset: w.offset, bytes: data, to: &bytes)
                    }
                }
                plan.append((p, bytes))
            }
            next.lock.withLock { n in n.directories = s.directories }
        }
        next.lock.withLock { n in
            for (p, bytes) in plan {
                let c = Node(durable: bytes, current: bytes)
                n.current[p] = c
                n.durable[p] = c
            }
        }
        return next
    }

    static func apply(offset: UInt64, bytes: [UInt8]?, to data: inout [UInt8]) {
        guard let bytes else {
            let size = Int(offset)
            if size < data.count { data.removeSubrange(size...) } else { data.append(contentsOf: repeatElement(0, count: size - data.count)) }
            return
        }
        let o = Int(offset)
        if data.count < o + bytes.count { data.append(contentsOf: repeatElement(0, count: o + bytes.count - data.count)) }
        data.replaceSubrange(o..<(o + bytes.count), with: bytes)
    }

    // MARK: Operation accounting

    /// Counts an operation and throws when it is the one to fail.
    fileprivate func step(_ what: String, _ path: String, write: Bool = false) throws -> Fault? {
        try lock.withLock { s in
            if s.frozen { throw SOPError(.io, "\(what) failed: the process has crashed", path: path) }
            s.operations += 1
            if let p = s.predicate, p(what, path) {
                if s.predicateFault == .shortWrite && write { return .shortWrite }
                let name = s.predicateFault == .enospc ? "No space left on device" : "Input/output error"
                throw SOPError(.io, "\(what) failed: \(name) (injected)", path: path)
            }
            if let f = s.failAt, s.operations == f {
                s.failAt = nil
                if s.fault == .shortWrite && write { return .shortWrite }
                let name = s.fault == .enospc ? "No space left on device" : "Input/output error"
                throw SOPError(.io, "\(what) failed: \(name) (injected)", path: path)
            }
            return nil
        }
    }

    fileprivate func withState<T>(_ body: (inout State) throws -> T) rethrows -> T {
        try lock.withLock { try body(&$0) }
    }

    static func parent(_ p: String) -> String { FileSystem.parentDirectory(of: p) }

    // MARK: FileIO

    package func open(_ path: String, create: Bool, exclusive: Bool) throws -> any FileHandleIO {
        _ = try step("open", path)
        return try lock.withLock { s -> SimulatedFile in
            if let node = s.current[path] {
                if create && exclusive { throw SOPError(.io, "open failed: File exists", path: path) }
                return SimulatedFile(fs: self, node: node, path: path)
            }
            guard create else { throw SOPError(.io, "open failed: No such file or directory", path: path) }
            guard s.directories.contains(SimulatedFileSystem.parent(path)) else {
                throw SOPError(.io, "open failed: No such file or directory", path: path)
            }
            let node = Node()
            s.current[path] = node
            return SimulatedFile(fs: self, node: node, path: path)
        }
    }

    package func exists(_ path: String) -> Bool {
        lock.withLock { $0.current[path] != nil || $0.directories.contains(path) }
    }

    package func isDirectory(_ path: String) -> Bool {
        lock.withLock { $0.directories.contains(path) }
    }

    package func createDirectory(_ path: String) throws {
        var missing: [String] = []
        var p = path
        while !lock.withLock({ $0.directories.contains(p) }) && p != "/" && !p.isEmpty {
            missing.append(p)
            p = SimulatedFileSystem.parent(p)
        }
        for d in missing.reversed() {
            _ = try step("mkdir", d)
            lock.withLock { _ = $0.directories.insert(d) }
        }
    }

    package func syncDirectory(_ path: String) throws {
        _ = try step("fsync(dir)", path)
        lock.withLock { s in
            let prefix = path == "/" ? "/" : path + "/"
            let inDir: (String) -> Bool = { p in p.hasPrefix(prefix) && !p.dropFirst(prefix.count).contains("/") }
            for p in s.durable.keys where inDir(p) && s.current[p] == nil { s.durable[p] = nil }
            for (p, n) in s.current where inDir(p) { s.durable[p] = n }
        }
    }

    package func readFile(_ path: String) throws -> [UInt8] {
        _ = try step("read", path)
        guard let n = lock.withLock({ $0.current[path] }) else {
            throw SOPError(.io, "open failed: No such file or directory", path: path)
        }
        return lock.withLock { _ in n.current }
    }

    package func rename(_ from: String, to: String) throws {
        _ = try step("rename", to)
        try lock.withLock { s in
            guard let n = s.current[from] else { throw SOPError(.io, "rename failed: No such file or directory", path: from) }
            s.current[to] = n
            s.current[from] = nil
        }
    }

    package func remove(_ path: String) throws {
        _ = try step("unlink", path)
        lock.withLock { s in
            if s.current.removeValue(forKey: path) == nil {
                let prefix = path + "/"
                if !s.current.keys.contains(where: { $0.hasPrefix(prefix) }) && !s.directories.contains(where: { $0.hasPrefix(prefix) }) {
                    s.directories.remove(path)
                }
            }
        }
    }

    package func list(_ dir: String) throws -> [String] {
        _ = try step("opendir", dir)
        return try lock.withLock { s in
            guard s.directories.contains(dir) else { throw SOPError(.io, "opendir failed: No such file or directory", path: dir) }
            let prefix = dir == "/" ? "/" : dir + "/"
            var names = Set<String>()
            for p in s.current.keys where p.hasPrefix(prefix) {
                let rest = p.dropFirst(prefix.count)
                if !rest.contains("/") { names.insert(String(rest)) }
            }
            for d in s.directories where d.hasPrefix(prefix) {
                let rest = d.dropFirst(prefix.count)
                if !rest.isEmpty && !rest.contains("/") { names.insert(String(rest)) }
            }
            return names.sorted()
        }
    }

    package func lockDirectory(_ path: String) throws -> any DirectoryLockHandle {
        try lock.withLock { s in
            guard s.locks.insert(path).inserted else {
                throw SOPError(.databaseLocked, "database \(path) is open in another process (simulated)", path: path)
            }
        }
        return SimulatedLock(fs: self, path: path)
    }

    package func lockDirectoryShared(_ path: String) throws -> any DirectoryLockHandle {
        throw SOPError(.invalidArgument, "the simulated file system has no shared locks", path: path)
    }

    package func linkExclusive(_ from: String, to: String) throws {
        if exists(to) { throw SOPError(.alreadyExists, "\(to) already exists", path: to) }
        let bytes = try readFile(from)
        let f = try open(to, create: true, exclusive: true)
        defer { f.close() }
        try f.write(bytes, at: 0)
        try f.sync()
    }

    fileprivate func unlock(_ path: String) {
        lock.withLock { _ = $0.locks.remove(path) }
    }
}

final class SimulatedLock: DirectoryLockHandle, @unchecked Sendable {
    private let fs: SimulatedFileSystem
    private let path: String
    private var released = false
    init(fs: SimulatedFileSystem, path: String) {
        self.fs = fs
        self.path = path
    }
    func release() {
        if released { return }
        released = true
        fs.unlock(path)
    }
}

/// A file of a ``SimulatedFileSystem``.
final class SimulatedFile: FileHandleIO, @unchecked Sendable {
    private let fs: SimulatedFileSystem
    private let node: SimulatedFileSystem.Node
    let path: String

    init(fs: SimulatedFileSystem, node: SimulatedFileSystem.Node, path: String) {
        self.fs = fs
        self.node = node
        self.path = path
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        _ = try fs.step("pread", path)
        return fs.withState { _ in
            let o = Int(offset)
            guard o < node.current.count else { return 0 }
            let n = min(buffer.count, node.current.count - o)
            node.current.withUnsafeBytes { src in
                buffer.baseAddress!.copyMemory(from: src.baseAddress! + o, byteCount: n)
            }
            return n
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let fault = try fs.step("pwrite", path, write: true)
        var data = Array(bytes)
        if fault == .shortWrite { data = Array(data.prefix(data.count / 2)) }
        fs.withState { _ in
            SimulatedFileSystem.apply(offset: offset, bytes: data, to: &node.current)
            node.pending.append((offset, data))
        }
        if fault == .shortWrite {
            throw SOPError(.io, "pwrite failed: short write (injected)", path: path)
        }
    }

    func size() throws -> UInt64 {
        _ = try fs.step("fstat", path)
        return fs.withState { _ in UInt64(node.current.count) }
    }

    func truncate(to size: UInt64) throws {
        _ = try fs.step("ftruncate", path)
        fs.withState { _ in
            SimulatedFileSystem.apply(offset: size, bytes: nil, to: &node.current)
            node.pending.append((size, nil))
        }
    }

    func sync() throws { try dataSync() }

    func dataSync() throws {
        _ = try fs.step("fsync", path)
        fs.withState { _ in
            node.durable = node.current
            node.pending.removeAll()
        }
    }

    func close() {}
}
