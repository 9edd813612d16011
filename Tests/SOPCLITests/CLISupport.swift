import SOPTestSupport
import Foundation
import Testing

struct TempDir {
    let path: String
    init(_ name: String = "sopcli") {
        path = FileManager.default.temporaryDirectory.path + "/\(name)-\(UUID().uuidString.prefix(12))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
    var db: String { path + "/db" }
}

/// Asserts a failed run: non-zero exit, one stderr line starting `error:`.
func expectFailure(_ r: Run, containing text: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.status != 0, "expected failure, got success: \(r.out)", sourceLocation: sourceLocation)
    let lines = r.err.split(separator: "\n", omittingEmptySubsequences: true)
    #expect(lines.count == 1, "stderr: \(r.err)", sourceLocation: sourceLocation)
    #expect(r.err.hasPrefix("error: "), "stderr: \(r.err)", sourceLocation: sourceLocation)
    if let text {
        #expect(r.err.contains(text), "stderr: \(r.err)", sourceLocation: sourceLocation)
    }
}
