import NIOCore
import SOPCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A batch of encoded commands written together, answered by `count` replies in order.
struct RedisRequest: Sendable {
    var buffer: ByteBuffer
    var count: Int
    /// The first command's name, for error messages.
    var name: String
    var timeout: Duration
    var promise: EventLoopPromise<[RESPValue]>
}

/// Frames inbound bytes into ``RESPValue``s.
struct RESPMessageDecoder: ByteToMessageDecoder {
    typealias InboundOut = RESPValue
    let decoder: RESPDecoder

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let value = try decoder.decode(&buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(value))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}

/// Matches replies to requests: a FIFO of pending requests, each completed when its replies
/// have all arrived (Redis answers in the order commands were sent), many in flight at once.
///
/// A request that outlives its timeout fails with a timeout error and the connection is
/// closed: its reply may still come, and a connection whose next reply belongs to a
/// forgotten command cannot be trusted. Every request still pending when the connection
/// closes fails with an error naming the command and the reason.
final class RESPChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        let id: UInt64
        var remaining: Int
        var replies: [RESPValue]
        let promise: EventLoopPromise<[RESPValue]>
        let name: String
        var timer: Scheduled<Void>?
    }

    private let address: String
    private var queue = CircularBuffer<Pending>()
    private var nextID: UInt64 = 0
    /// Set once the connection is going away: why, for every later request.
    private var failure: String?
    private var context: ChannelHandlerContext?

    init(address: String) {
        self.address = address
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll(failure ?? "the connection was closed")
        self.context = nil
    }

    private func error(for name: String, _ why: String) -> SOPError {
        SOPError(.io, "redis command \(name) failed: connection to \(address) \(why)")
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if let failure {
            let e = error(for: request.name, failure)
            request.promise.fail(e)
            promise?.fail(e)
            return
        }
        guard request.count > 0 else {
            request.promise.succeed([])
            promise?.succeed(())
            return
        }
        nextID &+= 1
        let id = nextID
        let timer = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(request.timeout.sopMilliseconds) * 1_000_000)) {
            self.timedOut(id, after: request.timeout)
        }
        var replies: [RESPValue] = []
        replies.reserveCapacity(request.count)
        queue.append(Pending(id: id, remaining: request.count, replies: replies, promise: request.promise, name: request.name, timer: timer))
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenComplete { result in
            if case .failure(let e) = result {
                // A stream that lost bytes cannot be matched to replies any more.
                self.shutDown("failed a write (\(describeNetworkError(e)))")
            }
        }
        written.futureResult.cascade(to: promise)
        context.write(wrapOutboundOut(request.buffer), promise: written)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        if case .push = value { return }  // out-of-band (RESP3): not a reply to a command
        guard !queue.isEmpty else {
            shutDown("sent a reply no command was waiting for")
            return
        }
        queue[queue.startIndex].replies.append(value)
        queue[queue.startIndex].remaining -= 1
        if queue[queue.startIndex].remaining == 0 {
            let done = queue.removeFirst()
            done.timer?.cancel()
            done.promise.succeed(done.replies)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(failure ?? "was lost")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let e = error as? SOPError {
            shutDown("sent bad data: \(e.message)")
        } else {
            shutDown("was lost (\(describeNetworkError(error)))")
        }
    }

    private func timedOut(_ id: UInt64, after timeout: Duration) {
        guard let i = queue.firstIndex(where: { $0.id == id }) else { return }
        let p = queue[i]
        p.promise.fail(SOPError(.io, "redis command \(p.name) timed out after \(timeout.sopText)"))
        shutDown("was closed because command \(p.name) timed out after \(timeout.sopText)")
    }

    private func shutDown(_ why: String) {
        if failure == nil { failure = why }
        failAll(failure ?? why)
        context?.close(promise: nil)
    }

    private func failAll(_ why: String) {
        if failure == nil { failure = why }
        while let p = queue.popFirst() {
            p.timer?.cancel()
            p.promise.fail(error(for: p.name, why))
        }
    }
}

/// A short reason for a network error: the OS's words where there are some.
func describeNetworkError(_ error: any Error) -> String {
    if let e = error as? IOError {
        return lowercasedFirst(String(cString: strerror(e.errnoCode)))
    }
    if let e = error as? ChannelError {
        switch e {
        case .connectTimeout(let t): return "connect timed out after \(t.nanoseconds / 1_000_000) ms"
        case .ioOnClosedChannel, .alreadyClosed, .outputClosed, .inputClosed: return "the connection is closed"
        case .eof: return "the server closed the connection"
        default: return "\(e)"
        }
    }
    if let e = error as? any NIOConnectionErrorDescribing {
        return e.shortDescription
    }
    return "\(error)"
}

private func lowercasedFirst(_ s: String) -> String {
    guard let f = s.first else { return s }
    return f.lowercased() + s.dropFirst()
}

protocol NIOConnectionErrorDescribing {
    var shortDescription: String { get }
}
