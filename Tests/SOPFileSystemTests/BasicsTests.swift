#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing
import SOPCore
@testable import SOPFileSystem

@Suite struct CRC32CTests {
    @Test func knownVectors() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        #expect(CRC32C.checksum(Array((0..<32).map { UInt8($0) })) == 0x46DD_794E)
    }

    @Test func seedChainsAndSlicesAgree() {
        var g = SplitMix64(seed: 1)
        let bytes = randomBytes(1000, using: &g)
        let whole = CRC32C.checksum(bytes)
        for cut in [0, 1, 7, 8, 9, 500, 999, 1000] {
            let first = CRC32C.checksum(bytes[..<cut])
            #expect(CRC32C.checksum(bytes[cut...], seed: first) == whole)
        }
        // Slicing-by-8 agrees with the bytewise definition at every length and alignment.
        func bytewise(_ b: ArraySlice<UInt8>) -> UInt32 {
            var crc: UInt32 = 0xFFFF_FFFF
            for x in b {
                crc ^= UInt32(x)
                for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            }
            return ~crc
        }
        for start in 0..<9 {
            for length in 0..<40 {
                let s = bytes[start..<(start + length)]
                #expect(CRC32C.checksum(s) == bytewise(s))
            }
        }
    }
}

struct PoolFailure: Error, Equatable { let n: Int }

@Suite struct BlockingIOPoolTests {
    @Test func runsThousandClosuresConcurrently() async throws {
        let pool = BlockingIOPool(threads: 4, name: "test-pool")
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<1000 {
                group.addTask { try await pool.run { i * 2 } }
            }
            var sum = 0
            for try await v in group { sum += v }
            return sum
        }
        #expect(total == 999 * 1000)
    }

    @Test func propagatesErrors() async throws {
        let pool = BlockingIOPool.shared
        await #expect(throws: PoolFailure(n: 3)) {
            _ = try await pool.run { () throws -> Int in throw PoolFailure(n: 3) }
        }
        await #expect(throws: SOPError.self) {
            _ = try await pool.run { try SOPFile.open("/nonexistent-dir-\(UInt64.random(in: 0...UInt64.max))/x", create: true) }
        }
        // Still works after errors.
        #expect(try await pool.run { 42 } == 42)
    }

    @Test func runsOnDedicatedThreads() async throws {
        let pool = BlockingIOPool(threads: 2, name: "test-names")
        let name = try await pool.run { () -> String in
            let bytes = (try? FileSystem.readFile("/proc/thread-self/comm")) ?? []
            return String(decoding: bytes, as: UTF8.self)
        }
        #if os(Linux)
        #expect(name.hasPrefix("test-names-"))
        #endif
    }
}

@Suite struct SOPFileTests {
    @Test func readWriteTruncateAndShortReads() throws {
        try withTempDir { dir in
            let path = dir.file("data")
            let file = try SOPFile.open(path, create: true)
            defer { file.close() }
            #expect(try file.size() == 0)
            #expect(try file.read(at: 0, count: 10) == [])
            try file.write([1, 2, 3, 4, 5], at: 0)
            try file.write([9, 9], at: 10) // leaves a hole of zeros
            #expect(try file.size() == 12)
            #expect(try file.read(at: 0, count: 12) == [1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 9, 9])
            #expect(try file.read(at: 3, count: 100) == [4, 5, 0, 0, 0, 0, 0, 9, 9]) // short at EOF
            #expect(try file.read(at: 50, count: 4) == [])
            try file.truncate(to: 4)
            #expect(try file.size() == 4)
            #expect(try file.read(at: 0, count: 8) == [1, 2, 3, 4])
            try file.sync()
            try file.dataSync()
            // A large write and read round trip.
            var g = SplitMix64(seed: 2)
            let big = randomBytes(3 << 20, using: &g)
            try big.withUnsafeBytes { try file.write($0, at: 100) }
            #expect(try file.read(at: 100, count: big.count) == big)
        }
    }

    @Test func openErrorsAndClose() throws {
        try withTempDir { dir in
            let path = dir.file("x")
            #expect(throws: SOPError.self) { try SOPFile.open(path, create: false) }
            do {
                _ = try SOPFile.open(path, create: false)
            } catch let e as SOPError {
                #expect(e.code == .io)
                #expect(e.path == path)
                #expect(e.message.contains("No such file"))
            }
            let f = try SOPFile.open(path, create: true, exclusive: true)
            #expect(throws: SOPError.self) { try SOPFile.open(path, create: true, exclusive: true) }
            f.close()
            f.close() // idempotent
            #expect(throws: SOPError.self) { try f.read(at: 0, count: 1) }
            let again = try SOPFile.open(path, create: false)
            #expect(again.path == path)
        }
    }
}

