/// The on-disk JSON framing of B+tree nodes, type-agnostic: keys and values are JSON texts the
/// engine already encoded, spliced in and sliced out as bytes without being decoded.
///
/// Format (one compact JSON object, members in this order when written):
///
/// ```
/// {"format":1,"id":"<32 hex>",
///  "items":[{"k":<key>,"id":"<32 hex>","v":<value>},{"k":<key>,"id":"<32 hex>","vb":"<32 hex>"}],
///  "separators":[{"k":<key>,"id":"<32 hex>"}],
///  "children":["<32 hex>",...]}
/// ```
///
/// Leaves have `items` and empty `separators`/`children`; internal nodes have empty `items`,
/// and `children.count == separators.count + 1`. `v` holds an inline value, `vb` the ID of a
/// value stored as its own blob.
///
/// Decoding accepts any JSON whitespace and members in any order (tools may rewrite nodes),
/// and escaped member names; it rejects unknown or duplicate members.
public enum NodeCodec {
    /// The `format` value written and the only one read.
    public static let formatVersion = 1

    /// An item's value as stored in a node.
    public enum RawValue: Sendable, Equatable {
        /// The value's JSON text, stored in the node.
        case inline([UInt8])
        /// The ID of the blob holding the value.
        case blob(SOPID)
    }

    /// A leaf item with undecoded key and value.
    public struct RawItem: Sendable, Equatable {
        /// The key's JSON text.
        public var key: [UInt8]
        /// The item's ID.
        public var id: SOPID
        /// The value.
        public var value: RawValue

        /// Makes an item.
        public init(key: [UInt8], id: SOPID, value: RawValue) {
            self.key = key
            self.id = id
            self.value = value
        }
    }

    /// An internal-node separator with an undecoded key.
    public struct RawSeparator: Sendable, Equatable {
        /// The key's JSON text.
        public var key: [UInt8]
        /// The item-ID part of the separator.
        public var id: SOPID

        /// Makes a separator.
        public init(key: [UInt8], id: SOPID) {
            self.key = key
            self.id = id
        }
    }

    /// A node with undecoded keys and values.
    public struct RawNode: Sendable, Equatable {
        /// The node's logical ID.
        public var id: SOPID
        /// Leaf items (empty for internal nodes).
        public var items: [RawItem]
        /// Internal-node separators (empty for leaves).
        public var separators: [RawSeparator]
        /// Internal-node children (empty for leaves).
        public var children: [SOPID]

        /// Makes a node.
        public init(id: SOPID, items: [RawItem] = [], separators: [RawSeparator] = [], children: [SOPID] = []) {
            self.id = id
            self.items = items
            self.separators = separators
            self.children = children
        }
    }

    /// A value located in the node's bytes (see ``decodeInPlace(_:)``).
    public enum PlacedValue: Sendable, Equatable {
        /// The value's JSON text is `bytes[range]`.
        case inline(Range<Int>)
        /// The ID of the blob holding the value.
        case blob(SOPID)
    }

    /// A leaf item or separator whose key (and inline value) are ranges of the node's bytes.
    public struct PlacedItem: Sendable, Equatable {
        /// Where the key's JSON text is.
        public var key: Range<Int>
        /// The item's ID.
        public var id: SOPID
        /// The value (a placeholder for separators).
        public var value: PlacedValue
    }

    /// A node whose texts are ranges of the bytes it was decoded from: decoding copies no
    /// key or value, so a decoded node can keep its values in the one buffer it was read into.
    public struct PlacedNode: Sendable, Equatable {
        /// The node's logical ID.
        public var id: SOPID
        /// Leaf items (empty for internal nodes).
        public var items: [PlacedItem]
        /// Internal-node separators (empty for leaves); their values are placeholders.
        public var separators: [PlacedItem]
        /// Internal-node children (empty for leaves).
        public var children: [SOPID]
    }

    /// Decodes a node like ``decode(_:)-([UInt8])`` (same validation, same errors) without
    /// copying its texts out.
    public static func decodeInPlace(_ bytes: [UInt8]) throws -> PlacedNode {
        try bytes.withUnsafeBufferPointer { try decodePlaced($0) }
    }

