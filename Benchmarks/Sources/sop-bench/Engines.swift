import BenchData
import CLMDB
import CSQLite
import Foundation
import SOP

/// One engine under test. The driver times whole phases around these calls; each call is one
/// transaction (begin ... commit).
protocol BenchEngine: AnyObject {
    var name: String { get }
    func open(at dir: String) async throws
    func close() async throws
    /// Inserts `ids` in one durable write transaction.
    func insert(_ ids: ArraySlice<Int>) async throws
    /// Reads `ids` in one read-only transaction and verifies the values.
    func read(_ ids: ArraySlice<Int>) async throws
    /// Scans everything in key order in one read transaction, verifying order, keys and
    /// values (item i must be id i); returns the number of items seen.
    func scan() async throws -> Int
    /// The same scan, handed each item's key and value as bytes borrowed from the engine (no
    /// decoding, no copy): SOP's `forEachJSON` (the JSON texts it keeps: the expected key and
    /// value between quotes); SQLite's and LMDB's `scan()` already reads that way.
    func scanBytes() async throws -> Int
    /// Gives `ids` their second value in one write transaction.
    func update(_ ids: ArraySlice<Int>) async throws
    /// Removes `ids` in one write transaction.
    func delete(_ ids: ArraySlice<Int>) async throws
    /// The number of items.
    func count() async throws -> Int
}

// MARK: - SOP

/// SOP standalone (`sop`) or, with a Redis URL, in clustered mode (`sop-clustered`): the same
/// workload either way.
final class SOPEngine: BenchEngine {
    let name: String
    let ds: Dataset
    let storeOptions: StoreOptions
    let coordination: Coordination
    var db: Database?

    init(ds: Dataset, slotLength: Int, coordination: Coordination = .standalone) {
        self.ds = ds
        self.storeOptions = StoreOptions(slotLength: slotLength)
        self.coordination = coordination
        self.name = coordination == .standalone ? "sop" : Config.clusteredEngine
    }

    private func database() throws -> Database {
        guard let db else { throw BenchError("\(name): database not open") }
        return db
    }

    func open(at dir: String) async throws { db = try await Database.open(at: dir, coordination: coordination) }

    func close() async throws {
        try await db?.close()
        db = nil
    }

    func insert(_ ids: ArraySlice<Int>) async throws {
        let ds = self.ds, options = storeOptions
        try await database().write { tx in
            let s = try await tx.store("kv", key: String.self, value: String.self, options: options)
            for id in ids {
                guard try await s.add(ds.keys[id], ds.values[id]) else { throw BenchError("\(name): duplicate \(ds.keys[id])") }
            }
        }
    }

    func read(_ ids: ArraySlice<Int>) async throws {
        let ds = self.ds
        try await database().read { tx in
            let s = try await tx.openStore("kv", key: String.self, value: String.self)
            for id in ids {
                guard let v = try await s.get(ds.keys[id]) else { throw BenchError("\(name): \(ds.keys[id]) not found") }
                guard v == ds.values[id] else { throw BenchError("\(name): wrong value for \(ds.keys[id])") }
            }
        }
    }

    func scan() async throws -> Int {
        let ds = self.ds
        return try await database().read { tx in
            let s = try await tx.openStore("kv", key: String.self, value: String.self)
            var i = 0
            for try await item in s.range() {
                guard i < ds.n, item.key == ds.keys[i] else { throw BenchError("\(name): scan out of order at \(i): \(item.key)") }
                guard item.value == ds.values[i] else { throw BenchError("\(name): scan: wrong value at \(item.key)") }
                i += 1
            }
            return i
        }
    }

    func scanBytes() async throws -> Int {
        let ds = self.ds
        return try await database().read { tx in
            let s = try await tx.openStore("kv", key: String.self, value: String.self)
            var i = 0
            var bad = false
            let n = try await s.forEachJSON { k, v in
                guard i < ds.n, quoted(k, ds.keyBytes[i]), quoted(v, ds.valueBytes[i]) else {
                    bad = true
                    return false
                }
                i += 1
                return true
            }
            if bad { throw BenchError("\(name): scan-bytes wrong at \(i)") }
            return n
        }
    }

