// The public face of SOP includes the core types (errors, IDs, options, JSONValue).
@_exported import SOPCore
