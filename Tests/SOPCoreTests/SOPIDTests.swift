import Foundation
@testable import SOPCore
import Testing

@Suite struct SOPIDTests {
    /// Duplicates of a key are ordered by their items' time-ordered IDs, so those must grow
    /// strictly with every call — also past 4,096 calls in one millisecond (the 12-bit
    /// sequence used to wrap there and invert the order of two duplicates).
    @Test func timeOrderedIDsGrowStrictlyPastTheSequenceWidth() {
        var last = SOPID.timeOrdered()
        var sameMillisecond = 0
        for _ in 0..<200_000 {
            let id = SOPID.timeOrdered()
            #expect(last < id)
            if last.high >> 16 == id.high >> 16 { sameMillisecond += 1 }
            #expect(id.high & 0xF000 == 0x7000)
            last = id
        }
        // The loop must have run into the sequence's width for the test to mean anything.
        #expect(sameMillisecond > 4_096)
    }

    /// From several threads at once: each thread sees its own IDs grow, and no ID repeats.
    @Test func timeOrderedIDsFromManyThreads() async {
        let perThread = 50_000
        let lists = await withTaskGroup(of: [SOPID].self) { group in
            for _ in 0..<4 {
                group.addTask {
                    await Task.detached {
                        var ids: [SOPID] = []
                        ids.reserveCapacity(perThread)
                        for _ in 0..<perThread { ids.append(.timeOrdered()) }
                        return ids
                    }.value
                }
            }
            var all: [[SOPID]] = []
            for await l in group { all.append(l) }
            return all
        }
        var seen = Set<UInt64>()
        for ids in lists {
            #expect(zip(ids, ids.dropFirst()).allSatisfy { $0 < $1 })
            // The stamp (ms and sequence) is unique across threads, not only the random half.
            for id in ids { seen.insert(id.high) }
        }
        #expect(seen.count == 4 * perThread)
    }
}
