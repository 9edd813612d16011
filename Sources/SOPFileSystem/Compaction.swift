import SOPCore
import Synchronization

// Segment compaction (standalone mode): the live blobs of sealed log segments are copied
// forward into the current segment, every reference is pointed at the copies by one commit
// record, and the old segment files are deleted once nothing can need them. The protocol and
// its crash safety are described in `docs/commit-protocol.md` ("Compaction").
//
// This file holds the storage side: space accounting, planning (which segments, which blobs),
// copying, the compaction commit, and deletion. The engine (`SOP/Compaction.swift`) decides
// when to run, supplies the reader horizon, and locks the leaves whose value references are
// rewritten.

/// What the engine installs on a standalone storage for compaction.
struct CompactionHooks: Sendable {
    /// The smallest epoch recorded by a transaction still active (`UInt64.max`: none).
    var readerHorizon: (@Sendable () -> UInt64)?
    /// Called after a checkpoint or a new segment (a good moment to look at dead space).
    var logGrew: (@Sendable () -> Void)?
}

/// A node whose blob a compaction copies, as planned.
package struct CompactionMove: Sendable, Hashable {
    /// The store (incarnation ID).
    package var store: SOPID
    /// The node's logical ID.
    package var logicalID: SOPID
    /// The node's active blob when the compaction was planned: the compaction changes the
    /// handle only if it still points there.
    package var physical: SOPID
}

/// What a compaction pass will do (see ``FileStorage/planCompaction(threshold:horizon:maxLiveBytes:)``).
package struct CompactionPlan: Sendable {
    /// The segments to empty (sealed, eligible, mostly dead).
    package var segments: [Int]
    /// Nodes whose blob is in one of `segments` and is copied byte for byte (the handle keeps
    /// its version).
    package var moves: [CompactionMove]
    /// Leaves of stores with separately stored values that refer to value blobs in `segments`:
    /// they are rewritten with the references replaced (the handle's version is bumped), and
    /// the segments they refer to.
    package var rewrites: [CompactionMove: Set<Int>]
    /// Live bytes in `segments` (what the pass copies, about).
    package var liveBytes: UInt64
}

/// What a compaction pass did.
package struct CompactionOutcome: Sendable {
    /// Segments emptied and retired (deleted once no older transaction is active).
    package var retired: [Int] = []
    /// Planned segments left in place because a concurrent commit kept a reference into them.
    package var kept: [Int] = []
    package var nodesMoved = 0
    package var valuesMoved = 0
    package var leavesRewritten = 0
    /// Planned node changes dropped because a concurrent commit changed the node first.
    package var skipped = 0
    package var bytesCopied: UInt64 = 0
    /// Node blobs copied byte for byte and committed: old physical ID → new (a cache of
    /// decoded nodes may serve the new ID from the old entry).
    package var moved: [SOPID: SOPID] = [:]
}

/// Space use of one log segment.
package struct SegmentUsage: Sendable {
    package var number: Int
    /// Bytes appended to it (its size once sealed).
    package var bytes: UInt64
    /// Bytes of live node blobs (exact).
    package var liveNodeBytes: UInt64
    /// Bytes of live value blobs as of the last census (nil: unknown).
    package var liveValueBytes: UInt64?
    package var isCurrent: Bool
    package var isRetired: Bool
}

extension FileStorage.State {
    /// True when no census was taken yet, or the log has grown since the last one by at least
    /// a segment and at least what that census read.
    func censusIsStale(segmentBytes: UInt64) -> Bool {
        guard let at = censusLogBytes else { return true }
        return logBytesTotal - at >= max(segmentBytes, censusReadBytes)
    }

    /// Adds (`sign` > 0) or removes the framed size of the blob `id` to its segment's live
    /// node bytes.
    mutating func countLive(_ id: SOPID, _ sign: Int) {
        guard id != .zero else { return }
        let loc = FileStorage.location(of: id)
        let size = LogSegment.framedSize(payloadLength: loc.length)
        if sign > 0 {
            nodeLive[loc.segment, default: 0] += size
        } else if let v = nodeLive[loc.segment] {
            // Only below zero while recovery replays onto an uncounted registry (the counts
            // are rebuilt after the replay).
            nodeLive[loc.segment] = v > size ? v - size : nil
        }
    }
}

