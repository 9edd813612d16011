import BenchData
import Foundation
import SOP

struct PhaseResult {
    var seconds: Double
    var items: Int
    var rate: Double { Double(items) / seconds }
}

/// One engine, one repetition.
struct RunResult {
    var engine: String
    var rep: Int
    var phases: [String: PhaseResult] = [:]
    var p50Ms: Double?
    var p99Ms: Double?
    var sizeAlloc: Int64?
    var writeBytes: Int64?
}

func log(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}

func makeEngine(_ name: String, ds: Dataset, cfg: Config) -> any BenchEngine {
    switch name {
    case "sop": return SOPEngine(ds: ds, slotLength: cfg.slotLength)
    case Config.clusteredEngine: return SOPEngine(ds: ds, slotLength: cfg.slotLength, coordination: .redis(cfg.redis ?? ""))
    case "sqlite-full": return SQLiteEngine(ds: ds, synchronous: "FULL")
    case "sqlite-normal": return SQLiteEngine(ds: ds, synchronous: "NORMAL")
    default: return LMDBEngine(ds: ds)
    }
}

/// Times `body` over `order` in chunks of `batch`.
func timedBatches(_ order: [Int], batch: Int, _ body: (ArraySlice<Int>) async throws -> Void) async throws -> PhaseResult {
    let t0 = now()
    var i = 0
    while i < order.count {
        let j = min(i + batch, order.count)
        try await body(order[i..<j])
        i = j
    }
    return PhaseResult(seconds: now() - t0, items: order.count)
}

func runEngine(_ name: String, rep: Int, ds: Dataset, cfg: Config, base: String) async throws -> RunResult {
    var r = RunResult(engine: name, rep: rep)
    let ph = cfg.phases
    let fm = FileManager.default
    let folder = base + "/\(name)-r\(rep)"
    defer { try? fm.removeItem(atPath: folder) }

    if !ph.isDisjoint(with: ["insert", "read", "scan", "scan-bytes", "update", "delete"]) {
        let e = makeEngine(name, ds: ds, cfg: cfg)
        let path = folder + "/load"
        try await e.open(at: path)
        let wb0 = processWriteBytes()
        let ins = try await timedBatches(ds.insertOrder, batch: cfg.batch) { try await e.insert($0) }
        if let a = wb0, let b = processWriteBytes() { r.writeBytes = b - a }
        if ph.contains("insert") { r.phases["insert"] = ins }
        r.sizeAlloc = allocatedBytes(path)
        if ph.contains("read") {
            r.phases["read"] = try await timedBatches(ds.readOrder, batch: cfg.batch) { try await e.read($0) }
        }
        if ph.contains("scan") {
            let t0 = now()
            let c = try await e.scan()
            r.phases["scan"] = PhaseResult(seconds: now() - t0, items: c)
            guard c == ds.n else { throw BenchError("\(name): scan saw \(c) items, expected \(ds.n)") }
        }
        if ph.contains("scan-bytes") {
            let t0 = now()
            let c = try await e.scanBytes()
            r.phases["scan-bytes"] = PhaseResult(seconds: now() - t0, items: c)
            guard c == ds.n else { throw BenchError("\(name): scan-bytes saw \(c) items, expected \(ds.n)") }
        }
        if ph.contains("update") {
            r.phases["update"] = try await timedBatches(ds.updateOrder, batch: cfg.batch) { try await e.update($0) }
        }
        if ph.contains("delete") {
            r.phases["delete"] = try await timedBatches(ds.deleteOrder, batch: cfg.batch) { try await e.delete($0) }
            let c = try await e.count()
            guard c == 0 else { throw BenchError("\(name): \(c) items left after delete") }
        }
        try await e.close()
        try? fm.removeItem(atPath: path)
    }
    if ph.contains("insert-1tx") {
        let e = makeEngine(name, ds: ds, cfg: cfg)
        let path = folder + "/one-tx"
        try await e.open(at: path)
        r.phases["insert-1tx"] = try await timedBatches(ds.insertOrder, batch: ds.n) { try await e.insert($0) }
        let c = try await e.count()
        guard c == ds.n else { throw BenchError("\(name): \(c) items after insert-1tx, expected \(ds.n)") }
        try await e.close()
        try? fm.removeItem(atPath: path)
    }
    if ph.contains("single") {
        let e = makeEngine(name, ds: ds, cfg: cfg)
        let path = folder + "/single"
        try await e.open(at: path)
        var lat: [Double] = []
        let ids = ds.insertOrder.prefix(1_000)
        let t0 = now()
        for i in ids.indices {
            let t = now()
            try await e.insert(ids[i...i])
            lat.append((now() - t) * 1000)
        }
        r.phases["single"] = PhaseResult(seconds: now() - t0, items: ids.count)
        r.p50Ms = percentile(lat, 50)
        r.p99Ms = percentile(lat, 99)
        try await e.close()
        try? fm.removeItem(atPath: path)
    }
    return r
}