    // MARK: - Encoding

    private static let head: StaticString = "{\"format\":"
    private static let idOpen: StaticString = ",\"id\":\""
    private static let itemsOpen: StaticString = "\",\"items\":["
    private static let separatorsOpen: StaticString = "],\"separators\":["
    private static let childrenOpen: StaticString = "],\"children\":["
    private static let tail: StaticString = "]}"
    private static let keyOpen: StaticString = "{\"k\":"
    private static let valueOpen: StaticString = "\",\"v\":"
    private static let blobOpen: StaticString = "\",\"vb\":\""
    private static let blobClose: StaticString = "\"}"
    private static let separatorClose: StaticString = "\"}"

    /// The exact size of ``encode(_:)``'s output.
    public static func encodedSize(_ node: RawNode) -> Int {
        var size = head.utf8CodeUnitCount + digitCount(formatVersion) + idOpen.utf8CodeUnitCount + 32
            + itemsOpen.utf8CodeUnitCount + separatorsOpen.utf8CodeUnitCount
            + childrenOpen.utf8CodeUnitCount + tail.utf8CodeUnitCount
        let itemBase = keyOpen.utf8CodeUnitCount + idOpen.utf8CodeUnitCount + 32
        for item in node.items {
            size += itemBase + item.key.count
            switch item.value {
            case .inline(let v): size += valueOpen.utf8CodeUnitCount + v.count + 1
            case .blob: size += blobOpen.utf8CodeUnitCount + 32 + blobClose.utf8CodeUnitCount
            }
        }
        for s in node.separators {
            size += itemBase + s.key.count + separatorClose.utf8CodeUnitCount
        }
        size += node.children.count * 34
        size += max(0, node.items.count - 1) + max(0, node.separators.count - 1) + max(0, node.children.count - 1)
        return size
    }

    private static func digitCount(_ v: Int) -> Int {
        var n = 1, x = v
        while x >= 10 { x /= 10; n += 1 }
        return n
    }

