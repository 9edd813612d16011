/// Where a store keeps its item values.
public enum ValuePlacement: String, Sendable, Codable, Equatable, CaseIterable {
    /// Values are encoded inside the B-tree node with their keys (the default; best for small values).
    case inNode
    /// Each value is written as its own blob at commit and fetched lazily (through the L2
    /// blob cache); nodes hold only a reference. Scans that read keys only never touch the
    /// values. The original's "medium data" preset.
    case separateBlob
    /// Each value is written as its own blob at once, when it is added or updated (so a
    /// large value does not wait in memory for the commit), and is never cached: every read
    /// goes to storage. For big values (the original's "big data" preset). A value written
    /// by a transaction that rolls back is dead space, like any superseded blob.
    case separateBlobWrittenAtOnce

    /// True when values live outside the node.
    public var isSeparate: Bool { self != .inNode }
}

extension ValuePlacement {
    /// The original's presets: small (in the node), medium (separate, written at commit,
    /// cached), big (separate, written at once, not cached).
    public static let small = ValuePlacement.inNode
    /// See ``small``.
    public static let medium = ValuePlacement.separateBlob
    /// See ``small``.
    public static let big = ValuePlacement.separateBlobWrittenAtOnce
}

/// Options a store is created with. They are persisted in the store's info and never change.
public struct StoreOptions: Sendable, Codable, Equatable {
    /// The smallest slot length a store accepts.
    public static let minSlotLength = 4
    /// The largest slot length a store accepts.
    public static let maxSlotLength = 10_000
    /// The slot length used when none is given. See `docs/performance.md` for how it was chosen.
    public static let defaultSlotLength = 20

    /// The internal-node fan-out a new store gets with ``slotLength`` `n` when none is given:
    /// `max(n, 64)`. See `docs/performance.md`.
    public static func defaultInternalSlotLength(for n: Int) -> Int { Swift.max(n, 64) }

    /// Items per B-tree leaf at most.
    public var slotLength: Int
    /// Separators per internal node at most (4...10,000). `nil` when creating a store: the
    /// default, ``defaultInternalSlotLength(for:)``, which the store records. Stores created
    /// before this option existed have `nil` here and use ``slotLength``.
    public var internalSlotLength: Int?
    /// The internal-node fan-out in effect (``internalSlotLength``, else ``slotLength``).
    public var effectiveInternalSlotLength: Int { internalSlotLength ?? slotLength }
    /// Whether a key may appear at most once.
    public var isUnique: Bool
    /// Where values live.
    public var valuePlacement: ValuePlacement
    /// Free text shown by tools.
    public var description: String
    /// The order of a store whose keys are JSON objects (or `Codable` structs) ordered by
    /// fields; see ``IndexSpecification``. A creation request: the new store records it in
    /// ``StoreInfo/indexSpecification`` (the options persisted in the store's info keep `nil`
    /// here, so the specification is stored once).
    public var indexSpecification: IndexSpecification?

    /// Makes options; call ``validate()`` (stores do) before use.
    public init(slotLength: Int = StoreOptions.defaultSlotLength, internalSlotLength: Int? = nil,
                isUnique: Bool = true, valuePlacement: ValuePlacement = .inNode, description: String = "",
                indexSpecification: IndexSpecification? = nil) {
        self.slotLength = slotLength
        self.internalSlotLength = internalSlotLength
        self.isUnique = isUnique
        self.valuePlacement = valuePlacement
        self.description = description
        self.indexSpecification = indexSpecification
    }

    /// Throws ``SOPError/Code/invalidArgument`` when an option is out of bounds.
    public func validate() throws {
        guard (StoreOptions.minSlotLength...StoreOptions.maxSlotLength).contains(slotLength) else {
            throw SOPError(.invalidArgument,
                           "slot length \(slotLength) is out of range \(StoreOptions.minSlotLength)...\(StoreOptions.maxSlotLength)")
        }
        if let n = internalSlotLength, !(StoreOptions.minSlotLength...StoreOptions.maxSlotLength).contains(n) {
            throw SOPError(.invalidArgument,
                           "internal slot length \(n) is out of range \(StoreOptions.minSlotLength)...\(StoreOptions.maxSlotLength)")
        }
        guard description.utf8.count <= 4096 else {
            throw SOPError(.invalidArgument, "store description is longer than 4096 bytes")
        }
    }
}

/// Store names: 1…128 characters of `A-Z a-z 0-9 _ - .`, not starting with `.` or `-`.
public enum StoreName {
    /// The longest name accepted.
    public static let maxLength = 128

    /// Throws ``SOPError/Code/invalidArgument`` for a name that is not allowed.
    public static func validate(_ name: String) throws {
        let u = Array(name.utf8)
        guard !u.isEmpty else { throw SOPError(.invalidArgument, "store name is empty") }
        guard u.count <= maxLength else {
            throw SOPError(.invalidArgument, "store name is longer than \(maxLength) characters")
        }
        guard u[0] != UInt8(ascii: ".") && u[0] != UInt8(ascii: "-") else {
            throw SOPError(.invalidArgument, "store name '\(name)' must not start with '.' or '-'")
        }
        for c in u {
            let ok = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") || c == UInt8(ascii: ".")
            guard ok else {
                throw SOPError(.invalidArgument,
                               "store name '\(name)' may contain only letters, digits, '_', '-' and '.'")
            }
        }
    }
}

/// What the database knows about one store. Persisted as `<store>/storeinfo.json`.
public struct StoreInfo: Sendable, Codable, Equatable {
    /// Format version of this record.
    public static let formatVersion = 1

    /// Format version this record was written with.
    public var format: Int
    /// The store's name (unique in its database).
    public var name: String
    /// Identifies this incarnation of the name: a store dropped and re-created gets a new one.
    public var id: SOPID
    /// The options the store was created with.
    public var options: StoreOptions
    /// Logical ID of the root node; assigned at creation and never changes.
    public var rootID: SOPID
    /// Committed number of items.
    public var count: Int64
    /// Bumped by every commit that changes ``count``; lets a transaction that read the count
    /// detect a concurrent change.
    public var countVersion: UInt64
    /// The key type the store was created with (`String(reflecting:)` of the Swift type, or
    /// `JSONValue` for stores created by tools).
    public var keyType: String
    /// The value type the store was created with.
    public var valueType: String
    /// Creation time, milliseconds since 1970.
    public var createdAt: Int64
    /// The order of the store's keys when they are ordered by fields (JSON objects, or
    /// `Codable` structs encoded as objects); `nil` for stores ordered by their key type.
    /// Absent from the JSON of stores without one (older `storeinfo.json` files decode as `nil`).
    public var indexSpecification: IndexSpecification?

    /// Makes a fresh store record. `options.indexSpecification` moves to ``indexSpecification``.
    public init(name: String, options: StoreOptions, keyType: String, valueType: String, createdAt: Int64) {
        self.format = StoreInfo.formatVersion
        self.name = name
        self.id = .random()
        var options = options
        self.indexSpecification = options.indexSpecification
        options.indexSpecification = nil
        // Recorded, so a later change of the default does not change this store's shape.
        options.internalSlotLength = options.internalSlotLength
            ?? StoreOptions.defaultInternalSlotLength(for: options.slotLength)
        self.options = options
        self.rootID = .random()
        self.count = 0
        self.countVersion = 0
        self.keyType = keyType
        self.valueType = valueType
        self.createdAt = createdAt
    }
}
