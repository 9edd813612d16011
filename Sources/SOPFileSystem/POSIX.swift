#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SOPCore

/// The text the C library gives for an `errno` value.
func errorText(_ code: Int32) -> String {
    guard let p = strerror(code) else { return "errno \(code)" }
    return String(cString: p)
}

/// The uniform I/O error: `"<what> failed: <strerror>"`, naming the file.
func ioError(_ what: String, path: String, errno code: Int32 = errno) -> SOPError {
    SOPError(.io, "\(what) failed: \(errorText(code))", path: path)
}

/// Opens `path` with `flags` (and `mode` when creating), retrying on `EINTR`.
func posixOpen(_ path: String, _ flags: Int32, _ mode: mode_t = 0o644) throws -> Int32 {
    while true {
        let fd = open(path, flags, mode)
        if fd >= 0 { return fd }
        if errno == EINTR { continue }
        throw ioError("open", path: path)
    }
}

/// `fsync` retrying on `EINTR`.
func posixFsync(_ fd: Int32, path: String) throws {
    while fsync(fd) != 0 {
        if errno == EINTR { continue }
        throw ioError("fsync", path: path)
    }
}

/// `fdatasync` on Linux (only the data and the metadata needed to read it back), `fsync`
/// elsewhere; retries on `EINTR`.
func posixDataSync(_ fd: Int32, path: String) throws {
    #if os(Linux)
    while fdatasync(fd) != 0 {
        if errno == EINTR { continue }
        throw ioError("fdatasync", path: path)
    }
    #else
    try posixFsync(fd, path: path)
    #endif
}

/// Reads until `buffer` is full or end of file; returns how many bytes were read.
func posixReadFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64,
                    path: String) throws -> Int {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
    guard offset <= UInt64(Int64.max) else {
        throw SOPError(.invalidArgument, "read offset \(offset) is out of range", path: path)
    }
    var done = 0
    while done < buffer.count {
        let n = pread(fd, base + done, buffer.count - done, off_t(offset) + off_t(done))
        if n > 0 {
            done += n
        } else if n == 0 {
            break // end of file
        } else if errno == EINTR {
            continue
        } else {
            throw ioError("read", path: path)
        }
    }
    return done
}

/// Writes all of `buffer` at `offset`, looping over partial writes and retrying on `EINTR`.
func posixWriteFully(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: UInt64,
                     path: String) throws {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return }
    guard offset <= UInt64(Int64.max) - UInt64(buffer.count) else {
        throw SOPError(.invalidArgument, "write offset \(offset) is out of range", path: path)
    }
    var done = 0
    while done < buffer.count {
        let n = pwrite(fd, base + done, buffer.count - done, off_t(offset) + off_t(done))
        if n > 0 {
            done += n
        } else if n == 0 {
            throw SOPError(.io, "write failed: no bytes written", path: path)
        } else if errno == EINTR {
            continue
        } else {
            throw ioError("write", path: path)
        }
    }
}

/// `close`, ignoring errors (there is nothing useful to do with them; `EINTR` must not be retried on Linux).
func posixClose(_ fd: Int32) {
    _ = close(fd)
}

/// Little-endian field helpers over byte arrays (bounds are the caller's job).
extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}

extension UnsafeRawBufferPointer {
    /// Reads a little-endian integer at `offset` (no alignment needed).
    func loadLE<T: FixedWidthInteger>(_ offset: Int, as: T.Type) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Stores a little-endian integer at `offset` (no alignment needed).
    func storeLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }
}
