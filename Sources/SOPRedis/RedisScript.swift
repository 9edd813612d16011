import SOPCore

/// A Lua script run with `EVALSHA`, falling back to `EVAL` (which also caches it on the
/// server) when the server does not know it yet (`NOSCRIPT`: first use, or after a restart or
/// `SCRIPT FLUSH`).
public struct RedisScript: Sendable {
    /// The Lua source.
    public let source: String
    /// The SHA-1 of the source, as `EVALSHA` wants it.
    public let sha1: String

    /// Wraps a Lua source.
    public init(_ source: String) {
        self.source = source
        self.sha1 = sha1Hex(Array(source.utf8))
    }
}

extension RedisClient {
    /// Runs `script` with `keys` (`KEYS[…]`) and `args` (`ARGV[…]`): one round trip, two the
    /// first time the server sees the script.
    public func run(_ script: RedisScript, keys: [String], args: [String]) async throws -> RESPValue {
        let tail = [String(keys.count)] + keys + args
        do {
            return try await send(["EVALSHA", script.sha1] + tail)
        } catch let e as SOPError where e.message.hasPrefix("redis error: NOSCRIPT") {
            return try await send(["EVAL", script.source] + tail)
        }
    }
}

/// Key namespaces: every key SOP writes to Redis starts with `sop:<namespace>:`.
public enum RedisNamespace {
    /// A namespace for a database folder: 16 hex digits of the SHA-1 of its path, so two
    /// databases with the same store names never share a key. Pass the folder's canonical
    /// absolute path so that every process derives the same namespace.
    public static func forDatabaseFolder(_ path: String) -> String {
        String(sha1Hex(Array(path.utf8)).prefix(16))
    }

    static func validate(_ namespace: String) throws {
        guard !namespace.isEmpty, !namespace.utf8.contains(where: { $0 <= 32 || $0 == 127 }) else {
            throw SOPError(.invalidArgument, "redis namespace \"\(namespace)\" must be non-empty without spaces or control characters")
        }
    }
}
