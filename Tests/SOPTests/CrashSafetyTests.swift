import Foundation
@testable import SOP
import SOPCore
import SOPFileSystem
import Testing

/// Crash safety, checked the way SQLite and FoundationDB check theirs: failpoints at every
/// commit and recovery step, the N-th I/O failing, and power cut at random moments — all on
/// a simulated file system that knows what was synced. After each: reopen, recover, and the
/// interrupted transaction is all-or-nothing, every acknowledged commit is intact, and
/// `check` is clean.
@Suite struct CrashSafetyTests {
    typealias State = [String: [Int: String]]   // store → key → value

    /// A transaction as data, so the oracle can apply it too.
    struct Op: Sendable {
        enum Kind: Sendable { case put, remove }
        var store: String
        var kind: Kind
        var key: Int
        var value: String
    }

    static func apply(_ ops: [Op], to s: inout State) {
        for op in ops {
            switch op.kind {
            case .put: s[op.store, default: [:]][op.key] = op.value
            case .remove: s[op.store]?[op.key] = nil
            }
        }
    }

    static func run(_ ops: [Op], on db: Database) async throws {
        let tx = try await db.beginTransaction()
        do {
            var stores: [String: Store<Int, String>] = [:]
            for op in ops {
                if stores[op.store] == nil {
                    stores[op.store] = try await tx.store(op.store, key: Int.self, value: String.self,
                                                          options: StoreOptions(slotLength: 4))
                }
                let s = stores[op.store]!
                switch op.kind {
                case .put: try await s.upsert(op.key, op.value)
                case .remove: try await s.remove(op.key)
                }
            }
            try await tx.commit()
        } catch {
            await tx.rollback()
            throw error
        }
    }

    static func read(_ db: Database) async throws -> State {
        try await db.read { tx in
            var out: State = [:]
            for name in tx.storeNames() {
                let s = try await tx.openStore(name, key: Int.self, value: String.self)
                var m: [Int: String] = [:]
                for try await it in s.range() { m[it.key] = it.value }
                #expect(Int64(m.count) == s.count)
                out[name] = m
            }
            return out
        }
    }

    static let setup: [Op] = (0..<60).map { Op(store: "a", kind: .put, key: $0, value: "a\($0)") }
        + (0..<30).map { Op(store: "b", kind: .put, key: $0, value: "b\($0)") }

    static let workloads: [(name: String, ops: [Op])] = [
        ("insert with splits", (1000..<1040).map { Op(store: "a", kind: .put, key: $0, value: "new\($0)") }),
        ("delete with merges", (0..<40).map { Op(store: "a", kind: .remove, key: $0, value: "") }),
        ("update", stride(from: 0, to: 60, by: 3).map { Op(store: "a", kind: .put, key: $0, value: "upd\($0)") }),
        ("two stores", (2000..<2010).map { Op(store: "a", kind: .put, key: $0, value: "x\($0)") }
            + (0..<10).map { Op(store: "b", kind: .remove, key: $0, value: "") }
            + (10..<20).map { Op(store: "b", kind: .put, key: $0, value: "y\($0)") }),
    ]

    static func options(_ fs: SimulatedFileSystem, _ fp: Failpoints = Failpoints(), checkpointBytes: UInt64 = 1) -> DatabaseOptions {
        var o = DatabaseOptions()
        o.fileIO = fs
        o.failpoints = fp
        o.checkpointBytes = checkpointBytes   // 1: checkpoint after every commit, so its steps trip too
        o.registryHashMod = 4                  // small registry files: fast to copy at each simulated crash
        o.preallocateBytes = 8 << 10           // a little log written ahead, so that path is crashed too
        return o
    }

    static let path = "/sim/db"

    /// Reopens the files a crash left and checks state and invariants.
    static func verify(_ fs: SimulatedFileSystem, expectOneOf allowed: [State], _ what: String) async throws {
        let db = try await Database.open(at: path, options: options(fs, checkpointBytes: 64 << 20))
        let got = try await read(db)
        #expect(allowed.contains(got), "\(what): state after recovery is neither before nor after")
        let report = try await db.check()
        #expect(report.isClean, "\(what): \(report.problems)")
        try await db.close()
    }

