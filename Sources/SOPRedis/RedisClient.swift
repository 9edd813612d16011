import NIOCore
import NIOPosix
import SOPCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A small Redis client on SwiftNIO: a pool of connections, each carrying many pipelined
/// commands at once, with per-command timeouts and automatic reconnection.
///
/// - A Redis error reply makes ``send(_:)-(String)`` throw `SOPError(.io, "redis error: …")`.
/// - A command that gets no reply within ``RedisConfiguration/commandTimeout`` throws
///   `SOPError(.io, "redis command NAME timed out after …")`, and its connection is closed
///   (the other commands in flight on it fail too, naming the timed-out one).
/// - When a connection drops, the commands in flight on it fail with an error naming the
///   command and the address; the next command opens a new connection. After a failed
///   connection attempt, the next attempt on that pooled slot waits an exponentially growing
///   back-off (``RedisConfiguration/reconnectBackoff`` doubling up to
///   ``RedisConfiguration/maxReconnectBackoff``, reset by a success). A command that arrives
///   during the back-off waits it out when it is shorter than the command timeout and
///   otherwise fails at once with the last connection error; commands never retry by
///   themselves (a command lost with its connection may or may not have run).
/// - An unreachable server throws `SOPError(.io, "cannot connect to redis at host:port: …")`
///   within ``RedisConfiguration/connectTimeout``.
/// - TLS (`rediss://`) is not supported.
///
/// Pub/sub and blocking commands are not supported (RESP3 pushes are ignored).
public final class RedisClient: Sendable {
    /// What this client connects to and how.
    public let configuration: RedisConfiguration
    private let group: any EventLoopGroup
    private let state: Mutex<PoolState>
    private let nextSlot = Atomic<Int>(0)
    private let roundTripCount = Atomic<Int>(0)

    /// Requests sent: one per ``send(_:)-(String)``, one per ``pipeline(_:)-([[String]])``
    /// whatever its length (handshake commands of new connections are not counted).
    public var roundTrips: Int { roundTripCount.load(ordering: .relaxed) }

    /// The event-loop group used when none is given: one thread for every client of the
    /// process (a Redis client spends its time waiting, not computing).
    public static let sharedEventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    private enum Slot {
        case idle(failures: Int, retryAt: ContinuousClock.Instant?, lastError: SOPError?)
        case connecting(Task<RedisConnection, any Error>, failures: Int)
        case ready(RedisConnection)
    }

    private struct PoolState {
        var slots: [Slot]
        var closed = false
    }

    /// A client for `configuration`. No connection is opened until the first command.
    public init(configuration: RedisConfiguration, eventLoopGroup: (any EventLoopGroup)? = nil) throws {
        guard configuration.poolSize >= 1 else {
            throw SOPError(.invalidArgument, "redis pool size must be at least 1, not \(configuration.poolSize)")
        }
        guard configuration.commandTimeout > .zero, configuration.connectTimeout > .zero else {
            throw SOPError(.invalidArgument, "redis timeouts must be positive")
        }
        self.configuration = configuration
        self.group = eventLoopGroup ?? RedisClient.sharedEventLoopGroup
        self.state = Mutex(PoolState(slots: Array(repeating: .idle(failures: 0, retryAt: nil, lastError: nil), count: configuration.poolSize)))
    }

    /// A client for `redis://[user:password@]host[:port][/db]`.
    public convenience init(
        url: String, poolSize: Int = 4, commandTimeout: Duration = .seconds(2), connectTimeout: Duration = .seconds(2),
        useRESP3: Bool = false, eventLoopGroup: (any EventLoopGroup)? = nil
    ) throws {
        var c = try RedisConfiguration(url: url)
        c.poolSize = poolSize
        c.commandTimeout = commandTimeout
        c.connectTimeout = connectTimeout
        c.useRESP3 = useRESP3
        try self.init(configuration: c, eventLoopGroup: eventLoopGroup)
    }

    // MARK: Commands

    /// Sends one command and returns its reply; an error reply throws.
    public func send(_ args: [String]) async throws -> RESPValue {
        guard let name = args.first else { throw SOPError(.invalidArgument, "empty redis command") }
        var buffer = ByteBuffer()
        RESPEncoder.writeCommand(args, into: &buffer)
        return try Self.checked(try await execute(buffer, count: 1, name: name.uppercased())[0])
    }

    /// Sends one command whose arguments are raw bytes (binary-safe values).
    public func send(_ args: [[UInt8]]) async throws -> RESPValue {
        guard let first = args.first else { throw SOPError(.invalidArgument, "empty redis command") }
        var buffer = ByteBuffer()
        RESPEncoder.writeCommand(args, into: &buffer)
        return try Self.checked(try await execute(buffer, count: 1, name: String(decoding: first, as: UTF8.self).uppercased())[0])
    }