extension FileStorage {
    /// Blobs per copy batch (one append under the commit lock each).
    static let copyBatchBytes = 4 << 20
    /// Nodes read per census job.
    static let censusChunk = 512

    /// Live node bytes per segment of every handle's active blob.
    static func liveNodeBytes(_ stores: [SOPID: StoreState]) -> [Int: UInt64] {
        var st = State()
        for s in stores.values {
            for h in s.registry.handles.values { st.countLive(h.active, 1) }
        }
        return st.nodeLive
    }

    /// Installs the engine's hooks (standalone only; see ``CompactionHooks``).
    package func setCompactionHooks(readerHorizon: @escaping @Sendable () -> UInt64,
                                    logGrew: @escaping @Sendable () -> Void) {
        hooks.withLock {
            $0.readerHorizon = readerHorizon
            $0.logGrew = logGrew
        }
    }

    func logGrew() {
        hooks.withLock { $0.logGrew }?()
    }

    private func readerHorizon() -> UInt64 {
        // Called without the state lock held: the horizon takes the engine's lock, whose
        // holders read ``compactionEpoch``.
        hooks.withLock { $0.readerHorizon }?() ?? .max
    }

    /// The epoch a transaction records when it begins (see `State.epoch`).
    package var compactionEpoch: UInt64 { state.withLock { $0.epoch } }

    /// Whether this storage may compact (standalone only).
    package var isClustered: Bool { options.clustered }

    /// The log segment size after which a new segment is started.
    package var segmentBytes: UInt64 { options.segmentBytes }

    /// Space use per log segment, by segment number.
    package func segmentUsage() -> [SegmentUsage] {
        state.withLock { st in
            st.segments.keys.sorted().map { n in
                SegmentUsage(number: n, bytes: st.segments[n]!.end, liveNodeBytes: st.nodeLive[n] ?? 0,
                             liveValueBytes: st.valueCensus[n], isCurrent: n == st.currentSegment,
                             isRetired: st.retired[n] != nil)
            }
        }
    }

    /// Total bytes of the log segments.
    package var logBytes: UInt64 {
        state.withLock { st in st.segments.values.reduce(0) { $0 + $1.end } }
    }

    /// Retired segments not yet deleted.
    package var retiredSegments: [Int] {
        state.withLock { $0.retired.keys.sorted() }
    }

    // MARK: - Deciding

    /// Whether a compaction pass would find work.
    package enum CompactionNeed: Sendable, Equatable {
        /// Nothing to compact or delete.
        case none
        /// A segment to compact (or to census first), or a retired segment to delete.
        case work
        /// There would be, but a transaction that began before the segment was sealed (or
        /// before its compaction) is still active.
        case waitingForTransactions
    }

    /// Cheap (no I/O): whether a pass with this live-fraction threshold may find work among
    /// segments sealed at least `minAgeBytes` of log ago.
    package func compactionNeed(threshold: Double, minAgeBytes: UInt64 = 0) -> CompactionNeed {
        if options.clustered { return .none }
        let horizon = readerHorizon()
        return state.withLock { st in
            if st.closed { return .none }
            var need = CompactionNeed.none
            for epoch in st.retired.values {
                if epoch <= horizon { return .work }
                need = .waitingForTransactions
            }
            let hasValueStores = st.stores.values.contains { $0.info.options.valuePlacement.isSeparate }
            let stale = st.censusIsStale(segmentBytes: options.segmentBytes)
            for (n, seg) in st.segments where n != st.currentSegment && st.retired[n] == nil
                && st.logBytesTotal - (st.sealedAtLogBytes[n] ?? 0) >= minAgeBytes {
                let limit = UInt64(Double(seg.end) * threshold)
                let nodes = st.nodeLive[n] ?? 0
                guard nodes < limit else { continue }
                // With separately stored values, a census tells how much of the rest is live.
                // Until the last one is stale, a segment it has not seen waits (as if full),
                // so censuses read no more than the log writes.
                if hasValueStores, !stale, (st.valueCensus[n].map { nodes + $0 >= limit } ?? true) { continue }
                if (st.sealedEpoch[n] ?? 0) <= horizon { return .work }
                need = .waitingForTransactions
            }
            return need
        }
    }

