import SOPTestSupport
import Foundation
import SOP
import SOPRedis
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Clustered mode with real `sop` processes on one folder and a private `redis-server`.
@Suite(.serialized)
struct ClusterTests {
    static let accounts = 100
    static let balance = 1000

    func initBank(_ db: String, _ redis: String) throws {
        let r = try sop(["--db", db, "--redis", redis, "workload", "bank", "--init",
                         "--accounts", String(Self.accounts), "--balance", String(Self.balance)])
        #expect(r.status == 0, "\(r.err)")
    }

    func bankArgs(_ db: String, _ redis: String, transfers: Int, seed: Int) -> [String] {
        ["--db", db, "--redis", redis, "workload", "bank", "--accounts", String(Self.accounts),
         "--transfers", String(transfers), "--seed", String(seed)]
    }

    /// Runs `n` bank processes × `transfers` at once; returns their logs and the seconds taken.
    func runBank(_ db: String, _ redis: String, processes n: Int, transfers: Int, dir: String) throws -> ([BankLog], Double) {
        let start = Date()
        let procs = try (0..<n).map { i in
            try Background(bankArgs(db, redis, transfers: transfers, seed: 100 + i), out: dir + "/bank-\(i).out",
                           env: ["SOP_BANK_STATS": "1"])
        }
        var logs: [BankLog] = []
        for p in procs {
            let status = p.wait()
            #expect(status == 0, "bank process failed: \(p.errors)")
            logs.append(BankLog(p.output, complete: true))
        }
        return (logs, Date().timeIntervalSince(start))
    }

