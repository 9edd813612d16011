import ArgumentParser
import SOP
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Global options (`--db`, `--redis`) are taken out of the arguments before the subcommand is parsed,
/// so they may stand anywhere: `sop --db ./demo get people '"ada"'`.
struct Global {
    nonisolated(unsafe) static var db: String?
    /// `--redis URL`: clustered mode.
    nonisolated(unsafe) static var redis: String?
}

@main
struct Main {
    static func main() async {
        var args = Array(CommandLine.arguments.dropFirst())
        do {
            Global.db = try takeOption("--db", from: &args)
            Global.redis = try takeOption("--redis", from: &args)
            var command = try SOPCommand.parseAsRoot(args)
            if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
            exit(0)
        } catch let e as SOPError {
            fail(e.description)
        } catch let e as CLIExit {
            exit(e.code)
        } catch {
            let code = SOPCommand.exitCode(for: error)
            if code == .success {
                print(SOPCommand.fullMessage(for: error))
                exit(0)
            }
            let message = SOPCommand.message(for: error)
            if message.lowercased().hasPrefix("usage") || message.isEmpty {
                print(SOPCommand.fullMessage(for: error))
                exit(code.rawValue)
            }
            fail(message.split(separator: "\n").first.map(String.init) ?? message, code: code.rawValue == 0 ? 1 : code.rawValue)
        }
    }

    static func takeOption(_ name: String, from args: inout [String]) throws -> String? {
        var value: String?
        var i = 0
        while i < args.count {
            if args[i] == "--" { break }
            if args[i] == name {
                guard i + 1 < args.count else { throw SOPError(.invalidArgument, "\(name) needs a value") }
                value = args[i + 1]
                args.removeSubrange(i...(i + 1))
                continue
            }
            if args[i].hasPrefix(name + "=") {
                value = String(args[i].dropFirst(name.count + 1))
                args.remove(at: i)
                continue
            }
            i += 1
        }
        return value
    }
}

/// Ends the process with a code after output was already written.
struct CLIExit: Error {
    var code: Int32
}

/// Prints one `error:` line to stderr and exits.
func fail(_ message: String, code: Int32 = 1) -> Never {
    let line = "error: " + message.replacingOccurrences(of: "\n", with: " ") + "\n"
    writeFD(2, line)
    exit(code)
}

/// Writes a line to stdout and flushes it (crash tests read it while the process runs).
func emit(_ line: String) {
    writeFD(1, line + "\n")
}

/// Writes a whole string to a file descriptor (unbuffered: nothing is lost on exit or kill).
func writeFD(_ fd: Int32, _ s: String) {
    var bytes = Array(s.utf8)
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
        if n < 0 { if errno == EINTR { continue }; return }
        off += n
    }
}