    // MARK: - Planning

    /// Picks the sealed segments whose live fraction is below `threshold` (and that have at
    /// least `minDeadBytes` dead bytes) and that no active transaction can still write into
    /// (sealed at or before `horizon`), most-dead first, up to `maxLiveBytes` of live data (at
    /// least one segment); lists the blobs to copy. For stores with separately stored values it
    /// first takes a census of value references (reading every node of those stores). `nil`
    /// when there is nothing to do.
    /// `thorough` (explicit compaction): take a census whenever it could find work, not only
    /// when the last one is stale.
    package func planCompaction(threshold: Double, horizon: UInt64, maxLiveBytes: UInt64?,
                                minDeadBytes: UInt64 = 0, minAgeBytes: UInt64 = 0,
                                thorough: Bool = false) async throws -> CompactionPlan? {
        guard !options.clustered else { throw FileStorage.standaloneOnly }
        struct Snapshot: Sendable {
            var stores: [SOPID: StoreState]
            var sizes: [Int: UInt64]
            var eligible: Set<Int>
            var nodeLive: [Int: UInt64]
            var census: [Int: UInt64]
            var stale: Bool
        }
        let snap = state.withLock { st -> Snapshot in
            var eligible = Set<Int>()
            var sizes: [Int: UInt64] = [:]
            for (n, seg) in st.segments {
                sizes[n] = seg.end
                if n != st.currentSegment && st.retired[n] == nil && (st.sealedEpoch[n] ?? 0) <= horizon
                    && st.logBytesTotal - (st.sealedAtLogBytes[n] ?? 0) >= minAgeBytes {
                    eligible.insert(n)
                }
            }
            let stale = st.censusIsStale(segmentBytes: options.segmentBytes)
            return Snapshot(stores: st.stores, sizes: sizes, eligible: eligible, nodeLive: st.nodeLive,
                            census: st.valueCensus, stale: stale)
        }
        if snap.eligible.isEmpty { return nil }
        func limit(_ n: Int) -> UInt64 {
            let size = snap.sizes[n] ?? 0
            return min(UInt64(Double(size) * threshold), size > minDeadBytes ? size - minDeadBytes : 0)
        }
        let potential = snap.eligible.filter { (snap.nodeLive[$0] ?? 0) < limit($0) }
        if potential.isEmpty { return nil }
        let valueStores = snap.stores.values.filter { $0.info.options.valuePlacement.isSeparate }
        var valueLive: [Int: UInt64] = [:]
        var leafRefs: [CompactionMove: Set<Int>] = [:]
        if !valueStores.isEmpty {
            let knownFull = !thorough && !snap.stale && potential.allSatisfy { n in
                snap.census[n].map { (snap.nodeLive[n] ?? 0) + $0 >= limit(n) } ?? true
            }
            if knownFull { return nil }
            let census = try await valueCensus(valueStores, eligible: snap.eligible)
            valueLive = census.live
            leafRefs = census.refs
            state.withLock { st in
                for n in snap.sizes.keys where n != st.currentSegment { st.valueCensus[n] = census.live[n] ?? 0 }
                st.censusLogBytes = st.logBytesTotal
                st.censusReadBytes = census.readBytes
            }
        }
        var ranked: [(n: Int, live: UInt64, fraction: Double)] = []
        for n in snap.eligible {
            let live = (snap.nodeLive[n] ?? 0) + (valueLive[n] ?? 0)
            guard live < limit(n) else { continue }
            ranked.append((n, live, Double(live) / Double(max(1, snap.sizes[n] ?? 1))))
        }
        if ranked.isEmpty { return nil }
        ranked.sort { ($0.fraction, $0.n) < ($1.fraction, $1.n) }
        var chosen = Set<Int>()
        var liveBytes: UInt64 = 0
        for r in ranked {
            if let cap = maxLiveBytes, !chosen.isEmpty, liveBytes + r.live > cap { break }
            chosen.insert(r.n)
            liveBytes += r.live
        }
        var rewrites: [CompactionMove: Set<Int>] = [:]
        for (leaf, segs) in leafRefs {
            let hit = segs.intersection(chosen)
            if !hit.isEmpty { rewrites[leaf] = hit }
        }
        var moves: [CompactionMove] = []
        for (id, s) in snap.stores {
            for h in s.registry.handles.values where chosen.contains(FileStorage.location(of: h.active).segment) {
                let m = CompactionMove(store: id, logicalID: h.logicalID, physical: h.active)
                if rewrites[m] == nil { moves.append(m) }
            }
        }
        return CompactionPlan(segments: chosen.sorted(), moves: moves, rewrites: rewrites, liveBytes: liveBytes)
    }

