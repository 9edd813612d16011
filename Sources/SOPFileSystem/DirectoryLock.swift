#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SOPCore
import Synchronization

/// The exclusive claim of one process on a standalone database folder: an `flock` on
/// `<database>/LOCK`, which also holds the owner's pid so a refused opener can name it.
///
/// `flock` locks belong to an open file description, so a second ``acquire(_:)`` of the same
/// folder fails even inside the owning process. The kernel drops the lock when the process
/// dies, so a crash never leaves a stale lock behind.
///
/// Sendable (checked by the compiler): the descriptor sits in a `Mutex`.
public final class DirectoryLock: Sendable {
    /// The lock file, `<database>/LOCK`.
    public let path: String
    private let descriptor: Mutex<Int32>

    private init(fd: Int32, path: String) {
        self.path = path
        self.descriptor = Mutex(fd)
    }

    deinit { release() }

    /// Locks the database folder `databasePath` (which must exist), creating its `LOCK` file if
    /// needed. Throws ``SOPError/Code/databaseLocked`` when another open holds it.
    ///
    /// With `shared`, the lock is a shared `flock` (clustered mode): any number of clustered
    /// processes hold it together, and it excludes a standalone (exclusive) opener — and a
    /// standalone owner excludes them.
    public static func acquire(_ databasePath: String, shared: Bool = false) throws -> DirectoryLock {
        let path = databasePath.hasSuffix("/") ? databasePath + "LOCK" : databasePath + "/LOCK"
        let fd = try posixOpen(path, O_RDWR | O_CREAT | O_CLOEXEC)
        while flock(fd, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0 {
            let code = errno
            if code == EINTR { continue }
            defer { posixClose(fd) }
            if code == EWOULDBLOCK || code == EAGAIN {
                if !shared && isClusteredMarker(fd) {
                    throw SOPError(.databaseLocked,
                                   "database \(databasePath) is open in clustered mode by other processes; a standalone open is refused")
                }
                let owner = ownerPid(fd)
                let who = owner.map(String.init) ?? "unknown"
                if owner == getpid() {
                    throw SOPError(.databaseLocked,
                                   "database \(databasePath) is already open in this process (pid \(who))")
                }
                throw SOPError(.databaseLocked,
                               "database \(databasePath) is open in another process (pid \(who))")
            }
            throw ioError("flock", path: path, errno: code)
        }
        let lock = DirectoryLock(fd: fd, path: path)
        if shared {
            // Several holders: mark the file instead of naming one pid (writes of the same
            // bytes by several processes are harmless).
            let marker = Array("clustered\n".utf8)
            do {
                try marker.withUnsafeBytes { try posixWriteFully(fd, $0, at: 0, path: path) }
            } catch {
                lock.release()
                throw error
            }
            return lock
        }
        // Record the owner (no sync: after a crash the lock is gone anyway).
        let pid = Array("\(getpid())\n".utf8)
        while ftruncate(fd, 0) != 0 {
            if errno == EINTR { continue }
            let error = ioError("ftruncate", path: path)
            lock.release()
            throw error
        }
        do {
            try pid.withUnsafeBytes { try posixWriteFully(fd, $0, at: 0, path: path) }
        } catch {
            lock.release()
            throw error
        }
        return lock
    }

    /// True when the lock file says clustered processes hold it.
    private static func isClusteredMarker(_ fd: Int32) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 16)
        let n = (try? buffer.withUnsafeMutableBytes {
            try posixReadFully(fd, into: $0, at: 0, path: "")
        }) ?? 0
        return buffer[..<n].starts(with: Array("clustered".utf8))
    }

    /// The pid written in the lock file, if it reads as one.
    private static func ownerPid(_ fd: Int32) -> pid_t? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = (try? buffer.withUnsafeMutableBytes {
            try posixReadFully(fd, into: $0, at: 0, path: "")
        }) ?? 0
        let digits = buffer[..<n].prefix { $0 >= 0x30 && $0 <= 0x39 }
        guard !digits.isEmpty, digits.count <= 9 else { return nil }
        return pid_t(String(decoding: digits, as: UTF8.self))
    }

    /// Unlocks and closes the lock file; later calls do nothing. The file itself stays.
    public func release() {
        let fd = descriptor.withLock { fd -> Int32 in
            let old = fd
            fd = -1
            return old
        }
        if fd >= 0 {
            _ = flock(fd, LOCK_UN)
            posixClose(fd)
        }
    }
}
