import ArgumentParser
import SOP

/// `sop workload ...`: deterministic workloads for process-level tests (crash loops, soak
/// runs). Each subcommand is one workload; add new ones to `subcommands`.
struct Workload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a deterministic test workload against the database.",
        subcommands: [CrashMixCommand.self, BankCommand.self])
}

struct CrashMixCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crashmix",
        abstract: "Seeded transactions of upserts, updates and removes over two stores (cm-a, cm-b).",
        discussion: """
            Transaction i (0-based) is a pure function of --seed, i and the state after the first i \
            transactions: 5-40 operations, each an upsert of a new key, an update or a remove of an \
            existing key, in store cm-a (integer keys) or cm-b (string keys), slot length 8, keys from \
            a bounded space of \(CrashMix.keySpace) per store; phases of \(CrashMix.cycle / 2) transactions \
            alternately grow and shrink the stores, so nodes split and merge. Every transaction also \
            upserts the counter "__committed" in cm-a to the number of committed transactions, so \
            the counter and the data commit atomically. Both stores are created by the first one.

            Resumable: on start the counter is read and the run continues from it until --txs \
            transactions in total are committed (nothing happens when there are already as many). \
            With --log-commits, 'committed <k>' (k = total committed transactions) is printed, \
            unbuffered, after each commit returns.

            Verifying: --dry-run-state K prints, without touching any database (no --db needed), the \
            exact contents both stores must have after K transactions, as the lines \
            'cm-a <scan line>' for every item of cm-a, then 'cm-b <scan line>' for cm-b, where \
            <scan line> is what `sop scan` prints for the item. K = 0 prints nothing (no store yet).
            """)

    @Option(help: "Seed of the generator (the same seed gives the same transactions).") var seed: UInt64 = 1
    @Option(help: "Total number of transactions the run ends with (a resumed run counts those already committed).")
    var txs: Int?
    @Flag(name: .customLong("log-commits"), help: "Print 'committed <k>' after each durable commit.")
    var logCommits = false
    @Option(name: .customLong("dry-run-state"),
            help: "Print the expected contents of both stores after this many transactions and exit.")
    var dryRunState: Int?

    func run() async throws {
        if let k = dryRunState {
            guard k >= 0 && k <= 10_000_000 else {
                throw SOPError(.invalidArgument, "--dry-run-state must be 0...10000000")
            }
            var out = ""
            for line in CrashMix.expectedLines(seed: seed, after: k) {
                out += line + "\n"
                if out.utf8.count > 1 << 16 { writeFD(1, out); out = "" }
            }
            writeFD(1, out)
            return
        }
        guard let target = txs else { throw SOPError(.invalidArgument, "--txs N (or --dry-run-state K) is required") }
        guard target >= 0 && target <= 10_000_000 else { throw SOPError(.invalidArgument, "--txs must be 0...10000000") }
        let db = try await openDatabase(automaticCompaction: true)
        let start = try await db.read { tx -> Int in
            guard tx.storeNames().contains(CrashMix.stores[0]) else { return 0 }
            let s = try await tx.openStore(CrashMix.stores[0], key: JSONValue.self, value: JSONValue.self)
            guard let v = try await s.get(CrashMix.counterKey) else {
                throw SOPError(.invalidArgument, "store '\(CrashMix.stores[0])' has no \"__committed\" counter: not a crashmix database")
            }
            guard case .int(let n) = v, n >= 0 else {
                throw SOPError(.invalidArgument, "the \"__committed\" counter is not a count: \(v.jsonText)")
            }
            return Int(n)
        }
        var model = CrashMix.state(seed: seed, after: start)
        var index = start
        while index < target {
            let ops = CrashMix.transaction(seed: seed, index: index, model: model)
            let i = index
            try await db.write { tx in
                var stores: [Store<JSONValue, JSONValue>] = []
                for name in CrashMix.stores {
                    stores.append(try await tx.store(name, key: JSONValue.self, value: JSONValue.self,
                                                     options: CrashMix.storeOptions))
                }
                for op in ops {
                    let s = stores[op.store]
                    let ok: Bool
                    switch op.kind {
                    case .insert: ok = try await s.upsert(op.key, op.value!)
                    case .update: ok = try await s.update(op.key, op.value!)
                    case .upsertExisting: ok = try await !s.upsert(op.key, op.value!)
                    case .remove: ok = try await s.remove(op.key)
                    }
                    guard ok else {
                        throw SOPError(.corrupt, "crashmix transaction \(i): \(op.kind) of \(op.key.jsonText) in "
                                       + "\(CrashMix.stores[op.store]) disagrees with the expected state")
                    }
                }
                try await stores[0].upsert(CrashMix.counterKey, .int(Int64(i + 1)))
            }
            CrashMix.apply(ops, index: index, to: &model)
            index += 1
            if logCommits { emit("committed \(index)") }
        }
        try await db.close()
    }
}

