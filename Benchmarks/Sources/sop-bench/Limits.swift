import BenchData
import Foundation
import SOP

/// Seconds of a monotonic clock.
@inline(__always)
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Allocated bytes (st_blocks * 512) of every file under `path`.
func allocatedBytes(_ path: String) -> Int64 {
    var total: Int64 = 0
    var st = stat()
    guard lstat(path, &st) == 0 else { return 0 }
    total += Int64(st.st_blocks) * 512
    if (st.st_mode & S_IFMT) == S_IFDIR, let names = try? FileManager.default.contentsOfDirectory(atPath: path) {
        for n in names { total += allocatedBytes(path + "/" + n) }
    }
    return total
}

/// This process's `write_bytes` from /proc/self/io (bytes it caused to be sent to storage), or nil.
func processWriteBytes() -> Int64? {
    guard let text = try? String(contentsOfFile: "/proc/self/io", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("write_bytes:") {
        return Int64(line.dropFirst("write_bytes:".count).trimmingCharacters(in: .whitespaces))
    }
    return nil
}

func median(_ xs: [Double]) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func percentile(_ xs: [Double], _ p: Double) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    let i = Int((p / 100 * Double(s.count)).rounded(.up)) - 1
    return s[min(max(i, 0), s.count - 1)]
}

struct MachineLimits {
    var fsyncMedianMs: Double?
    var seqBytes: Int = 0
    var seqMBps: Double?
    var nodeItems = 0
    var nodeBytes = 0
    var encodeNodesPerSec: Double?
    var decodeNodesPerSec: Double?
    var stringScanPerSec: Double?
}

/// Median latency of `pwrite` of 4 KiB at offset 0 + `fdatasync`, 200 times, in ms.
func measureFsync(dir: String) throws -> Double {
    let path = dir + "/fsync-probe"
    let fd = Foundation.open(path, O_CREAT | O_RDWR | O_TRUNC, 0o644)
    guard fd >= 0 else { throw BenchError("open \(path): errno \(errno)") }
    defer { Foundation.close(fd); unlink(path) }
    var buf = [UInt8](repeating: 0xA5, count: 4096)
    guard pwrite(fd, &buf, 4096, 0) == 4096, fsync(fd) == 0 else { throw BenchError("fsync probe: errno \(errno)") }
    var lat: [Double] = []
    for i in 0..<200 {
        buf[0] = UInt8(truncatingIfNeeded: i)
        let t0 = now()
        guard pwrite(fd, &buf, 4096, 0) == 4096, fdatasync(fd) == 0 else { throw BenchError("fsync probe: errno \(errno)") }
        lat.append((now() - t0) * 1000)
    }
    return median(lat)
}

/// Writes `bytes` sequentially in 1 MiB writes, one fsync at the end; MB/s (10^6 bytes).
func measureSequential(dir: String, bytes: Int) throws -> Double {
    let path = dir + "/seq-probe"
    let fd = Foundation.open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
    guard fd >= 0 else { throw BenchError("open \(path): errno \(errno)") }
    defer { Foundation.close(fd); unlink(path) }
    var rng = SplitMix64(seed: 1)
    let chunk = rng.bytes(1 << 20)
    let t0 = now()
    var left = bytes
    while left > 0 {
        let n = min(left, chunk.count)
        let w = chunk.withUnsafeBytes { write(fd, $0.baseAddress, n) }
        guard w == n else { throw BenchError("sequential write: errno \(errno)") }
        left -= n
    }
    guard fsync(fd) == 0 else { throw BenchError("fsync: errno \(errno)") }
    return Double(bytes) / (now() - t0) / 1e6
}

/// Encode and decode rate of one full leaf of `slotLength` items (16-byte string keys,
/// 100-byte string values, as the workload stores them) with SOP's `NodeCodec`.
func measureCodec(slotLength: Int, ds: Dataset) throws -> (items: Int, bytes: Int, enc: Double, dec: Double) {
    var rng = SplitMix64(seed: 2)
    var items: [NodeCodec.RawItem] = []
    for i in 0..<slotLength {
        let key = Array(("\"" + Dataset.key(i) + "\"").utf8)
        let value = Array(("\"" + Data(rng.bytes(75)).base64EncodedString() + "\"").utf8)
        items.append(NodeCodec.RawItem(key: key, id: .timeOrdered(), value: .inline(value)))
    }
    let node = NodeCodec.RawNode(id: .random(), items: items)
    let bytes = NodeCodec.encode(node)
    guard try NodeCodec.decode(bytes) == node else { throw BenchError("NodeCodec round trip differs") }
    func rate(_ body: () throws -> Int) rethrows -> Double {
        var iters = 0, sink = 0
        let t0 = now()
        var t = t0
        repeat {
            for _ in 0..<16 { sink &+= try body() }
            iters += 16
            t = now()
        } while t - t0 < 0.5
        if sink == 42 { print("") }
        return Double(iters) / (t - t0)
    }
    let enc = rate { NodeCodec.encode(node).count }
    let dec = try rate { try NodeCodec.decode(bytes).items.count }
    return (slotLength, bytes.count, enc, dec)
}

/// The fastest a scan that hands out Swift `String`s can go on this machine: per item, make
/// the key and the value `String` from their UTF-8 (in one buffer, in order, as a leaf holds
/// them) and compare them with the expected ones, as the scan phase's loop over SOP does (an
/// engine handing out pointers into its pages, like LMDB and SQLite, does neither). Items/s
/// over the first `min(n, 100,000)` items of the dataset, repeated for half a second.
func measureStringScan(ds: Dataset) -> Double {
    let m = min(ds.n, 100_000)
    var buffer: [UInt8] = []
    var ranges: [(key: Range<Int>, value: Range<Int>)] = []
    ranges.reserveCapacity(m)
    for i in 0..<m {
        let k = buffer.count
        buffer.append(contentsOf: ds.keyBytes[i])
        let v = buffer.count
        buffer.append(contentsOf: ds.valueBytes[i])
        ranges.append((k..<v, v..<buffer.count))
    }
    var items = 0, bad = 0
    let t0 = now()
    var t = t0
    repeat {
        buffer.withUnsafeBufferPointer { b in
            for i in 0..<m {
                let key = String(decoding: UnsafeBufferPointer(rebasing: b[ranges[i].key]), as: UTF8.self)
                let value = String(decoding: UnsafeBufferPointer(rebasing: b[ranges[i].value]), as: UTF8.self)
                if key != ds.keys[i] || value != ds.values[i] { bad += 1 }
            }
        }
        items += m
        t = now()
    } while t - t0 < 0.5
    if bad > 0 { print("string scan probe: \(bad) mismatches") }
    return Double(items) / (t - t0)
}