    /// Reads every node of `stores` and sums the value blobs their leaves refer to, per
    /// segment; records which leaves refer into `eligible` segments.
    private func valueCensus(_ stores: [StoreState], eligible: Set<Int>) async throws
        -> (live: [Int: UInt64], refs: [CompactionMove: Set<Int>], readBytes: UInt64) {
        var live: [Int: UInt64] = [:]
        var refs: [CompactionMove: Set<Int>] = [:]
        var readBytes: UInt64 = 0
        for s in stores {
            let nodes = s.registry.handles.values.map {
                CompactionMove(store: s.info.id, logicalID: $0.logicalID, physical: $0.active)
            }
            var i = 0
            while i < nodes.count {
                try Task.checkCancellation()
                let chunk = Array(nodes[i..<min(i + FileStorage.censusChunk, nodes.count)])
                i += chunk.count
                let part = try await pool.run { [self] () throws -> ([Int: UInt64], [CompactionMove: Set<Int>], UInt64) in
                    var live: [Int: UInt64] = [:]
                    var refs: [CompactionMove: Set<Int>] = [:]
                    var bytes: UInt64 = 0
                    for m in chunk {
                        let blob = try readBlobBlocking(m.physical)
                        bytes += UInt64(blob.count)
                        let node = try decodeNode(blob, m)
                        var into = Set<Int>()
                        for item in node.items {
                            guard case .blob(let v) = item.value else { continue }
                            let loc = FileStorage.location(of: v)
                            live[loc.segment, default: 0] += LogSegment.framedSize(payloadLength: loc.length)
                            if eligible.contains(loc.segment) { into.insert(loc.segment) }
                        }
                        if !into.isEmpty { refs[m] = into }
                    }
                    return (live, refs, bytes)
                }
                live.merge(part.0, uniquingKeysWith: +)
                refs.merge(part.1, uniquingKeysWith: { $0.union($1) })
                readBytes += part.2
            }
        }
        return (live, refs, readBytes)
    }

    private func decodeNode(_ blob: [UInt8], _ m: CompactionMove) throws -> NodeCodec.RawNode {
        do {
            let node = try NodeCodec.decode(blob)
            guard node.id == m.logicalID else {
                throw SOPError(.corrupt, "blob \(m.physical) holds node \(node.id), not \(m.logicalID)", path: path + "/log")
            }
            return node
        } catch let e as SOPError {
            throw SOPError(e.code, "node \(m.logicalID): \(e.message)", path: e.path ?? path + "/log")
        }
    }

    // MARK: - Copying and the compaction commit

    /// Appends compaction copies to the current segment (no sync: the compaction's commit
    /// record makes them durable, or a later commit or segment rotation does). Never starts a
    /// new segment: a sealed segment must end with a commit record, or recovery would cut
    /// the copies.
    private func appendCopies(_ blobs: [[UInt8]]) throws -> [SOPID] {
        if blobs.isEmpty { return [] }
        return try commitLock.withLock {
            try checkNotPoisoned()
            let seg = try openSegmentForAppend()
            return try guarded {
                let offsets = try seg.appendBatch(blobs.map { (kind: RecordKind.blob.rawValue, payload: $0) })
                var bytes: UInt64 = 0
                var ids: [SOPID] = []
                ids.reserveCapacity(blobs.count)
                for (o, b) in zip(offsets, blobs) {
                    ids.append(FileStorage.physicalID(segment: seg.number, offset: o, length: b.count))
                    bytes += LogSegment.framedSize(payloadLength: b.count)
                }
                state.withLock { st in
                    st.logBytesSinceCheckpoint += bytes
                    st.logBytesTotal += bytes
                }
                return ids
            }
        }
    }

