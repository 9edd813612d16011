/// The one error type SOP throws at its API boundary: a ``Code`` and a human-readable message.
///
/// Every bad input (a bad store name, a slot length out of range, a key type that does not
/// match the store, a corrupt file, a missing database) is reported with one of these and
/// changes nothing on disk.
public struct SOPError: Error, Sendable, CustomStringConvertible, Equatable {
    /// What kind of failure this is.
    public enum Code: String, Sendable, Codable, Equatable {
        /// An argument is out of bounds or malformed (names, slot lengths, options, JSON text).
        case invalidArgument
        /// A database, store or item does not exist.
        case notFound
        /// A store or (in a unique store) a key already exists.
        case alreadyExists
        /// A store was opened with key or value types other than the ones it was created with.
        case typeMismatch
        /// Another transaction changed what this one read or wrote; re-running it may succeed.
        case conflict
        /// A file failed its checksum, is truncated, or cannot be decoded.
        case corrupt
        /// An operating-system I/O call failed.
        case io
        /// Another process owns this standalone database.
        case databaseLocked
        /// The database's format version is not one this build can read.
        case unsupportedFormat
        /// The transaction was used in a state that does not allow the call (ended, read-only, ...).
        case invalidState
        /// The transaction ran past its maximum duration.
        case timeout
        /// An internal invariant was violated: a bug in SOP.
        case internalError
    }

    /// What kind of failure this is.
    public var code: Code
    /// A one-line explanation meant for a person.
    public var message: String
    /// The file involved, when there is one (corrupt data, I/O errors).
    public var path: String?

    /// Makes an error.
    public init(_ code: Code, _ message: String, path: String? = nil) {
        self.code = code
        self.message = message
        self.path = path
    }

    /// True for failures that re-running the transaction may cure (``Code/conflict``).
    public var isRetryable: Bool { code == .conflict }

    public var description: String {
        if let path, !message.contains(path) { return "\(message) (\(path))" }
        return message
    }
}