    func update(_ ids: ArraySlice<Int>) async throws {
        let ds = self.ds
        try await database().write { tx in
            let s = try await tx.openStore("kv", key: String.self, value: String.self)
            for id in ids {
                guard try await s.update(ds.keys[id], ds.values2[id]) else { throw BenchError("\(name): update: \(ds.keys[id]) missing") }
            }
        }
    }

    func delete(_ ids: ArraySlice<Int>) async throws {
        let ds = self.ds
        try await database().write { tx in
            let s = try await tx.openStore("kv", key: String.self, value: String.self)
            for id in ids {
                guard try await s.remove(ds.keys[id]) else { throw BenchError("\(name): delete: \(ds.keys[id]) missing") }
            }
        }
    }

    func count() async throws -> Int {
        try await database().read { tx in
            Int(try await tx.openStore("kv", key: String.self, value: String.self).count)
        }
    }
}

// MARK: - SQLite

final class SQLiteEngine: BenchEngine {
    func scanBytes() async throws -> Int { try await scan() }

    let name: String
    let ds: Dataset
    let synchronous: String
    var db: OpaquePointer?
    var stmts: [String: OpaquePointer] = [:]

    init(ds: Dataset, synchronous: String) {
        self.ds = ds
        self.synchronous = synchronous
        self.name = "sqlite-" + synchronous.lowercased()
    }

    private func check(_ rc: Int32, _ what: String) throws {
        guard rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW else {
            let msg = db.map { String(cString: sqlite3_errmsg($0)) } ?? "?"
            throw BenchError("\(name): \(what): \(rc) \(msg)")
        }
    }

    private func exec(_ sql: String) throws {
        try check(sqlite3_exec(db, sql, nil, nil, nil), sql)
    }

    private func stmt(_ sql: String) throws -> OpaquePointer {
        if let s = stmts[sql] { return s }
        var s: OpaquePointer?
        try check(sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &s, nil), sql)
        guard let s else { throw BenchError("\(name): prepare \(sql)") }
        stmts[sql] = s
        return s
    }

    /// Steps a statement that returns no row, then resets it.
    private func run(_ s: OpaquePointer, _ what: String) throws {
        let rc = sqlite3_step(s)
        sqlite3_reset(s)
        guard rc == SQLITE_DONE else { try check(rc == SQLITE_ROW ? SQLITE_MISUSE : rc, what); return }
    }

    func open(at dir: String) async throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try check(sqlite3_open_v2(dir + "/kv.sqlite", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil),
                  "open")
        try exec("PRAGMA journal_mode=WAL")
        try exec("PRAGMA synchronous=\(synchronous)")
        try exec("CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")
    }

    func close() async throws {
        for s in stmts.values { sqlite3_finalize(s) }
        stmts = [:]
        if let db { try check(sqlite3_close(db), "close") }
        db = nil
    }

    private func write(_ body: () throws -> Void) throws {
        try run(stmt("BEGIN IMMEDIATE"), "BEGIN IMMEDIATE")
        do {
            try body()
            try run(stmt("COMMIT"), "COMMIT")
        } catch {
            try? run(stmt("ROLLBACK"), "ROLLBACK")
            throw error
        }
    }

    private func readTx<T>(_ body: () throws -> T) throws -> T {
        try run(stmt("BEGIN"), "BEGIN")
        do {
            let r = try body()
            try run(stmt("COMMIT"), "COMMIT")
            return r
        } catch {
            try? run(stmt("ROLLBACK"), "ROLLBACK")
            throw error
        }
    }

    /// Binds two blobs (no copy: SQLITE_STATIC, the step happens inside the closures) and runs.
    private func run2(_ s: OpaquePointer, _ a: [UInt8], _ b: [UInt8], _ what: String) throws {
        try a.withUnsafeBytes { pa in
            try b.withUnsafeBytes { pb in
                sqlite3_bind_blob(s, 1, pa.baseAddress, Int32(pa.count), nil)
                sqlite3_bind_blob(s, 2, pb.baseAddress, Int32(pb.count), nil)
                try run(s, what)
            }
        }
        if sqlite3_changes(db) != 1 { throw BenchError("\(name): \(what) changed \(sqlite3_changes(db)) rows") }
    }

    func insert(_ ids: ArraySlice<Int>) async throws {
        let s = try stmt("INSERT INTO kv(k, v) VALUES(?1, ?2)")
        try write {
            for id in ids { try run2(s, ds.keyBytes[id], ds.valueBytes[id], "insert") }
        }
    }

    func read(_ ids: ArraySlice<Int>) async throws {
        let s = try stmt("SELECT v FROM kv WHERE k = ?1")
        try readTx {
            for id in ids {
                let ok = ds.keyBytes[id].withUnsafeBytes { pk -> Bool in
                    sqlite3_bind_blob(s, 1, pk.baseAddress, Int32(pk.count), nil)
                    defer { sqlite3_reset(s) }
                    guard sqlite3_step(s) == SQLITE_ROW else { return false }
                    return equal(sqlite3_column_blob(s, 0), Int(sqlite3_column_bytes(s, 0)), ds.valueBytes[id])
                }
                if !ok { throw BenchError("\(name): read \(ds.keys[id]) failed") }
            }
        }
    }

    func scan() async throws -> Int {
        let s = try stmt("SELECT k, v FROM kv ORDER BY k")
        return try readTx {
            defer { sqlite3_reset(s) }
            var i = 0
            while true {
                let rc = sqlite3_step(s)
                if rc == SQLITE_DONE { break }
                try check(rc, "scan")
                guard i < ds.n, equal(sqlite3_column_blob(s, 0), Int(sqlite3_column_bytes(s, 0)), ds.keyBytes[i]),
                      equal(sqlite3_column_blob(s, 1), Int(sqlite3_column_bytes(s, 1)), ds.valueBytes[i])
                else { throw BenchError("\(name): scan wrong at \(i)") }
                i += 1
            }
            return i
        }
    }

    func update(_ ids: ArraySlice<Int>) async throws {
        let s = try stmt("UPDATE kv SET v = ?2 WHERE k = ?1")
        try write {
            for id in ids { try run2(s, ds.keyBytes[id], ds.value2Bytes[id], "update") }
        }
    }

    func delete(_ ids: ArraySlice<Int>) async throws {
        let s = try stmt("DELETE FROM kv WHERE k = ?1")
        try write {
            for id in ids {
                try ds.keyBytes[id].withUnsafeBytes { pk in
                    sqlite3_bind_blob(s, 1, pk.baseAddress, Int32(pk.count), nil)
                    try run(s, "delete")
                }
                if sqlite3_changes(db) != 1 { throw BenchError("\(name): delete \(ds.keys[id]) missing") }
            }
        }
    }

    func count() async throws -> Int {
        let s = try stmt("SELECT count(*) FROM kv")
        return try readTx {
            defer { sqlite3_reset(s) }
            guard sqlite3_step(s) == SQLITE_ROW else { throw BenchError("\(name): count") }
            return Int(sqlite3_column_int64(s, 0))
        }
    }
}

