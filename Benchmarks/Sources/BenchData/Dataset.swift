import Foundation

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast and fully deterministic.
package struct SplitMix64 {
    package var state: UInt64
    package init(seed: UInt64) { state = seed }
    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A uniform integer in 0..<bound (Lemire's multiply-shift with rejection).
    package mutating func below(_ bound: Int) -> Int {
        let b = UInt64(bound)
        var m = next().multipliedFullWidth(by: b)
        if m.low < b {
            let t = (0 &- b) % b
            while m.low < t { m = next().multipliedFullWidth(by: b) }
        }
        return Int(m.high)
    }
    /// A permutation of 0..<n (Fisher–Yates, written out so it never depends on the stdlib's shuffle).
    package mutating func permutation(_ n: Int) -> [Int] {
        var a = Array(0..<n)
        if n < 2 { return a }
        for i in stride(from: n - 1, to: 0, by: -1) {
            a.swapAt(i, below(i + 1))
        }
        return a
    }
    package mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(count + 8)
        while out.count < count {
            var x = next()
            for _ in 0..<8 { out.append(UInt8(truncatingIfNeeded: x)); x >>= 8 }
        }
        out.removeLast(out.count - count)
        return out
    }
}

/// The workload's data (WORKLOAD.md): identical for every engine.
package struct Dataset: Sendable {
    package static let seed: UInt64 = 20_261_125
    package let n: Int
    /// `"k%015d"` of the id, as Swift strings (SOP) and as bytes (SQLite, LMDB).
    package let keys: [String]
    package let keyBytes: [[UInt8]]
    /// base64 of 75 random bytes (100 ASCII characters).
    package let values: [String]
    package let valueBytes: [[UInt8]]
    /// The second value of each updated id (empty for the others).
    package let values2: [String]
    package let value2Bytes: [[UInt8]]
    package let insertOrder: [Int]
    package let readOrder: [Int]
    /// The N/10 ids updated, in update order.
    package let updateOrder: [Int]
    package let deleteOrder: [Int]

    package init(n: Int) {
        self.n = n
        var rng = SplitMix64(seed: Dataset.seed)
        // The values' text first, into one flat buffer (the generator's temporaries come and
        // go between them), then each form copied out in id order, one after the other, so
        // that each lies in memory with nothing between its elements: a scan checking its
        // items against strings left between the temporaries paid for that layout (~20 % of
        // SOP's scan in `sop-prof scan`), where the byte arrays the C engines are checked
        // against were always contiguous. One flat buffer, not a string per value, keeps the
        // harness's peak memory what the data itself needs.
        var text: [UInt8] = []
        text.reserveCapacity(n * 100)
        var ends: [Int] = []
        ends.reserveCapacity(n)
        for _ in 0..<n {
            text.append(contentsOf: Data(rng.bytes(75)).base64EncodedString().utf8)
            ends.append(text.count)
        }
        insertOrder = rng.permutation(n)
        readOrder = rng.permutation(n)
        updateOrder = Array(rng.permutation(n).prefix(n / 10))
        deleteOrder = rng.permutation(n)
        keyBytes = (0..<n).map { Array(Dataset.key($0).utf8) }
        valueBytes = (0..<n).map { Array(text[($0 == 0 ? 0 : ends[$0 - 1])..<ends[$0]]) }
        text = []
        ends = []
        keys = keyBytes.map { String(decoding: $0, as: UTF8.self) }
        values = valueBytes.map { String(decoding: $0, as: UTF8.self) }
        var values2 = [String](repeating: "", count: n)
        for id in updateOrder {
            var v: String
            repeat { v = Data(rng.bytes(75)).base64EncodedString() } while v == values[id]
            values2[id] = v
        }
        self.values2 = values2
        value2Bytes = values2.map { Array($0.utf8) }
    }

    package static func key(_ id: Int) -> String {
        let s = String(id)
        return "k" + String(repeating: "0", count: max(0, 15 - s.count)) + s
    }
}

package struct BenchError: Error, CustomStringConvertible {
    package let description: String
    package init(_ d: String) { description = d }
}
