import SOPCore

/// One item of a leaf: a key, the item's own ID (orders duplicates; time-ordered), and a value.
public struct BTreeItem<Key, Value> {
    /// The key.
    public var key: Key
    /// The item's ID: unique in the store, orders duplicates of one key.
    public var id: SOPID
    /// The value (the engine stores an encoded or lazily decoded value here).
    public var value: Value

    /// Makes an item.
    @inlinable public init(key: Key, id: SOPID, value: Value) {
        self.key = key
        self.id = id
        self.value = value
    }
}

extension BTreeItem: Sendable where Key: Sendable, Value: Sendable {}

/// A routing entry of an internal node: the composite (key, item ID) of the first item of the
/// subtree to its right at the time it was made. Every item left of it is smaller, every item
/// right of it is greater or equal (ordered by key, then ID).
public struct Separator<Key> {
    /// The key part.
    public var key: Key
    /// The item-ID part.
    public var id: SOPID

    /// Makes a separator.
    @inlinable public init(key: Key, id: SOPID) {
        self.key = key
        self.id = id
    }
}

extension Separator: Sendable where Key: Sendable {}

/// A B+tree node. Leaves hold items; internal nodes hold separators and child logical IDs
/// (`children.count == separators.count + 1`). A value type: copies are cheap (arrays are
/// copy-on-write), and the engine shares decoded nodes between transactions.
public struct BTreeNode<Key, Value> {
    /// The node's logical ID (stable across copy-on-write updates).
    public let id: SOPID
    /// Leaf items in (key, id) order; empty for internal nodes.
    public var items: [BTreeItem<Key, Value>]
    /// Internal-node separators in order; empty for leaves.
    public var separators: [Separator<Key>]
    /// Internal-node children (logical IDs); empty for leaves.
    public var children: [SOPID]

    /// Makes a node.
    @inlinable public init(id: SOPID, items: [BTreeItem<Key, Value>] = [], separators: [Separator<Key>] = [],
                children: [SOPID] = []) {
        self.id = id
        self.items = items
        self.separators = separators
        self.children = children
    }

    /// True when the node holds items (no children).
    @inlinable public var isLeaf: Bool { children.isEmpty }
}

extension BTreeNode: Sendable where Key: Sendable, Value: Sendable {}

/// Where the B-tree gets and puts its nodes. The engine implements it per transaction (a
/// working set over the registry and caches); tests implement it with a dictionary.
/// The B-tree itself does no I/O.
public protocol NodeRepository<Key, Value>: AnyObject {
    /// The key type.
    associatedtype Key
    /// The value type.
    associatedtype Value

    /// The node as the current transaction sees it (its own changes included).
    /// Throws when the node does not exist (the engine reports a conflict: another
    /// transaction restructured the tree under this one).
    func fetch(_ id: SOPID) async throws -> BTreeNode<Key, Value>
    /// The node when it is at hand without I/O (already fetched, or cached), else `nil`;
    /// throws what ``fetch(_:)`` would throw for a node that does not exist. The default
    /// returns `nil` (every fetch goes through ``fetch(_:)``).
    func fetchIfCached(_ id: SOPID) throws -> BTreeNode<Key, Value>?
    /// Records a node created by this transaction.
    func add(_ node: BTreeNode<Key, Value>)
    /// Records a changed node (its logical ID already exists).
    func update(_ node: BTreeNode<Key, Value>)
    /// Records that a node was removed (merged away).
    func remove(_ id: SOPID)
    /// The tree is about to change, in place, a node it holds in a descent's path: the
    /// repository drops its own reference to the node, so that the change needs no copy of
    /// the node's arrays. The tree records the node again (``update(_:)`` or ``add(_:)``)
    /// before anything can fail or suspend. The default does nothing (the change copies).
    func detach(_ id: SOPID)
    /// A fresh logical ID for a new node.
    func newNodeID() -> SOPID
}

extension NodeRepository {
    /// Default: nothing is at hand.
    public func fetchIfCached(_ id: SOPID) throws -> BTreeNode<Key, Value>? { nil }
    /// Default: the repository keeps its reference (a change copies the node's arrays).
    public func detach(_ id: SOPID) {}
}
