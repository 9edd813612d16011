// A profiling driver (not the benchmark): loads N items of the workload's shape into a fresh
// database, then repeats one phase for a number of rounds so `perf record` sees that phase
// alone. Usage: sop-prof <read|scan|scan-bytes|insert|insert1tx|update|delete|single> [n] [rounds]; environment: SOP_PROF_DIR,
// SOP_L1_MB, SOP_NO_COMPACTION, SOP_CHECKPOINT_MB, SOP_SLOT, SOP_INTERNAL (slot
// lengths of the store it creates), SOP_WARM (read every key before the timed rounds),
// SOP_NOCHECK (scan: hand the items out without comparing them with the expected ones).
import Foundation
import BenchData
import SOP

let args = CommandLine.arguments
let phase = args.count > 1 ? args[1] : "read"
let n = args.count > 2 ? Int(args[2])! : 100_000
let rounds = args.count > 3 ? Int(args[3])! : 5

// The benchmark's own data (keys, values, a random order).
let data = Dataset(n: n)
let keys = data.keys
let values = data.values
let order = data.readOrder
// SOP_PROF_DIR keeps the loaded database between runs (a run that finds it skips the load, so
// a profile of the run sees the phase alone); otherwise a temporary folder, removed at exit.
let keptDir = ProcessInfo.processInfo.environment["SOP_PROF_DIR"]
let dir = keptDir ?? NSTemporaryDirectory() + "sop-prof-\(UUID().uuidString)"
let preloaded = keptDir.map { FileManager.default.fileExists(atPath: $0) } ?? false
defer { if keptDir == nil { try? FileManager.default.removeItem(atPath: dir) } }

