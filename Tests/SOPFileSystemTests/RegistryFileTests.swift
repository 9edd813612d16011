import Testing
import SOPCore
@testable import SOPFileSystem

@Suite struct RegistryFileTests {
    @Test func roundTripsBlocksOfZeroOneAndFullCapacity() throws {
        #expect(RegistryFile.capacity == 65)
        try withTempDir { dir in
            let path = dir.file("registry-0.reg")
            let reg = try RegistryFile.create(path: path, hashMod: 8, segmentIndex: 3)
            #expect(try SOPFile.open(path, create: false).size() == 4096 * 17)
            let one = [sampleHandle(1)]
            let full = (0..<65).map(sampleHandle)
            #expect(try reg.readBlock(0) == [])
            try reg.writeBlock(0, handles: [])
            try reg.writeBlock(1, handles: one)
            try reg.writeBlock(7, handles: full)
            #expect(throws: SOPError.self) { try reg.writeBlock(2, handles: (0..<66).map(sampleHandle)) }
            #expect(throws: SOPError.self) { try reg.writeBlock(8, handles: []) }
            #expect(throws: SOPError.self) { try reg.readBlock(-1) }
            #expect(try reg.readBlock(0) == [])
            #expect(try reg.readBlock(1) == one)
            #expect(try reg.readBlock(7) == full)
            try reg.sync()
            reg.close()

            let again = try RegistryFile.open(path: path)
            #expect(again.hashMod == 8)
            #expect(again.segmentIndex == 3)
            let all = try again.readAllBlocks()
            #expect(all.count == 8)
            #expect(all[1] == one && all[7] == full && all[0] == [] && all[5] == [])
            // Several rewrites alternate slots and the newest always wins, across reopen.
            for round in 0..<5 {
                try again.writeBlock(1, handles: (0..<round).map(sampleHandle))
                #expect(try again.readBlock(1) == (0..<round).map(sampleHandle))
            }
            again.close()
            let third = try RegistryFile.open(path: path)
            #expect(try third.readBlock(1) == (0..<4).map(sampleHandle))
            try third.writeBlock(1, handles: one) // write without a prior read in this process
            #expect(try third.readBlock(1) == one)
            #expect(try RegistryFile.open(path: path).readAllBlocks()[1] == one)
            #expect(throws: SOPError.self) { try RegistryFile.create(path: path, hashMod: 8, segmentIndex: 0) }
        }
    }

    /// Which slot (0/1) of `block` holds the given sequence, read from the raw file.
    private func slotWithSequence(_ path: String, block: Int, _ sequence: UInt64) throws -> Int? {
        let f = try SOPFile.open(path, create: false)
        defer { f.close() }
        for slot in 0..<2 {
            let bytes = try f.read(at: RegistryFile.slotOffset(block, slot), count: 20)
            guard bytes.count == 20 else { continue }
            let seq = bytes.withUnsafeBytes { $0.loadLE(12, as: UInt64.self) }
            if seq == sequence { return slot }
        }
        return nil
    }

    @Test func tornWriteKeepsThePreviousVersion() throws {
        try withTempDir { dir in
            let path = dir.file("reg")
            let reg = try RegistryFile.create(path: path, hashMod: 4, segmentIndex: 0)
            let v1 = (0..<10).map(sampleHandle)
            let v2 = (10..<30).map(sampleHandle)
            try reg.writeBlock(2, handles: v1)  // sequence 1
            try reg.writeBlock(2, handles: v2)  // sequence 2
            reg.close()
            let newer = try #require(try slotWithSequence(path, block: 2, 2))

            // Torn write: garbage over part of the newer slot.
            var g = SplitMix64(seed: 4)
            let f = try SOPFile.open(path, create: false)
            try f.write(randomBytes(1000, using: &g), at: RegistryFile.slotOffset(2, newer) + 512)
            f.close()
            let r1 = try RegistryFile.open(path: path)
            #expect(try r1.readBlock(2) == v1)
            #expect(try r1.readAllBlocks()[2] == v1)
            // The next write goes over the torn slot and wins.
            try r1.writeBlock(2, handles: v2)
            #expect(try r1.readBlock(2) == v2)
            #expect(try RegistryFile.open(path: path).readBlock(2) == v2)
            r1.close()

            // Torn write at the end of the file: the last block's newer slot cut mid-way.
            let r2 = try RegistryFile.open(path: path)
            try r2.writeBlock(3, handles: v1) // slot 0, sequence 1
            try r2.writeBlock(3, handles: v2) // slot 1, sequence 2 (last slot in the file)
            r2.close()
            #expect(try slotWithSequence(path, block: 3, 2) == 1)
            // A registry file shorter than its geometry is corruption, not "never written".
            let t = try SOPFile.open(path, create: false)
            try t.truncate(to: RegistryFile.slotOffset(3, 1) + 2000)
            t.close()
            #expect(throws: SOPError.self) { _ = try RegistryFile.open(path: path) }
            let t2 = try SOPFile.open(path, create: false)
            try t2.truncate(to: RegistryFile.slotOffset(3, 1) + UInt64(RegistryFile.blockSize))
            t2.close()

            // A torn first write of a block leaves it empty (its previous contents).
            let r4 = try RegistryFile.open(path: path)
            try r4.writeBlock(0, handles: v1)
            r4.close()
            let slot0 = try #require(try slotWithSequence(path, block: 0, 1))
            let z = try SOPFile.open(path, create: false)
            try z.write([UInt8](repeating: 0xAB, count: 100), at: RegistryFile.slotOffset(0, slot0) + 3000)
            z.close()
            #expect(try RegistryFile.open(path: path).readBlock(0) == [])
        }
    }