    /// Sends one command whose arguments are the readable bytes of buffers.
    public func send(_ args: [ByteBuffer]) async throws -> RESPValue {
        guard let first = args.first else { throw SOPError(.invalidArgument, "empty redis command") }
        var buffer = ByteBuffer()
        RESPEncoder.writeCommand(args, into: &buffer)
        return try Self.checked(try await execute(buffer, count: 1, name: String(buffer: first).uppercased())[0])
    }

    /// Sends many commands in one write on one connection and returns their replies in order:
    /// one round trip. Error replies are returned in place (as ``RESPValue/error(_:)`` or
    /// ``RESPValue/bulkError(_:)``), not thrown, since the other commands ran regardless;
    /// ``RedisClient/checked(_:)`` turns one into a thrown error.
    public func pipeline(_ commands: [[String]]) async throws -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        var buffer = ByteBuffer()
        for c in commands {
            guard !c.isEmpty else { throw SOPError(.invalidArgument, "empty redis command in pipeline") }
            RESPEncoder.writeCommand(c, into: &buffer)
        }
        return try await execute(buffer, count: commands.count, name: Self.pipelineName(commands[0][0], commands.count))
    }

    /// ``pipeline(_:)-([[String]])`` with binary arguments.
    public func pipeline(_ commands: [[[UInt8]]]) async throws -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        var buffer = ByteBuffer()
        for c in commands {
            guard !c.isEmpty else { throw SOPError(.invalidArgument, "empty redis command in pipeline") }
            RESPEncoder.writeCommand(c, into: &buffer)
        }
        return try await execute(
            buffer, count: commands.count, name: Self.pipelineName(String(decoding: commands[0][0], as: UTF8.self), commands.count))
    }

    private static func pipelineName(_ first: String, _ count: Int) -> String {
        count == 1 ? first.uppercased() : "\(first.uppercased()) (first of \(count) pipelined)"
    }

    /// The reply itself, or `SOPError(.io, "redis error: …")` for an error reply.
    public static func checked(_ reply: RESPValue) throws -> RESPValue {
        if let m = reply.errorMessage { throw SOPError(.io, "redis error: \(m)") }
        return reply
    }

    /// Closes every connection; later commands fail. Commands in flight fail.
    public func close() async {
        let (connections, tasks) = state.withLock { s -> ([RedisConnection], [Task<RedisConnection, any Error>]) in
            s.closed = true
            var cs: [RedisConnection] = []
            var ts: [Task<RedisConnection, any Error>] = []
            for (i, slot) in s.slots.enumerated() {
                switch slot {
                case .ready(let c): cs.append(c)
                case .connecting(let t, _): ts.append(t)
                case .idle: break
                }
                s.slots[i] = .idle(failures: 0, retryAt: nil, lastError: nil)
            }
            return (cs, ts)
        }
        for t in tasks {
            if let c = try? await t.value { connectionsClosing(c) }
        }
        for c in connections { connectionsClosing(c) }
        for c in connections { try? await c.channel.closeFuture.get() }
    }

    private func connectionsClosing(_ c: RedisConnection) {
        c.channel.close(promise: nil)
    }

    // MARK: Pool

    private func execute(_ buffer: ByteBuffer, count: Int, name: String) async throws -> [RESPValue] {
        roundTripCount.add(1, ordering: .relaxed)
        let slot = nextSlot.wrappingAdd(1, ordering: .relaxed).oldValue
        let connection = try await acquire(slot: ((slot % configuration.poolSize) + configuration.poolSize) % configuration.poolSize)
        return try await connection.execute(buffer, count: count, name: name, timeout: configuration.commandTimeout)
    }

    private enum Next {
        case use(RedisConnection)
        case wait(Task<RedisConnection, any Error>)
        case sleep(Duration)
        case fail(any Error)
    }

    private func acquire(slot i: Int) async throws -> RedisConnection {
        while true {
            let now = ContinuousClock.now
            let next = state.withLock { s -> Next in
                if s.closed { return .fail(SOPError(.invalidState, "redis client for \(configuration.address) is closed")) }
                switch s.slots[i] {
                case .ready(let c):
                    if c.channel.isActive { return .use(c) }
                    // Dropped: reconnect at once (the back-off is for failed attempts).
                    return startConnecting(&s, slot: i, failures: 0)
                case .connecting(let t, _):
                    return .wait(t)
                case .idle(let failures, let retryAt, let lastError):
                    if let retryAt, retryAt > now {
                        let wait = retryAt - now
                        if wait <= configuration.commandTimeout { return .sleep(wait) }
                        return .fail(lastError ?? SOPError(.io, "cannot connect to redis at \(configuration.address)"))
                    }
                    return startConnecting(&s, slot: i, failures: failures)
                }
            }
            switch next {
            case .use(let c): return c
            case .wait(let t): return try await t.value
            case .sleep(let d): try await Task.sleep(for: d)
            case .fail(let e): throw e
            }
        }
    }

    private func startConnecting(_ s: inout PoolState, slot i: Int, failures: Int) -> Next {
        let task = Task { () async throws -> RedisConnection in
            do {
                let c = try await self.openConnection()
                let closed = self.state.withLock { s -> Bool in
                    if s.closed { return true }
                    s.slots[i] = .ready(c)
                    return false
                }
                if closed {
                    c.channel.close(promise: nil)
                    throw SOPError(.invalidState, "redis client for \(self.configuration.address) is closed")
                }
                return c
            } catch {
                let e = error as? SOPError ?? SOPError(.io, "cannot connect to redis at \(self.configuration.address): \(error)")
                let backoff = self.backoff(afterFailures: failures + 1)
                self.state.withLock { s in
                    if !s.closed {
                        s.slots[i] = .idle(failures: failures + 1, retryAt: ContinuousClock.now + backoff, lastError: e)
                    }
                }
                throw e
            }
        }
        s.slots[i] = .connecting(task, failures: failures)
        return .wait(task)
    }

    private func backoff(afterFailures n: Int) -> Duration {
        var d = configuration.reconnectBackoff
        for _ in 1..<max(1, min(n, 30)) {
            d = d * 2
            if d >= configuration.maxReconnectBackoff { return configuration.maxReconnectBackoff }
        }
        return min(d, configuration.maxReconnectBackoff)
    }

    private func openConnection() async throws -> RedisConnection {
        let config = configuration
        let address = config.address
        let decoder = RESPDecoder()
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.nanoseconds(config.connectTimeout.sopMilliseconds * 1_000_000))
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPMessageDecoder(decoder: decoder)))
                    try channel.pipeline.syncOperations.addHandler(RESPChannelHandler(address: address))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: config.host, port: config.port).get()
        } catch {
            throw SOPError(.io, "cannot connect to redis at \(address): \(describeNetworkError(error))")
        }
        let connection = RedisConnection(channel: channel)
        do {
            try await handshake(connection)
        } catch {
            channel.close(promise: nil)
            throw error
        }
        return connection
    }

    /// HELLO 3 (with credentials) when RESP3 is wanted, falling back to RESP2 on servers that
    /// do not know HELLO; otherwise AUTH. Then SELECT.
    private func handshake(_ c: RedisConnection) async throws {
        let config = configuration
        func run(_ args: [String]) async throws -> RESPValue {
            var b = ByteBuffer()
            RESPEncoder.writeCommand(args, into: &b)
            return try await c.execute(b, count: 1, name: args[0], timeout: config.commandTimeout)[0]
        }
        func authFailed(_ m: String) -> SOPError {
            SOPError(.io, "redis authentication failed at \(config.address): \(m)")
        }
        var authenticated = config.password == nil
        if config.useRESP3 {
            var hello = ["HELLO", "3"]
            if let password = config.password { hello += ["AUTH", config.user ?? "default", password] }
            let reply = try await run(hello)
            if let m = reply.errorMessage {
                if m.hasPrefix("ERR unknown command") || m.hasPrefix("NOPROTO") {
                    // Redis before 6 (or RESP3 disabled): stay on RESP2.
                } else if m.hasPrefix("WRONGPASS") || m.hasPrefix("NOAUTH") || m.contains("AUTH") {
                    throw authFailed(m)
                } else {
                    throw SOPError(.io, "redis error: \(m)")
                }
            } else {
                authenticated = true
            }
        }
        if !authenticated, let password = config.password {
            let args = config.user.map { ["AUTH", $0, password] } ?? ["AUTH", password]
            let reply = try await run(args)
            if let m = reply.errorMessage { throw authFailed(m) }
        }
        if config.database != 0 {
            let reply = try await run(["SELECT", String(config.database)])
            if let m = reply.errorMessage {
                throw SOPError(.io, "cannot select redis database \(config.database) at \(config.address): \(m)")
            }
        }
    }
}

/// One pooled channel.
final class RedisConnection: Sendable {
    let channel: any Channel

    init(channel: any Channel) {
        self.channel = channel
    }

    func execute(_ buffer: ByteBuffer, count: Int, name: String, timeout: Duration) async throws -> [RESPValue] {
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        let request = RedisRequest(buffer: buffer, count: count, name: name, timeout: timeout, promise: promise)
        let written = channel.eventLoop.makePromise(of: Void.self)
        // A write that never reached the handler (the channel closed first) must not leave
        // the caller waiting; failing an already completed promise is a no-op.
        written.futureResult.whenFailure { e in
            promise.fail(SOPError(.io, "redis command \(request.name) failed: \(describeNetworkError(e))"))
        }
        channel.writeAndFlush(request, promise: written)
        return try await promise.futureResult.get()
    }
}

extension NIOConnectionError: NIOConnectionErrorDescribing {
    var shortDescription: String {
        if let e = dnsAError ?? dnsAAAAError { return "cannot resolve \(host) (\(e))" }
        if let first = connectionErrors.first { return describeNetworkError(first.error) }
        return "no address for \(host)"
    }
}
