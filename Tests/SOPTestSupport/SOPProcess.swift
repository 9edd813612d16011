import Foundation

/// The `sop` executable built next to the test bundle (shared by the CLI and clustered tests).
public let sopBinary: String = {
    let candidates = [
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path + "/sop",
        FileManager.default.currentDirectoryPath + "/.build/debug/sop",
        FileManager.default.currentDirectoryPath + "/.build/release/sop",
    ]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
}()

/// What a finished `sop` process left.
public struct Run: Sendable {
    /// Exit status.
    public var status: Int32
    /// Standard output.
    public var out: String
    /// Standard error.
    public var err: String
}

/// Runs `sop` with arguments (and optional standard input and extra environment) and waits.
@discardableResult
public func sop(_ args: [String], stdin: String? = nil, env: [String: String] = [:]) throws -> Run {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: sopBinary)
    p.arguments = args
    if !env.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 } }
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
