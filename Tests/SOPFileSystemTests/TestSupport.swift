#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SOPCore
@testable import SOPFileSystem

/// A fresh, randomly named folder under the system temp directory, removed by `remove()`.
struct TempDir {
    let path: String

    init() throws {
        let base = FileManager.default.temporaryDirectory.path
        path = base + "/sopfs-test-" + SOPID.random().hex
        try FileSystem.createDirectory(path)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Runs `body` with a temp folder that is removed afterwards.
func withTempDir<T>(_ body: (TempDir) throws -> T) throws -> T {
    let dir = try TempDir()
    defer { dir.remove() }
    return try body(dir)
}


func randomBytes(_ count: Int, using g: inout some RandomNumberGenerator) -> [UInt8] {
    (0..<count).map { _ in UInt8.random(in: 0...255, using: &g) }
}

func sampleHandle(_ i: Int) -> Handle {
    Handle(logicalID: SOPID(high: UInt64(i) + 1, low: 0xABCD),
           physicalA: SOPID(high: 7, low: UInt64(i)),
           physicalB: i % 2 == 0 ? .zero : SOPID(high: 9, low: UInt64(i)),
           isActiveB: i % 2 == 1, version: UInt32(i) + 1,
           workInProgress: Int64(i) * 1000, isDeleted: i % 5 == 0)
}