    /// Encodes a node in the compact format.
    ///
    /// Key and value texts are copied as they are; they must be valid JSON values (the engine
    /// encoded them), as nothing here checks them.
    public static func encode(_ node: RawNode) -> [UInt8] {
        let size = encodedSize(node)
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            var w = Writer(p: buffer.baseAddress!)
            write(node, to: &w)
            initialized = w.p - buffer.baseAddress!
            precondition(initialized == size, "NodeCodec size mismatch")
        }
    }

    /// Appends the encoding of `node` to `out` (see ``encode(_:)``).
    public static func encode(_ node: RawNode, appendingTo out: inout [UInt8]) {
        let size = encodedSize(node)
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: size))
        out.withUnsafeMutableBufferPointer { buffer in
            var w = Writer(p: buffer.baseAddress! + start)
            write(node, to: &w)
            precondition(w.p - buffer.baseAddress! == start + size, "NodeCodec size mismatch")
        }
    }

    private static func write(_ node: RawNode, to w: inout Writer) {
        w.put(head)
        w.putInt(formatVersion)
        w.put(idOpen)
        w.putHex(node.id)
        w.put(itemsOpen)
        for (i, item) in node.items.enumerated() {
            if i > 0 { w.put(0x2C) }
            w.put(keyOpen)
            w.put(item.key)
            w.put(idOpen)
            w.putHex(item.id)
            switch item.value {
            case .inline(let v):
                w.put(valueOpen)
                w.put(v)
                w.put(0x7D)
            case .blob(let id):
                w.put(blobOpen)
                w.putHex(id)
                w.put(blobClose)
            }
        }
        w.put(separatorsOpen)
        for (i, s) in node.separators.enumerated() {
            if i > 0 { w.put(0x2C) }
            w.put(keyOpen)
            w.put(s.key)
            w.put(idOpen)
            w.putHex(s.id)
            w.put(separatorClose)
        }
        w.put(childrenOpen)
        for (i, c) in node.children.enumerated() {
            if i > 0 { w.put(0x2C) }
            w.put(quoteByte)
            w.putHex(c)
            w.put(quoteByte)
        }
        w.put(tail)
    }

    /// A raw output cursor; the caller sized the buffer exactly.
    private struct Writer {
        var p: UnsafeMutablePointer<UInt8>

        @inline(__always)
        mutating func put(_ c: UInt8) {
            p.pointee = c
            p += 1
        }

        @inline(__always)
        mutating func put(_ s: StaticString) {
            let n = s.utf8CodeUnitCount
            p.update(from: s.utf8Start, count: n)
            p += n
        }

        @inline(__always)
        mutating func put(_ bytes: [UInt8]) {
            bytes.withUnsafeBufferPointer { b in
                if let base = b.baseAddress { p.update(from: base, count: b.count) }
            }
            p += bytes.count
        }

        mutating func putInt(_ v: Int) {
            var digits: [UInt8] = []
            JSONBytes.appendInt(Int64(v), to: &digits)
            put(digits)
        }

        @inline(__always)
        mutating func putHex(_ id: SOPID) {
            putHex64(id.high)
            putHex64(id.low)
        }

        @inline(__always)
        mutating func putHex64(_ v: UInt64) {
            for i in 0..<16 {
                let d = UInt8(truncatingIfNeeded: (v >> (60 - 4 * UInt64(i))) & 0xF)
                p[i] = d < 10 ? 0x30 + d : 0x57 + d
            }
            p += 16
        }
    }

    // MARK: - Decoding

    /// Decodes a node.
    ///
    /// - Throws: ``SOPError/Code/unsupportedFormat`` when `format` is an integer other than
    ///   ``formatVersion``; ``SOPError/Code/corrupt`` with a message starting `node: ` for
    ///   anything else wrong: malformed JSON, missing, duplicate, unknown or mistyped members,
    ///   key or value texts that are not one JSON value, trailing characters, both items and
    ///   children, separators without children, or `children.count != separators.count + 1`.
    public static func decode(_ bytes: [UInt8]) throws -> RawNode {
        try bytes.withUnsafeBufferPointer { try decode(buffer: $0) }
    }

    /// Decodes a node from a slice (error offsets count from the slice's start).
    public static func decode(_ bytes: ArraySlice<UInt8>) throws -> RawNode {
        try bytes.withUnsafeBufferPointer { try decode(buffer: $0) }
    }

    /// Decodes a node from a buffer; see ``decode(_:)-([UInt8])``.
    public static func decode(buffer: UnsafeBufferPointer<UInt8>) throws -> RawNode {
        let placed = try decodePlaced(buffer)
        func text(_ r: Range<Int>) -> [UInt8] { Array(UnsafeBufferPointer(rebasing: buffer[r])) }
        var items: [RawItem] = []
        items.reserveCapacity(placed.items.count)
        for item in placed.items {
            switch item.value {
            case .inline(let r): items.append(RawItem(key: text(item.key), id: item.id, value: .inline(text(r))))
            case .blob(let b): items.append(RawItem(key: text(item.key), id: item.id, value: .blob(b)))
            }
        }
        let separators = placed.separators.map { RawSeparator(key: text($0.key), id: $0.id) }
        return RawNode(id: placed.id, items: items, separators: separators, children: placed.children)
    }

    /// Decodes a node in place from a buffer (ranges index the buffer).
    static func decodePlaced(_ buffer: UnsafeBufferPointer<UInt8>) throws -> PlacedNode {
        let d = NodeDecoder(s: JSONScanner(buffer, code: .corrupt, prefix: "node: "))
        do {
            return try d.decodeNode()
        } catch let e where e.code == .corrupt {
            // A node of another format may well look malformed to this one: report the format.
            if let f = d.peekFormat(), f != Int64(formatVersion) { throw unsupported(f) }
            throw e
        }
    }

    static func unsupported(_ f: Int64) -> SOPError {
        SOPError(.unsupportedFormat, "node format \(f) is not supported (this build reads format \(formatVersion))")
    }
}

/// The node decoder proper.
private struct NodeDecoder {
    let s: JSONScanner

    enum Member {
        case format, id, items, separators, children, k, v, vb
    }

    func corrupt(_ reason: String) -> SOPError {
        SOPError(.corrupt, "node: \(reason)")
    }