    static let sweepFailpoints = Failpoints.all.filter { !$0.hasPrefix("recovery.") && !$0.hasPrefix("compaction.") }

    @Test(arguments: sweepFailpoints)
    func failpointSweep(_ name: String) async throws {
        var rng = SplitMix64(seed: UInt64(abs(name.hashValue) % 1000))
        var tripped = 0
        for action in [Failpoints.Action.crash, .error] {
            for w in Self.workloads {
                let fs = SimulatedFileSystem()
                let fp = Failpoints()
                let db = try await Database.open(at: Self.path, options: Self.options(fs, fp))
                try await Self.run(Self.setup, on: db)
                var before: State = [:]
                Self.apply(Self.setup, to: &before)
                var after = before
                Self.apply(w.ops, to: &after)
                fp.set(name, action)
                var committed = false
                do {
                    try await Self.run(w.ops, on: db)
                    committed = true
                    // A checkpoint that fails after the commit point leaves the commit durable
                    // and successful, and the database refusing writes until reopened.
                    if db.needsReopen { tripped += 1 }
                } catch is FailpointCrash {
                    tripped += 1
                } catch let e as SOPError {
                    #expect(e.code == .io, "\(name) \(w.name): \(e)")
                    tripped += 1
                }
                fs.freeze()
                let what = "\(name)=\(action) during \(w.name)"
                let allowed = committed ? [after] : [before, after]
                try await Self.verify(fs.afterProcessCrash(), expectOneOf: allowed, what + " (kill -9)")
                try await Self.verify(fs.afterPowerLoss(using: &rng, keepSomeUnsynced: true), expectOneOf: allowed,
                                      what + " (power loss)")
            }
        }
        #expect(tripped == 8, "\(name) tripped \(tripped) of 8 times")
    }

    @Test(arguments: Failpoints.all.filter { $0.hasPrefix("recovery.") })
    func recoveryFailpoints(_ name: String) async throws {
        for action in [Failpoints.Action.crash, .error] {
            let fs = SimulatedFileSystem()
            let db = try await Database.open(at: Self.path, options: Self.options(fs, checkpointBytes: 64 << 20))
            try await Self.run(Self.setup, on: db)
            try await Self.run(Self.workloads[3].ops, on: db)
            var expected: State = [:]
            Self.apply(Self.setup, to: &expected)
            Self.apply(Self.workloads[3].ops, to: &expected)
            fs.freeze()
            // Crash, then crash again inside recovery, then recover for real.
            let crashed = fs.afterProcessCrash()
            let fp = Failpoints()
            fp.set(name, action)
            do {
                _ = try await Database.open(at: Self.path, options: Self.options(crashed, fp))
                Issue.record("\(name) did not trip during recovery")
            } catch is FailpointCrash {} catch let e as SOPError { #expect(e.code == .io) }
            crashed.freeze()
            try await Self.verify(crashed.afterProcessCrash(), expectOneOf: [expected], "\(name)=\(action)")
        }
    }

    /// A mixed workload of several transactions touching two stores.
    static func mixed(seed: UInt64, count: Int) -> [[Op]] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { t in
            (0..<Int.random(in: 5...30, using: &rng)).map { i in
                let store = Bool.random(using: &rng) ? "a" : "b"
                let key = Int.random(in: 0..<120, using: &rng)
                return Int.random(in: 0..<4, using: &rng) == 0
                    ? Op(store: store, kind: .remove, key: key, value: "")
                    : Op(store: store, kind: .put, key: key, value: "t\(t)-\(i)")
            }
        }
    }

