import SOPTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A `sop` process running in the background whose stdout goes to a file (read while it runs).
final class Background: @unchecked Sendable {
    let process = Process()
    let outPath: String
    let errPath: String
    /// True for processes started with a stall failpoint (slow committers).
    let stalls: Bool

    init(_ args: [String], out: String, env: [String: String] = [:]) throws {
        stalls = env["SOP_FAILPOINTS"] != nil
        outPath = out
        errPath = out + ".err"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: sopBinary)
        process.arguments = args
        if !env.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(env) { $1 } }
        process.standardOutput = FileHandle(forWritingAtPath: outPath)
        process.standardError = FileHandle(forWritingAtPath: errPath)
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var output: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }
    var errors: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }
    var acks: Int { output.split(separator: "\n").filter { $0.hasPrefix("ACK ") }.count }

    func kill9() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    func wait() -> Int32 {
        process.waitUntilExit()
        return process.terminationStatus
    }
}

struct TempDir {
    let path: String
    init(_ name: String = "sopcluster") {
        path = FileManager.default.temporaryDirectory.path + "/\(name)-\(UUID().uuidString.prefix(12))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

/// One transfer a bank process began.
struct Transfer: Hashable {
    var from: String
    var to: String
    var amount: Int
}

/// What a `sop workload bank` run printed: acknowledged transfers, and ones begun but neither
/// acknowledged nor refused (the process was killed: committed or not).
struct BankLog {
    var acked: [Transfer] = []
    var undecided: [Transfer] = []
    var conflicts = 0
    var problems: [String] = []

    init(_ text: String, complete: Bool) {
        var open: [Int: Transfer] = [:]
        var seen = Set<Int>()
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ").map(String.init)
            guard f.count >= 2, let n = Int(f[1]) else { problems.append("bad line \(line)"); continue }
            switch f[0] {
            case "BEGIN":
                guard f.count == 5, let a = Int(f[4]) else { problems.append("bad line \(line)"); continue }
                if !seen.insert(n).inserted { problems.append("transaction \(n) begun twice") }
                open[n] = Transfer(from: f[2], to: f[3], amount: a)
            case "ACK":
                guard let t = open.removeValue(forKey: n) else { problems.append("ACK \(n) without BEGIN"); continue }
                acked.append(t)
            case "CONFLICT":
                conflicts += 1
                open[n] = nil
            default:
                // A line cut by a kill can only be the last one.
                problems.append("bad line \(line)")
            }
        }
        undecided = Array(open.values)
        if complete && !undecided.isEmpty { problems.append("\(undecided.count) transfers neither acknowledged nor refused") }
    }
}

/// The balances of store `bank`, from `sop scan` (standalone open).
func balances(_ db: String, redis: String? = nil) throws -> [String: Int] {
    let r = try sop(["--db", db] + (redis.map { ["--redis", $0] } ?? []) + ["scan", "bank"])
    guard r.status == 0 else { throw RedisServer.StartFailure(description: "scan failed: \(r.err)") }
    var result: [String: Int] = [:]
    for line in r.out.split(separator: "\n") {
        let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        result[o["key"] as! String] = (o["value"] as! NSNumber).intValue
    }
    return result
}

/// Applies transfers to balances.
func replay(_ start: [String: Int], _ transfers: [Transfer]) -> [String: Int] {
    var b = start
    for t in transfers {
        b[t.from, default: 0] -= t.amount
        b[t.to, default: 0] += t.amount
    }
    return b
}

/// True when `actual` equals `start` plus every acknowledged transfer plus some subset of the
/// undecided ones (each either committed or not).
func explains(_ actual: [String: Int], start: [String: Int], acked: [Transfer], undecided: [Transfer]) -> Bool {
    let base = replay(start, acked)
    let k = undecided.count
    guard k <= 16 else { return false }
    for mask in 0..<(1 << k) {
        let chosen = (0..<k).filter { mask & (1 << $0) != 0 }.map { undecided[$0] }
        if replay(base, chosen) == actual { return true }
    }
    return false
}

func initialBalances(accounts: Int, balance: Int) -> [String: Int] {
    var b: [String: Int] = [:]
    for i in 0..<accounts { b[String(format: "acct-%04d", i)] = balance }
    return b
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass.
func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// The canonical path of an existing folder (as the engine derives Redis namespaces).
func realPath(_ path: String) -> String {
    guard let p = realpath(path, nil) else { return path }
    defer { free(p) }
    return String(cString: p)
}
