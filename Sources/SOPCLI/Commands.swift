import Foundation
import ArgumentParser
import SOP
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct SOPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sop",
        abstract: "SOP: a transactional, ordered object store. Keys and values are JSON.",
        discussion: """
            Every command takes --db PATH (before or after the command name); the folder is
            created when it does not exist. Keys and values are JSON texts: '"ada"', '42', '{"born":1815}'.
            --redis URL (anywhere too) opens the database in clustered mode: any number of processes \
            share the folder, coordinated by the Redis at URL (redis://[user:password@]host[:port][/db]).
            """,
        subcommands: [CreateStore.self, DropStore.self, Put.self, Add.self, Get.self, Delete.self, Import.self,
                      Scan.self, Stores.self, Check.self, Compact.self, Workload.self])
}

func databasePath() throws -> String {
    guard let db = Global.db, !db.isEmpty else {
        throw SOPError(.invalidArgument, "--db PATH is required")
    }
    return db
}

/// Opens the database for one command. Background compaction is only worth starting for
/// commands that write a lot (`import`, `workload`): a short command would cancel it at close,
/// and `check` must look at files nothing else is changing.
func openDatabase(create: Bool = true, automaticCompaction: Bool = false) async throws -> Database {
    var o = DatabaseOptions()
    o.createIfMissing = create
    o.automaticCompaction = automaticCompaction
    #if DEBUG
    // Process-level crash tests arm failpoints through the environment (debug builds only).
    if let f = Failpoints.fromEnvironment() { o.failpoints = f }
    #endif
    if let url = Global.redis {
        guard !url.isEmpty else { throw SOPError(.invalidArgument, "--redis needs a URL") }
        o.coordination = .redis(url)
        // Tests shorten the commit lock's TTL (a killed holder blocks others this long).
        if let ms = ProcessInfo.processInfo.environment["SOP_CLUSTER_LOCK_TTL_MS"].flatMap(Int.init), ms > 0 {
            o.clusterLockTTL = .milliseconds(ms)
        }
    }
    return try await Database.open(at: try databasePath(), options: o)
}

func parseJSON(_ text: String, what: String) throws -> JSONValue {
    do { return try JSONValue(parsing: text) } catch let e as SOPError {
        throw SOPError(.invalidArgument, "\(what) is not valid JSON: \(e.message)")
    }
}

func jsonText(_ v: JSONValue) -> String { v.jsonText }

struct CreateStore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create-store", abstract: "Create a store.")
    @Argument(help: "Store name: letters, digits, '_', '-', '.'.") var name: String
    @Option(name: .customLong("slot-length"), help: "Items per leaf (4...10000).")
    var slotLength: Int = StoreOptions.defaultSlotLength
    @Option(name: .customLong("internal-slot-length"), help: "Separators per internal node (4...10000; default max(slot length, 64)).")
    var internalSlotLength: Int?
    @Flag(help: "Each key at most once (the default).") var unique = false
    @Flag(name: .customLong("non-unique"), help: "Allow duplicate keys.") var nonUnique = false
    @Option(name: .customLong("value-placement"), help: "inNode (default, small values), separateBlob (medium) or separateBlobWrittenAtOnce (big).")
    var valuePlacement: String = "inNode"
    @Option(help: "Free-text description.") var description: String = ""
    @Option(help: ArgumentHelp(
        "Order keys (JSON objects) by fields: '[{\"field\":\"last\",\"ascending\":true},...]'.",
        discussion: "Nested fields use dots (\"address.city\"); other fields of a key are metadata."))
    var index: String?

    func run() async throws {
        if unique && nonUnique { throw SOPError(.invalidArgument, "--unique and --non-unique exclude each other") }
        guard let placement = ValuePlacement(rawValue: valuePlacement) else {
            throw SOPError(.invalidArgument, "--value-placement must be inNode, separateBlob or separateBlobWrittenAtOnce")
        }
        let spec = try index.map { try IndexSpecification(parsing: $0) }
        let options = StoreOptions(slotLength: slotLength, internalSlotLength: internalSlotLength,
                                   isUnique: !nonUnique, valuePlacement: placement,
                                   description: description, indexSpecification: spec)
        try options.validate()
        try StoreName.validate(name)
        let db = try await openDatabase()
        try await db.write { tx in
            _ = try await tx.createStore(name, key: JSONValue.self, value: JSONValue.self, options: options)
        }
        try await db.close()
    }
}

