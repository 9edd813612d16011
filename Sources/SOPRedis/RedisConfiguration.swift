import SOPCore

/// Where a ``RedisClient`` connects and how it behaves.
///
/// Made from a URL, `redis://[user:password@]host[:port][/db]` (port 6379 and database 0 by
/// default; `redis://:password@host` for a password without a user name; an IPv6 host in
/// brackets). `rediss://` (TLS) is recognised and refused: this client speaks plain TCP only,
/// so put Redis on a trusted network or behind a TLS tunnel.
public struct RedisConfiguration: Sendable, Equatable {
    /// Host name or IP address.
    public var host: String
    /// TCP port.
    public var port: Int
    /// ACL user name (Redis 6+), sent with the password; nil for the default user.
    public var user: String?
    /// Password for `AUTH`/`HELLO … AUTH`; nil when the server has none.
    public var password: String?
    /// Database number selected with `SELECT` on every connection.
    public var database: Int
    /// Connections in the pool. Each carries many pipelined commands at once.
    public var poolSize: Int = 4
    /// How long a command (or a whole pipeline) may wait for its reply.
    public var commandTimeout: Duration = .seconds(2)
    /// How long opening a TCP connection may take.
    public var connectTimeout: Duration = .seconds(2)
    /// Ask for RESP3 with `HELLO 3`, falling back to RESP2 on servers older than Redis 6.
    public var useRESP3: Bool = false
    /// First wait before reconnecting after a failed connection attempt; doubles per failure.
    public var reconnectBackoff: Duration = .milliseconds(50)
    /// The longest wait between reconnection attempts.
    public var maxReconnectBackoff: Duration = .seconds(1)

    /// A configuration for `host:port`.
    public init(host: String = "127.0.0.1", port: Int = 6379, user: String? = nil, password: String? = nil, database: Int = 0) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
    }

    /// Parses `redis://[user:password@]host[:port][/db]`.
    public init(url: String) throws {
        func bad(_ why: String) -> SOPError {
            SOPError(.invalidArgument, "bad redis URL \"\(RedisConfiguration.redact(url))\": \(why)")
        }
        var rest: Substring
        if url.hasPrefix("rediss://") {
            throw SOPError(
                .invalidArgument,
                "redis TLS (rediss://) is not supported: use redis:// on a trusted network or a TLS tunnel")
        } else if url.hasPrefix("redis://") {
            rest = url.dropFirst("redis://".count)
        } else {
            throw bad("expected redis://[user:password@]host[:port][/db]")
        }
        var user: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let cred = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = cred.firstIndex(of: ":") {
                let u = cred[..<colon]
                user = u.isEmpty ? nil : try RedisConfiguration.percentDecode(u, bad)
                password = try RedisConfiguration.percentDecode(cred[cred.index(after: colon)...], bad)
            } else {
                // `redis://secret@host`: a lone credential is the password (as redis-cli does).
                password = try RedisConfiguration.percentDecode(cred, bad)
            }
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !db.isEmpty {
                guard let n = Int(db), n >= 0 else { throw bad("database \"\(db)\" is not a number") }
                database = n
            }
        }
        if rest.contains("?") { throw bad("query parameters are not supported") }
        var host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw bad("unclosed [ in IPv6 host") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw bad("junk after IPv6 host") }
                portText = after.dropFirst()
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw bad("no host") }
        var port = 6379
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else { throw bad("port \"\(portText)\" is not 1...65535") }
            port = p
        }
        self.init(host: String(host), port: port, user: user, password: password, database: database)
    }

    /// `host:port`, as used in error messages.
    public var address: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    static func redact(_ url: String) -> String {
        guard let at = url.lastIndex(of: "@"), let scheme = url.firstRange(of: "://") else { return url }
        return String(url[..<scheme.upperBound]) + "***" + String(url[at...])
    }

    private static func percentDecode(_ s: Substring, _ bad: (String) -> SOPError) throws -> String {
        guard s.contains("%") else { return String(s) }
        var out: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let c = it.popFirst() {
            if c == UInt8(ascii: "%") {
                guard it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) else {
                    throw bad("bad percent escape in credentials")
                }
                out.append(v)
                it = it.dropFirst(2)
            } else {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Duration {
    /// Whole milliseconds, rounded up (so a positive duration is never 0 ms).
    var sopMilliseconds: Int64 {
        let c = components
        return c.seconds * 1000 + (c.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
    }

    /// "200 ms" or "2 s", for messages.
    var sopText: String {
        let ms = sopMilliseconds
        return ms % 1000 == 0 && ms > 0 ? "\(ms / 1000) s" : "\(ms) ms"
    }
}
