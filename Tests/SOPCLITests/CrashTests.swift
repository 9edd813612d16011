import SOPTestSupport
import Foundation
import SOP
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A child `sop import --log-commits` is killed with SIGKILL at random moments. After each
/// kill the database reopens with every acknowledged item present, no partial batch, and a
/// clean `sop check`.
@Suite struct CrashTests {
    /// Starts `sop`, reads its stdout lines as they come, and kills it after `killAfter`
    /// acknowledged commits plus a random delay. Returns the last acknowledged total.
    func runAndKill(_ args: [String], killAfterCommits: Int, extraDelayMicros: UInt32) throws -> (acked: Int, exited: Bool) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: sopBinary)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let fh = out.fileHandleForReading
        var buffer = Data()
        var acked = 0
        var commits = 0
        var killed = false
        while true {
            let chunk = fh.availableData
            if chunk.isEmpty { break }   // EOF: the child exited (or was killed)
            buffer.append(chunk)
            while let nl = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[buffer.startIndex..<nl], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex...nl)
                if line.hasPrefix("committed "), let n = Int(line.dropFirst("committed ".count)) {
                    acked = n
                    commits += 1
                }
            }
            if !killed && commits >= killAfterCommits {
                usleep(extraDelayMicros)
                kill(p.processIdentifier, SIGKILL)
                killed = true
            }
        }
        p.waitUntilExit()
        // Lines acknowledged between our last read and the kill were read above (EOF
        // comes only after the child is gone).
        return (acked, p.terminationReason == .exit)
    }

    @Test func killNineDuringImportLosesNothingAcknowledged() async throws {
        let dir = TempDir("crash")
        defer { dir.cleanup() }
        // 48 commits a round, the kill after at most 6 of them and 5 ms: the import must not
        // finish first (with 250-item batches and 40 ms a faster engine outran 6 of 20 kills;
        // a machine with faster syncs than this one may run 48 commits in 20 ms).
        let batch = 125
        let perRound = 6_000
        var rng = SystemRandomNumberGenerator()
        var expected: [Int: Int] = [:]   // round → items present
        var kills = 0
        for round in 0..<20 {
            var text = ""
            for j in 0..<perRound {
                text += "{\"key\": \"r\(String(format: "%02d", round))-\(String(format: "%06d", j))\", \"value\": {\"round\": \(round), \"j\": \(j)}}\n"
            }
            let file = dir.path + "/round\(round).jsonl"
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            let result = try runAndKill(
                ["--db", dir.db, "import", "items", file, "--batch", String(batch), "--log-commits"],
                killAfterCommits: Int.random(in: 0...6, using: &rng),
                extraDelayMicros: UInt32.random(in: 0...5_000, using: &rng))
            if !result.exited { kills += 1 }

            // Reopen in this process: recovery runs, then verify.
            let db = try await Database.open(at: dir.db)
            let present = try await db.read { tx -> Int in
                guard tx.storeNames().contains("items") else { return 0 }
                let s = try await tx.openStore("items", key: JSONValue.self, value: JSONValue.self)
                let prefix = "r\(String(format: "%02d", round))-"
                var n = 0
                for try await it in s.range(from: .string(prefix), to: .string(prefix + "~")) {
                    guard case .string(let k) = it.key else { continue }
                    #expect(k == prefix + String(format: "%06d", n), "round \(round): gap before \(k)")
                    guard case .object(let o) = it.value, o["j"] == .int(Int64(n)) else {
                        Issue.record("round \(round): wrong value for \(k)")
                        break
                    }
                    n += 1
                }
                return n
            }
            #expect(present >= result.acked, "round \(round): \(present) present, \(result.acked) acknowledged")
            #expect(present % batch == 0 || present == perRound, "round \(round): partial batch (\(present) items)")
            expected[round] = present
            print("crash round \(round): killed=\(!result.exited) acknowledged=\(result.acked) present=\(present)")
            // Earlier rounds are untouched.
            let total = try await db.read { tx -> Int64 in
                tx.storeNames().contains("items")
                    ? try await tx.openStore("items", key: JSONValue.self, value: JSONValue.self).count : 0
            }
            #expect(total == Int64(expected.values.reduce(0, +)))
            try await db.close()

            let check = try sop(["--db", dir.db, "check"])
            #expect(check.status == 0, "round \(round): \(check.out) \(check.err)")
        }
        #expect(kills >= 15, "only \(kills) of 20 runs were killed mid-import")
    }
}
