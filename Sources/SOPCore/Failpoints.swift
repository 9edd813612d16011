#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Named points in the commit protocol and recovery where tests make SOP crash, fail or
/// stall, to prove that a crash at any step leaves a database that recovers.
///
/// Each database has its own table (tests run in parallel). A debug build of the `sop` tool
/// also reads `SOP_FAILPOINTS` from the environment, e.g.
/// `SOP_FAILPOINTS="commit.afterRecordSync=crash,checkpoint.afterPointer=delay:50"`.
public final class Failpoints: Sendable {
    /// What a tripped failpoint does.
    public enum Action: Sendable, Equatable {
        /// The process stops at once (in-process tests: ``FailpointCrash`` is thrown and the
        /// storage refuses all further I/O, as if the process were gone).
        case crash
        /// The step fails with an I/O error.
        case error
        /// The step waits this long, then goes on.
        case delay(Duration)
    }

    /// How ``Action/crash`` is carried out.
    public enum CrashMode: Sendable {
        /// `_exit` at once: no cleanup, no flushing (for process-level tests).
        case exitProcess
        /// Throw ``FailpointCrash`` (for in-process tests that then simulate the restart).
        case throwError
    }

    /// Every failpoint SOP has, in protocol order.
    public static let all: [String] = [
        "commit.afterLock", "commit.afterValidate", "blob.beforeWrite", "blob.afterWrite",
        "commit.beforeRecordWrite", "commit.afterRecordWrite", "commit.afterRecordSync", "commit.afterApply",
        "commit.beforeUnlock",
        "checkpoint.begin", "checkpoint.betweenRegistrySlots", "checkpoint.afterRegistryWrite",
        "checkpoint.afterStoreInfo", "checkpoint.afterCatalog", "checkpoint.afterPointer",
        "checkpoint.afterDropCleanup",
        "recovery.afterLoad", "recovery.afterReplay", "recovery.afterTruncate",
        "compaction.afterCopy", "compaction.afterCommit", "compaction.beforeDelete", "compaction.afterDelete",
    ]

    private let table = Mutex<[String: Action]>([:])
    private let armed = Atomic<Bool>(false)
    /// How crashes are carried out.
    public let crashMode: CrashMode

    /// Makes an empty table.
    public init(crashMode: CrashMode = .throwError) {
        self.crashMode = crashMode
    }

    /// A table filled from `SOP_FAILPOINTS` (crashes exit the process).
    public static func fromEnvironment() -> Failpoints? {
        guard let raw = getenv("SOP_FAILPOINTS") else { return nil }
        let spec = String(cString: raw)
        let f = Failpoints(crashMode: .exitProcess)
        for part in spec.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { continue }
            if kv[1] == "crash" { f.set(kv[0], .crash) } else if kv[1] == "error" { f.set(kv[0], .error) } else if kv[1].hasPrefix("delay:"), let ms = Int(kv[1].dropFirst(6)) {
                f.set(kv[0], .delay(.milliseconds(ms)))
            }
        }
        return f
    }

    /// Arms (or with `nil` disarms) a failpoint.
    public func set(_ name: String, _ action: Action?) {
        table.withLock { t in
            t[name] = action
            armed.store(!t.isEmpty, ordering: .releasing)
        }
    }

    /// Disarms every failpoint.
    public func clear() {
        table.withLock { t in
            t.removeAll()
            armed.store(false, ordering: .releasing)
        }
    }

    /// Called at a failpoint from blocking code (I/O threads).
    public func hit(_ name: String) throws {
        guard armed.load(ordering: .acquiring), let action = table.withLock({ $0[name] }) else { return }
        switch action {
        case .crash:
            if crashMode == .exitProcess { _exit(86) }
            throw FailpointCrash(name: name)
        case .error:
            throw SOPError(.io, "injected failure at \(name)")
        case .delay(let d):
            let c = d.components
            usleep(useconds_t(max(0, c.seconds * 1_000_000 + c.attoseconds / 1_000_000_000_000)))
        }
    }

    /// Called at a failpoint from async code.
    public func hitAsync(_ name: String) async throws {
        guard armed.load(ordering: .acquiring), let action = table.withLock({ $0[name] }) else { return }
        if case .delay(let d) = action {
            try await Task.sleep(for: d)
            return
        }
        try hit(name)
    }
}

/// Thrown by a failpoint set to ``Failpoints/Action/crash`` in in-process tests.
public struct FailpointCrash: Error, Sendable, Equatable {
    /// The failpoint.
    public var name: String
}
