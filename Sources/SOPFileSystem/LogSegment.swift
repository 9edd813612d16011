import SOPCore
import Synchronization

/// An append-only file of checksummed, framed records (commit logs, priority logs, blob
/// segments).
///
/// Layout (all integers little-endian):
/// - bytes `[0, 64)`: header — magic `"SOPLOG01"`, format version `UInt16` (1), 2 reserved
///   bytes, segment number `UInt32`, zeros, CRC-32C of bytes `[0, 60)` at `[60, 64)`.
/// - records from offset 64, each at an 8-byte boundary: a 16-byte record header — magic
///   `UInt16` `0x4C52` ("RL"), kind `UInt8`, flags `UInt8` (0), payload length `UInt32`,
///   CRC-32C of the payload `UInt32`, CRC-32C of the first 12 header bytes `UInt32` — then
///   the payload, then zeros up to the next multiple of 8.
///
/// A crash can leave a torn record at the end; ``scan(from:_:)`` stops at the first record
/// that is incomplete or fails a checksum and reports where valid data ends, and recovery
/// then calls ``truncate(to:)`` with that offset before appending again.
///
/// Sendable (checked by the compiler): the file is a ``SOPFile`` (thread-safe positional
/// I/O) and ``end`` sits in a `Mutex` that is never held across I/O.
public final class LogSegment: Sendable {
    /// The largest payload one record may carry (1 GiB).
    public static let maxPayload = 1 << 30
    /// Size of the file header; the first record starts here.
    public static let headerSize = 64
    /// Size of a record header.
    public static let recordHeaderSize = 16

    static let fileMagic: [UInt8] = Array("SOPLOG01".utf8)
    static let formatVersion: UInt16 = 1
    static let recordMagic: UInt16 = 0x4C52
    static let scanChunk = 1 << 20

    /// The segment's number (as stored in its header).
    public let number: Int
    /// The file's path.
    public let path: String

    private let file: any FileHandleIO
    private let appendOffset: Mutex<UInt64>
    /// A batch buffer kept between appends (taken out while in use), so a commit of a few
    /// MiB does not allocate — and fault in — fresh pages every time.
    private let scratch = Mutex<[UInt8]>([])
    /// Largest batch buffer kept for reuse.
    private static let scratchLimit = 16 << 20

    private init(file: any FileHandleIO, number: Int, end: UInt64) {
        self.file = file
        self.path = file.path
        self.number = number
        self.appendOffset = Mutex(end)
    }

    /// Where the next record will be written. After ``open(path:)`` this is the file's size
    /// rounded up to 8 bytes, until recovery sets it with ``truncate(to:)``.
    public var end: UInt64 {
        appendOffset.withLock { $0 }
    }

    /// Bytes a record with `payloadCount` payload bytes occupies, padding included.
    static func framedSize(_ payloadCount: Int) -> Int {
        (recordHeaderSize + payloadCount + 7) & ~7
    }

    /// The 64-byte file header of segment `number`.
    private static func header(number: Int, path: String) throws -> [UInt8] {
        guard number >= 0, number <= Int(UInt32.max) else {
            throw SOPError(.invalidArgument, "log segment number \(number) is out of range", path: path)
        }
        var header = fileMagic
        header.appendLE(formatVersion)
        header.appendLE(UInt16(0))
        header.appendLE(UInt32(number))
        header.append(contentsOf: repeatElement(0, count: 60 - header.count))
        header.appendLE(CRC32C.checksum(header))
        return header
    }

    /// Creates a new segment file at `path` (failing if one exists), writes its header and
    /// syncs the file and its directory.
    public static func create(path: String, number: Int, io: any FileIO = PosixFileIO()) throws -> LogSegment {
        let header = try header(number: number, path: path)
        // Built under a temporary name and renamed into place, so a crash never leaves a
        // segment without its header.
        let file = try io.createAtomically(path) { try $0.write(header, at: 0) }
        return LogSegment(file: file, number: number, end: UInt64(headerSize))
    }

    /// Creates segment `number` at `path` for one process of a clustered database: the header
    /// is written and synced under a name no other process uses, then linked to `path`, which
    /// fails with ``SOPError/Code/alreadyExists`` when another process claimed the number first.
    public static func createExclusive(path: String, number: Int, io: any FileIO = PosixFileIO()) throws -> LogSegment {
        let header = try header(number: number, path: path)
        let tmp = path + ".tmp-" + SOPID.random().hex
        let staging = try io.open(tmp, create: true, exclusive: true)
        defer { try? io.remove(tmp) }
        do {
            try staging.write(header, at: 0)
            try staging.sync()
            staging.close()
        } catch {
            staging.close()
            throw error
        }
        try io.linkExclusive(tmp, to: path)
        try io.syncDirectory(FileSystem.parentDirectory(of: path))
        let file = try io.open(path, create: false, exclusive: false)
        return LogSegment(file: file, number: number, end: UInt64(headerSize))
    }