    @inline(__always)
    func expect(_ c: UInt8, _ i: Int, _ what: String) throws(SOPError) -> Int {
        guard i < s.count, s.b[i] == c else { throw s.fail(i, "expected \(what)") }
        return s.skipWhitespace(i + 1)
    }

    /// Reads a member name at `i` (of an item or separator object when `item`, else of the
    /// node object) and the colon after it; returns the member and the index of its value.
    func memberName(_ i: Int, item: Bool) throws(SOPError) -> (Member, Int) {
        guard i < s.count, s.b[i] == quoteByte else { throw s.fail(i, "expected a member name") }
        let (end, escaped) = try s.skipString(i)
        var member: Member?
        if !escaped {
            member = NodeDecoder.identify(UnsafeBufferPointer(rebasing: s.b[(i + 1)..<(end - 1)]), item: item)
        } else {
            var text = try s.decodeString(i, end, escaped: true)
            member = text.withUTF8 { NodeDecoder.identify($0, item: item) }
        }
        guard let member else {
            let text = (try? s.decodeString(i, end, escaped: escaped)) ?? "?"
            throw corrupt("unknown member \"\(text)\" at byte \(i)")
        }
        let j = try expect(0x3A, s.skipWhitespace(end), "':'")
        return (member, j)
    }

    /// The member named by the UTF-8 bytes `n`.
    @inline(__always)
    static func identify(_ n: UnsafeBufferPointer<UInt8>, item: Bool) -> Member? {
        if item {
            switch n.count {
            case 1:
                if n[0] == 0x6B { return .k }
                if n[0] == 0x76 { return .v }
                return nil
            case 2:
                if n[0] == 0x69 && n[1] == 0x64 { return .id }
                if n[0] == 0x76 && n[1] == 0x62 { return .vb }
                return nil
            default:
                return nil
            }
        }
        for m in [Member.format, .id, .items, .separators, .children] where equals(n, name(m)) {
            return m
        }
        return nil
    }

    @inline(__always)
    static func equals(_ n: UnsafeBufferPointer<UInt8>, _ name: StaticString) -> Bool {
        let c = name.utf8CodeUnitCount
        guard n.count == c else { return false }
        let p = name.utf8Start
        for k in 0..<c where n[k] != p[k] { return false }
        return true
    }

    static func name(_ m: Member) -> StaticString {
        switch m {
        case .format: return "format"
        case .id: return "id"
        case .items: return "items"
        case .separators: return "separators"
        case .children: return "children"
        case .k: return "k"
        case .v: return "v"
        case .vb: return "vb"
        }
    }

    /// After a member's value: skips `,` (returns false) or the closing `}` (returns true).
    @inline(__always)
    func afterMember(_ i: inout Int) throws(SOPError) -> Bool {
        i = s.skipWhitespace(i)
        guard i < s.count else { throw s.fail(i, "unterminated object") }
        if s.b[i] == 0x2C {
            i = s.skipWhitespace(i + 1)
            return false
        }
        if s.b[i] == 0x7D {
            i += 1
            return true
        }
        throw s.fail(i, "expected ',' or '}'")
    }

    /// A 32-hex-digit string at `i`; advances `i` past it.
    @inline(__always)
    func hexID(_ i: inout Int, _ what: String) throws(SOPError) -> SOPID {
        let b = s.b
        let start = i
        if start + 34 <= b.count, b[start] == quoteByte, b[start + 33] == quoteByte,
           let h = NodeDecoder.hex64(b, start + 1), let l = NodeDecoder.hex64(b, start + 17) {
            i = start + 34
            return SOPID(high: h, low: l)
        }
        guard start < b.count, b[start] == quoteByte else { throw corrupt("\(what) at byte \(start) is not a string") }
        let (end, escaped) = try s.skipString(start)
        let text = try s.decodeString(start, end, escaped: escaped)
        guard let id = SOPID(hex: text) else {
            throw corrupt("\(what) at byte \(start) is not 32 hex digits")
        }
        i = end
        return id
    }

