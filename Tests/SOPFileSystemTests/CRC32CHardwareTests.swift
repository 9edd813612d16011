import Foundation
import Testing
import SOPCore
@testable import SOPFileSystem

/// `CRC32C.checksum` (the CPU's instructions when it has them) against
/// `CRC32C.softwareChecksum` (slicing-by-8), which must agree bit for bit.
@Suite struct CRC32CHardwareTests {
    /// Both paths, on raw buffers.
    static let paths: [(name: String, f: @Sendable (UnsafeRawBufferPointer, UInt32) -> UInt32)] = [
        ("checksum", { CRC32C.checksum($0, seed: $1) }),
        ("softwareChecksum", { CRC32C.softwareChecksum($0, seed: $1) }),
    ]

    @Test func knownVectorsOnBothPaths() {
        let vectors: [([UInt8], UInt32)] = [
            (Array("123456789".utf8), 0xE306_9283),
            ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
            ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
            (Array((0..<32).map { UInt8($0) }), 0x46DD_794E),
            ([], 0),
        ]
        for (name, f) in Self.paths {
            for (bytes, expected) in vectors {
                let got = bytes.withUnsafeBytes { f($0, 0) }
                #expect(got == expected, "\(name) of \(bytes.count) bytes")
            }
            // An empty buffer with no address leaves the seed as it is.
            #expect(f(UnsafeRawBufferPointer(start: nil, count: 0), 0) == 0, "\(name)")
            #expect(f(UnsafeRawBufferPointer(start: nil, count: 0), 0xDEAD_BEEF) == 0xDEAD_BEEF, "\(name)")
        }
    }

    /// Thousands of seeded random buffers of lengths 0…4,100 at random alignments, with random seeds.
    @Test func hardwareMatchesSoftware() {
        var g = SplitMix64(seed: 0xC3C3_2C)
        let pool = randomBytes(4_100 + 64, using: &g)
        var mismatches: [String] = []
        pool.withUnsafeBytes { all in
            for i in 0..<5_000 {
                // Short lengths (headers, tails) half of the time, any length up to 4,100 otherwise.
                let length = i % 2 == 0 ? Int.random(in: 0...40, using: &g) : Int.random(in: 0...4_100, using: &g)
                let offset = Int.random(in: 0..<64, using: &g)
                let seed: UInt32 = i % 4 == 0 ? 0 : UInt32.random(in: .min ... .max, using: &g)
                let b = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + length)])
                let hw = CRC32C.checksum(b, seed: seed)
                let sw = CRC32C.softwareChecksum(b, seed: seed)
                if hw != sw, mismatches.count < 10 {
                    mismatches.append("offset \(offset) length \(length) seed \(seed): \(hw) != \(sw)")
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches)")
    }

    /// `checksum(b, seed: checksum(a)) == checksum(a + b)` on both paths, cut anywhere.
    @Test func continuationOnBothPaths() {
        var g = SplitMix64(seed: 77)
        for _ in 0..<200 {
            let bytes = randomBytes(Int.random(in: 0...3_000, using: &g), using: &g)
            let cut = Int.random(in: 0...bytes.count, using: &g)
            bytes.withUnsafeBytes { all in
                let a = UnsafeRawBufferPointer(rebasing: all[..<cut])
                let b = UnsafeRawBufferPointer(rebasing: all[cut...])
                for (name, f) in Self.paths {
                    #expect(f(b, f(a, 0)) == f(all, 0), "\(name), \(bytes.count) bytes cut at \(cut)")
                }
            }
            #expect(CRC32C.checksum(bytes[cut...], seed: CRC32C.checksum(bytes[..<cut])) == CRC32C.checksum(bytes))
        }
    }

    /// On Linux, the hardware path is taken exactly when /proc/cpuinfo lists the instructions,
    /// so the tests above really compare two implementations on such machines.
    @Test func hardwarePathFollowsTheCPU() throws {
        #if os(Linux) && (arch(x86_64) || arch(arm64))
        let info = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        #if arch(x86_64)
        let flag = "sse4_2"
        #else
        let flag = "crc32"
        #endif
        let listed = info.split(separator: "\n").contains { line in
            (line.hasPrefix("flags") || line.hasPrefix("Features")) && line.split(separator: " ").contains { $0 == flag }
        }
        #expect(CRC32C.usesHardware == listed)
        #endif
    }
}