func runBenchmark(_ cfg: Config) async throws {
    let fm = FileManager.default
    let parent = cfg.dir ?? NSTemporaryDirectory()
    let base = (parent.hasSuffix("/") ? parent : parent + "/") + "sop-bench-\(getpid())"
    try fm.createDirectory(atPath: base, withIntermediateDirectories: true)
    defer { try? fm.removeItem(atPath: base) }
    if let url = cfg.redis, cfg.engines.contains(Config.clusteredEngine) {
        try await probeRedis(url, base: base)
    }

    let tg = now()
    let ds = Dataset(n: cfg.n)
    log("data: N=\(cfg.n) generated in \(String(format: "%.2f", now() - tg)) s (seed \(Dataset.seed))")

    var results: [String: [RunResult]] = [:]
    let timed = Config.timedPhases.filter { cfg.phases.contains($0) }
    if !timed.isEmpty {
        for rep in 1...cfg.repeats {
            // Rotate the engine order per repetition, and flush the previous engine's dirty
            // pages first (untimed), so that no engine pays for another's writeback.
            let k = (rep - 1) % cfg.engines.count
            for name in cfg.engines[k...] + cfg.engines[..<k] {
                sync()
                let t0 = now()
                let r = try await runEngine(name, rep: rep, ds: ds, cfg: cfg, base: base)
                results[name, default: []].append(r)
                let parts = timed.compactMap { p in r.phases[p].map { "\(p) \(String(format: "%.2f", $0.seconds))s" } }
                log("rep \(rep)/\(cfg.repeats) \(name): \(parts.joined(separator: ", ")) (\(String(format: "%.1f", now() - t0)) s)")
                if cfg.json { print(jsonLine(r, n: cfg.n)) }
            }
        }
    }

    var limits = MachineLimits()
    if cfg.phases.contains("limits") {
        log("machine limits ...")
        sync()
        limits.fsyncMedianMs = try measureFsync(dir: base)
        if cfg.seqBytes > 0 {
            limits.seqBytes = cfg.seqBytes
            limits.seqMBps = try measureSequential(dir: base, bytes: cfg.seqBytes)
        }
        let c = try measureCodec(slotLength: StoreOptions.defaultSlotLength, ds: ds)
        limits.nodeItems = c.items
        limits.nodeBytes = c.bytes
        limits.encodeNodesPerSec = c.enc
        limits.decodeNodesPerSec = c.dec
        limits.stringScanPerSec = measureStringScan(ds: ds)
    }

    let report = renderReport(cfg: cfg, timed: timed, results: results, limits: limits)
    if cfg.json {
        FileHandle.standardError.write(Data(report.utf8))
    } else {
        print(report, terminator: "")
    }
}

/// Opens and closes a clustered database once before anything is timed, so that a Redis that
/// cannot be reached (or a bad URL) fails the run at once with a clear error. The client's
/// connect and command timeouts (2 s each) bound the wait.
func probeRedis(_ url: String, base: String) async throws {
    let path = base + "/redis-probe"
    defer { try? FileManager.default.removeItem(atPath: path) }
    let t0 = now()
    do {
        let db = try await Database.open(at: path, coordination: .redis(url))
        try await db.close()
    } catch {
        throw BenchError("\(Config.clusteredEngine): cannot open a clustered database with --redis: \(error)")
    }
    log("redis: clustered database opened and closed in \(String(format: "%.3f", now() - t0)) s")
}

// MARK: - Output

func jsonLine(_ r: RunResult, n: Int) -> String {
    func num(_ x: Double) -> String { x.isFinite ? String(format: "%.6f", x) : "null" }
    var phases: [String] = []
    for p in Config.timedPhases {
        guard let v = r.phases[p] else { continue }
        var s = "\"\(p)\": {\"s\": \(num(v.seconds)), \"items\": \(v.items)"
        if p == "single" {
            s += ", \"p50_ms\": \(num(r.p50Ms ?? .nan)), \"p99_ms\": \(num(r.p99Ms ?? .nan))"
        }
        phases.append(s + "}")
    }
    var out = "{\"engine\": \"\(r.engine)\", \"n\": \(n), \"rep\": \(r.rep), \"phases\": {\(phases.joined(separator: ", "))}"
    out += ", \"size_alloc\": \(r.sizeAlloc.map(String.init) ?? "null")"
    out += ", \"insert_write_bytes\": \(r.writeBytes.map(String.init) ?? "null")}"
    return out
}

func fmtRate(_ x: Double) -> String {
    guard x.isFinite else { return "-" }
    if x >= 1e6 { return String(format: "%.2fM", x / 1e6) }
    if x >= 1e4 { return String(format: "%.1fk", x / 1e3) }
    if x >= 1e3 { return String(format: "%.2fk", x / 1e3) }
    return String(format: "%.0f", x)
}

