import ArgumentParser
import Foundation
import SOP

/// `sop workload bank`: a pgbench-like load of money transfers between accounts of store
/// `bank` (keys "acct-0000" ..., Int balances). The total never changes.
struct BankCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bank",
        abstract: "Money transfers between the accounts of store 'bank' (the total stays constant).",
        discussion: """
            --init creates store 'bank' with --accounts keys "acct-0000"... and Int balances of \
            --balance each. A run performs --transfers transactions, each reading two random distinct \
            accounts and moving 1...10 (never making a balance negative) from one to the other in one \
            write transaction. Before each commit it prints 'BEGIN <n> <from> <to> <amount>', after \
            the commit returns 'ACK <n>', on a conflict 'CONFLICT <n>' (the transfer is then retried \
            as a new transaction with a new <n>). In clustered mode an unreachable Redis before the \
            commit point is also reported as 'CONFLICT <n>' and retried (nothing was written). Lines \
            are flushed at once. Works standalone and clustered (--redis).
            """)

    @Flag(help: "Create the store and its accounts.") var `init` = false
    @Option(help: "Number of accounts.") var accounts: Int = 100
    @Option(help: "Initial balance of each account (with --init).") var balance: Int = 1000
    @Option(help: "Number of transfers to perform.") var transfers: Int = 0
    @Option(help: "Seed of the generator.") var seed: UInt64 = 1

    static func key(_ i: Int) -> String {
        let s = String(i)
        return "acct-" + String(repeating: "0", count: max(0, 4 - s.count)) + s
    }

    func run() async throws {
        guard accounts >= 2 && accounts <= 1_000_000 else { throw SOPError(.invalidArgument, "--accounts must be 2...1000000") }
        guard transfers >= 0 else { throw SOPError(.invalidArgument, "--transfers must not be negative") }
        let db = try await openDatabase(automaticCompaction: true)
        if self.`init` {
            guard balance >= 0 else { throw SOPError(.invalidArgument, "--balance must not be negative") }
            try await db.write { tx in
                let s = try await tx.store("bank", key: String.self, value: Int.self)
                for i in 0..<accounts { try await s.upsert(Self.key(i), balance) }
            }
        }
        var rng = SplitMix64(seed: SplitMix64.mix(seed &+ 0xBA4C))
        var n = 0
        var done = 0
        var unavailableSince: ContinuousClock.Instant?
        while done < transfers {
            let from = Int.random(in: 0..<accounts, using: &rng)
            var to = Int.random(in: 0..<(accounts - 1), using: &rng)
            if to >= from { to += 1 }
            let wanted = Int.random(in: 1...10, using: &rng)
            while true {
                n += 1
                let tx = try await db.beginTransaction(.forWriting)
                do {
                    let s = try await tx.openStore("bank", key: String.self, value: Int.self)
                    guard let a = try await s.get(Self.key(from)), let b = try await s.get(Self.key(to)) else {
                        throw SOPError(.notFound, "account \(Self.key(from)) or \(Self.key(to)) does not exist (run --init)")
                    }
                    // Never negative: move from the richer side when the payer cannot afford it.
                    var (src, dst, srcBal, dstBal) = (from, to, a, b)
                    if srcBal < wanted && dstBal >= wanted { (src, dst, srcBal, dstBal) = (to, from, b, a) }
                    let amount = min(wanted, srcBal)
                    if amount > 0 {
                        _ = try await s.update(Self.key(src), srcBal - amount)
                        _ = try await s.update(Self.key(dst), dstBal + amount)
                    }
                    emit("BEGIN \(n) \(Self.key(src)) \(Self.key(dst)) \(amount)")
                    try await tx.commit()
                    emit("ACK \(n)")
                    unavailableSince = nil
                    break
                } catch let e as SOPError where e.code == .conflict
                    || (e.code == .io && e.message.hasPrefix("clustered mode:")) {
                    await tx.rollback()
                    emit("CONFLICT \(n)")
                    if e.code == .io {
                        let since = unavailableSince ?? .now
                        unavailableSince = since
                        if ContinuousClock.now - since > .seconds(60) { throw e }
                        try await Task.sleep(for: .milliseconds(100))
                    } else {
                        try await Task.sleep(for: .microseconds(Int.random(in: 100...2000)))
                    }
                } catch {
                    await tx.rollback()
                    throw error
                }
            }
            done += 1
        }
        if ProcessInfo.processInfo.environment["SOP_BANK_STATS"] != nil {
            // Measurements (stderr, so stdout keeps the documented lines only).
            writeFD(2, "stats: transfers \(done) transactions \(n) redis-round-trips \(db.redisRoundTrips)\n")
        }
        try await db.close()
    }
}
