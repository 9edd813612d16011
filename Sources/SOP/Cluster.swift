#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SOPCore
import SOPRedis
import Synchronization

/// Clustered mode's coordination: one Redis lock per database (`sop:<ns>:L:commit`) serializes
/// every commit of every process; inside it, a process catches up from the others' log
/// segments, validates, writes its record and applies it (see docs/commit-protocol.md).
///
/// Within one process, commits first queue on a local mutex, so only one transaction per
/// process polls Redis for the lock.
final class ClusterCoordinator: Sendable {
    static let commitKey = "commit"

    let client: RedisClient
    let locker: RedisLocker
    let detector: RedisRestartDetector
    let l2: RedisL2Cache
    /// TTL of the commit lock: a holder that dies blocks others for at most this long.
    let lockTTL: Duration
    let local = AsyncMutex()

    init(url: String, namespace: String, lockTTL: Duration) throws {
        do {
            client = try RedisClient(url: url, poolSize: 2)
        } catch let e as SOPError {
            throw SOPError(e.code, "clustered mode: \(e.message)")
        }
        locker = try RedisLocker(client: client, namespace: namespace)
        detector = try RedisRestartDetector(client: client, namespace: namespace)
        l2 = try RedisL2Cache(client: client, namespace: namespace)
        self.lockTTL = lockTTL
    }

    /// Redis failures become clear `io` errors that say what was being done.
    static func redisFailure(_ what: String, _ error: any Error) -> SOPError {
        if let e = error as? SOPError {
            return SOPError(e.code == .conflict ? .conflict : .io, "clustered mode: \(what): \(e.message)")
        }
        return SOPError(.io, "clustered mode: \(what): \(error)")
    }

    /// Takes the commit lock for `owner`, waiting (with jittered back-off) until `deadline`.
    /// Waiting is not a conflict; running out of time is (retryable). When Redis lost its data
    /// (restart), waits one lock TTL first so that a holder whose lock vanished has finished
    /// or aborted (it re-checks ownership just before its commit point).
    func acquire(owner: SOPID, deadline: ContinuousClock.Instant) async throws {
        await local.lock()
        do {
            let restarted: Bool
            do { restarted = try await detector.check() } catch {
                throw Self.redisFailure("cannot reach redis for the commit lock", error)
            }
            if restarted { try await Task.sleep(for: lockTTL) }
            var attempt = 0
            while true {
                let busy: String?
                do { busy = try await locker.tryLock([Self.commitKey], owner: owner, ttl: lockTTL) } catch {
                    throw Self.redisFailure("cannot take the commit lock", error)
                }
                if busy == nil { return }
                attempt += 1
                if ContinuousClock.now > deadline {
                    throw SOPError(.conflict, "transaction conflict: timed out waiting for the database's commit lock")
                }
                let capMicros = min(20_000, 500 << min(attempt, 6))
                try await Task.sleep(for: .microseconds(Int.random(in: 200...capMicros)))
            }
        } catch {
            local.unlock()
            throw error
        }
    }

    /// Fencing, just before the commit point: true ownership is re-checked (and the TTL
    /// refreshed). A lost lock aborts the commit with a retryable conflict; nothing is written.
    func verify(owner: SOPID) async throws {
        let held: Bool
        do { held = try await locker.extend([Self.commitKey], owner: owner, ttl: lockTTL) } catch {
            throw Self.redisFailure("cannot confirm the commit lock before the commit point", error)
        }
        if !held {
            throw SOPError(.conflict, "transaction conflict: the commit lock expired or was lost (redis restart?) before the commit point")
        }
    }

    /// Releases the commit lock (best effort: on failure it expires by its TTL).
    func release(owner: SOPID) async {
        try? await locker.unlock([Self.commitKey], owner: owner)
        local.unlock()
    }

    /// Makes sure Redis answers (open fails clearly when it does not).
    func ping() async throws {
        do { _ = try await client.send(["PING"]) } catch {
            throw Self.redisFailure("cannot reach redis", error)
        }
    }
}

/// A FIFO mutex for async code (waiters suspend, never block a thread).
final class AsyncMutex: Sendable {
    private struct State {
        var locked = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    func lock() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { s -> Bool in
                if !s.locked {
                    s.locked = true
                    return true
                }
                s.waiters.append(c)
                return false
            }
            if resumeNow { c.resume() }
        }
    }

    func unlock() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty {
                s.locked = false
                return nil
            }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}

/// The canonical absolute path of an existing folder (symbolic links resolved), so every
/// process derives the same Redis namespace for it.
func canonicalPath(_ path: String) -> String {
    guard let p = realpath(path, nil) else { return path }
    defer { free(p) }
    return String(cString: p)
}
