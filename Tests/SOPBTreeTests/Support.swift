import SOPBTree
import SOPCore

/// A dictionary-backed node repository that records misuse (adding an existing node, updating
/// or removing a missing one) and counts fetches.
final class MemoryRepository<K, V>: NodeRepository {
    typealias Key = K
    typealias Value = V

    var nodes: [SOPID: BTreeNode<K, V>] = [:]
    var fetchCount = 0
    /// Whether ``fetchIfCached(_:)`` serves nodes (as the engine's cache does); off, the tree
    /// takes the general, async path for every node.
    var servesCached = false
    var violations: [String] = []
    private var nextID: UInt64 = 0

    /// A repository holding one empty root leaf.
    init() {
        nextID = 1
        rootID = SOPID(high: 0x5EED, low: 1)
        nodes[rootID] = BTree<MemoryRepository<K, V>>.emptyRoot(id: rootID)
    }

    let rootID: SOPID

    func fetch(_ id: SOPID) async throws -> BTreeNode<K, V> {
        fetchCount += 1
        guard let node = nodes[id] else { throw SOPError(.notFound, "node \(id.hex) does not exist") }
        return node
    }

    func fetchIfCached(_ id: SOPID) throws -> BTreeNode<K, V>? {
        servesCached ? nodes[id] : nil
    }

    func add(_ node: BTreeNode<K, V>) {
        if nodes[node.id] != nil { violations.append("add of existing node \(node.id.hex)") }
        nodes[node.id] = node
    }

    func update(_ node: BTreeNode<K, V>) {
        if nodes[node.id] == nil { violations.append("update of missing node \(node.id.hex)") }
        nodes[node.id] = node
    }

    func remove(_ id: SOPID) {
        if nodes.removeValue(forKey: id) == nil { violations.append("remove of missing node \(id.hex)") }
    }

    func newNodeID() -> SOPID {
        nextID += 1
        return SOPID(high: 0x5EED, low: nextID)
    }

    /// Height of the tree (1 for a lone leaf), following first children.
    var height: Int {
        var h = 1
        var n = nodes[rootID]!
        while !n.isLeaf { n = nodes[n.children[0]]!; h += 1 }
        return h
    }
}

typealias IntRepo = MemoryRepository<Int, Int>

func intCompare(_ a: Int, _ b: Int) -> Int { a < b ? -1 : (a == b ? 0 : 1) }

func makeTree(slotLength: Int, internalSlotLength: Int? = nil, unique: Bool) -> (BTree<IntRepo>, IntRepo) {
    let repo = IntRepo()
    let tree = BTree(rootID: repo.rootID, slotLength: slotLength, internalSlotLength: internalSlotLength, isUnique: unique,
                     compare: intCompare, repository: repo)
    return (tree, repo)
}


/// Thrown by model checks; the message says what differed and where.
struct Mismatch: Error, CustomStringConvertible {
    var description: String
}

func ensure(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw Mismatch(description: message()) }
}
