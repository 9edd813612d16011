import SOPCore
import SOPFileSystem
import Synchronization

/// What a compaction did (see ``Database/compact()``).
public struct CompactionReport: Sendable, Equatable {
    /// Log segments emptied by this compaction (their live blobs copied forward).
    public var segmentsCompacted: [Int] = []
    /// Log segment files deleted (emptied now or by an earlier compaction).
    public var segmentsDeleted: [Int] = []
    /// Emptied segments not deleted yet: a transaction that began before their compaction is
    /// still open and may read them. They are deleted by a later compaction (automatic or
    /// explicit), or on the next open.
    public var segmentsAwaitingDeletion: [Int] = []
    /// Segments that were to be emptied but still hold data a concurrent commit kept
    /// referring to (a later compaction takes them).
    public var segmentsKept: [Int] = []
    /// Node blobs copied as they were.
    public var nodesMoved = 0
    /// Separately stored values copied.
    public var valuesMoved = 0
    /// Leaves rewritten because the values they refer to moved.
    public var leavesRewritten = 0
    /// Bytes of blobs copied.
    public var bytesCopied: UInt64 = 0
    /// Bytes of the log segments before and after.
    public var logBytesBefore: UInt64 = 0
    /// Bytes of the log segments after (copies included, segments awaiting deletion included).
    public var logBytesAfter: UInt64 = 0

    /// Log bytes given back to the file system (negative when the copies outweigh what
    /// could be deleted yet).
    public var reclaimedBytes: Int64 { Int64(logBytesBefore) - Int64(logBytesAfter) }
}

/// The engine's side of compaction: which transactions may still read or write old log
/// segments, and one compaction at a time.
///
/// Every transaction is registered when it begins with the storage's current epoch (bumped
/// when a segment is sealed and when a compaction commits) and unregistered when it ends
/// (commit, rollback, or deallocation of an abandoned one). The reader horizon is the
/// smallest epoch of the active ones. A segment is compacted only when every active
/// transaction began after it was sealed (none can still write a blob into it), and deleted
/// only when every active transaction began after the compaction commit (none can still hold
/// an old physical ID in it). (Tokens, not weak references: a weak reference to the
/// transaction would move every retain and release of it to the slow, side-table path.)
final class CompactionCoordinator: Sendable {
    private struct State: Sendable {
        /// Active transactions: token → epoch at begin.
        var readers: [UInt64: UInt64] = [:]
        var nextToken: UInt64 = 0
        /// The last compaction run started (runs are chained one after the other).
        var tail: Task<Void, Never>?
        var backgroundRunning = false
        var closed = false
        /// The last failure of a background run (diagnostics).
        var lastError: String?
    }

    private let state = Mutex(State())

    /// Records a transaction that begins now and returns its token for ``unregister(_:)``;
    /// `epoch` is read under this lock, so a horizon computed meanwhile either counts the
    /// transaction or precedes everything it does.
    func register(epoch: () -> UInt64) -> UInt64 {
        state.withLock { st in
            st.nextToken &+= 1
            st.readers[st.nextToken] = epoch()
            return st.nextToken
        }
    }

    /// The transaction with this token has ended (idempotent).
    func unregister(_ token: UInt64) {
        state.withLock { st in _ = st.readers.removeValue(forKey: token) }
    }

    /// The smallest epoch of a transaction still active (`UInt64.max`: none).
    func horizon() -> UInt64 {
        state.withLock { st in st.readers.values.min() ?? .max }
    }

    var lastError: String? { state.withLock { $0.lastError } }

    /// Runs `body` after every compaction run started before it.
    func run<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let task = state.withLock { st -> Task<T, any Error>? in
            if st.closed { return nil }
            let previous = st.tail
            let t = Task<T, any Error> {
                await previous?.value
                return try await body()
            }
            st.tail = Task { _ = try? await t.value }
            return t
        }
        guard let task else { throw SOPError(.invalidState, "the database is closed") }
        return try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
    }

    /// Starts `body` in the background unless a background run is already queued or running.
    func runInBackground(_ body: @escaping @Sendable () async throws -> Void) {
        state.withLock { st in
            guard !st.closed, !st.backgroundRunning else { return }
            st.backgroundRunning = true
            let previous = st.tail
            st.tail = Task.detached(priority: .utility) { [self] in
                await previous?.value
                var failure: String?
                do { try await body() } catch is CancellationError {} catch { failure = "\(error)" }
                state.withLock { st in
                    st.backgroundRunning = false
                    if let failure { st.lastError = failure }
                }
            }
        }
    }

    /// Waits for the runs started so far.
    func idle() async {
        while true {
            let tail = state.withLock { $0.tail }
            guard let tail else { return }
            await tail.value
            if state.withLock({ $0.tail == tail }) { return }
        }
    }

    /// Refuses new runs, cancels a background one and waits for the last to finish.
    func close() async {
        let tail = state.withLock { st -> Task<Void, Never>? in
            st.closed = true
            return st.tail
        }
        if let tail {
            tail.cancel()
            await tail.value
        }
    }
}