    @Test func bothSlotsCorruptIsCorruptNamingTheFile() throws {
        try withTempDir { dir in
            let path = dir.file("reg")
            let reg = try RegistryFile.create(path: path, hashMod: 2, segmentIndex: 0)
            try reg.writeBlock(1, handles: [sampleHandle(1)])
            try reg.writeBlock(1, handles: [sampleHandle(2)])
            reg.close()
            let f = try SOPFile.open(path, create: false)
            for slot in 0..<2 { try f.write([0xEE], at: RegistryFile.slotOffset(1, slot) + 100) }
            f.close()
            let r = try RegistryFile.open(path: path)
            #expect(try r.readBlock(0) == [])
            for read in [{ _ = try r.readBlock(1) }, { _ = try r.readAllBlocks() }] {
                do {
                    try read()
                    Issue.record("corrupt block was read")
                } catch let e as SOPError {
                    #expect(e.code == .corrupt)
                    #expect(e.path == path)
                    #expect(e.message.contains(path))
                    #expect(e.message.contains("block 1"))
                }
            }
            #expect(throws: SOPError.self) { try r.writeBlock(1, handles: []) }
        }
    }

    @Test func misplacedSlotIsNotAccepted() throws {
        try withTempDir { dir in
            let path = dir.file("reg")
            let reg = try RegistryFile.create(path: path, hashMod: 2, segmentIndex: 0)
            try reg.writeBlock(0, handles: [sampleHandle(1)])
            try reg.writeBlock(0, handles: [sampleHandle(2)])
            reg.close()
            // Copy block 0's slots into block 1's place: block index does not match.
            let f = try SOPFile.open(path, create: false)
            let pair = try f.read(at: RegistryFile.slotOffset(0, 0), count: 8192)
            try f.write(pair, at: RegistryFile.slotOffset(1, 0))
            f.close()
            #expect(throws: SOPError.self) { try RegistryFile.open(path: path).readBlock(1) }
        }
    }

    @Test func headerCorruptionIsDetected() throws {
        try withTempDir { dir in
            let path = dir.file("reg")
            try RegistryFile.create(path: path, hashMod: 2, segmentIndex: 0).close()
            let f = try SOPFile.open(path, create: false)
            let original = try f.read(at: 0, count: 4096)
            func expectOpen(_ code: SOPError.Code) {
                do {
                    _ = try RegistryFile.open(path: path)
                    Issue.record("open succeeded")
                } catch let e as SOPError {
                    #expect(e.code == code)
                    #expect(e.path == path)
                } catch { Issue.record("unexpected \(error)") }
            }
            // Flipped hashMod byte: checksum fails.
            var bad = original; bad[10] ^= 1
            try f.write(bad, at: 0); expectOpen(.corrupt)
            // Bad magic.
            bad = original; bad[0] = UInt8(ascii: "X")
            try f.write(bad, at: 0); expectOpen(.corrupt)
            // Unknown version with a valid checksum.
            bad = original; bad[8] = 2
            bad.withUnsafeMutableBytes { b in
                b.storeLE(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[..<4092])), at: 4092)
            }
            try f.write(bad, at: 0); expectOpen(.unsupportedFormat)
            // Truncated header.
            try f.truncate(to: 100); expectOpen(.corrupt)
            try f.truncate(to: 0); expectOpen(.corrupt)
            f.close()
        }
    }
}