    @Test func bankFourProcessesKeepTheInvariant() async throws {
        try await withRedisServer { server in
            let t = TempDir()
            defer { t.cleanup() }
            // One process first (the baseline), then four at once on another folder.
            let db1 = t.path + "/one"
            try initBank(db1, server.url)
            let (single, oneSeconds) = try runBank(db1, server.url, processes: 1, transfers: 250, dir: t.path)
            #expect(single[0].acked.count == 250)

            let db = t.path + "/four"
            try initBank(db, server.url)
            let (logs, seconds) = try runBank(db, server.url, processes: 4, transfers: 250, dir: t.path)
            var acked: [Transfer] = []
            for log in logs {
                #expect(log.problems.isEmpty, "\(log.problems)")
                #expect(log.acked.count == 250)
                acked += log.acked
            }
            let final = try balances(db)
            let start = initialBalances(accounts: Self.accounts, balance: Self.balance)
            #expect(final.values.reduce(0, +) == Self.accounts * Self.balance)
            #expect(final.values.allSatisfy { $0 >= 0 })
            // Every acknowledged transfer applied exactly once, nothing else.
            #expect(final == replay(start, acked))
            let check = try sop(["--db", db, "check"])
            #expect(check.status == 0, "\(check.out)\(check.err)")
            let conflicts = logs.map(\.conflicts).reduce(0, +)
            // Redis round trips per acknowledged commit across the four processes (stderr stats).
            var trips = 0
            for i in 0..<4 {
                let err = (try? String(contentsOfFile: t.path + "/bank-\(i).out.err", encoding: .utf8)) ?? ""
                if let r = err.split(separator: " ").last.flatMap({ Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) { trips += r }
            }
            print("bank: \(String(format: "%.2f", Double(trips) / 1000)) redis round trips per commit over 4 processes (lock waits, retries and L2 included)")
            print("bank: 1 process \(String(format: "%.0f", 250 / oneSeconds)) commits/s; 4 processes \(String(format: "%.0f", 1000 / seconds)) commits/s (\(conflicts) conflicts retried)")
        }
    }

    @Test func redisRoundTripsPerCommit() async throws {
        try await withRedisServer { server in
            let t = TempDir()
            defer { t.cleanup() }
            let db = try await Database.open(at: t.path + "/db", coordination: .redis(server.url))
            try await db.write { tx in
                let s = try await tx.store("bank", key: String.self, value: Int.self)
                for i in 0..<100 { try await s.add(String(format: "acct-%04d", i), 1000) }
            }
            let before = db.redisRoundTrips
            let commits = 200
            for i in 0..<commits {
                try await db.write { tx in
                    let s = try await tx.openStore("bank", key: String.self, value: Int.self)
                    let a = String(format: "acct-%04d", i % 100), b = String(format: "acct-%04d", (i * 7 + 1) % 100)
                    guard a != b, let x = try await s.get(a), let y = try await s.get(b) else { return }
                    _ = try await s.update(a, x - 1)
                    _ = try await s.update(b, y + 1)
                }
            }
            let perCommit = Double(db.redisRoundTrips - before) / Double(commits)
            print("clustered: \(String(format: "%.2f", perCommit)) redis round trips per write commit (one process)")
            #expect(perCommit <= 6)
            try await db.close()
        }
    }

    @Test func concurrentTasksInOneProcessAndAnotherProcess() async throws {
        try await withRedisServer { server in
            let t = TempDir()
            defer { t.cleanup() }
            let path = t.path + "/db"
            try initBank(path, server.url)
            let other = try Background(bankArgs(path, server.url, transfers: 100, seed: 5), out: t.path + "/other.out")
            let db = try await Database.open(at: path, coordination: .redis(server.url))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<4 {
                    group.addTask {
                        for i in 0..<40 {
                            try await db.write { tx in
                                let s = try await tx.openStore("bank", key: String.self, value: Int.self)
                                let a = String(format: "acct-%04d", (task * 13 + i) % 100)
                                let b = String(format: "acct-%04d", (task * 31 + i * 7 + 1) % 100)
                                guard a != b, let x = try await s.get(a), let y = try await s.get(b), x > 0 else { return }
                                _ = try await s.update(a, x - 1)
                                _ = try await s.update(b, y + 1)
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(other.wait() == 0, "\(other.errors)")
            let total = try await db.read { tx -> Int in
                var sum = 0
                for try await item in try await tx.openStore("bank", key: String.self, value: Int.self).range() { sum += item.value }
                return sum
            }
            #expect(total == Self.accounts * Self.balance)
            try await db.close()
            #expect(try sop(["--db", path, "check"]).status == 0)
        }
    }

    @Test func tenancyTwoFoldersNeverShareTheLock() async throws {
        try await withRedisServer { server in
            let t = TempDir()
            defer { t.cleanup() }
            let a = try await Database.open(at: t.path + "/a", coordination: .redis(server.url))
            let b = try await Database.open(at: t.path + "/b", coordination: .redis(server.url))
            for db in [a, b] {
                try await db.write { tx in _ = try await tx.store("same", key: Int.self, value: Int.self) }
            }
            // Hold a's commit lock (phase 1 done, phase 2 not yet): b commits at once anyway.
            let held = try await a.beginTransaction()
            try await held.store("same", key: Int.self, value: Int.self).add(1, 1)
            try await held.phase1Commit()
            let started = ContinuousClock.now
            for i in 0..<20 {
                try await b.write { tx in try await tx.store("same", key: Int.self, value: Int.self).add(i, i) }
            }
            #expect(ContinuousClock.now - started < .seconds(5))
            try await held.phase2Commit()
            try await a.close()
            try await b.close()
            // And hammered at once by processes: both finish, each keeps its invariant.
            try initBank(t.path + "/a", server.url)
            try initBank(t.path + "/b", server.url)
            let procs = try ["a", "b"].flatMap { name in
                try (0..<2).map { i in
                    try Background(bankArgs(t.path + "/" + name, server.url, transfers: 100, seed: i), out: t.path + "/\(name)\(i).out")
                }
            }
            for p in procs { #expect(p.wait() == 0, "\(p.errors)") }
            for name in ["a", "b"] {
                #expect(try balances(t.path + "/" + name).values.reduce(0, +) == Self.accounts * Self.balance)
            }
        }
    }

    @Test func killedWritersNeitherBlockNorLoseCommits() async throws {
        try await withRedisServer { server in
            let t = TempDir()
            defer { t.cleanup() }
            let db = t.path + "/db"
            try initBank(db, server.url)
            let client = try RedisClient(url: server.url)
            let lockKey = "sop:\(RedisNamespace.forDatabaseFolder(realPath(db))):L:commit"
            let env = ["SOP_CLUSTER_LOCK_TTL_MS": "1000"]
            var running: [Background] = []
            var finished: [Background] = []
            var seed = 0
            func start(_ extra: [String: String] = [:]) throws -> Background {
                seed += 1
                return try Background(bankArgs(db, server.url, transfers: 1_000_000, seed: seed),
                                      out: t.path + "/w\(seed).out", env: env.merging(extra) { $1 })
            }
            // Victims stall 300 ms inside their commits (holding the lock): before the record
            // (the commit is lost) or after it is written (the commit is decided).
            // One of the three writers at a time is such a victim; the two others never stall.
            let stalls = ["commit.afterValidate=delay:200", "commit.afterRecordWrite=delay:200"]
            running.append(try start(["SOP_FAILPOINTS": stalls[0]]))
            for _ in 0..<2 { running.append(try start()) }
            var heldByTheDead = 0
            for round in 0..<5 {
                let victim = running.removeFirst()
                if !victim.stalls { Issue.record("round \(round): the victim is not the stalling writer") }
                _ = waitUntil(10) { victim.acks >= 2 }
                _ = waitUntil(5) { victim.output.split(separator: "\n").last?.hasPrefix("BEGIN") == true }
                usleep(100_000)
                victim.kill9()
                finished.append(victim)
                if try await client.send(["PTTL", lockKey]).int ?? -2 > 0 { heldByTheDead += 1 }
                // The others keep committing once the lock TTL passes.
                // (Writers that stall inside every commit may starve under optimistic
                // concurrency; the others must go on.)
                let fast = running.filter { !$0.stalls }
                let before = fast.map(\.acks)
                let progressed = waitUntil(15) { zip(fast, before).allSatisfy { $0.acks > $1 + 3 } }
                #expect(progressed, "round \(round): the surviving writers stopped committing: \(before) → \(fast.map(\.acks))")
                running.insert(try start(["SOP_FAILPOINTS": stalls[(round + 1) % 2]]), at: 0)
            }
            #expect(heldByTheDead >= 3, "victims died holding the commit lock in only \(heldByTheDead) of 5 rounds")
            for p in running { p.kill9() }
            finished += running
            await client.close()
            var acked: [Transfer] = [], undecided: [Transfer] = []
            for p in finished {
                let log = BankLog(p.output, complete: false)
                #expect(log.problems.allSatisfy { $0.hasPrefix("bad line") }, "\(log.problems)")
                acked += log.acked
                undecided += log.undecided
            }
            #expect(undecided.count <= finished.count)
            let check = try sop(["--db", db, "check"])
            #expect(check.status == 0, "\(check.out)\(check.err)")
            let final = try balances(db)
            #expect(final.values.reduce(0, +) == Self.accounts * Self.balance)
            #expect(explains(final, start: initialBalances(accounts: Self.accounts, balance: Self.balance),
                             acked: acked, undecided: undecided),
                    "balances are not the acknowledged transfers plus some of the undecided ones")
        }
    }

    @Test func redisRestartLosesNothing() async throws {
        try await withRedisServer { server in
            let t = TempDir()
            defer { t.cleanup() }
            let db = t.path + "/db"
            try initBank(db, server.url)
            let env = ["SOP_CLUSTER_LOCK_TTL_MS": "1000"]
            let procs = try (0..<3).map { i in
                try Background(bankArgs(db, server.url, transfers: 300, seed: 40 + i), out: t.path + "/r\(i).out", env: env)
            }
            _ = waitUntil(20) { procs.allSatisfy { $0.acks >= 20 } }
            server.kill()
            usleep(300_000)
            try server.restart()
            let before = procs.map(\.acks)
            // Work resumes within seconds.
            let resumed = waitUntil(15) {
                for (p, n) in zip(procs, before) where p.acks > n || !p.process.isRunning { return true }
                return false
            }
            #expect(resumed, "no commit within 15 s of the redis restart")
            var acked: [Transfer] = []
            for p in procs {
                #expect(p.wait() == 0, "\(p.errors)")
                let log = BankLog(p.output, complete: true)
                #expect(log.problems.isEmpty, "\(log.problems)")
                #expect(log.acked.count == 300)
                acked += log.acked
            }
            #expect(try sop(["--db", db, "check"]).status == 0)
            let final = try balances(db)
            #expect(final == replay(initialBalances(accounts: Self.accounts, balance: Self.balance), acked))
        }
    }

    @Test func unreachableRedisIsAClearErrorAndWritesNothing() async throws {
        let t = TempDir()
        defer { t.cleanup() }
        let port = try RedisServer.freePort()
        // At open: a clear error, and no database folder.
        let r = try sop(["--db", t.path + "/db", "--redis", "redis://127.0.0.1:\(port)", "stores"])
        #expect(r.status != 0)
        #expect(r.err.hasPrefix("error: clustered mode:"), "\(r.err)")
        #expect(r.err.contains("redis"), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: t.path + "/db"))

        // Mid-transaction: Redis goes away before the commit: an error, nothing committed.
        try await withRedisServer { server in
            let db = try await Database.open(at: t.path + "/db", coordination: .redis(server.url))
            try await db.write { tx in try await tx.store("s", key: Int.self, value: Int.self).add(1, 1) }
            let tx = try await db.beginTransaction()
            try await tx.openStore("s", key: Int.self, value: Int.self).add(2, 2)
            server.kill()
            let e = await sopError { try await tx.commit() }
            #expect(e?.code == .io, "\(String(describing: e))")
            #expect(e?.message.hasPrefix("clustered mode:") == true, "\(String(describing: e))")
            try await db.close()
            try server.restart()
            let again = try await Database.open(at: t.path + "/db", coordination: .redis(server.url))
            let items = try await again.read { tx in try await tx.openStore("s", key: Int.self, value: Int.self).count }
            #expect(items == 1)
            try await again.close()
        }
        #expect(try sop(["--db", t.path + "/db", "check"]).status == 0)
    }

    @Test func standaloneOpenerIsRefusedWhileClusteredProcessesRun() async throws {
        try await withRedisServer { server in
            let t = TempDir()
            defer { t.cleanup() }
            let db = try await Database.open(at: t.path + "/db", coordination: .redis(server.url))
            let refused = try sop(["--db", t.path + "/db", "stores"])
            #expect(refused.status != 0)
            #expect(refused.err.contains("clustered"), "\(refused.err)")
            // A second clustered process is welcome.
            let other = try sop(["--db", t.path + "/db", "--redis", server.url, "stores"])
            #expect(other.status == 0, "\(other.err)")
            try await db.close()
            // And the other way round: a standalone owner refuses clustered openers.
            let standalone = try await Database.open(at: t.path + "/db")
            let clustered = try sop(["--db", t.path + "/db", "--redis", server.url, "stores"])
            #expect(clustered.status != 0)
            #expect(clustered.err.contains("open in another process"), "\(clustered.err)")
            try await standalone.close()
        }
    }

    @Test func compactionIsStandaloneOnly() async throws {
        try await withRedisServer { server in
            let t = TempDir()
            defer { t.cleanup() }
            let db = try await Database.open(at: t.path + "/db", coordination: .redis(server.url))
            try await db.write { tx in try await tx.store("s", key: Int.self, value: Int.self).add(1, 1) }
            do {
                try await db.compact()
                Issue.record("compact() ran in clustered mode")
            } catch let e as SOPError {
                #expect(e.code == .invalidState)
                #expect(e.message.contains("standalone-only"), "\(e)")
            }
            let cli = try sop(["--db", t.path + "/db", "--redis", server.url, "compact"])
            #expect(cli.status != 0)
            #expect(cli.err.contains("standalone-only"), "\(cli.err)")
            try await db.close()
        }
    }
}
