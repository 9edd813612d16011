@testable import SOP
import Testing

/// The word-at-a-time scan that decides whether a stored JSON string needs unescaping.
@Suite struct ValueTextTests {
    static func naive(_ b: [UInt8]) -> Bool { b.contains { $0 == 0x5C || $0 < 0x20 } }

    @Test func everyByteValueAtEveryPositionMatchesTheNaiveScan() {
        for length in [1, 7, 8, 9, 16, 17, 23] {
            for position in 0..<length {
                for value in 0...255 {
                    var b = [UInt8](repeating: UInt8(ascii: "a"), count: length)
                    b[position] = UInt8(value)
                    let fast = b.withUnsafeBufferPointer { JSONCoder<String>.needsUnescaping($0) }
                    #expect(fast == Self.naive(b), "byte \(value) at \(position) of \(length)")
                }
            }
        }
    }

    @Test func randomBuffersMatchTheNaiveScan() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let n = Int.random(in: 0...64, using: &rng)
            // Mostly printable bytes (the common case), sometimes anything.
            let b = (0..<n).map { _ in
                Int.random(in: 0..<10, using: &rng) == 0 ? UInt8.random(in: 0...255, using: &rng)
                    : UInt8.random(in: 0x20...0x7E, using: &rng)
            }
            let fast = b.withUnsafeBufferPointer { JSONCoder<String>.needsUnescaping($0) }
            #expect(fast == Self.naive(b), "\(b)")
        }
    }

    @Test func stringsWithEscapesRoundTrip() throws {
        let coder = JSONCoder<String>()
        for s in ["", "plain", "with \"quote\"", "back\\slash", "tab\there", "nl\n", "\u{1}ctl", "é ünïcødé 中文 😀",
                  String(repeating: "x", count: 100) + "\\" + String(repeating: "y", count: 7)] {
            let bytes = try coder.encode(s)
            #expect(try coder.decode(bytes) == s)
            #expect(try coder.decode(ValueBytes([0, 1] + bytes + [2], 2..<(2 + bytes.count))) == s)
        }
    }
}
