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
    ],
    targets: [
        .target(name: "SOPCore", swiftSettings: strict),
        .target(name: "SOPBTree", dependencies: ["SOPCore"], swiftSettings: strict),
        .target(name: "SOPFileSystem", dependencies: ["SOPCore"], swiftSettings: strict),
        .target(name: "SOPInMemory", dependencies: ["SOPCore"], swiftSettings: strict),
        .target(name: "SOP", dependencies: ["SOPCore", "SOPBTree", "SOPFileSystem", "SOPInMemory"], swiftSettings: strict),
        .executableTarget(
            name: "SOPCLI",
            dependencies: ["SOP", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict),
        .testTarget(name: "SOPCoreTests", dependencies: ["SOPCore"], swiftSettings: strict),
        .testTarget(name: "SOPBTreeTests", dependencies: ["SOPBTree"], swiftSettings: strict),
        .testTarget(name: "SOPFileSystemTests", dependencies: ["SOPFileSystem"], swiftSettings: strict),
        .testTarget(name: "SOPTests", dependencies: ["SOP", "SOPInMemory", "SOPFileSystem"], swiftSettings: strict),
        .testTarget(name: "SOPCLITests", dependencies: ["SOP", "SOPCLI"], swiftSettings: strict),
    ]
)
