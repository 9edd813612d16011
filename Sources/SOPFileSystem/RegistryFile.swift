import SOPCore
import Synchronization

/// One registry segment file: `hashMod` logical blocks of up to ``capacity`` handles, each
/// block kept in two 4 KiB physical slots so that updating it is safe against torn writes.
///
/// Layout (all integers little-endian):
/// - bytes `[0, 4096)`: file header — magic `"SOPREG01"`, format version `UInt16` (1),
///   `hashMod` `UInt32`, `segmentIndex` `UInt32`, zeros, CRC-32C of bytes `[0, 4092)` in the
///   last 4 bytes.
/// - logical block `i`: slots at `4096 + 2i·4096` and `4096 + (2i+1)·4096`. A slot holds
///   magic `0x53524231` (`UInt32`), format `UInt16` (1), handle count `UInt16`, block index
///   `UInt32`, sequence `UInt64`, then `count` 62-byte handles, zeros, and the CRC-32C of
///   bytes `[0, 4092)` in the last 4 bytes. An all-zero slot was never written.
///
/// A write goes to the slot that does *not* hold the newest valid copy, with the next
/// sequence number; a read takes the valid slot with the higher sequence. A crash mid-write
/// damages only the slot being written, so the previous version survives.
///
/// Writes to one block must be serialized by the caller; reads may run at any time (a read
/// racing a write of the same block returns the old or the new contents).
///
/// Sendable (checked by the compiler): the file is a ``SOPFile`` and the per-block slot
/// bookkeeping sits in a `Mutex`, never held across I/O.
public final class RegistryFile: Sendable {
    /// Bytes in the file header and in each slot.
    public static let blockSize = 4096
    /// Handles that fit in one block: (4096 − 20 header bytes − 4 CRC bytes) / 62 = 65.
    public static let capacity = (4096 - 20 - 4) / 62
    /// The largest `hashMod` accepted (a 8 GiB file).
    public static let maxHashMod = 1 << 20

    static let fileMagic: [UInt8] = Array("SOPREG01".utf8)
    static let formatVersion: UInt16 = 1
    static let slotMagic: UInt32 = 0x5352_4231
    static let slotFormat: UInt16 = 1
    static let slotHeaderSize = 20
    static let crcOffset = 4092

    /// The file's path.
    public var path: String { file.path }
    /// Number of logical blocks.
    public let hashMod: Int
    /// Which segment of its store's registry this file is.
    public let segmentIndex: Int

    private let file: any FileHandleIO
    /// Per block: 0 = not yet known; otherwise `sequence << 2 | newestSlot << 1 | 1`, where
    /// `newestSlot` holds the newest valid copy (for a never-written block: sequence 0, slot 1,
    /// so the first write goes to slot 0).
    private let slotState: Mutex<[UInt64]>

    private init(file: any FileHandleIO, hashMod: Int, segmentIndex: Int) {
        self.file = file
        self.hashMod = hashMod
        self.segmentIndex = segmentIndex
        self.slotState = Mutex([UInt64](repeating: 0, count: hashMod))
    }

