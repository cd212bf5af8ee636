//! The shared node id vectors, through the exported Rust functions (the same ones the foreign
//! languages call), plus the worst inputs we could think of: each must be a typed error.

use flotilla::{node_id_from_seed, FlotillaError, PolicyLimits, SignerConfig};

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("vector file holds hex"))
        .collect()
}

fn vectors() -> Vec<(Vec<u8>, String)> {
    include_str!("vectors/node_id.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let seed = hex_decode(parts.next().expect("seed column"));
            let id = parts.next().expect("node id column").to_string();
            (seed, id)
        })
        .collect()
}

#[test]
fn node_id_vectors() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 5);
    for (seed, id) in vectors {
        assert_eq!(node_id_from_seed(seed.clone()).expect("valid seed"), id);
        let cfg = SignerConfig::new(seed, "https://h.example".into(), PolicyLimits::default())
            .expect("valid config");
        assert_eq!(cfg.node_id(), id);
    }
}

#[test]
fn worst_inputs_are_typed_errors() {
    // 64 MiB seed.
    let huge = vec![0u8; 64 << 20];
    assert!(matches!(
        node_id_from_seed(huge),
        Err(FlotillaError::InvalidSeed(_))
    ));
    let url = format!("https://{}.example/\0", "x".repeat(1 << 20));
    assert!(matches!(
        SignerConfig::new(vec![0; 32], url, PolicyLimits::default()),
        Err(FlotillaError::InvalidHostUrl(_))
    ));
    for bad in [i64::MIN, -1, i64::MAX] {
        let limits = PolicyLimits {
            max_fee_sat: Some(bad),
            ..Default::default()
        };
        assert!(matches!(
            SignerConfig::new(vec![0; 32], "https://h.example".into(), limits),
            Err(FlotillaError::InvalidLimit(_))
        ));
    }
}

#[test]
fn limits_round_trip() {
    let limits = PolicyLimits {
        max_payment_msat: Some(5_000),
        max_outgoing_msat_per_hour: None,
        max_fee_sat: Some(0),
    };
    let cfg = SignerConfig::new(vec![9; 32], "http://127.0.0.1:1".into(), limits.clone())
        .expect("valid config");
    assert_eq!(cfg.limits(), limits);
    assert_eq!(cfg.host_url(), "http://127.0.0.1:1");
}