@inline(__always)
/// Whether `text` is `expected` as a JSON string without escapes: the bytes between quotes.
func quoted(_ text: UnsafeRawBufferPointer, _ expected: [UInt8]) -> Bool {
    guard text.count == expected.count + 2, text[0] == 0x22, text[text.count - 1] == 0x22 else { return false }
    return expected.withUnsafeBytes { memcmp(text.baseAddress! + 1, $0.baseAddress!, expected.count) == 0 }
}

func equal(_ p: UnsafeRawPointer?, _ n: Int, _ expected: [UInt8]) -> Bool {
    guard n == expected.count else { return false }
    if n == 0 { return true }
    guard let p else { return false }
    return expected.withUnsafeBytes { memcmp(p, $0.baseAddress!, n) == 0 }
}

// MARK: - LMDB

final class LMDBEngine: BenchEngine {
    func scanBytes() async throws -> Int { try await scan() }

    let name = "lmdb"
    let ds: Dataset
    let mapSize: Int
    var env: OpaquePointer?
    var dbi: MDB_dbi = 0

    init(ds: Dataset) {
        self.ds = ds
        // 4 GiB covers N = 1,000,000 many times over; grow with larger N.
        self.mapSize = max(4 << 30, ds.n * 4096)
    }

    private func check(_ rc: Int32, _ what: String) throws {
        guard rc == MDB_SUCCESS else { throw BenchError("lmdb: \(what): \(String(cString: mdb_strerror(rc)))") }
    }