extension Engine {
    /// Standalone: installs the storage hooks and looks for work once (a database opened with
    /// dead space compacts it in the background).
    func startCompaction() {
        guard cluster == nil, let fs = fileStorage else { return }
        let coordinator = compaction
        fs.setCompactionHooks(readerHorizon: { [weak coordinator] in coordinator?.horizon() ?? .max },
                              logGrew: { [weak self] in self?.compactInBackgroundIfNeeded() })
        compactInBackgroundIfNeeded()
    }

    /// After a checkpoint or a new log segment: a background pass when a sealed segment's live
    /// fraction is below the threshold, or retired segments can be deleted. When that waits for
    /// transactions still active (typically the one whose commit sealed the segment), the
    /// background task looks again a little later, for a few seconds at most. Passes follow
    /// each other while they shrink the log (moving leaves to follow their values can empty
    /// other segments), at most 16 per trigger: a pass that gives nothing back ends the run,
    /// so data can never be copied round and round.
    func compactInBackgroundIfNeeded() {
        guard options.automaticCompaction, cluster == nil, let fs = fileStorage else { return }
        let threshold = options.compactionThreshold
        let age = options.compactionMinAgeBytes
        guard fs.compactionNeed(threshold: threshold, minAgeBytes: age) != .none else { return }
        compaction.runInBackground { [weak self] in
            var waited = 0
            var delay = 5
            var passes = 0
            while let engine = self {
                switch fs.compactionNeed(threshold: threshold, minAgeBytes: age) {
                case .none:
                    return
                case .work:
                    let report = try await engine.compactionPass(explicit: false)
                    passes += 1
                    if report.reclaimedBytes <= 0 && report.segmentsAwaitingDeletion.isEmpty || passes >= 16 { return }
                case .waitingForTransactions:
                    if waited >= 5_000 { return }
                    try await Task.sleep(for: .milliseconds(delay))
                    waited += delay
                    delay = min(delay * 2, 500)
                }
            }
        }
    }

    /// Dead bytes below which an explicit compaction leaves a segment alone (its own output
    /// carries a commit record: compacting it again would only churn): 64 KiB, less for
    /// small segments.
    static func explicitMinDeadBytes(segmentBytes: UInt64) -> UInt64 { min(64 << 10, segmentBytes / 16) }

    /// One compaction pass. Explicit: seals the current segment first and takes every segment
    /// with at least 10 % (and 64 KiB) dead bytes; automatic: the segments below the
    /// threshold, about one segment's worth of live data per pass.
    func compactionPass(explicit: Bool) async throws -> CompactionReport {
        guard cluster == nil, let fs = fileStorage else { throw FileStorage.standaloneOnly }
        var report = CompactionReport()
        report.logBytesBefore = fs.logBytes
        let threshold = explicit ? 0.9 : options.compactionThreshold
        let minDead = explicit ? Engine.explicitMinDeadBytes(segmentBytes: fs.segmentBytes) : 0
        if explicit { _ = try await fs.sealCurrentSegment(threshold: threshold, minDeadBytes: minDead) }
        if let plan = try await fs.planCompaction(threshold: threshold, horizon: compaction.horizon(),
                                                  maxLiveBytes: explicit ? nil : fs.segmentBytes, minDeadBytes: minDead,
                                                  minAgeBytes: explicit ? 0 : options.compactionMinAgeBytes,
                                                  thorough: explicit) {
            let locks = await lockLeaves(Array(plan.rewrites.keys))
            let outcome: CompactionOutcome
            do {
                outcome = try await fs.executeCompaction(plan, busy: locks.busy)
            } catch {
                await unlock(locks)
                throw error
            }
            await unlock(locks)
            report.segmentsCompacted = outcome.retired
            report.segmentsKept = outcome.kept
            report.nodesMoved = outcome.nodesMoved
            report.valuesMoved = outcome.valuesMoved
            report.leavesRewritten = outcome.leavesRewritten
            report.bytesCopied = outcome.bytesCopied
            aliasMovedNodes(outcome.moved)
        }
        report.segmentsDeleted = try await fs.deleteRetiredSegments()
        report.segmentsAwaitingDeletion = fs.retiredSegments
        report.logBytesAfter = fs.logBytes
        return report
    }

