import ArgumentParser
import SOP
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load {\"key\": ..., \"value\": ...} lines from a .jsonl file, one transaction per batch.",
        discussion: """
            The file is validated first: a malformed line stops the import before anything is written.
            Items are upserted (re-running an import is harmless). The store is created when missing.
            """)
    @Argument var store: String
    @Argument(help: "A .jsonl file; '-' reads standard input.") var file: String
    @Option(help: "Items per transaction.") var batch: Int = 1000
    @Flag(name: .customLong("log-commits"), help: "Print 'committed <total-items>' after each durable commit.")
    var logCommits = false
    @Flag(help: "Add items instead of upserting (duplicates in a non-unique store).") var add = false

    func run() async throws {
        guard batch >= 1 && batch <= 1_000_000 else { throw SOPError(.invalidArgument, "--batch must be 1...1000000") }
        try StoreName.validate(store)
        // Pass 1: validate every line, so bad input changes nothing.
        var total = 0
        if file != "-" {
            total = try forEachLine(file) { _, _ in }
        }
        let db = try await openDatabase(automaticCompaction: true)
        let progress = Progress(total: total, enabled: isatty(2) != 0 && !logCommits)
        var pending: [(JSONValue, JSONValue)] = []
        pending.reserveCapacity(batch)
        var committed = 0
        let storeName = store
        let useAdd = add
        func flush() async throws {
            if pending.isEmpty { return }
            let items = pending
            try await db.write { tx in
                let s = tx.storeNames().contains(storeName)
                    ? try await tx.dynamicStore(storeName)
                    : try await tx.store(storeName, key: JSONValue.self, value: JSONValue.self)
                for (k, v) in items {
                    if useAdd { try await s.add(k, v) } else { try await s.upsert(k, v) }
                }
            }
            committed += items.count
            pending.removeAll(keepingCapacity: true)
            if logCommits { emit("committed \(committed)") }
            progress.update(committed)
        }
        // Keys of a store ordered by an index specification must have its fields: checked
        // for every line before the first batch is written.
        let spec = db.stores().first { $0.name == storeName }?.indexSpecification
        var lines: [(JSONValue, JSONValue)] = []
        var lineNumber = 0
        do {
            _ = try forEachLine(file) { k, v in
                lineNumber += 1
                try spec?.validateKey(k)
                lines.append((k, v))
            }
        } catch let e as SOPError where e.code == .invalidArgument && e.path == nil {
            try await db.close()
            throw SOPError(.invalidArgument, "\(file) item \(lineNumber): \(e.message)")
        } catch {
            try await db.close()
            throw error
        }
        for (k, v) in lines {
            pending.append((k, v))
            if pending.count >= batch { try await flush() }
        }
        try await flush()
        progress.finish()
        try await db.close()
    }

    /// Calls `body` with each line's key and value; throws naming the line on bad input.
    func forEachLine(_ path: String, _ body: (JSONValue, JSONValue) throws -> Void) throws -> Int {
        let f: UnsafeMutablePointer<FILE>?
        f = path == "-" ? fdopen(0, "r") : fopen(path, "r")
        guard let f else {
            throw SOPError(.notFound, "cannot open \(path): \(String(cString: strerror(errno)))", path: path)
        }
        defer { if path != "-" { fclose(f) } }
        var line: UnsafeMutablePointer<CChar>?
        var cap = 0
        var n = 0
        var count = 0
        defer { free(line) }
        while true {
            let len = getline(&line, &cap, f)
            if len < 0 { break }
            n += 1
            let bytes = UnsafeRawBufferPointer(start: line, count: len)
            var arr = Array(bytes)
            while let last = arr.last, last == 0x0A || last == 0x0D || last == 0x20 || last == 0x09 { arr.removeLast() }
            if arr.isEmpty { continue }
            let doc: JSONValue
            do { doc = try JSONValue(parsing: arr) } catch let e as SOPError {
                throw SOPError(.invalidArgument, "\(path) line \(n): \(e.message)", path: path)
            }
            guard case .object(let o) = doc, let k = o["key"], let v = o["value"] else {
                throw SOPError(.invalidArgument, "\(path) line \(n): expected {\"key\": ..., \"value\": ...}", path: path)
            }
            try body(k, v)
            count += 1
        }
        return count
    }
}

/// A progress bar on stderr when it is a terminal.
final class Progress {
    let total: Int
    let enabled: Bool
    var last = 0.0

    init(total: Int, enabled: Bool) {
        self.total = total
        self.enabled = enabled
    }

    func update(_ done: Int) {
        guard enabled else { return }
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let now = Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
        if now - last < 0.1 && done < total { return }
        last = now
        let width = 30
        let frac = total > 0 ? min(1, Double(done) / Double(total)) : 0
        let filled = Int(frac * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
        writeFD(2, "\r[\(bar)] \(done)/\(total) items")
    }

    func finish() {
        guard enabled else { return }
        writeFD(2, "\n")
    }
}