@Suite struct FileSystemTests {
    @Test func directoriesAndListing() throws {
        try withTempDir { dir in
            let deep = dir.file("a/b/c")
            try FileSystem.createDirectory(deep)
            try FileSystem.createDirectory(deep) // again: fine
            #expect(FileSystem.isDirectory(deep))
            #expect(FileSystem.exists(deep))
            try FileSystem.atomicWrite(dir.file("a/f2"), [1])
            try FileSystem.atomicWrite(dir.file("a/f1"), [2])
            #expect(try FileSystem.list(dir.file("a")) == ["b", "f1", "f2"])
            #expect(!FileSystem.isDirectory(dir.file("a/f1")))
            #expect(throws: SOPError.self) { try FileSystem.createDirectory(dir.file("a/f1/x")) }
            try FileSystem.remove(dir.file("a/f1"))
            try FileSystem.remove(dir.file("a/f1")) // missing: fine
            try FileSystem.remove(deep) // empty directory
            #expect(try FileSystem.list(dir.file("a")) == ["b", "f2"])
            #expect(throws: SOPError.self) { try FileSystem.list(dir.file("nope")) }
            try FileSystem.syncDirectory(dir.path)
        }
    }

    @Test func atomicWriteReplacesContentAndLeavesNoTemp() throws {
        try withTempDir { dir in
            let path = dir.file("database.json")
            try FileSystem.atomicWrite(path, Array("first".utf8))
            #expect(try FileSystem.readFile(path) == Array("first".utf8))
            var g = SplitMix64(seed: 3)
            let big = randomBytes(200_000, using: &g)
            try FileSystem.atomicWrite(path, big)
            #expect(try FileSystem.readFile(path) == big)
            try FileSystem.atomicWrite(path, [])
            #expect(try FileSystem.readFile(path) == [])
            #expect(try FileSystem.list(dir.path) == ["database.json"])
            // A failing write (missing folder) leaves nothing behind either.
            #expect(throws: SOPError.self) { try FileSystem.atomicWrite(dir.file("missing/x"), [1]) }
            #expect(try FileSystem.list(dir.path) == ["database.json"])
        }
    }

    @Test func absolutePathNormalizes() {
        #expect(FileSystem.absolutePath("/a//b/./c/../d/") == "/a/b/d")
        #expect(FileSystem.absolutePath("/../..") == "/")
        #expect(FileSystem.absolutePath("/") == "/")
        let cwd = FileSystem.absolutePath(".")
        #expect(cwd.hasPrefix("/"))
        #expect(FileSystem.absolutePath("x/y/../z") == (cwd == "/" ? "/x/z" : cwd + "/x/z"))
        #expect(FileSystem.absolutePath("") == cwd)
    }
}

@Suite struct DirectoryLockTests {
    @Test func secondAcquireFailsUntilReleased() throws {
        try withTempDir { dir in
            let lock = try DirectoryLock.acquire(dir.path)
            #expect(throws: SOPError.self) { try DirectoryLock.acquire(dir.path) }
            do {
                _ = try DirectoryLock.acquire(dir.path)
                Issue.record("second acquire succeeded")
            } catch let e as SOPError {
                #expect(e.code == .databaseLocked)
                #expect(e.message.contains("pid \(getpid())"))
                #expect(e.message.contains(dir.path))
            }
            let pid = String(decoding: try FileSystem.readFile(dir.file("LOCK")), as: UTF8.self)
            #expect(pid == "\(getpid())\n")
            lock.release()
            lock.release() // idempotent
            let again = try DirectoryLock.acquire(dir.path)
            again.release()
            // deinit releases too.
            do { _ = try DirectoryLock.acquire(dir.path) }
            let third = try DirectoryLock.acquire(dir.path)
            third.release()
        }
    }

    @Test func missingFolderIsAnIOError() {
        do {
            _ = try DirectoryLock.acquire("/nonexistent-\(UInt64.random(in: 0...UInt64.max))")
            Issue.record("acquire succeeded")
        } catch let e as SOPError {
            #expect(e.code == .io)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}
