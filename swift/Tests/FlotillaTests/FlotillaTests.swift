import Foundation
import XCTest
import Flotilla
import flotillaFFI

/// The shared node id vectors and the validating SignerConfig constructor, from Swift.
final class FlotillaTests: XCTestCase {
    let url = "https://host.example:9735"
    let maxMsat: Int64 = 21_000_000 * 100_000_000 * 1000
    let maxSat: Int64 = 21_000_000 * 100_000_000

    func hexData(_ hex: String) -> Data {
        let chars = Array(hex.utf8)
        var data = Data()
        var i = 0
        while i + 1 < chars.count {
            data.append(UInt8(String(decoding: chars[i...i + 1], as: UTF8.self), radix: 16)!)
            i += 2
        }
        return data
    }

    func vectors() throws -> [(Data, String)] {
        // swift/Tests/FlotillaTests/FlotillaTests.swift -> repository root.
        let root = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let file = root.appendingPathComponent("bindings/tests/vectors/node_id.txt")
        return try String(contentsOf: file, encoding: .utf8)
            .split(separator: "\n")
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
            .map { line in
                let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                return (hexData(String(parts[0])), String(parts[1]))
            }
    }

    func testZeroSeedKnownValue() throws {
        XCTAssertEqual(
            try nodeIdFromSeed(seed: Data(count: 32)),
            "027f921585f2ac0c7c70e36110adecfd8fd14b8a99bfb3d000a283fcac358fce88")
    }

    func testSharedVectors() throws {
        let vectors = try self.vectors()
        XCTAssertGreaterThanOrEqual(vectors.count, 5)
        for (seed, expected) in vectors {
            XCTAssertEqual(try nodeIdFromSeed(seed: seed), expected)
        }
    }

    func testWrongLengthsThrowInvalidSeed() {
        for len in [0, 1, 31, 33, 64, 64 << 20] {
            XCTAssertThrowsError(try nodeIdFromSeed(seed: Data(count: len))) { error in
                guard let e = error as? FlotillaError, case .InvalidSeed = e else {
                    return XCTFail("length \(len): unexpected \(error)")
                }
            }
        }
    }

    func testValidConfig() throws {
        let limits = PolicyLimits(maxPaymentMsat: 1_000, maxOutgoingMsatPerHour: maxMsat, maxFeeSat: 0)
        let cfg = try SignerConfig(seed: hexData(String(repeating: "01", count: 32)), hostUrl: url, limits: limits)
        XCTAssertEqual(cfg.nodeId(), "0355f8d2238a322d16b602bd0ceaad5b01019fb055971eaadcc9b29226a4da6c23")
        XCTAssertEqual(cfg.hostUrl(), url)
        XCTAssertEqual(cfg.limits(), limits)
    }

    func testBadUrlsThrowInvalidHostUrl() {
        let huge = "https://" + String(repeating: "x", count: 1 << 20) + ".example/\u{0}"
        for bad in ["", "host.example", "ftp://host.example", "https://", "https://u:p@host.example",
                    "https://host.example:99999", " https://host.example", huge] {
            XCTAssertThrowsError(try SignerConfig(seed: Data(count: 32), hostUrl: bad, limits: PolicyLimits())) { error in
                guard let e = error as? FlotillaError, case .InvalidHostUrl = e else {
                    return XCTFail("unexpected \(error)")
                }
            }
        }
    }

    func testNegativeAndAbsurdLimitsThrowInvalidLimit() {
        let bad = [
            PolicyLimits(maxPaymentMsat: -1),
            PolicyLimits(maxOutgoingMsatPerHour: Int64.min),
            PolicyLimits(maxFeeSat: -5),
            PolicyLimits(maxPaymentMsat: maxMsat + 1),
            PolicyLimits(maxOutgoingMsatPerHour: Int64.max),
            PolicyLimits(maxFeeSat: maxSat + 1),
        ]
        for limits in bad {
            XCTAssertThrowsError(try SignerConfig(seed: Data(count: 32), hostUrl: url, limits: limits)) { error in
                guard let e = error as? FlotillaError, case .InvalidLimit = e else {
                    return XCTFail("\(limits): unexpected \(error)")
                }
            }
        }
    }

    /// A null buffer that claims 8 bytes, handed straight to the C entry point, trips an assertion
    /// inside Rust: a real panic. It must come back as an error status, not abort the process.
    func testRustPanicIsReportedNotFatal() throws {
        var status = RustCallStatus()
        _ = uniffi_flotilla_fn_func_node_id_from_seed(RustBuffer(capacity: 8, len: 8, data: nil), &status)
        XCTAssertEqual(status.code, 2, "expected CALL_UNEXPECTED_ERROR")
        XCTAssertEqual(try nodeIdFromSeed(seed: Data(count: 32)).count, 66)
    }
}
