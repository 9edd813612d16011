import SOPBTree
import SOPCore
import SOPFileSystem

/// What ``Database/check()`` found.
public struct CheckReport: Sendable, Codable {
    /// One store's findings.
    public struct StoreReport: Sendable, Codable {
        /// The store's name.
        public var name: String
        /// Items counted by walking the tree.
        public var items: Int64
        /// Nodes reached from the root.
        public var nodes: Int
        /// Whether key order was verified (it is for stores with an index specification and
        /// stores whose keys are JSON scalars or `JSONValue`; other key types are ordered by
        /// Swift code the checker does not have).
        public var orderChecked: Bool
    }

    /// Per-store results.
    public var stores: [StoreReport] = []
    /// Every problem found, one line each, naming the file or store.
    public var problems: [String] = []
    /// True when nothing is wrong.
    public var isClean: Bool { problems.isEmpty }
}

/// Key types whose JSON order equals their Swift order, so a tool can verify it.
private let jsonOrderedKeyTypes: Set<String> = [
    "JSONValue", "Swift.String", "Swift.Int", "Swift.Int64", "Swift.Int32", "Swift.Int16", "Swift.Int8",
    "Swift.UInt", "Swift.UInt64", "Swift.UInt32", "Swift.UInt16", "Swift.UInt8", "Swift.Double", "Swift.Float",
    "Swift.Bool",
]

extension Database {
    /// Verifies every invariant of the database: registry block checksums (on open), that
    /// every node is reachable from its store's root exactly once and every registry handle
    /// belongs to a reachable node, that every node and value blob is readable and passes
    /// its checksum, key order within and across nodes, node fill bounds, store counts, and
    /// the log's records.
    public func check() async throws -> CheckReport {
        var report = CheckReport()
        for info in stores() {
            let tx = try await beginTransaction(.forReading)
            do {
                let store = try await tx.store(info.name, key: JSONValue.self, value: JSONValue.self)
                let ordered = jsonOrderedKeyTypes.contains(info.keyType) || info.indexSpecification != nil
                let tree: BTree<TxNodeRepository>
                if ordered {
                    tree = store.tree
                } else {
                    // Structure only: every comparison "equal" in a non-unique tree keeps
                    // the walk meaningful (reachability, fill, counts) without key order.
                    tree = BTree(rootID: info.rootID, slotLength: info.options.slotLength,
                                 internalSlotLength: info.options.effectiveInternalSlotLength, isUnique: false,
                                 compare: { _, _ in 0 }, repository: store.repository)
                }
                var items: Int64 = 0
                if ordered {
                    items = try await tree.checkInvariants(expectedCount: info.count)
                }
                let ids = try await tree.allNodeIDs()
                let reachable = Set(ids)
                if reachable.count != ids.count {
                    report.problems.append("store '\(info.name)': a node is reachable more than once")
                }
                for h in engine.storage.handles(store: info.id) where !reachable.contains(h.logicalID) {
                    report.problems.append("store '\(info.name)': registry holds node \(h.logicalID), which no node refers to")
                }
                if !ordered {
                    items = 0
                    for id in ids {
                        let n = try await store.repository.fetch(id)
                        items += Int64(n.items.count)
                    }
                    if items != info.count {
                        report.problems.append("store '\(info.name)': count is \(info.count) but the tree holds \(items) items")
                    }
                }
                if info.options.valuePlacement.isSeparate {
                    for id in ids {
                        for it in try await store.repository.fetch(id).items {
                            if case .blob(let b) = it.value { _ = try await engine.storage.readBlob(b) }
                        }
                    }
                }
                report.stores.append(.init(name: info.name, items: items, nodes: ids.count, orderChecked: ordered))
            } catch let e as SOPError where e.code == .corrupt || e.code == .typeMismatch || e.code == .unsupportedFormat
                || e.code == .conflict {
                report.problems.append("store '\(info.name)': \(e.description)")
            }
        }
        if let fs = engine.storage as? FileStorage {
            report.problems.append(contentsOf: try await fs.verifyLog())
        }
        return report
    }
}