    /// Copies what `plan` lists and commits the new locations in one record, then checkpoints
    /// (recording the emptied segments as retired). Leaves in `busy` (locked by transactions)
    /// are not rewritten: a busy leaf inside the planned segments is copied as it is, and the
    /// segments its value references point into are kept.
    package func executeCompaction(_ plan: CompactionPlan, busy: Set<CompactionMove>) async throws -> CompactionOutcome {
        guard !options.clustered else { throw FileStorage.standaloneOnly }
        var outcome = CompactionOutcome()
        let chosen = Set(plan.segments)
        var blocked = Set<Int>()
        var moves = plan.moves
        var rewrites: [CompactionMove] = []
        for (leaf, segs) in plan.rewrites.sorted(by: { $0.key.logicalID < $1.key.logicalID }) {
            if busy.contains(leaf) {
                blocked.formUnion(segs)
                if chosen.contains(FileStorage.location(of: leaf.physical).segment) { moves.append(leaf) }
            } else {
                rewrites.append(leaf)
            }
        }
        // New locations: pure moves keep the version, rewritten leaves bump it.
        var moved: [CompactionMove: SOPID] = [:]
        var rewritten: [CompactionMove: SOPID] = [:]

        // Leaves with value references into the segments: copy the values, then the leaves
        // with the references replaced, a batch of leaves at a time.
        var i = 0
        while i < rewrites.count {
            try Task.checkCancellation()
            var batch: [CompactionMove] = []
            var bytes = 0
            while i < rewrites.count, bytes < FileStorage.copyBatchBytes {
                bytes += FileStorage.location(of: rewrites[i].physical).length
                batch.append(rewrites[i])
                i += 1
            }
            let leaves = batch
            let done = try await pool.run { [self] () throws -> ([CompactionMove: SOPID], Int, UInt64) in
                var nodes: [NodeCodec.RawNode] = []
                var values: [SOPID] = []
                var seen = Set<SOPID>()
                for m in leaves {
                    let node = try decodeNode(try readBlobBlocking(m.physical), m)
                    for item in node.items {
                        if case .blob(let v) = item.value, chosen.contains(FileStorage.location(of: v).segment),
                           seen.insert(v).inserted {
                            values.append(v)
                        }
                    }
                    nodes.append(node)
                }
                var newValue: [SOPID: SOPID] = [:]
                var copied: UInt64 = 0
                var j = 0
                while j < values.count {
                    var blobs: [[UInt8]] = []
                    var size = 0
                    let from = j
                    while j < values.count, size < FileStorage.copyBatchBytes {
                        let b = try readBlobBlocking(values[j])
                        size += b.count
                        blobs.append(b)
                        j += 1
                    }
                    for (k, id) in try appendCopies(blobs).enumerated() { newValue[values[from + k]] = id }
                    copied += UInt64(size)
                }
                var leafBlobs: [[UInt8]] = []
                for var node in nodes {
                    for k in node.items.indices {
                        if case .blob(let v) = node.items[k].value, let n = newValue[v] { node.items[k].value = .blob(n) }
                    }
                    leafBlobs.append(NodeCodec.encode(node))
                }
                copied += UInt64(leafBlobs.reduce(0) { $0 + $1.count })
                let ids = try appendCopies(leafBlobs)
                return (Dictionary(uniqueKeysWithValues: zip(leaves, ids)), values.count, copied)
            }
            rewritten.merge(done.0) { a, _ in a }
            outcome.valuesMoved += done.1
            outcome.bytesCopied += done.2
        }

        // Nodes copied as they are.
        i = 0
        while i < moves.count {
            try Task.checkCancellation()
            var batch: [CompactionMove] = []
            var bytes = 0
            while i < moves.count, bytes < FileStorage.copyBatchBytes {
                // A node a commit changed since the plan is already out of the segment.
                if handle(store: moves[i].store, logicalID: moves[i].logicalID)?.active == moves[i].physical {
                    bytes += FileStorage.location(of: moves[i].physical).length
                    batch.append(moves[i])
                }
                i += 1
            }
            let nodes = batch
            let ids = try await pool.run { [self] () throws -> [SOPID] in
                try appendCopies(try nodes.map { try readBlobBlocking($0.physical) })
            }
            for (m, id) in zip(nodes, ids) { moved[m] = id }
            outcome.bytesCopied += UInt64(bytes)
        }
        try await failpoints.hitAsync("compaction.afterCopy")

        // The commit point: one record flips every handle that still points where it did.
        let (m, r, busyBlocked) = (moved, rewritten, blocked)
        let done = try await pool.run { [self] () throws -> CompactionOutcome in
            try commitLock.withLock {
                var result = CompactionOutcome()
                var blocked = busyBlocked
                _ = try commitLocked(blobs: [], compaction: true) { _, view in
                    var record = CommitRecord(transactionID: .random())
                    for (move, to) in m {
                        guard var h = view.handle(store: move.store, logicalID: move.logicalID), h.active == move.physical else {
                            result.skipped += 1
                            continue
                        }
                        let version = h.version
                        h.flip(to: to)
                        h.version = version    // same content: concurrent readers and writers are unaffected
                        record.handles.append(HandleChange(store: move.store, logicalID: move.logicalID, handle: h))
                        result.nodesMoved += 1
                        result.moved[move.physical] = to
                    }
                    for (move, to) in r {
                        guard var h = view.handle(store: move.store, logicalID: move.logicalID), h.active == move.physical else {
                            // A commit changed the leaf since it was read: its new version may
                            // still refer to the old value blobs.
                            result.skipped += 1
                            blocked.formUnion(plan.rewrites[move] ?? [])
                            continue
                        }
                        // New value references: a transaction that read the old leaf must not
                        // write it back (it would carry references into a deleted segment),
                        // so the version is bumped and such a commit conflicts.
                        h.flip(to: to)
                        record.handles.append(HandleChange(store: move.store, logicalID: move.logicalID, handle: h))
                        result.leavesRewritten += 1
                    }
                    return record
                }
                try guarded {
                    try failpoints.hit("compaction.afterCommit")
                    state.withLock { st in
                        st.epoch += 1
                        for n in chosen.sorted() {
                            if blocked.contains(n) || (st.nodeLive[n] ?? 0) > 0 {
                                result.kept.append(n)
                            } else {
                                st.retired[n] = st.epoch
                                result.retired.append(n)
                            }
                        }
                    }
                    // Recorded as retired before anything is deleted: from this checkpoint on,
                    // recovery neither needs nor replays them.
                    try checkpointLocked()
                }
                return result
            }
        }
        outcome.retired = done.retired
        outcome.kept = done.kept
        outcome.nodesMoved = done.nodesMoved
        outcome.leavesRewritten = done.leavesRewritten
        outcome.skipped = done.skipped
        outcome.moved = done.moved
        return outcome
    }

