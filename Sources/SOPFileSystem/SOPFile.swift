#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SOPCore
import Synchronization

/// An open file used with positional I/O (`pread`/`pwrite`), so any number of threads may read
/// and write it at once without sharing a file position.
///
/// Sendable (checked by the compiler): the descriptor sits in an `Atomic`, and positional
/// reads and writes on one descriptor are thread-safe in the kernel. ``close()`` must not race
/// with I/O still running on other threads (the descriptor number could be reused).
public final class SOPFile: Sendable {
    /// The path the file was opened with.
    public let path: String
    private let descriptor: Atomic<Int32>

    private init(fd: Int32, path: String) {
        self.path = path
        self.descriptor = Atomic(fd)
    }

    deinit { close() }

    /// Opens `path` for reading and writing (`O_RDWR | O_CLOEXEC`, mode `0644` when created).
    /// - Parameters:
    ///   - create: create the file when it does not exist.
    ///   - exclusive: with `create`, fail if it already exists.
    public static func open(_ path: String, create: Bool, exclusive: Bool = false) throws -> SOPFile {
        var flags = O_RDWR | O_CLOEXEC
        if create { flags |= O_CREAT }
        if create && exclusive { flags |= O_EXCL }
        return SOPFile(fd: try posixOpen(path, flags), path: path)
    }

    /// The descriptor, or an error once the file is closed.
    func fd() throws -> Int32 {
        let fd = descriptor.load(ordering: .acquiring)
        guard fd >= 0 else { throw SOPError(.invalidState, "file is closed", path: path) }
        return fd
    }

    /// Reads `count` bytes at `offset`; fewer only when the file ends first.
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard count >= 0 else {
            throw SOPError(.invalidArgument, "read count \(count) is negative", path: path)
        }
        if count == 0 { return [] }
        let fd = try fd()
        return try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            initialized = 0
            initialized = try posixReadFully(fd, into: UnsafeMutableRawBufferPointer(buffer),
                                             at: offset, path: path)
        }
    }

    /// Reads into `buffer` at `offset` until it is full or the file ends; returns the byte count.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        try posixReadFully(try fd(), into: buffer, at: offset, path: path)
    }

    /// Writes all of `bytes` at `offset` (looping over partial writes, retrying `EINTR`).
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try posixWriteFully(try fd(), bytes, at: offset, path: path)
    }

    /// Writes all of `bytes` at `offset`.
    public func write(_ bytes: [UInt8], at offset: UInt64) throws {
        let fd = try fd()
        try bytes.withUnsafeBytes { try posixWriteFully(fd, $0, at: offset, path: path) }
    }

    /// The file's current size in bytes.
    public func size() throws -> UInt64 {
        var st = stat()
        guard fstat(try fd(), &st) == 0 else { throw ioError("fstat", path: path) }
        return UInt64(st.st_size)
    }

    /// Cuts or extends (with zeros) the file to `size` bytes.
    public func truncate(to size: UInt64) throws {
        guard size <= UInt64(Int64.max) else {
            throw SOPError(.invalidArgument, "truncate size \(size) is out of range", path: path)
        }
        let fd = try fd()
        while ftruncate(fd, off_t(size)) != 0 {
            if errno == EINTR { continue }
            throw ioError("ftruncate", path: path)
        }
    }

    /// Extends the file to `size` bytes of allocated zeros (`posix_fallocate`; a sparse
    /// extension where the file system cannot allocate).
    public func allocate(to size: UInt64) throws {
        guard size <= UInt64(Int64.max) else {
            throw SOPError(.invalidArgument, "allocation size \(size) is out of range", path: path)
        }
        let current = try self.size()
        guard current < size else { return }
        let fd = try fd()
        var rc: Int32
        repeat {
            rc = posix_fallocate(fd, off_t(current), off_t(size - current))
        } while rc == EINTR
        if rc == 0 { return }
        if rc == EINVAL || rc == EOPNOTSUPP {
            try truncate(to: size)
            return
        }
        errno = rc
        throw ioError("posix_fallocate", path: path)
    }

    /// Flushes data and metadata to stable storage (`fsync`).
    public func sync() throws {
        try posixFsync(try fd(), path: path)
    }

    /// Flushes data (and the metadata needed to read it) to stable storage: `fdatasync` on
    /// Linux, `fsync` elsewhere.
    public func dataSync() throws {
        try posixDataSync(try fd(), path: path)
    }

    /// Closes the file; later calls do nothing, and I/O afterwards throws ``SOPError/Code/invalidState``.
    public func close() {
        let fd = descriptor.exchange(-1, ordering: .acquiringAndReleasing)
        if fd >= 0 { posixClose(fd) }
    }
}
