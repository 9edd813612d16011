import SOPTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `sop workload crashmix --log-commits` (transactions of upserts, updates and removes over
/// two stores, with splits and merges) is killed with SIGKILL again and again on one
/// database; it resumes from its committed counter each time. After every kill both stores
/// must hold exactly the state after k transactions (k = the counter, computed independently
/// by `--dry-run-state k`), k must be the last acknowledged commit or one more (the commit
/// whose line was not printed yet), and `sop check` must pass.
@Suite struct CrashMixTests {
    /// Deterministic kill schedule; `SOP_CRASHMIX_SEED` replays a failing run.
    struct KillRNG: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    struct Killed {
        var committed: [Int] = []   // every 'committed <k>' line read
        var exitedByItself = false
        var stderr = ""
    }

    /// Starts `sop`, reads its `committed` lines as they come, and SIGKILLs it after
    /// `killAfter` of them plus `delayMicros`.
    func runAndKill(_ args: [String], killAfter: Int, delayMicros: UInt32) throws -> Killed {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: sopBinary)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        var result = Killed()
        var killed = false
        func killIfDue() {
            if !killed && result.committed.count >= killAfter {
                usleep(delayMicros)
                kill(p.processIdentifier, SIGKILL)
                killed = true
            }
        }
        killIfDue()
        let fh = out.fileHandleForReading
        var buffer = Data()
        while true {
            let chunk = fh.availableData
            if chunk.isEmpty { break }   // EOF: the child is gone
            buffer.append(chunk)
            while let nl = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[buffer.startIndex..<nl], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex...nl)
                if line.hasPrefix("committed "), let n = Int(line.dropFirst("committed ".count)) {
                    result.committed.append(n)
                }
            }
            killIfDue()
        }
        p.waitUntilExit()
        result.exitedByItself = p.terminationReason == .exit
        result.stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return result
    }

    /// The committed counter and both stores' `scan` lines, prefixed by the store name
    /// (the format of `--dry-run-state`). k = 0 when no store exists yet.
    func present(_ db: String) throws -> (k: Int, lines: [String]) {
        var lines: [String] = []
        var k = 0
        var missing = 0
        for store in ["cm-a", "cm-b"] {
            let r = try sop(["--db", db, "scan", store])
            if r.status != 0 {
                #expect(r.err.contains("does not exist"), "scan \(store): \(r.err)")
                missing += 1
                continue
            }
            for line in r.out.split(separator: "\n") {
                lines.append(store + " " + line)
                let prefix = "{\"key\":\"__committed\",\"value\":"
                if store == "cm-a", line.hasPrefix(prefix) {
                    k = Int(line.dropFirst(prefix.count).dropLast()) ?? -1
                }
            }
        }
        #expect(missing == 0 || missing == 2, "one store exists without the other: partial first transaction")
        if missing == 0 { #expect(k > 0, "cm-a has no \"__committed\" counter") }
        return (k, lines)
    }

    @Test func killNineDuringCrashMixLosesNothingAndLeavesNoPartialTransaction() throws {
        let dir = TempDir("crashmix")
        defer { dir.cleanup() }
        let seed = ProcessInfo.processInfo.environment["SOP_CRASHMIX_SEED"].flatMap { UInt64($0) }
            ?? UInt64.random(in: 0...UInt64(UInt32.max))
        print("crashmix: kill schedule seed \(seed) (SOP_CRASHMIX_SEED=\(seed) replays it)")
        var rng = KillRNG(state: seed)
        let iterations = 50
        var k = 0          // committed transactions after the previous iteration
        var kills = 0
        var beyondAck = 0  // iterations where one more transaction than acknowledged was present
        for iteration in 0..<iterations {
            let killAfter = Int.random(in: 0...8, using: &rng)
            let delay = UInt32.random(in: 0...30_000, using: &rng)
            let run = try runAndKill(
                ["--db", dir.db, "workload", "crashmix", "--seed", "11", "--txs", "100000", "--log-commits"],
                killAfter: killAfter, delayMicros: delay)
            if run.exitedByItself {
                Issue.record("iteration \(iteration): the workload exited by itself: \(run.stderr)")
                break
            }
            kills += 1
            // It resumed where the previous run stopped, and acknowledged one commit per line.
            if let first = run.committed.first {
                #expect(first == k + 1, "iteration \(iteration): resumed at \(first - 1), counter was \(k)")
                #expect(run.committed == Array(first..<first + run.committed.count),
                        "iteration \(iteration): acknowledgements not consecutive")
            }
            let acked = run.committed.last ?? k

            let (now, lines) = try present(dir.db)
            print("crashmix iteration \(iteration): kill after \(killAfter) commits + \(delay / 1000) ms; "
                  + "acknowledged \(acked), present \(now)")
            #expect(now >= acked, "iteration \(iteration): acknowledged \(acked), only \(now) present")
            #expect(now <= acked + 1, "iteration \(iteration): \(now) present, at most \(acked + 1) possible")
            if now == acked + 1 { beyondAck += 1 }

            let expected = try sop(["workload", "crashmix", "--seed", "11", "--dry-run-state", String(max(now, 0))])
            #expect(expected.status == 0, "\(expected.err)")
            let want = expected.out.split(separator: "\n").map(String.init)
            if lines != want {
                let i = (0..<min(lines.count, want.count)).first { lines[$0] != want[$0] } ?? min(lines.count, want.count)
                Issue.record("""
                    iteration \(iteration): the stores differ from the state after \(now) transactions \
                    (\(lines.count) vs \(want.count) lines); first difference at line \(i): \
                    present \(i < lines.count ? lines[i] : "-") expected \(i < want.count ? want[i] : "-")
                    """)
            }

            let check = try sop(["--db", dir.db, "check"])
            #expect(check.status == 0, "iteration \(iteration): \(check.out) \(check.err)")
            if lines != want || check.status != 0 { break }
            k = now
        }
        print("crashmix: \(kills) kills, \(k) transactions committed, "
              + "\(beyondAck) kills left one transaction committed but not acknowledged")
        #expect(kills == iterations)
        #expect(k > 0, "no transaction ever committed")
    }
}