/// The crashmix generator: pure and deterministic, shared by the workload and its verifier
/// (`--dry-run-state`).
enum CrashMix {
    static let stores = ["cm-a", "cm-b"]
    static let counterKey: JSONValue = .string("__committed")
    static let storeOptions = StoreOptions(slotLength: 8)
    /// Keys per store.
    static let keySpace = 160
    /// Transactions per grow + shrink cycle.
    static let cycle = 40

    struct Op: Equatable {
        enum Kind: Equatable { case insert, update, upsertExisting, remove }
        var store: Int
        var kind: Kind
        var key: JSONValue
        var value: JSONValue?
    }

    /// The contents of both stores (without the counter), kept so a key is picked in O(1).
    struct Model {
        var values: [[JSONValue?]]   // store → key index → value
        var present: [[Int]]         // store → key indexes present (order: deterministic, not sorted)
        var absent: [[Int]]
        var position: [[Int]]        // store → key index → its position in present or absent

        init() {
            values = Array(repeating: Array(repeating: nil, count: CrashMix.keySpace), count: 2)
            present = [[], []]
            absent = Array(repeating: Array(0..<CrashMix.keySpace), count: 2)
            position = Array(repeating: Array(0..<CrashMix.keySpace), count: 2)
        }

        mutating func set(_ store: Int, _ k: Int, _ v: JSONValue?) {
            let was = values[store][k] != nil
            values[store][k] = v
            if was == (v != nil) { return }
            // Move k from one list to the other (swap-remove: deterministic).
            let p = position[store][k]
            if was {
                let last = present[store].removeLast()
                if last != k { present[store][p] = last; position[store][last] = p }
                position[store][k] = absent[store].count
                absent[store].append(k)
            } else {
                let last = absent[store].removeLast()
                if last != k { absent[store][p] = last; position[store][last] = p }
                position[store][k] = present[store].count
                present[store].append(k)
            }
        }
    }

    static func key(store: Int, index: Int) -> JSONValue {
        if store == 0 { return .int(Int64(index)) }
        let digits = String(index)
        return .string("k" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits)
    }

    static func keyIndex(store: Int, key: JSONValue) -> Int {
        switch key {
        case .int(let n): return Int(n)
        case .string(let s): return Int(s.dropFirst())!
        default: preconditionFailure("not a crashmix key")
        }
    }

    /// The generator of transaction `index`: SplitMix64 seeded from the seed and the index.
    static func generator(seed: UInt64, index: Int) -> SplitMix64 {
        SplitMix64(seed: SplitMix64.mix(seed &+ SplitMix64.mix(UInt64(index) &+ 0x5EED)))
    }

    /// Transaction `index` given the state after the transactions before it.
    static func transaction(seed: UInt64, index: Int, model start: Model) -> [Op] {
        var g = generator(seed: seed, index: index)
        var m = start
        let growing = (index / (cycle / 2)) % 2 == 0
        let n = Int.random(in: 5...40, using: &g)
        var ops: [Op] = []
        ops.reserveCapacity(n)
        for j in 0..<n {
            let store = Int.random(in: 0...1, using: &g)
            let roll = Int.random(in: 0..<100, using: &g)
            var kind: Op.Kind = roll < (growing ? 55 : 15) ? .insert : (roll < (growing ? 80 : 40) ? .update : .remove)
            if kind != .insert && m.present[store].isEmpty { kind = .insert }
            if kind == .insert && m.absent[store].isEmpty { kind = .update }
            let pool = kind == .insert ? m.absent[store] : m.present[store]
            let k = pool[Int.random(in: 0..<pool.count, using: &g)]
            if kind == .update && Bool.random(using: &g) { kind = .upsertExisting }
            var value: JSONValue?
            if kind != .remove {
                let pad = Int.random(in: 0...24, using: &g)
                value = ["tx": .int(Int64(index)), "op": .int(Int64(j)),
                         "pad": .string(String(repeating: "x", count: pad))]
            }
            m.set(store, k, value)
            ops.append(Op(store: store, kind: kind, key: key(store: store, index: k), value: value))
        }
        return ops
    }

    static func apply(_ ops: [Op], index: Int, to m: inout Model) {
        for op in ops { m.set(op.store, keyIndex(store: op.store, key: op.key), op.value) }
    }

    /// The state after the first `k` transactions.
    static func state(seed: UInt64, after k: Int) -> Model {
        var m = Model()
        for i in 0..<k { apply(transaction(seed: seed, index: i, model: m), index: i, to: &m) }
        return m
    }

    /// Both stores after `k` transactions, counter included, in key order: `<store> <scan line>`.
    static func expectedLines(seed: UInt64, after k: Int) -> [String] {
        guard k > 0 else { return [] }
        let m = state(seed: seed, after: k)
        var lines: [String] = []
        for s in 0..<2 {
            var items: [(JSONValue, JSONValue)] = []
            for (i, v) in m.values[s].enumerated() { if let v { items.append((key(store: s, index: i), v)) } }
            if s == 0 { items.append((counterKey, .int(Int64(k)))) }
            items.sort { $0.0 < $1.0 }
            for (key, value) in items {
                lines.append(stores[s] + " {\"key\":" + key.jsonText + ",\"value\":" + value.jsonText + "}")
            }
        }
        return lines
    }
}