    /// Seals the current segment so that a compaction can empty it too, unless it holds
    /// nothing but compaction output (or nothing). A segment must end with a commit record
    /// (recovery cuts whatever follows the last one), so blobs of transactions still in
    /// flight are first covered by an empty record.
    /// Only a segment with at least `minDeadBytes` bytes that are not live nodes (values count
    /// as dead here: the census comes later) and at most `threshold` live is sealed.
    package func sealCurrentSegment(threshold: Double, minDeadBytes: UInt64) async throws -> Bool {
        guard !options.clustered else { throw FileStorage.standaloneOnly }
        return try await pool.run { [self] in
            try commitLock.withLock {
                try checkNotPoisoned()
                let (skip, seg, applied, live) = state.withLock { st in
                    (st.currentIsCompacted, st.segments[st.currentSegment], st.applied[st.currentSegment],
                     st.nodeLive[st.currentSegment] ?? 0)
                }
                guard !skip, let seg, seg.end > UInt64(LogSegment.headerSize),
                      seg.end >= live + minDeadBytes, Double(live) < Double(seg.end) * threshold else { return false }
                if seg.end > (applied ?? UInt64(LogSegment.headerSize)) {
                    _ = try commitLocked(blobs: [], compaction: true, allowEmpty: true) { _, _ in
                        CommitRecord(transactionID: .random())
                    }
                }
                if state.withLock({ $0.currentSegment }) == seg.number {
                    try guarded { try rotateSegment(after: seg) }
                }
                return true
            }
        }
    }