    @inline(__always)
    static func hex64(_ b: UnsafeBufferPointer<UInt8>, _ at: Int) -> UInt64? {
        var v: UInt64 = 0
        for k in 0..<16 {
            guard let d = JSONScanner.hexValue(b[at + k]) else { return nil }
            v = (v << 4) | UInt64(d)
        }
        return v
    }

    /// One JSON value at `i` (a key or inline value text); advances `i` past it.
    @inline(__always)
    func valueText(_ i: inout Int) throws(SOPError) -> Range<Int> {
        let start = i
        let end = try s.skipValue(start, depth: 0)
        i = end
        return start..<end
    }

    func decodeNode() throws(SOPError) -> NodeCodec.PlacedNode {
        var format: Int64?
        var id: SOPID?
        var items: [NodeCodec.PlacedItem]?
        var separators: [NodeCodec.PlacedItem]?
        var children: [SOPID]?
        var i = try expect(0x7B, s.skipWhitespace(0), "'{'")
        if i < s.count, s.b[i] == 0x7D {
            throw corrupt("missing format")
        }
        var closed = false
        while !closed {
            let (member, j) = try memberName(i, item: false)
            i = j
            switch member {
            case .format:
                guard format == nil else { throw corrupt("duplicate member \"format\"") }
                guard i < s.count, s.b[i] == 0x2D || JSONScanner.isDigit(s.b[i]) else {
                    throw corrupt("format is not an integer")
                }
                let (end, isInteger) = try s.skipNumber(i)
                guard isInteger, let f = s.integerValue(i, end) else { throw corrupt("format is not an integer") }
                guard f == Int64(NodeCodec.formatVersion) else { throw NodeCodec.unsupported(f) }
                format = f
                i = end
            case .id:
                guard id == nil else { throw corrupt("duplicate member \"id\"") }
                id = try hexID(&i, "node id")
            case .items:
                guard items == nil else { throw corrupt("duplicate member \"items\"") }
                items = try decodeItems(&i)
            case .separators:
                guard separators == nil else { throw corrupt("duplicate member \"separators\"") }
                separators = try decodeSeparators(&i)
            case .children:
                guard children == nil else { throw corrupt("duplicate member \"children\"") }
                children = try decodeChildren(&i)
            default:
                throw corrupt("unexpected member")
            }
            closed = try afterMember(&i)
        }
        let rest = s.skipWhitespace(i)
        guard rest == s.count else { throw s.fail(rest, "unexpected characters after the node") }
        guard format != nil else { throw corrupt("missing format") }
        guard let id else { throw corrupt("missing id") }
        guard let items else { throw corrupt("missing items") }
        guard let separators else { throw corrupt("missing separators") }
        guard let children else { throw corrupt("missing children") }
        if children.isEmpty {
            guard separators.isEmpty else { throw corrupt("separators without children") }
        } else {
            guard items.isEmpty else { throw corrupt("both items and children") }
            guard children.count == separators.count + 1 else {
                throw corrupt("\(children.count) children for \(separators.count) separators")
            }
        }
        return NodeCodec.PlacedNode(id: id, items: items, separators: separators, children: children)
    }

    /// `[` elements `]` at `i`, each read by `element`; advances `i` past `]`.
    @inline(__always)
    func decodeArray<T>(_ i: inout Int, _ what: String,
                        _ element: (inout Int) throws(SOPError) -> T) throws(SOPError) -> [T] {
        guard i < s.count, s.b[i] == 0x5B else { throw corrupt("\(what) is not an array") }
        i = s.skipWhitespace(i + 1)
        var out: [T] = []
        if i < s.count, s.b[i] == 0x5D {
            i += 1
            return out
        }
        while true {
            out.append(try element(&i))
            i = s.skipWhitespace(i)
            guard i < s.count else { throw s.fail(i, "unterminated array") }
            if s.b[i] == 0x2C {
                i = s.skipWhitespace(i + 1)
            } else if s.b[i] == 0x5D {
                i += 1
                return out
            } else {
                throw s.fail(i, "expected ',' or ']'")
            }
        }
    }

    func decodeItems(_ i: inout Int) throws(SOPError) -> [NodeCodec.PlacedItem] {
        try decodeArray(&i, "items") { (i: inout Int) throws(SOPError) -> NodeCodec.PlacedItem in
            try decodeItem(&i, separator: false)
        }
    }