    /// Creates a new registry file at `path` (failing if one exists) with `hashMod` empty
    /// blocks (a sparse file), and syncs the file and its directory.
    public static func create(path: String, hashMod: Int, segmentIndex: Int, io: any FileIO = PosixFileIO()) throws -> RegistryFile {
        guard hashMod >= 1, hashMod <= maxHashMod else {
            throw SOPError(.invalidArgument, "registry hashMod \(hashMod) is not in 1...\(maxHashMod)", path: path)
        }
        guard segmentIndex >= 0, segmentIndex <= Int(UInt32.max) else {
            throw SOPError(.invalidArgument, "registry segment index \(segmentIndex) is out of range", path: path)
        }
        var header = fileMagic
        header.appendLE(formatVersion)
        header.appendLE(UInt32(hashMod))
        header.appendLE(UInt32(segmentIndex))
        header.append(contentsOf: repeatElement(0, count: blockSize - header.count))
        header.withUnsafeMutableBytes { b in
            b.storeLE(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[..<crcOffset])), at: crcOffset)
        }
        // Built under a temporary name and renamed into place, so a crash never leaves a
        // registry file without its header or geometry.
        let file = try io.createAtomically(path) { f in
            try f.write(header, at: 0)
            try f.truncate(to: UInt64(blockSize) * UInt64(1 + 2 * hashMod))
        }
        return RegistryFile(file: file, hashMod: hashMod, segmentIndex: segmentIndex)
    }

    /// Opens an existing registry file and validates its header: ``SOPError/Code/corrupt``
    /// for a bad magic, checksum or geometry, ``SOPError/Code/unsupportedFormat`` for an
    /// unknown format version.
    public static func open(path: String, io: any FileIO = PosixFileIO()) throws -> RegistryFile {
        let file = try io.open(path, create: false, exclusive: false)
        do {
            let header = try file.read(at: 0, count: blockSize)
            let (hashMod, segmentIndex) = try header.withUnsafeBytes { b -> (Int, Int) in
                guard b.count == blockSize else {
                    throw SOPError(.corrupt, "registry file \(path) has a truncated header", path: path)
                }
                guard b.prefix(8).elementsEqual(fileMagic) else {
                    throw SOPError(.corrupt, "registry file \(path) has a bad magic number", path: path)
                }
                let crcOK = b.loadLE(crcOffset, as: UInt32.self)
                    == CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[..<crcOffset]))
                guard crcOK else {
                    throw SOPError(.corrupt, "registry file \(path) header fails its checksum", path: path)
                }
                let version = b.loadLE(8, as: UInt16.self)
                guard version == formatVersion else {
                    throw SOPError(.unsupportedFormat,
                                   "registry file \(path) has format version \(version); this build reads \(formatVersion)",
                                   path: path)
                }
                let hashMod = Int(b.loadLE(10, as: UInt32.self))
                guard hashMod >= 1, hashMod <= maxHashMod else {
                    throw SOPError(.corrupt, "registry file \(path) has an invalid hashMod \(hashMod)", path: path)
                }
                return (hashMod, Int(b.loadLE(14, as: UInt32.self)))
            }
            let expected = UInt64(blockSize) * UInt64(1 + 2 * hashMod)
            let size = try file.size()
            guard size >= expected else {
                throw SOPError(.corrupt, "registry file \(path) is truncated (\(size) of \(expected) bytes)", path: path)
            }
            return RegistryFile(file: file, hashMod: hashMod, segmentIndex: segmentIndex)
        } catch {
            file.close()
            throw error
        }
    }

    /// File offset of physical slot `slot` (0 or 1) of block `index`.
    static func slotOffset(_ index: Int, _ slot: Int) -> UInt64 {
        UInt64(blockSize) * UInt64(1 + 2 * index + slot)
    }

    private func checkIndex(_ index: Int) throws {
        guard index >= 0, index < hashMod else {
            throw SOPError(.invalidArgument,
                           "registry block \(index) is out of range 0..<\(hashMod) in \(path)", path: path)
        }
    }

    /// What one slot holds.
    private enum Slot {
        case empty                       // all zeros: never written
        case invalid                     // torn, damaged or misplaced
        case valid(sequence: UInt64)
    }

    private func classify(_ s: UnsafeRawBufferPointer, index: Int) -> Slot {
        if s.loadLE(0, as: UInt32.self) != Self.slotMagic {
            return s.allSatisfy { $0 == 0 } ? .empty : .invalid
        }
        guard s.loadLE(Self.crcOffset, as: UInt32.self)
                == CRC32C.checksum(UnsafeRawBufferPointer(rebasing: s[..<Self.crcOffset])),
              s.loadLE(4, as: UInt16.self) == Self.slotFormat,
              Int(s.loadLE(6, as: UInt16.self)) <= Self.capacity,
              Int(s.loadLE(8, as: UInt32.self)) == index
        else { return .invalid }
        return .valid(sequence: s.loadLE(12, as: UInt64.self))
    }

    /// Decodes block `index` from its two slots (`pair` is 8192 bytes; missing bytes past the
    /// end of the file are zeros), records which slot is newest, and returns the handles.
    private func decodeBlock(_ pair: UnsafeRawBufferPointer, index: Int) throws -> [Handle] {
        let size = Self.blockSize
        let slots = [UnsafeRawBufferPointer(rebasing: pair[0..<size]),
                     UnsafeRawBufferPointer(rebasing: pair[size..<2 * size])]
        let kinds = slots.map { classify($0, index: index) }
        var newest = -1
        var sequence: UInt64 = 0
        var sawEmpty = false
        for (i, kind) in kinds.enumerated() {
            switch kind {
            case .empty: sawEmpty = true
            case .invalid: break
            case .valid(let seq):
                if newest < 0 || seq > sequence { newest = i; sequence = seq }
            }
        }
        if newest < 0 {
            guard sawEmpty else {
                throw SOPError(.corrupt, "registry block \(index) of \(path) fails its checksum", path: path)
            }
            remember(index, sequence: 0, slot: 1)
            return []
        }
        remember(index, sequence: sequence, slot: newest)
        let slot = slots[newest]
        let count = Int(slot.loadLE(6, as: UInt16.self))
        var handles: [Handle] = []
        handles.reserveCapacity(count)
        let bytes = Array(slot[Self.slotHeaderSize..<(Self.slotHeaderSize + count * Handle.encodedSize)])
        for k in 0..<count {
            do {
                handles.append(try Handle(decoding: bytes, at: k * Handle.encodedSize))
            } catch let error as SOPError {
                throw SOPError(.corrupt, "registry block \(index) of \(path): \(error.message)", path: path)
            }
        }
        return handles
    }

    /// Records the newest slot of a block; never moves a block's state backwards (a read
    /// racing a write must not undo the writer's update).
    private func remember(_ index: Int, sequence: UInt64, slot: Int) {
        let packed = (sequence << 2) | (UInt64(slot) << 1) | 1
        slotState.withLock { state in
            let old = state[index]
            if old == 0 || (old >> 2) < sequence { state[index] = packed }
        }
    }

    /// The handles of block `index` (the valid slot with the higher sequence). Throws
    /// ``SOPError/Code/corrupt`` when neither slot is valid and at least one is not empty.
    public func readBlock(_ index: Int) throws -> [Handle] {
        try checkIndex(index)
        var pair = [UInt8](repeating: 0, count: 2 * Self.blockSize)
        return try pair.withUnsafeMutableBytes { buffer in
            _ = try file.read(into: buffer, at: Self.slotOffset(index, 0))
            return try decodeBlock(UnsafeRawBufferPointer(buffer), index: index)
        }
    }

    /// The handles of every block, read in large sequential chunks.
    public func readAllBlocks() throws -> [[Handle]] {
        let pairSize = 2 * Self.blockSize
        let pairsPerChunk = 64 // 512 KiB per read
        var result: [[Handle]] = []
        result.reserveCapacity(hashMod)
        var chunk = [UInt8](repeating: 0, count: pairsPerChunk * pairSize)
        var first = 0
        while first < hashMod {
            let pairs = min(pairsPerChunk, hashMod - first)
            try chunk.withUnsafeMutableBytes { buffer in
                let span = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<(pairs * pairSize)])
                let n = try file.read(into: span, at: Self.slotOffset(first, 0))
                if n < span.count { // past end of file reads as never written
                    UnsafeMutableRawBufferPointer(rebasing: span[n...]).initializeMemory(as: UInt8.self, repeating: 0)
                }
                for p in 0..<pairs {
                    let pair = UnsafeRawBufferPointer(rebasing: span[(p * pairSize)..<((p + 1) * pairSize)])
                    result.append(try decodeBlock(pair, index: first + p))
                }
            }
            first += pairs
        }
        return result
    }

    /// Replaces several blocks durably and mirrored: each new image goes first to the slot
    /// that does not hold the newest copy, the file is synced, then the same image goes to
    /// the other slot and the file is synced again. A crash tears at most one slot of a block,
    /// and the other then holds either the new image or the previous one (which the commit
    /// log, not yet checkpointed past, brings up to date). After this returns both slots
    /// hold the new image, so later damage to one slot is survived with no loss, and damage
    /// to both is reported as corruption.
    public func writeBlocks(_ blocks: [(index: Int, handles: [Handle])], betweenSlots: () throws -> Void = {}) throws {
        if blocks.isEmpty { return }
        var images: [(index: Int, sequence: UInt64, target: Int, bytes: [UInt8])] = []
        images.reserveCapacity(blocks.count)
        for b in blocks {
            try checkIndex(b.index)
            guard b.handles.count <= Self.capacity else {
                throw SOPError(.invalidArgument,
                               "\(b.handles.count) handles do not fit in a registry block (capacity \(Self.capacity))",
                               path: path)
            }
            var state = slotState.withLock { $0[b.index] }
            if state == 0 {
                _ = try readBlock(b.index)
                state = slotState.withLock { $0[b.index] }
            }
            let sequence = (state >> 2) &+ 1
            let target = 1 - Int((state >> 1) & 1)
            images.append((b.index, sequence, target, Self.slotImage(index: b.index, sequence: sequence, handles: b.handles)))
        }
        for i in images { try file.write(i.bytes, at: Self.slotOffset(i.index, i.target)) }
        try file.dataSync()
        try betweenSlots()
        for i in images {
            try file.write(i.bytes, at: Self.slotOffset(i.index, 1 - i.target))
            remember(i.index, sequence: i.sequence, slot: i.target)
        }
        try file.dataSync()
    }

    static func slotImage(index: Int, sequence: UInt64, handles: [Handle]) -> [UInt8] {
        var slot: [UInt8] = []
        slot.reserveCapacity(blockSize)
        slot.appendLE(slotMagic)
        slot.appendLE(slotFormat)
        slot.appendLE(UInt16(handles.count))
        slot.appendLE(UInt32(index))
        slot.appendLE(sequence)
        for handle in handles { handle.encode(into: &slot) }
        slot.append(contentsOf: repeatElement(0, count: blockSize - slot.count))
        slot.withUnsafeMutableBytes { b in
            b.storeLE(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[..<crcOffset])), at: crcOffset)
        }
        return slot
    }

    /// Replaces the contents of block `index` with `handles` (at most ``capacity``), writing
    /// the slot that does not hold the newest valid copy. Does not sync (see ``sync()``).
    public func writeBlock(_ index: Int, handles: [Handle]) throws {
        try checkIndex(index)
        guard handles.count <= Self.capacity else {
            throw SOPError(.invalidArgument,
                           "\(handles.count) handles do not fit in a registry block (capacity \(Self.capacity))",
                           path: path)
        }
        var state = slotState.withLock { $0[index] }
        if state == 0 {
            _ = try readBlock(index)
            state = slotState.withLock { $0[index] }
        }
        let sequence = (state >> 2) &+ 1
        let target = 1 - Int((state >> 1) & 1)
        var slot: [UInt8] = []
        slot.reserveCapacity(Self.blockSize)
        slot.appendLE(Self.slotMagic)
        slot.appendLE(Self.slotFormat)
        slot.appendLE(UInt16(handles.count))
        slot.appendLE(UInt32(index))
        slot.appendLE(sequence)
        for handle in handles { handle.encode(into: &slot) }
        slot.append(contentsOf: repeatElement(0, count: Self.blockSize - slot.count))
        slot.withUnsafeMutableBytes { b in
            b.storeLE(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[..<Self.crcOffset])), at: Self.crcOffset)
        }
        try file.write(slot, at: Self.slotOffset(index, target))
        remember(index, sequence: sequence, slot: target)
    }

    /// Makes written blocks durable (`fdatasync`).
    public func sync() throws {
        try file.dataSync()
    }

    /// Closes the file; later calls do nothing.
    public func close() {
        file.close()
    }
}
