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
