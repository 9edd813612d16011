// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "SOP",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "SOP", targets: ["SOP"]),
        .executable(name: "sop", targets: ["SOPCLI"]),
    ],
    dependencies: [
        // Command-line parsing for the `sop` tool (apple/, listed in the README).
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // Event-loop networking for the Redis adapter's RESP client (SOPRedis only).
        .package(url: "https://github.com/apple/swift-nio", from: "2.65.0"),
    ],
    targets: [
        .target(name: "SOPCore", swiftSettings: strict),
        .target(name: "SOPBTree", dependencies: ["SOPCore", "CSOPHints"], swiftSettings: strict),
        // CRC-32C with the CPU's instructions (SSE 4.2, ARMv8 CRC32), picked at run time.
        .target(name: "CSOPCRC32C"),
        // A cache-line prefetch hint (no Swift equivalent), used by range scans to overlap the
        // memory misses of the leaves ahead with the work on the current one.
        .target(name: "CSOPHints"),
        .target(name: "SOPFileSystem", dependencies: ["SOPCore", "CSOPCRC32C"], swiftSettings: strict),
        .target(name: "SOPInMemory", dependencies: ["SOPCore"], swiftSettings: strict),
        .target(
            name: "SOPRedis",
            dependencies: [
                "SOPCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .target(name: "SOP", dependencies: ["SOPCore", "SOPBTree", "CSOPHints", "SOPFileSystem", "SOPInMemory", "SOPRedis"], swiftSettings: strict),
        .executableTarget(
            name: "SOPCLI",
            dependencies: ["SOP", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict),
        .testTarget(name: "SOPCoreTests", dependencies: ["SOPCore"], swiftSettings: strict),
        .testTarget(name: "SOPBTreeTests", dependencies: ["SOPBTree"], swiftSettings: strict),
        .testTarget(name: "SOPFileSystemTests", dependencies: ["SOPFileSystem"], swiftSettings: strict),
        .testTarget(name: "SOPTests", dependencies: ["SOP", "SOPInMemory", "SOPFileSystem"], swiftSettings: strict),
        .testTarget(
            name: "SOPRedisTests",
            dependencies: [
                "SOPRedis", "SOPCore", "SOPTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .testTarget(name: "SOPCLITests", dependencies: ["SOP", "SOPCLI", "SOPTestSupport"], swiftSettings: strict),
        // Clustered mode: real `sop` processes on one folder with private redis-servers.
        .testTarget(name: "SOPClusterTests", dependencies: ["SOP", "SOPCLI", "SOPRedis", "SOPCore", "SOPTestSupport"],
                    swiftSettings: strict),
        // Helpers shared by test targets (a private redis-server per test); not a product.
        .target(name: "SOPTestSupport", dependencies: ["SOPCore"], path: "Tests/SOPTestSupport", swiftSettings: strict),
    ]
)
