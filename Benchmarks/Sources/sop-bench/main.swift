import Foundation

let benchOptions = BenchOptions.parseOrExit()
do {
    try await runBenchmark(benchOptions.config())
} catch {
    FileHandle.standardError.write(Data("sop-bench: error: \(error)\n".utf8))
    exit(1)
}
