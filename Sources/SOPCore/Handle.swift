/// A registry record: maps a node's stable logical ID to the physical blob holding its
/// current bytes. 62 bytes on disk (see `docs/format.md`).
public struct Handle: Sendable, Equatable {
    /// Encoded size in a registry block.
    public static let encodedSize = 62

    /// The node's stable ID (what parents and the store info refer to).
    public var logicalID: SOPID
    /// Physical slot A.
    public var physicalA: SOPID
    /// Physical slot B.
    public var physicalB: SOPID
    /// `true` when B is the active slot.
    public var isActiveB: Bool
    /// Bumped by every commit that changes the node; the value a transaction re-checks.
    public var version: UInt32
    /// Milliseconds since 1970 when the inactive slot was allocated (0 = none).
    public var workInProgress: Int64
    /// Logical delete mark.
    public var isDeleted: Bool

    /// A new handle whose active physical blob is `physical`.
    public init(logicalID: SOPID, physical: SOPID, version: UInt32 = 1) {
        self.logicalID = logicalID
        self.physicalA = physical
        self.physicalB = .zero
        self.isActiveB = false
        self.version = version
        self.workInProgress = 0
        self.isDeleted = false
    }

    /// Makes a handle from all its fields.
    public init(logicalID: SOPID, physicalA: SOPID, physicalB: SOPID, isActiveB: Bool,
                version: UInt32, workInProgress: Int64, isDeleted: Bool) {
        self.logicalID = logicalID
        self.physicalA = physicalA
        self.physicalB = physicalB
        self.isActiveB = isActiveB
        self.version = version
        self.workInProgress = workInProgress
        self.isDeleted = isDeleted
    }

    /// The physical blob readers should load.
    public var active: SOPID { isActiveB ? physicalB : physicalA }
    /// The previous physical blob (or zero).
    public var inactive: SOPID { isActiveB ? physicalA : physicalB }

    /// Points the handle at a new blob: it goes to the inactive slot, which becomes active,
    /// and the version is bumped.
    public mutating func flip(to physical: SOPID) {
        if isActiveB { physicalA = physical } else { physicalB = physical }
        isActiveB.toggle()
        version &+= 1
        workInProgress = 0
    }

    /// Appends the 62-byte encoding: logical[16] A[16] B[16] activeB[1] version[4 LE] wip[8 LE] deleted[1].
    public func encode(into out: inout [UInt8]) {
        logicalID.append(to: &out)
        physicalA.append(to: &out)
        physicalB.append(to: &out)
        out.append(isActiveB ? 1 : 0)
        withUnsafeBytes(of: version.littleEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: workInProgress.littleEndian) { out.append(contentsOf: $0) }
        out.append(isDeleted ? 1 : 0)
    }

    /// Decodes 62 bytes at `offset`; throws ``SOPError/Code/corrupt`` on impossible flag bytes.
    public init(decoding b: [UInt8], at offset: Int) throws {
        // `offset <= count - size`, not `offset + size <= count`: no overflow trap for a huge offset.
        guard offset >= 0, offset <= b.count - Handle.encodedSize else {
            throw SOPError(.corrupt, "handle record is truncated")
        }
        logicalID = SOPID(bytes: b, at: offset)
        physicalA = SOPID(bytes: b, at: offset + 16)
        physicalB = SOPID(bytes: b, at: offset + 32)
        let a = b[offset + 48]
        let d = b[offset + 61]
        guard a <= 1, d <= 1 else { throw SOPError(.corrupt, "handle record has an invalid flag byte") }
        isActiveB = a == 1
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(b[offset + 49 + i]) << (8 * UInt32(i)) }
        version = v
        var w: UInt64 = 0
        for i in 0..<8 { w |= UInt64(b[offset + 53 + i]) << (8 * UInt64(i)) }
        workInProgress = Int64(bitPattern: w)
        isDeleted = d == 1
    }
}
