import SOPCore

/// Where a handle lives: registry segment file and block index.
struct RegistrySlot: Hashable, Sendable {
    var segment: Int
    var block: Int
}

/// The in-memory image of one store's registry. Standalone, the process that owns the
/// database owns the registry, so lookups never re-read blocks; the files are the
/// checkpointed image, brought up to date from the commit log on open.
struct RegistryMap: Sendable {
    let hashMod: Int
    let capacity: Int
    private(set) var handles: [SOPID: Handle] = [:]
    private var placement: [SOPID: RegistrySlot] = [:]
    private var members: [RegistrySlot: [SOPID]] = [:]
    /// Blocks changed since the last checkpoint.
    var dirty: Set<RegistrySlot> = []

    init(hashMod: Int, capacity: Int) {
        self.hashMod = hashMod
        self.capacity = capacity
    }

    func block(for id: SOPID) -> Int { Int((id.low ^ id.high) % UInt64(hashMod)) }

    subscript(_ id: SOPID) -> Handle? { handles[id] }

    /// The same as the subscript, for a caller holding the map through a `_modify` access
    /// (see ``FileStorage/handle(store:logicalID:)``): reading the map in place instead of
    /// copying the store's state around it.
    mutating func peek(_ id: SOPID) -> Handle? { handles[id] }

    /// Loads one block read from a registry file (no dirtiness).
    mutating func load(segment: Int, block: Int, _ hs: [Handle]) throws {
        let slot = RegistrySlot(segment: segment, block: block)
        for h in hs {
            guard placement[h.logicalID] == nil else {
                throw SOPError(.corrupt, "registry holds node \(h.logicalID) twice")
            }
            handles[h.logicalID] = h
            placement[h.logicalID] = slot
            members[slot, default: []].append(h.logicalID)
        }
    }

    /// Inserts or replaces a handle.
    mutating func put(_ h: Handle) {
        let id = h.logicalID
        if let slot = placement[id] {
            handles[id] = h
            dirty.insert(slot)
            return
        }
        let b = block(for: id)
        var seg = 0
        while (members[RegistrySlot(segment: seg, block: b)]?.count ?? 0) >= capacity { seg += 1 }
        let slot = RegistrySlot(segment: seg, block: b)
        members[slot, default: []].append(id)
        placement[id] = slot
        handles[id] = h
        dirty.insert(slot)
    }

    /// Removes a handle (no-op when absent).
    mutating func remove(_ id: SOPID) {
        guard let slot = placement.removeValue(forKey: id) else { return }
        handles[id] = nil
        members[slot]?.removeAll { $0 == id }
        dirty.insert(slot)
    }

    /// The handles of a block, in slot order.
    func contents(of slot: RegistrySlot) -> [Handle] {
        (members[slot] ?? []).compactMap { handles[$0] }
    }
}