    func decodeSeparators(_ i: inout Int) throws(SOPError) -> [NodeCodec.PlacedItem] {
        try decodeArray(&i, "separators") { (i: inout Int) throws(SOPError) -> NodeCodec.PlacedItem in
            try decodeItem(&i, separator: true)
        }
    }

    func decodeChildren(_ i: inout Int) throws(SOPError) -> [SOPID] {
        try decodeArray(&i, "children") { (i: inout Int) throws(SOPError) -> SOPID in
            try hexID(&i, "child id")
        }
    }

    /// An item object (`k`, `id`, and `v` or `vb`) or, when `separator`, a separator object
    /// (`k`, `id`). For separators the returned value is a placeholder.
    func decodeItem(_ i: inout Int, separator: Bool) throws(SOPError) -> NodeCodec.PlacedItem {
        let what = separator ? "separator" : "item"
        guard i < s.count, s.b[i] == 0x7B else { throw corrupt("\(what) at byte \(i) is not an object") }
        i = s.skipWhitespace(i + 1)
        if i < s.count, s.b[i] == 0x7D { throw corrupt("\(what) at byte \(i) has no key") }
        var key: Range<Int>?
        var id: SOPID?
        var value: NodeCodec.PlacedValue?
        var closed = false
        while !closed {
            let at = i
            let (member, j) = try memberName(i, item: true)
            i = j
            switch member {
            case .k:
                guard key == nil else { throw corrupt("duplicate member \"k\" at byte \(at)") }
                key = try valueText(&i)
            case .id:
                guard id == nil else { throw corrupt("duplicate member \"id\" at byte \(at)") }
                id = try hexID(&i, "\(what) id")
            case .v:
                guard !separator else { throw corrupt("separator at byte \(at) has a value") }
                guard value == nil else { throw corrupt("more than one value at byte \(at)") }
                value = .inline(try valueText(&i))
            case .vb:
                guard !separator else { throw corrupt("separator at byte \(at) has a value") }
                guard value == nil else { throw corrupt("more than one value at byte \(at)") }
                value = .blob(try hexID(&i, "value blob id"))
            default:
                throw corrupt("unexpected member at byte \(at)")
            }
            closed = try afterMember(&i)
        }
        guard let key else { throw corrupt("\(what) ending at byte \(i) has no key") }
        guard let id else { throw corrupt("\(what) ending at byte \(i) has no id") }
        if separator {
            return NodeCodec.PlacedItem(key: key, id: id, value: .blob(.zero))
        }
        guard let value else { throw corrupt("item ending at byte \(i) has no value") }
        return NodeCodec.PlacedItem(key: key, id: id, value: value)
    }

    /// The integer `format` member of a top-level object, found by skipping the other members;
    /// `nil` when the input is not an object with one.
    func peekFormat() -> Int64? {
        var i = s.skipWhitespace(0)
        guard i < s.count, s.b[i] == 0x7B else { return nil }
        i = s.skipWhitespace(i + 1)
        while i < s.count, s.b[i] == quoteByte {
            guard let str = try? s.skipString(i) else { return nil }
            let (end, escaped) = str
            let isFormat = escaped
                ? (try? s.decodeString(i, end, escaped: true)) == "format"
                : NodeDecoder.equals(UnsafeBufferPointer(rebasing: s.b[(i + 1)..<(end - 1)]), "format")
            i = s.skipWhitespace(end)
            guard i < s.count, s.b[i] == 0x3A else { return nil }
            i = s.skipWhitespace(i + 1)
            guard let valueEnd = try? s.skipValue(i, depth: 0) else { return nil }
            if isFormat {
                guard let num = try? s.skipNumber(i), num.isInteger, num.end == valueEnd else { return nil }
                let numberEnd = num.end
                return s.integerValue(i, numberEnd)
            }
            i = s.skipWhitespace(valueEnd)
            guard i < s.count, s.b[i] == 0x2C else { return nil }
            i = s.skipWhitespace(i + 1)
        }
        return nil
    }
}