func table(_ header: [String], _ rows: [[String]]) -> String {
    var w = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() { w[i] = max(w[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in
            i == 0 ? c.padding(toLength: w[i], withPad: " ", startingAt: 0)
                : String(repeating: " ", count: w[i] - c.count) + c
        }.joined(separator: "  ")
    }
    var s = line(header) + "\n" + line(w.map { String(repeating: "-", count: $0) }) + "\n"
    for r in rows { s += line(r) + "\n" }
    return s
}

func renderReport(cfg: Config, timed: [String], results: [String: [RunResult]], limits: MachineLimits) -> String {
    var s = "\nSOP benchmark, workload v1: N=\(cfg.n), batch=\(cfg.batch), repeats=\(cfg.repeats), "
        + "SOP slot length=\(cfg.slotLength)\n"
    let engines = cfg.engines.filter { results[$0] != nil }
    func rates(_ e: String, _ p: String) -> [Double] { (results[e] ?? []).compactMap { $0.phases[p]?.rate } }
    func med(_ e: String, _ p: String) -> Double { median(rates(e, p)) }
    func medOpt(_ e: String, _ f: (RunResult) -> Double?) -> Double { median((results[e] ?? []).compactMap(f)) }

    if !engines.isEmpty {
        s += "\nitems/s, median of \(cfg.repeats) (single: 1,000 one-insert transactions; wB/item: /proc/self/io write_bytes during insert / N)\n"
        var header = ["engine"] + timed
        if timed.contains("single") { header += ["p50 ms", "p99 ms"] }
        let load = !Set(timed).isDisjoint(with: ["insert", "read", "scan", "scan-bytes", "update", "delete"])
        if load { header += ["MiB", "wB/item"] }
        var rows: [[String]] = []
        for e in engines {
            var row = [e] + timed.map { fmtRate(med(e, $0)) }
            if timed.contains("single") {
                row += [String(format: "%.2f", medOpt(e) { $0.p50Ms }), String(format: "%.2f", medOpt(e) { $0.p99Ms })]
            }
            if load {
                row.append(String(format: "%.1f", medOpt(e) { $0.sizeAlloc.map { Double($0) / 1_048_576 } }))
                let wb = medOpt(e) { $0.writeBytes.map { Double($0) / Double(cfg.n) } }
                row.append(wb.isFinite ? String(format: "%.0f", wb) : "-")
            }
            rows.append(row)
        }
        s += table(header, rows)

        if cfg.repeats > 1 {
            s += "\nspread (max - min) / median\n"
            var srows: [[String]] = []
            for e in engines {
                srows.append([e] + timed.map { p in
                    let r = rates(e, p)
                    guard let lo = r.min(), let hi = r.max() else { return "-" }
                    return String(format: "%.0f%%", (hi - lo) / median(r) * 100)
                })
            }
            s += table(["engine"] + timed, srows)
        }

        if engines.contains("sop") && engines.count > 1 {
            s += "\nsop / row, items/s (> 1: sop faster); size: sop / row (> 1: sop larger)\n"
            var rrows: [[String]] = []
            for e in engines where e != "sop" {
                var row = [e] + timed.map { p in String(format: "%.2f", med("sop", p) / med(e, p)) }
                if timed.contains("single") {
                    row.append(String(format: "%.2f", medOpt("sop") { $0.p50Ms } / medOpt(e) { $0.p50Ms }))
                }
                if load {
                    row.append(String(format: "%.2f", medOpt("sop") { $0.sizeAlloc.map(Double.init) }
                        / medOpt(e) { $0.sizeAlloc.map(Double.init) }))
                }
                rrows.append(row)
            }
            var h = ["vs"] + timed
            if timed.contains("single") { h.append("p50 (sop/row)") }
            if load { h.append("size") }
            s += table(h, rrows)
        }
    }

    if cfg.phases.contains("limits") {
        s += "\nmachine limits\n"
        if let f = limits.fsyncMedianMs {
            s += String(format: "  fsync latency, 4 KiB overwrite + fdatasync: median %.3f ms of 200\n", f)
        }
        if let q = limits.seqMBps {
            s += String(format: "  sequential write, %.0f MiB + one fsync: %.0f MB/s\n", Double(limits.seqBytes) / 1_048_576, q)
        } else {
            s += "  sequential write: skipped (--seq-bytes 0)\n"
        }
        if let enc = limits.encodeNodesPerSec, let dec = limits.decodeNodesPerSec {
            let mb = Double(limits.nodeBytes) / 1e6
            s += "  NodeCodec, one leaf of \(limits.nodeItems) items (16 B keys, 100 B values, \(limits.nodeBytes) B encoded):\n"
            s += String(format: "    encode %.0f nodes/s = %.0f MB/s = %@ items/s\n", enc, enc * mb, fmtRate(enc * Double(limits.nodeItems)))
            s += String(format: "    decode %.0f nodes/s = %.0f MB/s = %@ items/s\n", dec, dec * mb, fmtRate(dec * Double(limits.nodeItems)))
        }
        if let r = limits.stringScanPerSec {
            s += "  String scan ceiling (make and compare each item's key and value Strings, nothing else): \(fmtRate(r)) items/s\n"
        }
    }
    return s
}