struct DropStore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "drop-store", abstract: "Drop a store and its items.")
    @Argument var name: String
    func run() async throws {
        let db = try await openDatabase()
        try await db.write { tx in try await tx.dropStore(name) }
        try await db.close()
    }
}

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set the value of a key (adds it, or replaces the first item with that key).")
    @Argument var store: String
    @Argument var key: String
    @Argument var value: String
    func run() async throws {
        let k = try parseJSON(key, what: "the key"), v = try parseJSON(value, what: "the value")
        let db = try await openDatabase()
        try await db.write { tx in
            try await tx.dynamicStore(store).upsert(k, v)
        }
        try await db.close()
    }
}

struct Add: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add an item (a duplicate in a non-unique store; an error if the key exists in a unique one).")
    @Argument var store: String
    @Argument var key: String
    @Argument var value: String
    func run() async throws {
        let k = try parseJSON(key, what: "the key"), v = try parseJSON(value, what: "the value")
        let db = try await openDatabase()
        let added = try await db.write { tx in
            try await tx.dynamicStore(store).add(k, v)
        }
        try await db.close()
        if !added { throw SOPError(.alreadyExists, "key \(k.jsonText) already exists in store '\(store)'") }
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the value of a key as JSON.")
    @Argument var store: String
    @Argument var key: String
    func run() async throws {
        let k = try parseJSON(key, what: "the key")
        let db = try await openDatabase()
        let v = try await db.read { tx in
            try await tx.dynamicStore(store).get(k)
        }
        try await db.close()
        guard let v else { throw SOPError(.notFound, "key \(k.jsonText) is not in store '\(store)'") }
        emit(v.jsonText)
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove a key (the first item with it).")
    @Argument var store: String
    @Argument var key: String
    func run() async throws {
        let k = try parseJSON(key, what: "the key")
        let db = try await openDatabase()
        let removed = try await db.write { tx in
            try await tx.dynamicStore(store).remove(k)
        }
        try await db.close()
        if !removed { throw SOPError(.notFound, "key \(k.jsonText) is not in store '\(store)'") }
    }
}

struct Scan: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print items in key order, one {\"key\": ..., \"value\": ...} line each.")
    @Argument var store: String
    @Option(help: "Smallest key (JSON), inclusive.") var from: String?
    @Option(help: "Largest key (JSON), inclusive.") var to: String?
    @Option(help: "At most this many items.") var limit: Int?
    @Flag(help: "Descending order.") var reverse = false
    func run() async throws {
        let f = try from.map { try parseJSON($0, what: "--from") }
        let t = try to.map { try parseJSON($0, what: "--to") }
        if let limit, limit < 0 { throw SOPError(.invalidArgument, "--limit must not be negative") }
        let db = try await openDatabase()
        try await db.read { tx in
            let s = try await tx.dynamicStore(store)
            var n = 0
            var out = ""
            for try await item in s.range(from: f, to: t, descending: reverse) {
                if let limit, n >= limit { break }
                out += "{\"key\":" + item.key.jsonText + ",\"value\":" + item.value.jsonText + "}\n"
                n += 1
                if out.utf8.count > 1 << 16 { writeFD(1, out); out = "" }
            }
            writeFD(1, out)
        }
        try await db.close()
    }
}

