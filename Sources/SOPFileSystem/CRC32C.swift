internal import CSOPCRC32C

/// CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`), the checksum of every SOP file
/// structure. Computed with the CPU's CRC-32C instructions when it has them (SSE 4.2 on x86_64,
/// the CRC32 extension on aarch64; the `CSOPCRC32C` target, checked once at run time), else in
/// software with slicing-by-8 tables.
///
/// `checksum(b, seed: checksum(a)) == checksum(a + b)`, so a checksum can be built up in pieces.
public enum CRC32C {
    /// Whether ``checksum(_:seed:)-(UnsafeRawBufferPointer,_)`` uses the CPU's CRC-32C
    /// instructions (otherwise it is ``softwareChecksum(_:seed:)``).
    package static let usesHardware: Bool = sop_crc32c_hw_available() != 0

    /// The reflected Castagnoli polynomial.
    static let polynomial: UInt32 = 0x82F6_3B78

    /// Eight 256-entry tables, flattened: table `k` starts at `k * 256`. Built once.
    static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ polynomial : c >> 1 }
            t[i] = c
        }
        for i in 0..<256 {
            var c = t[i]
            for k in 1..<8 {
                c = t[Int(c & 0xFF)] ^ (c >> 8)
                t[k * 256 + i] = c
            }
        }
        return t
    }()

    /// The CRC-32C of `bytes`, continuing from `seed` (the checksum of the bytes before them; 0 to start).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        if usesHardware { return sop_crc32c_hw(seed, bytes.baseAddress, bytes.count) }
        return softwareChecksum(bytes, seed: seed)
    }

    /// The CRC-32C of `bytes`, continuing from `seed`, always computed with the slicing-by-8
    /// tables (the fallback of ``checksum(_:seed:)-(UnsafeRawBufferPointer,_)``; tests compare the two).
    package static func softwareChecksum(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        var crc = ~seed
        tables.withUnsafeBufferPointer { t in
            let t = t.baseAddress!
            var i = 0
            let n = bytes.count
            while n - i >= 8 {
                let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                let lo = UInt32(truncatingIfNeeded: word) ^ crc
                let hi = UInt32(truncatingIfNeeded: word >> 32)
                crc = t[7 * 256 + Int(lo & 0xFF)]
                    ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((lo >> 16) & 0xFF)]
                    ^ t[4 * 256 + Int(lo >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)]
                    ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((hi >> 16) & 0xFF)]
                    ^ t[Int(hi >> 24)]
                i += 8
            }
            while i < n {
                crc = t[Int((crc ^ UInt32(bytes[i])) & 0xFF)] ^ (crc >> 8)
                i += 1
            }
        }
        return ~crc
    }

    /// The CRC-32C of `bytes`, continuing from `seed`.
    public static func checksum(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, seed: seed) }
    }

    /// The CRC-32C of `bytes`, continuing from `seed`.
    public static func checksum(_ bytes: ArraySlice<UInt8>, seed: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, seed: seed) }
    }
}
