import ArgumentParser
import SOP

/// Command line of `sop-bench`.
struct BenchOptions: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sop-bench",
        abstract: "Runs the SOP benchmark workload (v1) against SOP, SQLite and LMDB in one process.")

    @Option(help: "Number of items.") var n = 100_000
    @Option(help: "Items per transaction in the batched phases.") var batch = 1_000
    @Option(help: "Repetitions; the table shows medians.") var repeats = 3
    @Option(help: """
        Comma list of: \(Config.allEngines.joined(separator: ",")) (default: \(Config.defaultEngines.joined(separator: ",")), \
        and \(Config.clusteredEngine) when --redis is given).
        """)
    var engines: String?
    @Option(help: "Slot length of SOP's store.") var slotLength = StoreOptions.defaultSlotLength
    @Option(help: "Folder for the databases (default: a temporary folder).") var dir: String?
    @Option(help: "Redis URL (redis://host:port) for the \(Config.clusteredEngine) row: SOP's workload with the database opened in clustered mode.")
    var redis: String?
    @Flag(help: "Print one JSON object per engine and repetition on stdout (the table goes to stderr).")
    var json = false
    @Option(help: "Comma list, a subset of: \(Config.allPhases.joined(separator: ",")).")
    var phases: String?
    @Option(help: "Bytes of the sequential-write probe (0 skips it).") var seqBytes = 1 << 30

    func validate() throws {
        guard n >= 1 else { throw ValidationError("--n must be at least 1") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
        guard seqBytes >= 0 else { throw ValidationError("--seq-bytes must not be negative") }
        if let engines, list(engines).isEmpty { throw ValidationError("--engines names no engine") }
        for e in list(engines ?? "") where !Config.allEngines.contains(e) {
            throw ValidationError("unknown engine '\(e)'; known: \(Config.allEngines.joined(separator: ","))")
        }
        if redis == nil, list(engines ?? "").contains(Config.clusteredEngine) {
            throw ValidationError("engine '\(Config.clusteredEngine)' needs --redis URL (the Redis of clustered mode, e.g. redis://127.0.0.1:6379)")
        }
        for p in list(phases ?? "") where !Config.allPhases.contains(p) {
            throw ValidationError("unknown phase '\(p)'; known: \(Config.allPhases.joined(separator: ","))")
        }
        try StoreOptions(slotLength: slotLength).validate()
    }

    func config() -> Config {
        let engines = engines.map(list) ?? (redis == nil ? Config.defaultEngines : Config.allEngines)
        return Config(n: n, batch: batch, repeats: repeats, engines: engines, slotLength: slotLength, dir: dir,
               redis: redis, json: json, phases: phases.map { Set(list($0)) } ?? Set(Config.allPhases), seqBytes: seqBytes)
    }
}

private func list(_ s: String) -> [String] {
    s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
}

struct Config: Sendable {
    /// SOP with the database opened in clustered mode against `--redis`.
    static let clusteredEngine = "sop-clustered"
    /// The engines run when `--engines` is not given and there is no `--redis` (with it: all).
    static let defaultEngines = ["sop", "sqlite-full", "sqlite-normal", "lmdb"]
    static let allEngines = ["sop", clusteredEngine, "sqlite-full", "sqlite-normal", "lmdb"]
    /// Timed phases in output order, then `limits` (the machine's limits).
    static let timedPhases = ["insert", "read", "scan", "scan-bytes", "update", "delete", "insert-1tx", "single"]
    static let allPhases = timedPhases + ["limits"]

    var n: Int
    var batch: Int
    var repeats: Int
    var engines: [String]
    var slotLength: Int
    var dir: String?
    var redis: String?
    var json: Bool
    var phases: Set<String>
    var seqBytes: Int
}

import Foundation