    @Test func failTheNthIOUntilTheWorkloadPasses() async throws {
        let txs = Self.mixed(seed: 42, count: 8)
        var oracle: [State] = [[:]]
        for ops in txs {
            var s = oracle.last!
            Self.apply(ops, to: &s)
            oracle.append(s)
        }
        var n = 1
        var failures = 0
        let faults: [SimulatedFileSystem.Fault] = [.eio, .enospc, .shortWrite]
        while true {
            let fs = SimulatedFileSystem()
            let db = try await Database.open(at: Self.path, options: Self.options(fs, checkpointBytes: 16 << 10))
            fs.failOperation(n, with: faults[n % 3])
            var acked = 0
            var failed = false
            for ops in txs {
                do {
                    try await Self.run(ops, on: db)
                    acked += 1
                } catch let e as SOPError {
                    #expect(e.code == .io || e.code == .notFound, "I/O \(n): \(e)")
                    failed = true
                    break
                }
            }
            fs.freeze()
            if !failed {
                try await Self.verify(fs.afterProcessCrash(), expectOneOf: [oracle[acked]], "no fault")
                break
            }
            failures += 1
            let allowed = [oracle[acked], oracle[min(acked + 1, txs.count)]]
            try await Self.verify(fs.afterProcessCrash(), expectOneOf: allowed, "I/O \(n) failed (kill -9)")
            n += 1
            #expect(n < 20_000, "the workload never passed")
            if n >= 20_000 { break }
        }
        print("fail-the-N-th-I/O loop: \(failures) failing runs, workload passed at N = \(n)")
        #expect(failures > 50)
    }

    @Test(arguments: [("fsync", "/log/"), ("pwrite", "/log/"), ("pwrite", "registry-"), ("rename", "storeinfo.json")])
    func failingEveryMatchingOperation(_ op: String, _ pathPart: String) async throws {
        let fs = SimulatedFileSystem()
        let db = try await Database.open(at: Self.path, options: Self.options(fs))
        try await Self.run(Self.setup, on: db)
        var before: State = [:]
        Self.apply(Self.setup, to: &before)
        var after = before
        Self.apply(Self.workloads[3].ops, to: &after)
        fs.failWhen(.enospc) { o, p in o == op && p.contains(pathPart) }
        var committed = false
        do {
            try await Self.run(Self.workloads[3].ops, on: db)
            committed = true
        } catch let e as SOPError {
            #expect(e.code == .io, "\(e)")
        }
        // Once an operation failed, later writes are refused until the database is reopened.
        if !committed {
            await expectSOPError(.io) { try await Self.run(Self.workloads[0].ops, on: db) }
        }
        fs.failWhen(.eio, nil)
        fs.freeze()
        try await Self.verify(fs.afterProcessCrash(), expectOneOf: committed ? [after] : [before, after],
                              "every \(op) on *\(pathPart)* fails")
    }

    @Test func powerLossAtRandomMoments() async throws {
        let txs = Self.mixed(seed: 7, count: 10)
        var oracle: [State] = [[:]]
        for ops in txs {
            var s = oracle.last!
            Self.apply(ops, to: &s)
            oracle.append(s)
        }
        // Count the workload's operations once.
        let probe = SimulatedFileSystem()
        let pdb = try await Database.open(at: Self.path, options: Self.options(probe, checkpointBytes: 16 << 10))
        let start = probe.operationCount
        for ops in txs { try await Self.run(ops, on: pdb) }
        let total = probe.operationCount - start
        var rng = SplitMix64(seed: 99)
        for cut in 0..<200 {
            let fs = SimulatedFileSystem()
            let db = try await Database.open(at: Self.path, options: Self.options(fs, checkpointBytes: 16 << 10))
            fs.failOperation(Int.random(in: 1...total, using: &rng))   // the power goes out here
            var acked = 0
            for ops in txs {
                do {
                    try await Self.run(ops, on: db)
                    acked += 1
                } catch {
                    break
                }
            }
            fs.freeze()
            let image = fs.afterPowerLoss(using: &rng, keepSomeUnsynced: cut % 2 == 0)
            try await Self.verify(image, expectOneOf: [oracle[acked], oracle[min(acked + 1, txs.count)]],
                                  "power cut \(cut)")
        }
    }
}