    // MARK: - Deleting

    /// Deletes the retired segments that no active transaction can still read (every
    /// transaction that began before their compaction commit has ended). Returns them.
    package func deleteRetiredSegments() async throws -> [Int] {
        if options.clustered { return [] }
        let horizon = readerHorizon()
        return try await pool.run { [self] in
            try commitLock.withLock {
                let due = state.withLock { st in st.retired.filter { $0.value <= horizon }.keys.sorted() }
                if due.isEmpty { return [] }
                try checkNotPoisoned()
                return try guarded {
                    try failpoints.hit("compaction.beforeDelete")
                    for n in due {
                        let seg = state.withLock { st -> LogSegment? in
                            st.deleted.insert(n)
                            st.applied[n] = nil
                            st.nodeLive[n] = nil
                            st.valueCensus[n] = nil
                            st.sealedEpoch[n] = nil
                            st.sealedAtLogBytes[n] = nil
                            return st.segments.removeValue(forKey: n)
                        }
                        // A reader still holding the segment keeps reading the unlinked file
                        // (it is closed when the last reference goes).
                        if let seg { try files.remove(seg.path) }
                    }
                    try files.syncDirectory(path + "/log")
                    try failpoints.hit("compaction.afterDelete")
                    // The next checkpoint no longer lists them.
                    state.withLock { st in for n in due { st.retired[n] = nil } }
                    return due
                }
            }
        }
    }

    /// The error compaction gives in clustered mode.
    package static let standaloneOnly = SOPError(
        .invalidState,
        "compaction is standalone-only: in clustered mode several processes append to and read the log segments, and none may delete one")

    // MARK: - Verification

    /// Problems with references to log segments: a handle whose active blob is in a segment
    /// that does not exist or was retired by a compaction, and (while segments await deletion)
    /// a leaf value reference into a retired segment. (A value reference into a segment that
    /// does not exist fails `check`'s read of the value.)
    func referenceProblems() async throws -> [String] {
        var problems = nodeReferenceProblems()
        let (retired, stores) = state.withLock { st in
            (Set(st.retired.keys), st.stores.values.filter { $0.info.options.valuePlacement.isSeparate })
        }
        if retired.isEmpty { return problems }
        for s in stores.sorted(by: { $0.info.name < $1.info.name }) {
            let handles = Array(s.registry.handles.values)
            problems += try await pool.run { [self] () throws -> [String] in
                var out: [String] = []
                for h in handles {
                    let m = CompactionMove(store: s.info.id, logicalID: h.logicalID, physical: h.active)
                    for item in try decodeNode(try readBlobBlocking(h.active), m).items {
                        if case .blob(let v) = item.value, retired.contains(FileStorage.location(of: v).segment) {
                            out.append("store '\(s.info.name)': node \(h.logicalID) refers to value blob \(v) in log segment \(FileStorage.location(of: v).segment), which a compaction retired")
                        }
                    }
                }
                return out
            }
        }
        return problems
    }

    private func nodeReferenceProblems() -> [String] {
        state.withLock { st in
            var problems: [String] = []
            for s in st.stores.values.sorted(by: { $0.info.name < $1.info.name }) {
                for h in s.registry.handles.values {
                    let n = FileStorage.location(of: h.active).segment
                    if st.segments[n] == nil || st.retired[n] != nil {
                        problems.append("store '\(s.info.name)': node \(h.logicalID) refers to blob \(h.active) in log segment \(n), which \(st.retired[n] != nil ? "a compaction retired" : "does not exist")")
                    }
                }
            }
            return problems
        }
    }
}