    func open(at dir: String) async throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try check(mdb_env_create(&env), "env_create")
        try check(mdb_env_set_mapsize(env, mapSize), "set_mapsize")
        try check(mdb_env_open(env, dir, 0, 0o644), "env_open")
        var txn: OpaquePointer?
        try check(mdb_txn_begin(env, nil, 0, &txn), "txn_begin")
        try check(mdb_dbi_open(txn, nil, 0, &dbi), "dbi_open")
        try check(mdb_txn_commit(txn), "commit")
    }

    func close() async throws {
        if let env { mdb_env_close(env) }
        env = nil
    }

    private func write(_ body: (OpaquePointer?) throws -> Void) throws {
        var txn: OpaquePointer?
        try check(mdb_txn_begin(env, nil, 0, &txn), "txn_begin")
        do {
            try body(txn)
            try check(mdb_txn_commit(txn), "commit")
        } catch {
            mdb_txn_abort(txn)
            throw error
        }
    }

    private func readTx<T>(_ body: (OpaquePointer?) throws -> T) throws -> T {
        var txn: OpaquePointer?
        try check(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn), "txn_begin(rdonly)")
        defer { mdb_txn_abort(txn) }
        return try body(txn)
    }

    private func put(_ txn: OpaquePointer?, _ k: [UInt8], _ v: [UInt8], flags: UInt32) throws {
        try k.withUnsafeBytes { pk in
            try v.withUnsafeBytes { pv in
                var mk = MDB_val(mv_size: pk.count, mv_data: UnsafeMutableRawPointer(mutating: pk.baseAddress))
                var mv = MDB_val(mv_size: pv.count, mv_data: UnsafeMutableRawPointer(mutating: pv.baseAddress))
                try check(mdb_put(txn, dbi, &mk, &mv, flags), "put")
            }
        }
    }

    func insert(_ ids: ArraySlice<Int>) async throws {
        try write { txn in
            for id in ids { try put(txn, ds.keyBytes[id], ds.valueBytes[id], flags: UInt32(MDB_NOOVERWRITE)) }
        }
    }

    func read(_ ids: ArraySlice<Int>) async throws {
        try readTx { txn in
            for id in ids {
                try ds.keyBytes[id].withUnsafeBytes { pk in
                    var mk = MDB_val(mv_size: pk.count, mv_data: UnsafeMutableRawPointer(mutating: pk.baseAddress))
                    var mv = MDB_val()
                    try check(mdb_get(txn, dbi, &mk, &mv), "get \(ds.keys[id])")
                    guard equal(mv.mv_data, mv.mv_size, ds.valueBytes[id]) else { throw BenchError("lmdb: wrong value \(ds.keys[id])") }
                }
            }
        }
    }

    func scan() async throws -> Int {
        try readTx { txn in
            var cur: OpaquePointer?
            try check(mdb_cursor_open(txn, dbi, &cur), "cursor_open")
            defer { mdb_cursor_close(cur) }
            var mk = MDB_val(), mv = MDB_val()
            var i = 0
            var rc = mdb_cursor_get(cur, &mk, &mv, MDB_FIRST)
            while rc == MDB_SUCCESS {
                guard i < ds.n, equal(mk.mv_data, mk.mv_size, ds.keyBytes[i]), equal(mv.mv_data, mv.mv_size, ds.valueBytes[i])
                else { throw BenchError("lmdb: scan wrong at \(i)") }
                i += 1
                rc = mdb_cursor_get(cur, &mk, &mv, MDB_NEXT)
            }
            guard rc == MDB_NOTFOUND else { try check(rc, "cursor_get"); return i }
            return i
        }
    }

    func update(_ ids: ArraySlice<Int>) async throws {
        try write { txn in
            for id in ids { try put(txn, ds.keyBytes[id], ds.value2Bytes[id], flags: 0) }
        }
    }

    func delete(_ ids: ArraySlice<Int>) async throws {
        try write { txn in
            for id in ids {
                try ds.keyBytes[id].withUnsafeBytes { pk in
                    var mk = MDB_val(mv_size: pk.count, mv_data: UnsafeMutableRawPointer(mutating: pk.baseAddress))
                    try check(mdb_del(txn, dbi, &mk, nil), "del \(ds.keys[id])")
                }
            }
        }
    }

    func count() async throws -> Int {
        try readTx { txn in
            var st = MDB_stat()
            try check(mdb_stat(txn, dbi, &st), "stat")
            return st.ms_entries
        }
    }
}