    /// Serves the copies of moved nodes from the decoded nodes cached for the originals (same
    /// bytes, so the same node): without this every moved node would be read and decoded again.
    private func aliasMovedNodes(_ moved: [SOPID: SOPID]) {
        cache.rebind(moved)
    }

    private struct LeafLocks {
        var owner: SOPID
        var held: [String]
        var busy: Set<CompactionMove>
    }

    /// Locks the leaves whose value references a compaction rewrites, as a committing
    /// transaction locks what it writes: a transaction holding one (it has validated its
    /// version and will flip it) keeps it; one that locks it later validates against the
    /// bumped version. Leaves held by others are returned as busy.
    private func lockLeaves(_ leaves: [CompactionMove]) async -> LeafLocks {
        var locks = LeafLocks(owner: .random(), held: [], busy: [])
        if leaves.isEmpty { return locks }
        lockHolders.add(1, ordering: .sequentiallyConsistent)
        let ttl = options.maxTransactionDuration
        let keys = leaves.map { Engine.lockKey(store: $0.store, node: $0.logicalID) }
        if (try? await locker.tryLock(keys.sorted(), owner: locks.owner, ttl: ttl)) == .some(nil) {
            locks.held = keys
            return locks
        }
        for (leaf, key) in zip(leaves, keys) {
            if (try? await locker.tryLock([key], owner: locks.owner, ttl: ttl)) == .some(nil) {
                locks.held.append(key)
            } else {
                locks.busy.insert(leaf)
            }
        }
        return locks
    }

    private func unlock(_ locks: LeafLocks) async {
        guard !locks.held.isEmpty || !locks.busy.isEmpty else { return }
        try? await locker.unlock(locks.held, owner: locks.owner)
        lockHolders.subtract(1, ordering: .sequentiallyConsistent)
    }
}

extension Database {
    /// Reclaims the space of superseded blobs now, and returns what it did.
    ///
    /// The log is append-only: every commit writes the nodes it changes anew, and the old
    /// versions stay in their log segment. Compaction copies the live blobs of mostly-dead
    /// segments forward (to the segment being appended to), points every reference at the
    /// copies in one commit record, and deletes the old segment files. This call first seals
    /// the current segment, then compacts every segment with at least 10 % (and 64 KiB) dead
    /// bytes.
    ///
    /// A standalone database also compacts in the background (``DatabaseOptions/automaticCompaction``)
    /// whenever a sealed segment is less than a quarter live, so calling this is only needed to
    /// reclaim space at a chosen moment (before a backup, after a large delete).
    ///
    /// Transactions keep running meanwhile. A segment is deleted only once every transaction
    /// that began before its compaction has ended (they may still read it); until then it is
    /// listed in ``CompactionReport/segmentsAwaitingDeletion``. A transaction that read a leaf
    /// whose separately stored values were moved, and commits after the compaction, gets a
    /// retryable ``SOPError/Code/conflict``.
    ///
    /// Throws ``SOPError/Code/invalidState`` in clustered mode: several processes append to
    /// and read the shared segments, and none may delete one (automatic compaction is off there).
    @discardableResult
    public func compact() async throws -> CompactionReport {
        guard engine.cluster == nil, engine.fileStorage != nil else { throw FileStorage.standaloneOnly }
        let engine = self.engine
        return try await engine.compaction.run { try await engine.compactionPass(explicit: true) }
    }
}

extension Database {
    /// Waits until no compaction is queued or running (tests).
    package func waitForCompaction() async {
        await engine.compaction.idle()
    }

    /// Space use per log segment (tests, tools).
    package var logSegments: [SegmentUsage] {
        engine.fileStorage?.segmentUsage() ?? []
    }
}
