// swift-tools-version:6.0
import PackageDescription

/// NeuMeta Cluster: trains Neural Metamorphosis hypernetworks on a cluster.
///
/// `NeuMeta` (Sources/Shared) is the library both executables import; the `C*` targets are
/// thin system-library shims found through pkg-config (Debian package names in `providers`),
/// except `CAllocationCounter`: counting malloc wrappers that only `neumeta-bench` (target
/// `Benchmarks`) and the tests link, never the library or the product executables.
let package = Package(
    name: "NeuMetaCluster",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "neumeta-coordinator", targets: ["Coordinator"]),
        .executable(name: "neumeta-worker", targets: ["Worker"]),
        .executable(name: "neumeta-bench", targets: ["Benchmarks"]),
        .library(name: "NeuMeta", targets: ["NeuMeta"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),  // 1.16.2: LogHandler.log(event:)
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZeroMQ", path: "Sources/CZeroMQ",  // zmq.h is on the default path; libzmq.pc adds -isystem flags SwiftPM refuses
                       providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(name: "CSodium", path: "Sources/CSodium", pkgConfig: "libsodium",
                       providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "CJPEG", path: "Sources/CJPEG", pkgConfig: "libjpeg",
                       providers: [.apt(["libjpeg-dev"])]),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .target(name: "CAllocationCounter", path: "Sources/CAllocationCounter"),
        .target(
            name: "NeuMeta",
            dependencies: ["COpenBLAS", "CZeroMQ", "CSodium", "CJPEG", "CPNG", "CZlib", .product(name: "Yams", package: "Yams"),
                           .product(name: "Logging", package: "swift-log")],
            path: "Sources/Shared"
        ),
        // What the command-line programs share: BLAS options, progress lines, JSON output.
        .target(
            name: "CommandLineSupport",
            dependencies: ["NeuMeta", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/CommandLineSupport"
        ),
        .executableTarget(
            name: "Coordinator",
            dependencies: ["NeuMeta", "CommandLineSupport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")],
            path: "Sources/Coordinator"
        ),
        .executableTarget(
            name: "Worker",
            dependencies: ["NeuMeta", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")],
            path: "Sources/Worker"
        ),
        // `neumeta-bench`: sgemm, the training steps, SHP, the wire and cluster rounds (docs/benchmarks.md).
        .executableTarget(
            name: "Benchmarks",
            dependencies: ["NeuMeta", "CommandLineSupport", "CSodium", "CAllocationCounter",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/Benchmarks"
        ),
        .testTarget(name: "NeuMetaTests", dependencies: ["NeuMeta", "Benchmarks", "CAllocationCounter", .product(name: "Yams", package: "Yams"),
                                                    .product(name: "Logging", package: "swift-log")], path: "Tests/NeuMetaTests"),
    ]
)
