import Foundation
import Synchronization
import SOPCore

/// Binary encoding of a ``SOPCore/CommitRecord`` (the payload of a commit record in the log):
///
/// ```
/// u8 version (2) | u64 sequence (version 2 only) | txid[16]
/// u32 nInfos   | per info:   u32 length, StoreInfo JSON
/// u32 nDropped | per store:  id[16]
/// u32 nHandles | per change: store[16], logical[16], u8 op (1 put, 0 remove), handle[62] if put
/// ```
/// All integers little-endian.
enum CommitRecordCodec {
    /// Per store, the JSON of its info split around the two fields every insert or delete
    /// commit changes (`count`, `countVersion`), with the info it was made from (those two
    /// fields set to marker values). Encoding the same store again with only those fields
    /// changed splices the numbers in: `JSONEncoder` costs ~14 µs per commit otherwise, a
    /// tenth of a single-item commit.
    private static let templates = Mutex<[SOPID: (key: StoreInfo, parts: [[UInt8]])]>([:])
    private static let countMarker: Int64 = -7_316_492_815_305_771_811
    private static let versionMarker: UInt64 = 16_979_432_106_114_318_923

    static func storeInfoJSON(_ info: StoreInfo) -> [UInt8] {
        var key = info
        key.count = countMarker
        key.countVersion = versionMarker
        if let t = templates.withLock({ $0[info.id] }), t.key == key {
            var out = t.parts[0]
            out.append(contentsOf: String(info.count).utf8)
            out.append(contentsOf: t.parts[1])
            out.append(contentsOf: String(info.countVersion).utf8)
            out.append(contentsOf: t.parts[2])
            return out
        }
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        // StoreInfo encoding cannot fail: every field is a plain value.
        let json = (try? enc.encode(info)).map(Array.init) ?? []
        if let marked = (try? enc.encode(key)).map(Array.init),
           let parts = split(marked, around: Array(String(countMarker).utf8), Array(String(versionMarker).utf8)) {
            templates.withLock { t in
                if t.count > 4_096 { t.removeAll() }
                t[info.id] = (key, parts)
            }
        }
        return json
    }

    /// `bytes` cut around exactly one occurrence of `a` followed later by exactly one of `b`.
    private static func split(_ bytes: [UInt8], around a: [UInt8], _ b: [UInt8]) -> [[UInt8]]? {
        func occurrences(_ n: [UInt8]) -> [Int] {
            guard bytes.count >= n.count else { return [] }
            return (0...(bytes.count - n.count)).filter { bytes[$0..<($0 + n.count)].elementsEqual(n) }
        }
        let ia = occurrences(a), ib = occurrences(b)
        guard ia.count == 1, ib.count == 1, ia[0] + a.count <= ib[0] else { return nil }
        return [Array(bytes[..<ia[0]]), Array(bytes[(ia[0] + a.count)..<ib[0]]), Array(bytes[(ib[0] + b.count)...])]
    }

    static let version: UInt8 = 2
    /// Records without a sequence number (written by earlier builds) are still read.
    static let versionWithoutSequence: UInt8 = 1

    static func encode(_ r: CommitRecord) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 + r.handles.count * 95 + r.storeInfos.count * 512)
        if let seq = r.sequence {
            out.append(version)
            for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: seq >> (8 * UInt64(i)))) }
        } else {
            out.append(versionWithoutSequence)
        }
        r.transactionID.append(to: &out)
        put32(UInt32(r.storeInfos.count), &out)
        for info in r.storeInfos {
            let json = storeInfoJSON(info)
            put32(UInt32(json.count), &out)
            out.append(contentsOf: json)
        }
        put32(UInt32(r.droppedStores.count), &out)
        for id in r.droppedStores { id.append(to: &out) }
        put32(UInt32(r.handles.count), &out)
        for c in r.handles {
            c.store.append(to: &out)
            c.logicalID.append(to: &out)
            if let h = c.handle {
                out.append(1)
                h.encode(into: &out)
            } else {
                out.append(0)
            }
        }
        return out
    }

    static func decode(_ b: [UInt8], path: String, offset: UInt64) throws -> CommitRecord {
        var r = Reader(bytes: b, path: path, offset: offset)
        let v = try r.u8()
        guard v == version || v == versionWithoutSequence else { throw r.error("unknown commit record version") }
        var seq: UInt64?
        if v == version {
            let b = try r.take(8)
            var x: UInt64 = 0
            for i in 0..<8 { x |= UInt64(b[i]) << (8 * UInt64(i)) }
            seq = x
        }
        var rec = CommitRecord(transactionID: try r.id())
        rec.sequence = seq
        let dec = JSONDecoder()
        for _ in 0..<(try r.count()) {
            let n = Int(try r.u32())
            let json = try r.take(n)
            do { rec.storeInfos.append(try dec.decode(StoreInfo.self, from: Data(json))) } catch {
                throw r.error("store info does not decode")
            }
        }
        for _ in 0..<(try r.count()) { rec.droppedStores.append(try r.id()) }
        for _ in 0..<(try r.count()) {
            let store = try r.id()
            let logical = try r.id()
            switch try r.u8() {
            case 1:
                let raw = try r.take(Handle.encodedSize)
                let h: Handle
                do { h = try Handle(decoding: raw, at: 0) } catch let e as SOPError {
                    throw r.error(e.message)   // the same error, naming the file and offset
                }
                guard h.logicalID == logical else { throw r.error("handle does not match its logical ID") }
                rec.handles.append(HandleChange(store: store, logicalID: logical, handle: h))
            case 0:
                rec.handles.append(HandleChange(store: store, logicalID: logical, handle: nil))
            default:
                throw r.error("unknown handle operation")
            }
        }
        guard r.atEnd else { throw r.error("trailing bytes") }
        return rec
    }

    private static func put32(_ v: UInt32, _ out: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }

    private struct Reader {
        let bytes: [UInt8]
        let path: String
        let offset: UInt64
        var i = 0

        init(bytes: [UInt8], path: String, offset: UInt64) {
            self.bytes = bytes
            self.path = path
            self.offset = offset
        }

        var atEnd: Bool { i == bytes.count }

        func error(_ what: String) -> SOPError {
            SOPError(.corrupt, "commit record at offset \(offset) of \(path): \(what)", path: path)
        }

        mutating func take(_ n: Int) throws -> [UInt8] {
            guard n >= 0, n <= bytes.count - i else { throw error("truncated") }
            defer { i += n }
            return Array(bytes[i..<i + n])
        }

        mutating func u8() throws -> UInt8 {
            guard i < bytes.count else { throw error("truncated") }
            defer { i += 1 }
            return bytes[i]
        }

        mutating func u32() throws -> UInt32 {
            let b = try take(4)
            return UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
        }

        /// A count, bounded by what the remaining bytes could hold.
        mutating func count() throws -> Int {
            let n = Int(try u32())
            guard n <= bytes.count - i else { throw error("count \(n) exceeds the record") }
            return n
        }

        mutating func id() throws -> SOPID {
            let b = try take(16)
            return SOPID(bytes: b, at: 0)
        }
    }
}
