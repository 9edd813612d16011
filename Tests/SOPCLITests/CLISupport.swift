import Foundation
import Testing

/// The `sop` executable built next to the test bundle.
let sopBinary: String = {
    let candidates = [
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path + "/sop",
        FileManager.default.currentDirectoryPath + "/.build/debug/sop",
        FileManager.default.currentDirectoryPath + "/.build/release/sop",
    ]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
}()

struct Run {
    var status: Int32
    var out: String
    var err: String
}

/// Runs `sop` with arguments and waits for it.
@discardableResult
func sop(_ args: [String], stdin: String? = nil) throws -> Run {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: sopBinary)
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let input = Pipe()
    p.standardInput = input
    try p.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    // Read both pipes fully before waiting (a full pipe would block the child).
    let group = DispatchGroup()
    nonisolated(unsafe) var o = Data(), e = Data()
    group.enter()
    DispatchQueue.global().async { o = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    group.enter()
    DispatchQueue.global().async { e = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    group.wait()
    p.waitUntilExit()
    return Run(status: p.terminationStatus, out: String(decoding: o, as: UTF8.self), err: String(decoding: e, as: UTF8.self))
}

struct TempDir {
    let path: String
    init(_ name: String = "sopcli") {
        path = FileManager.default.temporaryDirectory.path + "/\(name)-\(UUID().uuidString.prefix(12))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
    var db: String { path + "/db" }
}

/// Asserts a failed run: non-zero exit, one stderr line starting `error:`.
func expectFailure(_ r: Run, containing text: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.status != 0, "expected failure, got success: \(r.out)", sourceLocation: sourceLocation)
    let lines = r.err.split(separator: "\n", omittingEmptySubsequences: true)
    #expect(lines.count == 1, "stderr: \(r.err)", sourceLocation: sourceLocation)
    #expect(r.err.hasPrefix("error: "), "stderr: \(r.err)", sourceLocation: sourceLocation)
    if let text {
        #expect(r.err.contains(text), "stderr: \(r.err)", sourceLocation: sourceLocation)
    }
}