    /// Opens an existing segment and validates its header: ``SOPError/Code/corrupt`` for a
    /// short file, bad magic or checksum, ``SOPError/Code/unsupportedFormat`` for an unknown
    /// format version.
    public static func open(path: String, io: any FileIO = PosixFileIO()) throws -> LogSegment {
        let file = try io.open(path, create: false, exclusive: false)
        do {
            let header = try file.read(at: 0, count: headerSize)
            guard header.count == headerSize else {
                throw SOPError(.corrupt, "log segment \(path) has a truncated header", path: path)
            }
            guard header.prefix(8).elementsEqual(fileMagic) else {
                throw SOPError(.corrupt, "log segment \(path) has a bad magic number", path: path)
            }
            let number = try header.withUnsafeBytes { b -> Int in
                guard b.loadLE(60, as: UInt32.self) == CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[..<60])) else {
                    throw SOPError(.corrupt, "log segment \(path) header fails its checksum", path: path)
                }
                let version = b.loadLE(8, as: UInt16.self)
                guard version == formatVersion else {
                    throw SOPError(.unsupportedFormat,
                                   "log segment \(path) has format version \(version); this build reads \(formatVersion)",
                                   path: path)
                }
                return Int(b.loadLE(12, as: UInt32.self))
            }
            let size = try file.size()
            return LogSegment(file: file, number: number, end: (size + 7) & ~7)
        } catch {
            file.close()
            throw error
        }
    }

    /// Bytes a record with a payload of `payloadLength` bytes occupies in a segment.
    public static func framedSize(payloadLength: Int) -> UInt64 { UInt64(framedSize(payloadLength)) }

    /// Appends the framed record for `payload` to `out`.
    private static func frame(kind: UInt8, payload: [UInt8], into out: inout [UInt8]) {
        let start = out.count
        out.appendLE(recordMagic)
        out.append(kind)
        out.append(0)
        out.appendLE(UInt32(payload.count))
        out.appendLE(CRC32C.checksum(payload))
        let headerCRC = CRC32C.checksum(out[start..<(start + 12)])
        out.appendLE(headerCRC)
        out.append(contentsOf: payload)
        out.append(contentsOf: repeatElement(0, count: framedSize(payload.count) - recordHeaderSize - payload.count))
    }

    /// Reserves `size` bytes at the end; returns their offset.
    private func reserve(_ size: Int) -> UInt64 {
        appendOffset.withLock { end in
            let offset = end
            end += UInt64(size)
            return offset
        }
    }

    /// Gives back a reservation whose write failed, if nothing was reserved after it.
    private func unreserve(_ offset: UInt64, _ size: Int) {
        appendOffset.withLock { end in
            if end == offset + UInt64(size) { end = offset }
        }
    }

    /// Writes one record at ``end`` with a single `pwrite` and returns its offset. Does not
    /// sync (see ``dataSync()``). Safe to call from several threads, though callers normally
    /// serialize appends.
    public func append(kind: UInt8, payload: [UInt8]) throws -> UInt64 {
        guard payload.count <= Self.maxPayload else {
            throw SOPError(.invalidArgument,
                           "log record payload of \(payload.count) bytes exceeds \(Self.maxPayload)", path: path)
        }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(Self.framedSize(payload.count))
        Self.frame(kind: kind, payload: payload, into: &buffer)
        let offset = reserve(buffer.count)
        do {
            try file.write(buffer, at: offset)
        } catch {
            unreserve(offset, buffer.count)
            throw error
        }
        return offset
    }

    /// Writes several records back to back with a single `pwrite`; returns their offsets.
    public func appendBatch(_ records: [(kind: UInt8, payload: [UInt8])]) throws -> [UInt64] {
        if records.isEmpty { return [] }
        var total = 0
        for record in records {
            guard record.payload.count <= Self.maxPayload else {
                throw SOPError(.invalidArgument,
                               "log record payload of \(record.payload.count) bytes exceeds \(Self.maxPayload)",
                               path: path)
            }
            total += Self.framedSize(record.payload.count)
        }
        var buffer = scratch.withLock { s in
            var b: [UInt8] = []
            swap(&b, &s)
            return b
        }
        buffer.removeAll(keepingCapacity: true)
        // With headroom: the next commit is usually a little larger or smaller.
        if buffer.capacity < total { buffer.reserveCapacity(total + total / 4) }
        defer {
            if buffer.capacity <= Self.scratchLimit {
                scratch.withLock { s in if s.capacity < buffer.capacity { swap(&s, &buffer) } }
            }
        }
        var relative: [Int] = []
        relative.reserveCapacity(records.count)
        for record in records {
            relative.append(buffer.count)
            Self.frame(kind: record.kind, payload: record.payload, into: &buffer)
        }
        let offset = reserve(buffer.count)
        do {
            try file.write(buffer, at: offset)
        } catch {
            unreserve(offset, buffer.count)
            throw error
        }
        return relative.map { offset + UInt64($0) }
    }

    /// What a record header says, if it is valid.
    private struct RecordHeader {
        var kind: UInt8
        var length: Int
        var payloadCRC: UInt32
    }

    /// Parses the 16 header bytes at the start of `b`; `nil` if they are not a valid header.
    private static func parseHeader(_ b: UnsafeRawBufferPointer) -> RecordHeader? {
        guard b.count >= recordHeaderSize,
              b.loadLE(0, as: UInt16.self) == recordMagic,
              b[3] == 0,
              b.loadLE(12, as: UInt32.self) == CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[0..<12]))
        else { return nil }
        let length = Int(b.loadLE(4, as: UInt32.self))
        guard length <= maxPayload else { return nil }
        return RecordHeader(kind: b[2], length: length, payloadCRC: b.loadLE(8, as: UInt32.self))
    }

    private func corrupt(_ offset: UInt64, _ why: String) -> SOPError {
        SOPError(.corrupt, "log record at offset \(offset) of \(path) \(why)", path: path)
    }

    private func checkRecordOffset(_ offset: UInt64) throws {
        guard offset >= UInt64(Self.headerSize), offset % 8 == 0, offset <= UInt64(Int64.max) / 2 else {
            throw corrupt(offset, "is not a valid record offset")
        }
    }

    /// Validates the record header in `b` (kind, checksum) for the record at `offset`.
    private func validHeader(_ b: UnsafeRawBufferPointer, at offset: UInt64,
                             expectedKind: UInt8?) throws -> RecordHeader {
        guard let header = Self.parseHeader(b) else { throw corrupt(offset, "has an invalid header") }
        if let expectedKind, header.kind != expectedKind {
            throw corrupt(offset, "has kind \(header.kind), expected \(expectedKind)")
        }
        return header
    }

    /// Reads and validates the record at `offset` (two reads: header, then payload) and
    /// returns its payload. Throws ``SOPError/Code/corrupt`` naming the file and offset when
    /// the record is truncated, fails a checksum, or has another kind than `expectedKind`.
    public func readRecord(at offset: UInt64, expectedKind: UInt8? = nil) throws -> [UInt8] {
        try checkRecordOffset(offset)
        var headerBytes = [UInt8](repeating: 0, count: Self.recordHeaderSize)
        let header = try headerBytes.withUnsafeMutableBytes { b -> RecordHeader in
            let n = try file.read(into: b, at: offset)
            guard n == Self.recordHeaderSize else { throw corrupt(offset, "is truncated") }
            return try validHeader(UnsafeRawBufferPointer(b), at: offset, expectedKind: expectedKind)
        }
        let payloadOffset = offset + UInt64(Self.recordHeaderSize)
        if header.length > 1 << 16 {
            // Do not allocate for a length the file cannot hold.
            guard payloadOffset + UInt64(header.length) <= (try file.size()) else {
                throw corrupt(offset, "is truncated")
            }
        }
        let payload = try file.read(at: payloadOffset, count: header.length)
        guard payload.count == header.length else { throw corrupt(offset, "is truncated") }
        guard CRC32C.checksum(payload) == header.payloadCRC else {
            throw corrupt(offset, "fails its payload checksum")
        }
        return payload
    }

    /// Reads and validates the record at `offset` with a single read, given the payload length
    /// the caller expects (a different stored length is ``SOPError/Code/corrupt``).
    public func readRecord(at offset: UInt64, payloadLength: Int, expectedKind: UInt8? = nil) throws -> [UInt8] {
        try checkRecordOffset(offset)
        guard payloadLength >= 0, payloadLength <= Self.maxPayload else {
            throw SOPError(.invalidArgument, "payload length \(payloadLength) is out of range", path: path)
        }
        let bytes = try file.read(at: offset, count: Self.recordHeaderSize + payloadLength)
        return try bytes.withUnsafeBytes { b -> [UInt8] in
            guard b.count >= Self.recordHeaderSize else { throw corrupt(offset, "is truncated") }
            let header = try validHeader(b, at: offset, expectedKind: expectedKind)
            guard header.length == payloadLength else {
                throw corrupt(offset, "has payload length \(header.length), expected \(payloadLength)")
            }
            guard b.count == Self.recordHeaderSize + payloadLength else { throw corrupt(offset, "is truncated") }
            let payload = UnsafeRawBufferPointer(rebasing: b[Self.recordHeaderSize...])
            guard CRC32C.checksum(payload) == header.payloadCRC else {
                throw corrupt(offset, "fails its payload checksum")
            }
            return Array(payload)
        }
    }

    /// Visits the valid records from `offset` (at least 64) in order, reading the file in
    /// 1 MiB chunks. Stops at end of file or at the first record that is truncated or fails
    /// a check, and returns the offset just past the last valid record (where appends should
    /// continue). Errors thrown by `visit` stop the scan and propagate.
    public func scan(from offset: UInt64,
                     _ visit: (_ offset: UInt64, _ kind: UInt8, _ payload: [UInt8]) throws -> Void) throws -> UInt64 {
        guard offset >= UInt64(Self.headerSize) else {
            throw SOPError(.invalidArgument, "scan offset \(offset) is inside the segment header", path: path)
        }
        let fileSize = try file.size()
        var position = offset                     // file offset of the next record
        var buffer = [UInt8](repeating: 0, count: Self.scanChunk)
        var bufferStart = offset                  // file offset of buffer[0]
        var bufferCount = 0                       // valid bytes in buffer

        while position < fileSize {
            let remaining = fileSize - position
            guard remaining >= UInt64(Self.recordHeaderSize) else { break }
            // Make sure the header is in the buffer.
            if position + UInt64(Self.recordHeaderSize) > bufferStart + UInt64(bufferCount) {
                try refill(&buffer, &bufferStart, &bufferCount, from: position, need: Self.recordHeaderSize)
            }
            let local = Int(position - bufferStart)
            let parsed = buffer.withUnsafeBytes { b in
                Self.parseHeader(UnsafeRawBufferPointer(rebasing: b[local..<(local + Self.recordHeaderSize)]))
            }
            guard let header = parsed else { break }
            let size = Self.framedSize(header.length)
            guard UInt64(size) <= remaining else { break } // torn tail
            if position + UInt64(size) > bufferStart + UInt64(bufferCount) {
                try refill(&buffer, &bufferStart, &bufferCount, from: position, need: size)
                guard bufferCount >= size else { break } // the file shrank meanwhile
            }
            let start = Int(position - bufferStart) + Self.recordHeaderSize
            let payload = Array(buffer[start..<(start + header.length)])
            guard CRC32C.checksum(payload) == header.payloadCRC else { break }
            try visit(position, header.kind, payload)
            position += UInt64(size)
        }
        return position
    }

    /// Refills the scan buffer so it starts at `from` and holds at least `need` bytes if the
    /// file has them (growing it for records bigger than a chunk).
    private func refill(_ buffer: inout [UInt8], _ bufferStart: inout UInt64, _ bufferCount: inout Int,
                        from: UInt64, need: Int) throws {
        if need > buffer.count {
            buffer = [UInt8](repeating: 0, count: need)
        }
        bufferStart = from
        bufferCount = try buffer.withUnsafeMutableBytes { try file.read(into: $0, at: from) }
    }

    /// Cuts the file at `offset` (at least 64) and continues appending there.
    /// Extends the file with written zeros up to `size` (when shorter), without moving
    /// ``end``. Appends into already-written space change no file metadata, so the
    /// `fdatasync` of a commit flushes data only; a scan stops at the zeros (no record has an
    /// all-zero header).
    public func preallocate(to size: UInt64) throws {
        var current = try file.size()
        guard current < size else { return }
        let chunk = [UInt8](repeating: 0, count: 1 << 20)
        while current < size {
            let n = Int(min(UInt64(chunk.count), size - current))
            try chunk.withUnsafeBytes { try file.write(UnsafeRawBufferPointer(rebasing: $0[0..<n]), at: current) }
            current += UInt64(n)
        }
    }

    /// Extends the file with allocated space that reads as zeros up to `size` (when shorter),
    /// without moving ``end``: appends there do not grow the file page by page. Their
    /// `fdatasync` still commits the file system's extent update, so this suits large
    /// appends; small ones are cheaper into written zeros (``preallocate(to:)``).
    public func allocate(to size: UInt64) throws {
        try file.allocate(to: size)
    }

    public func truncate(to offset: UInt64) throws {
        guard offset >= UInt64(Self.headerSize) else {
            throw SOPError(.invalidArgument, "cannot truncate log segment inside its header (\(offset))", path: path)
        }
        try file.truncate(to: offset)
        appendOffset.withLock { $0 = offset }
    }

    /// Makes appended records durable (`fdatasync`).
    public func dataSync() throws {
        try file.dataSync()
    }

    /// Closes the file; later calls do nothing.
    public func close() {
        file.close()
    }
}
