#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SOPCore

/// A small pool of dedicated OS threads that run blocking work (file I/O, `fsync`) so it never
/// occupies a thread of Swift's cooperative pool (which has one thread per core).
///
/// Jobs run in FIFO order on whichever worker is free. Each ``run(_:)`` call suspends the
/// calling task and resumes it with the closure's result or error.
public final class BlockingIOPool: Sendable {
    /// The process-wide pool (4 threads) the file-system backend uses.
    public static let shared = BlockingIOPool(threads: 4, name: "sop-io")

    private let queue: JobQueue

    /// Starts `threads` worker threads (at least 1) named `name-<n>` (names are cut to 15
    /// bytes on Linux).
    public init(threads: Int, name: String) {
        queue = JobQueue()
        for i in 0..<max(1, threads) {
            JobQueue.startWorker(queue, name: "\(name)-\(i)")
        }
    }

    deinit {
        // Workers finish the jobs already queued, then exit.
        queue.shutdown()
    }

    /// Runs `body` on a pool thread and returns its result (or rethrows its error).
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            queue.enqueue {
                continuation.resume(with: Result { try body() })
            }
        }
    }
}

/// The FIFO of jobs shared by the workers of one pool.
///
/// `@unchecked Sendable`: `jobs`, `head` and `stopping` are only touched with `mutex` held,
/// and the mutex and condition variable live at fixed heap addresses for the queue's lifetime.
final class JobQueue: @unchecked Sendable {
    typealias Job = @Sendable () -> Void

    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var jobs: [Job?] = []
    private var head = 0
    private var stopping = false

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func enqueue(_ job: @escaping Job) {
        pthread_mutex_lock(mutex)
        jobs.append(job)
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    func shutdown() {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// The next job, waiting for one; `nil` once the queue is shut down and empty.
    private func next() -> Job? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while head == jobs.count {
            if stopping { return nil }
            pthread_cond_wait(condition, mutex)
        }
        let job = jobs[head]
        jobs[head] = nil
        head += 1
        if head == jobs.count {
            jobs.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024 && head * 2 >= jobs.count {
            jobs.removeFirst(head)
            head = 0
        }
        return job
    }

    private func workLoop(name: String) {
        #if os(Linux)
        // Glibc's module map hides pthread_setname_np (_GNU_SOURCE); this is what it does.
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        if fd >= 0 {
            let bytes = Array(name.utf8.prefix(15))
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
        #elseif canImport(Darwin)
        _ = pthread_setname_np(name)
        #endif
        while let job = next() { job() }
    }

    /// What a new thread receives: the queue (retained) and its name.
    private final class Start {
        let queue: JobQueue
        let name: String
        init(queue: JobQueue, name: String) {
            self.queue = queue
            self.name = name
        }
    }

    /// Starts one detached worker thread serving `queue`.
    static func startWorker(_ queue: JobQueue, name: String) {
        let context = Unmanaged.passRetained(Start(queue: queue, name: name)).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        defer { pthread_attr_destroy(&attributes) }
        #if canImport(Glibc)
        var thread = pthread_t()
        #else
        var thread: pthread_t?
        #endif
        let rc = pthread_create(&thread, &attributes, { raw in
            #if canImport(Glibc)
            let start = Unmanaged<Start>.fromOpaque(raw!).takeRetainedValue()
            #else
            let start = Unmanaged<Start>.fromOpaque(raw).takeRetainedValue()
            #endif
            start.queue.workLoop(name: start.name)
            return nil
        }, context)
        if rc != 0 {
            Unmanaged<Start>.fromOpaque(context).release()
            fatalError("BlockingIOPool: pthread_create failed: \(errorText(rc))")
        }
    }
}
