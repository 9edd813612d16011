import Testing
import SOPCore
@testable import SOPFileSystem

/// Random bytes and mutated valid encodings must produce a value or an `SOPError`, never a crash.
@Suite struct FuzzTests {
    private func mutate(_ bytes: inout [UInt8], using g: inout SplitMix64) {
        switch Int.random(in: 0..<4, using: &g) {
        case 0: // flip a few bits
            for _ in 0..<Int.random(in: 1...4, using: &g) {
                let i = Int.random(in: 0..<bytes.count, using: &g)
                bytes[i] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &g)
            }
        case 1: // overwrite a run with random bytes
            let start = Int.random(in: 0..<bytes.count, using: &g)
            let end = min(bytes.count, start + Int.random(in: 1...600, using: &g))
            for i in start..<end { bytes[i] = UInt8.random(in: 0...255, using: &g) }
        case 2: // zero a run
            let start = Int.random(in: 0..<bytes.count, using: &g)
            let end = min(bytes.count, start + Int.random(in: 1...600, using: &g))
            for i in start..<end { bytes[i] = 0 }
        default: // set a field-ish byte to an extreme
            let i = Int.random(in: 0..<min(bytes.count, 64), using: &g)
            bytes[i] = [0, 0xFF, 0x7F, 0x80].randomElement(using: &g)!
        }
    }

    @Test func registryBlocksNeverCrash() throws {
        try withTempDir { dir in
            let path = dir.file("reg")
            let reg = try RegistryFile.create(path: path, hashMod: 1, segmentIndex: 0)
            try reg.writeBlock(0, handles: (0..<40).map(sampleHandle))
            try reg.writeBlock(0, handles: (0..<65).map(sampleHandle))
            reg.close()
            let raw = try SOPFile.open(path, create: false)
            defer { raw.close() }
            let valid = try raw.read(at: 4096, count: 8192)
            var g = SplitMix64(seed: 7)
            var values = 0, errors = 0
            for iteration in 0..<2000 {
                var bytes: [UInt8]
                if iteration % 4 == 0 {
                    bytes = randomBytes(8192, using: &g)
                } else {
                    bytes = valid
                    for _ in 0..<Int.random(in: 1...3, using: &g) { mutate(&bytes, using: &g) }
                }
                // Sometimes a short file (torn at the end).
                let cut = iteration % 7 == 0 ? Int.random(in: 0...8192, using: &g) : 8192
                try raw.truncate(to: 4096)
                try raw.write(Array(bytes[..<cut]), at: 4096)
                do {
                    let r = try RegistryFile.open(path: path)
                    let handles = try r.readBlock(0)
                    #expect(handles.count <= RegistryFile.capacity)
                    _ = try r.readAllBlocks()
                    try r.writeBlock(0, handles: [sampleHandle(1)])
                    #expect(try r.readBlock(0) == [sampleHandle(1)])
                    values += 1
                    r.close()
                } catch let e as SOPError {
                    #expect(e.code == .corrupt)
                    errors += 1
                }
            }
            #expect(values + errors == 2000)
            #expect(values > 0 && errors > 0)
        }
    }

    @Test func registryHeadersNeverCrash() throws {
        try withTempDir { dir in
            let path = dir.file("reg")
            try RegistryFile.create(path: path, hashMod: 3, segmentIndex: 1).close()
            let raw = try SOPFile.open(path, create: false)
            defer { raw.close() }
            let valid = try raw.read(at: 0, count: 4096)
            var g = SplitMix64(seed: 8)
            for iteration in 0..<300 {
                var bytes = iteration % 3 == 0 ? randomBytes(4096, using: &g) : valid
                if iteration % 3 != 0 { mutate(&bytes, using: &g) }
                try raw.write(bytes, at: 0)
                do {
                    let r = try RegistryFile.open(path: path)
                    _ = try? r.readAllBlocks()
                    r.close()
                } catch let e as SOPError {
                    #expect(e.code == .corrupt || e.code == .unsupportedFormat)
                }
            }
        }
    }

    @Test func logRecordsNeverCrash() throws {
        try withTempDir { dir in
            let path = dir.file("log")
            let log = try LogSegment.create(path: path, number: 1)
            var g = SplitMix64(seed: 9)
            var offsets: [UInt64] = []
            for i in 0..<20 { offsets.append(try log.append(kind: UInt8(i), payload: randomBytes(i * 29, using: &g))) }
            let validEnd = log.end
            log.close()
            let raw = try SOPFile.open(path, create: false)
            defer { raw.close() }
            let valid = try raw.read(at: 0, count: Int(validEnd))
            var scans = 0
            for iteration in 0..<2000 {
                var bytes: [UInt8]
                if iteration % 4 == 0 {
                    bytes = Array(valid[..<64]) + randomBytes(Int.random(in: 0...3000, using: &g), using: &g)
                } else {
                    var body = Array(valid[64...])
                    for _ in 0..<Int.random(in: 1...3, using: &g) { mutate(&body, using: &g) }
                    bytes = Array(valid[..<64]) + body
                }
                if iteration % 5 == 0 { bytes.removeLast(Int.random(in: 0...(bytes.count - 64), using: &g)) }
                try raw.truncate(to: 0)
                try raw.write(bytes, at: 0)
                let seg = try LogSegment.open(path: path)
                var lastOffset: UInt64 = 0
                let end = try seg.scan(from: 64) { offset, _, _ in
                    #expect(offset >= lastOffset)
                    lastOffset = offset
                }
                #expect(end >= 64 && end <= UInt64(bytes.count) + 7)
                scans += 1
                for offset in offsets.prefix(8) + [UInt64(Int.random(in: 0...4000, using: &g))] {
                    do { _ = try seg.readRecord(at: offset) } catch let e as SOPError { #expect(e.code == .corrupt) }
                    do {
                        _ = try seg.readRecord(at: offset, payloadLength: Int.random(in: 0...600, using: &g))
                    } catch let e as SOPError {
                        #expect(e.code == .corrupt)
                    }
                }
                seg.close()
            }
            #expect(scans == 2000)
        }
    }
}
