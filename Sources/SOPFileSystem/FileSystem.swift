#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SOPCore

/// Whole-file and directory helpers over POSIX calls.
public enum FileSystem {
    /// True when something (file, directory, ...) exists at `path` (symbolic links followed).
    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    /// True when `path` is a directory (symbolic links followed).
    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Creates `path` and any missing parents (like `mkdir -p`), syncing the parent directory of
    /// each directory it creates so the new entries survive a crash. Fine if it already exists
    /// as a directory; an error if something else is there.
    public static func createDirectory(_ path: String) throws {
        let full = absolutePath(path)
        if isDirectory(full) { return }
        var current = ""
        for component in full.split(separator: "/") {
            let parent = current.isEmpty ? "/" : current
            current += "/" + component
            if mkdir(current, 0o755) == 0 {
                try syncDirectory(parent)
                continue
            }
            let code = errno
            if code == EEXIST {
                guard isDirectory(current) else {
                    throw SOPError(.io, "mkdir failed: \(current) exists and is not a directory", path: path)
                }
                continue
            }
            throw ioError("mkdir", path: current, errno: code)
        }
    }

    /// Makes the entries of directory `path` durable: opens it read-only and `fsync`s it.
    /// File systems that cannot sync directories (`EINVAL`) are treated as success.
    public static func syncDirectory(_ path: String) throws {
        let fd = try posixOpen(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { posixClose(fd) }
        while fsync(fd) != 0 {
            let code = errno
            if code == EINTR { continue }
            if code == EINVAL { return }
            throw ioError("fsync", path: path, errno: code)
        }
    }

    /// The whole contents of the file at `path`.
    public static func readFile(_ path: String) throws -> [UInt8] {
        let fd = try posixOpen(path, O_RDONLY | O_CLOEXEC)
        defer { posixClose(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ioError("fstat", path: path) }
        var out: [UInt8] = []
        var chunk = Swift.max(4096, Int(st.st_size) + 1) // +1 sees end of file in one pass
        while true {
            let start = out.count
            out.append(contentsOf: repeatElement(0, count: chunk))
            let n = try out.withUnsafeMutableBytes {
                try posixReadFully(fd, into: UnsafeMutableRawBufferPointer(rebasing: $0[start...]),
                                   at: UInt64(start), path: path)
            }
            if n < chunk {
                out.removeLast(chunk - n)
                return out
            }
            chunk = Swift.max(chunk, 1 << 20)
        }
    }

    /// Replaces the file at `path` with `bytes` atomically: a reader (or a crash) sees the old
    /// contents or the new ones, never a mix. Writes `path.tmp-<random>`, syncs it, renames it
    /// over `path` and syncs the directory; the temporary file is removed on failure.
    public static func atomicWrite(_ path: String, _ bytes: [UInt8]) throws {
        let temp = path + ".tmp-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let fd = try posixOpen(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC)
        var closed = false
        var renamed = false
        defer {
            if !closed { posixClose(fd) }
            if !renamed { _ = unlink(temp) }
        }
        try bytes.withUnsafeBytes { try posixWriteFully(fd, $0, at: 0, path: temp) }
        try posixFsync(fd, path: temp)
        closed = true
        if close(fd) != 0 && errno != EINTR { throw ioError("close", path: temp) }
        guard rename(temp, path) == 0 else { throw ioError("rename", path: path) }
        renamed = true
        try syncDirectory(parentDirectory(of: path))
    }

    /// Removes the file (or empty directory) at `path`; a missing path is not an error.
    public static func remove(_ path: String) throws {
        if unlink(path) == 0 { return }
        var code = errno
        if code == ENOENT { return }
        if code == EISDIR || (code == EPERM && isDirectory(path)) {
            if rmdir(path) == 0 { return }
            code = errno
            if code == ENOENT { return }
            throw ioError("rmdir", path: path, errno: code)
        }
        throw ioError("unlink", path: path, errno: code)
    }

    /// Removes a directory and everything in it (like `rm -rf`); a missing path is not an error.
    public static func removeTree(_ path: String) throws {
        if isDirectory(path) {
            for name in try list(path) { try removeTree(path + "/" + name) }
        }
        try remove(path)
    }

    /// The names in directory `dir`, sorted, without `.` and `..`.
    public static func list(_ dir: String) throws -> [String] {
        guard let handle = opendir(dir) else { throw ioError("opendir", path: dir) }
        defer { closedir(handle) }
        var names: [String] = []
        while true {
            errno = 0
            guard let entry = readdir(handle) else {
                let code = errno
                if code != 0 { throw ioError("readdir", path: dir, errno: code) }
                break
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// `path` made absolute against the current directory and normalized lexically: `.`
    /// components and repeated slashes are dropped and `..` removes the previous component
    /// (symbolic links are not resolved).
    public static func absolutePath(_ path: String) -> String {
        var full = path
        if !path.hasPrefix("/") {
            full = currentDirectory() + "/" + path
        }
        var parts: [Substring] = []
        for component in full.split(separator: "/", omittingEmptySubsequences: true) {
            if component == "." { continue }
            if component == ".." {
                if !parts.isEmpty { parts.removeLast() }
                continue
            }
            parts.append(component)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// The directory part of `path` (lexically; `"."` when there is none).
    /// Renames `from` to `to`, replacing `to` atomically.
    public static func move(_ from: String, to: String) throws {
        guard rename(from, to) == 0 else { throw ioError("rename", path: to) }
    }

    /// The directory part of `path`.
    public static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let parent = path[..<slash]
        return parent.isEmpty ? "/" : String(parent)
    }

    /// The process's current directory (`/` if it cannot be determined).
    static func currentDirectory() -> String {
        var size = 4096
        while size <= 1 << 20 {
            var buffer = [CChar](repeating: 0, count: size)
            if getcwd(&buffer, size) != nil {
                let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
                return String(decoding: bytes, as: UTF8.self)
            }
            if errno != ERANGE { break }
            size *= 2
        }
        return "/"
    }
}
