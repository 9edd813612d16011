import Foundation
import SOP
import Testing

/// A fresh temporary folder for one test, removed when the value is deinitialized via `cleanup()`.
struct TempDir {
    let path: String

    init(_ name: String = "sop") {
        path = FileManager.default.temporaryDirectory.path + "/\(name)-\(UUID().uuidString.prefix(12))"
    }

    func cleanup() {
        try? FileManager.default.removeItem(atPath: path)
    }

    var db: String { path + "/db" }
}

/// SplitMix64: a small seeded generator so failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@discardableResult
func expectSOPError(_ code: SOPError.Code, _ body: () async throws -> Void,
                    sourceLocation: SourceLocation = #_sourceLocation) async -> SOPError? {
    do {
        try await body()
        Issue.record("expected SOPError.\(code), got success", sourceLocation: sourceLocation)
        return nil
    } catch let e as SOPError {
        #expect(e.code == code, "expected \(code), got \(e.code): \(e.message)", sourceLocation: sourceLocation)
        return e
    } catch {
        Issue.record("expected SOPError.\(code), got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