/// CPU time of the process so far (user and system, every thread): less disturbed than wall
/// time by other machines' load on a shared host (time stolen by the hypervisor is not in it).
func cpuSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Runs off the main actor: top-level code is main-actor isolated, and every `await` into the
/// engine would hop threads twice.
@concurrent func run() async throws {
    var options = DatabaseOptions()
    if let mb = ProcessInfo.processInfo.environment["SOP_L1_MB"].flatMap(Int.init) { options.nodeCacheBytes = mb << 20 }
    if ProcessInfo.processInfo.environment["SOP_NO_COMPACTION"] != nil { options.automaticCompaction = false }
    if let mb = ProcessInfo.processInfo.environment["SOP_CHECKPOINT_MB"].flatMap(UInt64.init) { options.checkpointBytes = mb << 20 }
    let db = try await Database.open(at: dir, options: options)
    func load(_ ids: ArraySlice<Int>) async throws {
        try await db.write { tx in
            let slot = ProcessInfo.processInfo.environment["SOP_SLOT"].flatMap(Int.init) ?? StoreOptions().slotLength
            let fanOut = ProcessInfo.processInfo.environment["SOP_INTERNAL"].flatMap(Int.init)
            let s = try await tx.store("kv", key: String.self, value: String.self,
                                       options: StoreOptions(slotLength: slot, internalSlotLength: fanOut))
            for i in ids { _ = try await s.add(keys[i], values[i]) }
        }
    }
    let clock = ContinuousClock()
    if phase != "insert" && phase != "insert1tx" && !preloaded {
        for start in stride(from: 0, to: n, by: 10_000) { try await load(order[start..<min(n, start + 10_000)]) }
    }
    func rss() -> String {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        return status.split(separator: "\n").first { $0.hasPrefix("VmRSS") }.map(String.init) ?? "?"
    }
    if ProcessInfo.processInfo.environment["SOP_WARM"] != nil {
        // Every key read once (fills L1 as the benchmark's earlier phases do).
        for start in stride(from: 0, to: n, by: 10_000) {
            try await db.read { tx in
                let s = try await tx.openStore("kv", key: String.self, value: String.self)
                for i in start..<min(n, start + 10_000) { _ = try await s.get(keys[i]) }
            }
        }
    }
    print("after load: \(rss()), L1 \(db.cacheStatistics.bytes >> 20) MiB in \(db.cacheStatistics.entries) nodes")
    // Update: time inside the transaction's body (the operations) against the whole
    // transaction (operations and commit).
    var opsTime = Duration.zero, txTime = Duration.zero
    /// One write transaction applying `op` to `ids`, adding to the two times.
    func timedWrite(_ ids: ArraySlice<Int>, _ op: (Store<String, String>, Int) async throws -> Void) async throws {
        let t = clock.now
        try await db.write { tx in
            let s = try await tx.openStore("kv", key: String.self, value: String.self)
            for i in ids { try await op(s, i) }
            opsTime += clock.now - t
        }
        txTime += clock.now - t
    }
    let t0 = clock.now
    let cpu0 = cpuSeconds()
    for r in 0..<rounds {
        switch phase {
        case "read":
            for start in stride(from: 0, to: n, by: 1_000) {
                try await db.read { tx in
                    let s = try await tx.openStore("kv", key: String.self, value: String.self)
                    for i in order[start..<min(n, start + 1_000)] {
                        guard try await s.get(keys[i]) == values[i] else { fatalError("bad read") }
                    }
                }
            }
        case "scan":
            try await db.read { tx in
                let s = try await tx.openStore("kv", key: String.self, value: String.self)
                var i = 0
                if ProcessInfo.processInfo.environment["SOP_NOCHECK"] != nil {
                    var t = 0
                    for try await item in s.range() { t &+= item.key.utf8.count &+ item.value.utf8.count }
                    if t == 0 { fatalError("empty") }
                } else {
                for try await item in s.range() {
                    guard item.key == keys[i], item.value == values[i] else { fatalError("bad scan") }
                    i += 1
                }
                }
            }
        case "scan-bytes":
            try await db.read { tx in
                let s = try await tx.openStore("kv", key: String.self, value: String.self)
                var i = 0
                try await s.forEachJSON { k, v in
                    guard k.count == keys[i].utf8.count + 2, v.count == values[i].utf8.count + 2 else { fatalError("bad scan") }
                    i += 1
                    return true
                }
                if i != n { fatalError("short scan") }
            }
        case "insert":
            if r > 0 {
                try await db.write { tx in try await tx.dropStore("kv") }
            }
            for start in stride(from: 0, to: n, by: 1_000) { try await load(order[start..<min(n, start + 1_000)]) }
        case "insert1tx":
            // The benchmark's insert-1tx phase: every item in one transaction.
            if r > 0 || preloaded { try await db.write { tx in try await tx.dropStore("kv") } }
            try await db.write { tx in _ = try await tx.store("kv", key: String.self, value: String.self) }
            try await timedWrite(order[0..<n]) { s, i in _ = try await s.add(keys[i], values[i]) }
        case "update":
            for start in stride(from: 0, to: n / 10, by: 1_000) {
                try await timedWrite(order[start..<min(n, start + 1_000)]) { s, i in
                    _ = try await s.update(keys[i], values[(i + r + 1) % n])
                }
            }
        case "delete":
            // Every item, in the read order (one round empties the store; later rounds find
            // nothing to delete).
            for start in stride(from: 0, to: n, by: 1_000) {
                try await timedWrite(order[start..<min(n, start + 1_000)]) { s, i in _ = try await s.remove(keys[i]) }
            }
        case "single":
            // One-insert transactions on new keys: the commit latency of the benchmark's
            // single phase (p50 and p90 printed per round).
            var latencies: [Duration] = []
            for j in 0..<1_000 {
                let t = clock.now
                try await db.write { tx in
                    let s = try await tx.openStore("kv", key: String.self, value: String.self)
                    _ = try await s.add("single-\(r)-\(j)", values[j % n])
                }
                latencies.append(clock.now - t)
            }
            latencies.sort()
            print("single round \(r): p50 \(latencies[500]), p90 \(latencies[900])")
        default: fatalError("unknown phase \(phase)")
        }
    }
    let s = (clock.now - t0) / .seconds(1)
    let items = phase == "update" ? n / 10 : phase == "single" ? 1_000 : n
    let cpu = cpuSeconds() - cpu0
    print("\(phase): \(rounds) rounds of \(items) in \(String(format: "%.2f", s)) s = \(Int(Double(rounds * items) / s)) items/s"
          + "; CPU \(String(format: "%.2f", cpu)) s = \(Int(Double(rounds * items) / cpu)) items per CPU second")
    if txTime > .zero { print("operations \(opsTime), transactions \(txTime): commit \(Int(100 * (1 - opsTime / txTime))) %") }
    let st = db.cacheStatistics
    print("after run: \(rss()), L1 \(st.bytes >> 20) MiB in \(st.entries) nodes, \(st.hits) hits, \(st.misses) misses")
    try await db.close()
}
try await run()
