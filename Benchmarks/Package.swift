// swift-tools-version:6.0
import PackageDescription

// The benchmark of SOP for Swift against SQLite and LMDB (see /README.md, "Benchmark").
// A separate package so that only the benchmark links the C libraries.
let package = Package(
    name: "SOPBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "SOP", path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3",
                       providers: [.apt(["libsqlite3-dev"]), .brew(["sqlite"])]),
        .systemLibrary(name: "CLMDB", providers: [.apt(["liblmdb-dev"]), .brew(["lmdb"])]),
        // The workload's data and its seeded generator, shared by both executables.
        .target(name: "BenchData"),
        .executableTarget(
            name: "sop-bench",
            dependencies: [
                "BenchData",
                .product(name: "SOP", package: "SOP"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                "CSQLite", "CLMDB",
            ]),
        .executableTarget(
            name: "sop-prof",
            dependencies: ["BenchData", .product(name: "SOP", package: "SOP")]),
    ]
)
