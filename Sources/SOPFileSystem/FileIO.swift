#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SOPCore

/// One open file, used with positional I/O. Everything the filesystem backend reads or writes
/// goes through this and ``FileIO``, so tests can inject faults and simulate power loss.
public protocol FileHandleIO: AnyObject, Sendable {
    /// The path the file was opened with.
    var path: String { get }
    /// Reads into `buffer` at `offset` until it is full or the file ends; returns the byte count.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int
    /// Writes all of `bytes` at `offset`.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// The file's size.
    func size() throws -> UInt64
    /// Sets the file's size.
    func truncate(to size: UInt64) throws
    /// Extends the file to `size` bytes (when shorter) with allocated space that reads as
    /// zeros: later writes there neither grow the file nor allocate blocks one page at a time.
    func allocate(to size: UInt64) throws
    /// Makes data and metadata durable (`fsync`).
    func sync() throws
    /// Makes data durable (`fdatasync`).
    func dataSync() throws
    /// Closes the file; idempotent.
    func close()
}

extension FileHandleIO {
    /// Default: a sparse extension (``truncate(to:)``); reads the same, allocates nothing.
    public func allocate(to size: UInt64) throws {
        if try self.size() < size { try truncate(to: size) }
    }

    /// Reads `count` bytes at `offset`; fewer only when the file ends first.
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard count >= 0 else { throw SOPError(.invalidArgument, "read count \(count) is negative", path: path) }
        if count == 0 { return [] }
        return try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            initialized = 0
            initialized = try read(into: UnsafeMutableRawBufferPointer(buffer), at: offset)
        }
    }

    /// Writes all of `bytes` at `offset`.
    public func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }
}

/// A held lock on a database folder.
public protocol DirectoryLockHandle: AnyObject, Sendable {
    /// Releases the lock; idempotent.
    func release()
}

/// The file system as the filesystem backend sees it: the one seam all its file access goes
/// through. ``PosixFileIO`` is the real one.
public protocol FileIO: Sendable {
    /// Opens a file for reading and writing.
    func open(_ path: String, create: Bool, exclusive: Bool) throws -> any FileHandleIO
    /// Whether anything exists at `path`.
    func exists(_ path: String) -> Bool
    /// Whether `path` is a directory.
    func isDirectory(_ path: String) -> Bool
    /// Creates a directory and its missing parents, syncing each parent.
    func createDirectory(_ path: String) throws
    /// Makes a directory's entries durable.
    func syncDirectory(_ path: String) throws
    /// Reads a whole file.
    func readFile(_ path: String) throws -> [UInt8]
    /// Renames a file (atomically replacing `to`).
    func rename(_ from: String, to: String) throws
    /// Removes a file or an empty directory; a missing path is not an error.
    func remove(_ path: String) throws
    /// Names in a directory, sorted.
    func list(_ dir: String) throws -> [String]
    /// Takes the exclusive lock of a database folder (`databaseLocked` when held elsewhere).
    func lockDirectory(_ path: String) throws -> any DirectoryLockHandle
    /// Takes the shared (clustered) lock of a database folder: excludes exclusive holders only.
    func lockDirectoryShared(_ path: String) throws -> any DirectoryLockHandle
    /// Makes `to` name the file `from` names, failing with ``SOPError/Code/alreadyExists`` when
    /// `to` exists (an exclusive claim of a name); `from` stays.
    func linkExclusive(_ from: String, to: String) throws
}

extension FileIO {
    /// Replaces a file atomically: write a temporary file, sync it, rename it over `path`,
    /// sync the directory.
    public func atomicWrite(_ path: String, _ bytes: [UInt8]) throws {
        let tmp = path + ".tmp-" + String(SOPID.random().low, radix: 16)
        let f = try open(tmp, create: true, exclusive: true)
        do {
            try f.truncate(to: 0)
            try f.write(bytes, at: 0)
            try f.sync()
            f.close()
            try rename(tmp, to: path)
        } catch {
            f.close()
            try? remove(tmp)
            throw error
        }
        try syncDirectory(FileSystem.parentDirectory(of: path))
    }

    /// Creates the file `path` complete or not at all: `fill` writes it under a temporary
    /// name, which is synced and renamed into place, and the directory is synced. A crash
    /// never leaves a half-written file at `path`. Fails if `path` exists. Returns the file,
    /// open.
    public func createAtomically(_ path: String, _ fill: (any FileHandleIO) throws -> Void) throws -> any FileHandleIO {
        guard !exists(path) else { throw SOPError(.io, "file already exists", path: path) }
        let tmp = path + ".tmp-new"
        try remove(tmp)
        let staging = try open(tmp, create: true, exclusive: true)
        do {
            try fill(staging)
            try staging.sync()
            staging.close()
            try rename(tmp, to: path)
            try syncDirectory(FileSystem.parentDirectory(of: path))
        } catch {
            staging.close()
            throw error
        }
        return try open(path, create: false, exclusive: false)
    }

    /// Removes a directory tree; a missing path is not an error.
    public func removeTree(_ path: String) throws {
        if isDirectory(path) {
            for name in try list(path) { try removeTree(path + "/" + name) }
        }
        try remove(path)
    }
}

/// The real file system (POSIX calls).
public struct PosixFileIO: FileIO {
    /// Makes the real file system.
    public init() {}

    public func open(_ path: String, create: Bool, exclusive: Bool) throws -> any FileHandleIO {
        try SOPFile.open(path, create: create, exclusive: exclusive)
    }
    public func exists(_ path: String) -> Bool { FileSystem.exists(path) }
    public func isDirectory(_ path: String) -> Bool { FileSystem.isDirectory(path) }
    public func createDirectory(_ path: String) throws { try FileSystem.createDirectory(path) }
    public func syncDirectory(_ path: String) throws { try FileSystem.syncDirectory(path) }
    public func readFile(_ path: String) throws -> [UInt8] { try FileSystem.readFile(path) }
    public func rename(_ from: String, to: String) throws { try FileSystem.move(from, to: to) }
    public func remove(_ path: String) throws { try FileSystem.remove(path) }
    public func list(_ dir: String) throws -> [String] { try FileSystem.list(dir) }
    public func lockDirectory(_ path: String) throws -> any DirectoryLockHandle { try DirectoryLock.acquire(path) }
    public func lockDirectoryShared(_ path: String) throws -> any DirectoryLockHandle {
        try DirectoryLock.acquire(path, shared: true)
    }
    public func linkExclusive(_ from: String, to: String) throws {
        while link(from, to) != 0 {
            let code = errno
            if code == EINTR { continue }
            if code == EEXIST { throw SOPError(.alreadyExists, "\(to) already exists", path: to) }
            throw ioError("link", path: to, errno: code)
        }
    }
}

extension SOPFile: FileHandleIO {}
extension DirectoryLock: DirectoryLockHandle {}
