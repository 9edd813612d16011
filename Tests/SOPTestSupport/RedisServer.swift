import Foundation
import SOPCore

#if canImport(Glibc)
import Glibc
#endif

/// Shared by the Redis and clustered-mode test targets.
///
/// A private `redis-server` child process on a free loopback port, for one test.
///
/// The integration tests need the real server; when `redis-server` is not installed they fail
/// (rather than skip) with a message saying how to install it.
public final class RedisServer: @unchecked Sendable {
    public let port: Int
    public let extraArgs: [String]
    private var process: Process?
    private let lock = NSLock()

    public struct Missing: Error, CustomStringConvertible {
        public var description: String {
            "redis-server is not on PATH: install it (`apt-get update && apt-get install -y redis-server`) to run the Redis and clustered-mode integration tests"
        }
    }

    public struct StartFailure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public static let executable: String? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
        for d in dirs where FileManager.default.isExecutableFile(atPath: d + "/redis-server") {
            return d + "/redis-server"
        }
        return nil
    }()

    public var url: String { "redis://127.0.0.1:\(port)" }

    private init(port: Int, extraArgs: [String]) {
        self.port = port
        self.extraArgs = extraArgs
    }

    /// Starts a server on a free port (retrying on another port if the one picked was taken).
    public static func start(_ extraArgs: [String] = []) throws -> RedisServer {
        guard executable != nil else { throw Missing() }
        var lastError: (any Error)?
        for _ in 0..<5 {
            let server = RedisServer(port: try freePort(), extraArgs: extraArgs)
            do {
                try server.launch()
                return server
            } catch {
                lastError = error
            }
        }
        throw lastError ?? StartFailure(description: "cannot start redis-server")
    }

    /// Starts the server again on the same port (after ``kill()``).
    public func restart() throws {
        try launch()
    }

    private func launch() throws {
        guard let exe = RedisServer.executable else { throw Missing() }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = [
            "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", NSTemporaryDirectory(), "--enable-debug-command", "local",
            "--loglevel", "warning",
        ] + extraArgs
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        lock.withLock { process = p }
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if !p.isRunning {
                throw StartFailure(description: "redis-server exited with status \(p.terminationStatus) on port \(port)")
            }
            if RedisServer.answersPing(port: port) { return }
            usleep(10_000)
        }
        kill()
        throw StartFailure(description: "redis-server on port \(port) did not answer PING within 10 s")
    }

    /// SIGKILL, and wait for the process to go.
    public func kill() {
        let p = lock.withLock { () -> Process? in
            defer { process = nil }
            return process
        }
        guard let p else { return }
        if p.isRunning {
            Glibc.kill(p.processIdentifier, SIGKILL)
        }
        p.waitUntilExit()
    }

    deinit { kill() }

    /// A free TCP port on 127.0.0.1 (bound to port 0, read back, released).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw StartFailure(description: "socket() failed") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, len) == 0 && getsockname(fd, sa, &len) == 0
            }
        }
        guard ok else { throw StartFailure(description: "cannot bind a free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// True when something on `port` answers a RESP PING (a +PONG or an error such as NOAUTH).
    public static func answersPing(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else { return false }
        let ping = Array("PING\r\n".utf8)
        guard write(fd, ping, ping.count) == ping.count else { return false }
        var buf = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &buf, buf.count)
        return n > 0 && (buf[0] == UInt8(ascii: "+") || buf[0] == UInt8(ascii: "-"))
    }
}

/// Runs `body` with a private server, killing it afterwards whatever happens.
public func withRedisServer<T>(_ extraArgs: [String] = [], _ body: (RedisServer) async throws -> T) async throws -> T {
    let server = try RedisServer.start(extraArgs)
    defer { server.kill() }
    return try await body(server)
}

/// Runs `body` and returns the `SOPError` it threw (fails the test if it threw something else
/// or nothing).
public func sopError(_ body: () async throws -> Void) async -> SOPError? {
    do {
        try await body()
        return nil
    } catch let e as SOPError {
        return e
    } catch {
        return SOPError(.internalError, "not a SOPError: \(error)")
    }
}