struct Stores: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List stores: name, count, then options.")
    func run() async throws {
        let db = try await openDatabase()
        for s in db.stores() {
            emit("\(s.name) \(s.count) slot-length=\(s.options.slotLength) "
                 + "internal-slot-length=\(s.options.effectiveInternalSlotLength) unique=\(s.options.isUnique) "
                 + "value-placement=\(s.options.valuePlacement.rawValue) key=\(s.keyType) value=\(s.valueType)"
                 + (s.indexSpecification.map { " index=\($0)" } ?? ""))
        }
        try await db.close()
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify every invariant. Exit 0 when clean, 1 when corrupt, 2 when the check could not run.")
    @Flag(help: "Print the report as JSON.") var json = false
    func run() async throws {
        let db: Database
        do { db = try await openDatabase(create: false) } catch let e as SOPError where e.code == .corrupt {
            if json { emit("{\"clean\":false,\"problems\":[\(JSONValue.string(e.description).jsonText)]}") } else {
                emit("corrupt: \(e.description)")
            }
            throw CLIExit(code: 1)
        } catch let e as SOPError {
            writeFD(2, "error: \(e.description)\n")
            throw CLIExit(code: 2)
        }
        let report = try await db.check()
        try await db.close()
        if json {
            let problems = report.problems.map { JSONValue.string($0).jsonText }.joined(separator: ",")
            let stores = report.stores.map {
                "{\"name\":\(JSONValue.string($0.name).jsonText),\"items\":\($0.items),\"nodes\":\($0.nodes),\"orderChecked\":\($0.orderChecked)}"
            }.joined(separator: ",")
            emit("{\"clean\":\(report.isClean),\"stores\":[\(stores)],\"problems\":[\(problems)]}")
        } else {
            for s in report.stores {
                emit("store \(s.name): \(s.items) items in \(s.nodes) nodes\(s.orderChecked ? "" : " (key order not checked)")")
            }
            for p in report.problems { emit("corrupt: \(p)") }
            emit(report.isClean ? "clean" : "corrupt: \(report.problems.count) problem(s)")
        }
        if !report.isClean { throw CLIExit(code: 1) }
    }
}

struct Compact: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reclaim the space of superseded data now (standalone databases only).",
        discussion: """
            Copies the live data of log segments that are at least 10 % dead into the current \
            segment, points everything at the copies in one commit, and deletes the old segments. \
            Prints what it copied and how many bytes of log it gave back.
            """)
    @Flag(help: "Print the report as JSON.") var json = false
    func run() async throws {
        let db = try await openDatabase(create: false)
        let r: CompactionReport
        do { r = try await db.compact() } catch {
            try? await db.close()
            throw error
        }
        try await db.close()
        if json {
            func list(_ a: [Int]) -> String { "[" + a.map(String.init).joined(separator: ",") + "]" }
            emit("{\"segmentsCompacted\":\(list(r.segmentsCompacted)),\"segmentsDeleted\":\(list(r.segmentsDeleted)),"
                 + "\"segmentsAwaitingDeletion\":\(list(r.segmentsAwaitingDeletion)),\"nodesMoved\":\(r.nodesMoved),"
                 + "\"valuesMoved\":\(r.valuesMoved),\"leavesRewritten\":\(r.leavesRewritten),\"bytesCopied\":\(r.bytesCopied),"
                 + "\"logBytesBefore\":\(r.logBytesBefore),\"logBytesAfter\":\(r.logBytesAfter),\"reclaimedBytes\":\(r.reclaimedBytes)}")
            return
        }
        func mib(_ b: Int64) -> String { String(format: "%.1f MiB", Double(b) / 1_048_576) }
        if r.segmentsCompacted.isEmpty {
            emit("nothing to compact")
        } else {
            emit("compacted \(r.segmentsCompacted.count) log segments: copied \(r.nodesMoved) nodes and \(r.valuesMoved) values "
                 + "(\(mib(Int64(r.bytesCopied)))), rewrote \(r.leavesRewritten) leaves")
        }
        if !r.segmentsDeleted.isEmpty { emit("deleted \(r.segmentsDeleted.count) log segments") }
        emit("log: \(mib(Int64(r.logBytesBefore))) -> \(mib(Int64(r.logBytesAfter))), reclaimed \(mib(r.reclaimedBytes))")
    }
}
