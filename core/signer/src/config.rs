//! Signer configuration: the seed, the host the signer dials out to, and the policy limits it
//! enforces before signing. Built only through [`SignerConfig::new`], so a value of this type is
//! always valid and the rest of the signer never re-checks it.

use std::fmt;

use bitcoin::secp256k1::PublicKey;

use crate::seed::{self, SeedError, SEED_LEN};

/// All bitcoin that will ever exist, in satoshis; no sane limit exceeds it.
pub const MAX_SAT: u64 = 21_000_000 * 100_000_000;
/// All bitcoin that will ever exist, in millisatoshis.
pub const MAX_MSAT: u64 = MAX_SAT * 1000;
/// Longest host URL accepted; real ones are far shorter, and this bounds what gets parsed.
pub const MAX_URL_LEN: usize = 2048;

/// Which policy limit a [`ConfigError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitField {
    MaxPaymentMsat,
    MaxOutgoingMsatPerHour,
    MaxFeeSat,
}

impl LimitField {
    /// Largest value that still means something for this limit.
    pub fn max(self) -> u64 {
        match self {
            LimitField::MaxPaymentMsat | LimitField::MaxOutgoingMsatPerHour => MAX_MSAT,
            LimitField::MaxFeeSat => MAX_SAT,
        }
    }
}

impl fmt::Display for LimitField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitField::MaxPaymentMsat => "max_payment_msat",
            LimitField::MaxOutgoingMsatPerHour => "max_outgoing_msat_per_hour",
            LimitField::MaxFeeSat => "max_fee_sat",
        })
    }
}

/// Why a [`SignerConfig`] was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error("host URL is not valid: {0}")]
    InvalidHostUrl(String),
    #[error("{field} must not be negative, got {value}")]
    NegativeLimit { field: LimitField, value: i64 },
    #[error("{field} = {value} exceeds the {max} that all bitcoin amounts to")]
    LimitTooLarge {
        field: LimitField,
        value: u64,
        max: u64,
    },
}

/// Spending limits the signer enforces on its own, whatever the host asks. `None` means no limit
/// of that kind; zero is allowed and forbids the action altogether.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyLimits {
    /// Largest single outgoing payment.
    pub max_payment_msat: Option<u64>,
    /// Velocity limit: total outgoing payments over any one-hour window.
    pub max_outgoing_msat_per_hour: Option<u64>,
    /// Largest on-chain fee the signer will sign for.
    pub max_fee_sat: Option<u64>,
}

impl PolicyLimits {
    /// No limit at all is set.
    pub fn is_unlimited(&self) -> bool {
        self.max_payment_msat.is_none()
            && self.max_outgoing_msat_per_hour.is_none()
            && self.max_fee_sat.is_none()
    }

    /// Checks every limit against the total bitcoin supply in its unit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fields = [
            (LimitField::MaxPaymentMsat, self.max_payment_msat),
            (
                LimitField::MaxOutgoingMsatPerHour,
                self.max_outgoing_msat_per_hour,
            ),
            (LimitField::MaxFeeSat, self.max_fee_sat),
        ];
        for (field, value) in fields {
            if let Some(value) = value {
                if value > field.max() {
                    return Err(ConfigError::LimitTooLarge {
                        field,
                        value,
                        max: field.max(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Converts a limit given as a signed integer, for callers whose languages lack unsigned 64-bit
/// integers (Kotlin/Java `Long`, Python `int`); negative values are refused, not wrapped.
pub fn limit_from_i64(field: LimitField, value: Option<i64>) -> Result<Option<u64>, ConfigError> {
    value
        .map(|v| u64::try_from(v).map_err(|_| ConfigError::NegativeLimit { field, value: v }))
        .transpose()
}

/// Checks that `url` is something the signer can dial: `https` (or `http`, for local tests), with
/// a host, and without credentials (the signer authenticates with its node key, never a password
/// embedded in a URL that ends up in logs).
pub fn validate_host_url(url: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidHostUrl(reason.to_string());
    if url.len() > MAX_URL_LEN {
        return Err(bad(&format!("longer than {MAX_URL_LEN} bytes")));
    }
    // The URL standard silently strips or skips some of these; a config should say what it means.
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("contains whitespace or control characters"));
    }
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(bad(&format!(
            "scheme must be https or http, not {:?}",
            parsed.scheme()
        )));
    }
    match parsed.host_str() {
        Some(host) if !host.is_empty() => {}
        _ => return Err(bad("no host")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("credentials are not allowed in the URL"));
    }
    Ok(())
}

/// A validated signer configuration. Fields are private so that every value went through
/// [`SignerConfig::new`].
#[derive(Clone, PartialEq, Eq)]
pub struct SignerConfig {
    seed: [u8; SEED_LEN],
    node_id: PublicKey,
    host_url: String,
    limits: PolicyLimits,
}

impl SignerConfig {
    /// Validates every part (including that the seed derives a node key); the first problem
    /// found is returned.
    pub fn new(seed: &[u8], host_url: &str, limits: PolicyLimits) -> Result<Self, ConfigError> {
        let seed = seed::seed_from_slice(seed)?;
        let node_id = seed::node_public_key(&seed)?;
        validate_host_url(host_url)?;
        limits.validate()?;
        Ok(SignerConfig {
            seed,
            node_id,
            host_url: host_url.to_string(),
            limits,
        })
    }

    pub fn seed(&self) -> &[u8; SEED_LEN] {
        &self.seed
    }

    /// The node's public key, derived once from the seed.
    pub fn node_id(&self) -> PublicKey {
        self.node_id
    }

    pub fn host_url(&self) -> &str {
        &self.host_url
    }

    pub fn limits(&self) -> PolicyLimits {
        self.limits
    }
}

/// Never prints the seed, so a config can be logged.
impl fmt::Debug for SignerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerConfig")
            .field("seed", &"<redacted>")
            .field("node_id", &self.node_id)
            .field("host_url", &self.host_url)
            .field("limits", &self.limits)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://host.example:9735";

    #[test]
    fn valid_config_is_built() {
        let limits = PolicyLimits {
            max_payment_msat: Some(1_000_000),
            max_outgoing_msat_per_hour: Some(MAX_MSAT),
            max_fee_sat: Some(0),
        };
        let cfg = SignerConfig::new(&[3u8; 32], URL, limits).expect("valid");
        assert_eq!(cfg.seed(), &[3u8; 32]);
        assert_eq!(cfg.host_url(), URL);
        assert_eq!(cfg.limits(), limits);
        assert_eq!(
            cfg.node_id().to_string(),
            seed::node_id_from_seed(&[3u8; 32]).expect("node id")
        );
        assert!(!format!("{cfg:?}").contains("3, 3"), "seed leaked in Debug");
    }

    #[test]
    fn bad_seed_is_refused() {
        let err = SignerConfig::new(&[0u8; 31], URL, PolicyLimits::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Seed(SeedError::WrongLength(31))));
    }

    #[test]
    fn good_urls_pass() {
        for url in [
            "https://host.example",
            "https://host.example:443/signer",
            "http://127.0.0.1:50051",
            "https://[::1]:8443",
        ] {
            validate_host_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }

    #[test]
    fn bad_urls_are_refused() {
        let long = format!("https://{}.example", "a".repeat(MAX_URL_LEN));
        for url in [
            "",
            "host.example",
            "host.example:443",
            "ftp://host.example",
            "https://",
            "https://user:pw@host.example",
            "https://host .example",
            "https://host.example\0",
            " https://host.example",
            "https://host.exa\tmple",
            "https://host.example\n",
            "https://[::1",
            "https://host.example:99999",
            "file:///etc/passwd",
            long.as_str(),
        ] {
            match validate_host_url(url) {
                Err(ConfigError::InvalidHostUrl(_)) => {}
                other => panic!("{url:?}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn limits_at_the_bound_pass_and_above_fail() {
        let at_bound = PolicyLimits {
            max_payment_msat: Some(MAX_MSAT),
            max_outgoing_msat_per_hour: Some(MAX_MSAT),
            max_fee_sat: Some(MAX_SAT),
        };
        assert!(at_bound.validate().is_ok());
        let cases = [
            (
                PolicyLimits {
                    max_payment_msat: Some(MAX_MSAT + 1),
                    ..at_bound
                },
                LimitField::MaxPaymentMsat,
            ),
            (
                PolicyLimits {
                    max_outgoing_msat_per_hour: Some(u64::MAX),
                    ..at_bound
                },
                LimitField::MaxOutgoingMsatPerHour,
            ),
            (
                PolicyLimits {
                    max_fee_sat: Some(MAX_SAT + 1),
                    ..at_bound
                },
                LimitField::MaxFeeSat,
            ),
        ];
        for (limits, expected) in cases {
            match SignerConfig::new(&[1u8; 32], URL, limits) {
                Err(ConfigError::LimitTooLarge { field, .. }) => assert_eq!(field, expected),
                other => panic!("{expected}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn signed_limits_convert_or_refuse_negatives() {
        let f = LimitField::MaxFeeSat;
        assert_eq!(limit_from_i64(f, None).expect("none"), None);
        assert_eq!(limit_from_i64(f, Some(0)).expect("zero"), Some(0));
        assert_eq!(
            limit_from_i64(f, Some(i64::MAX)).expect("max"),
            Some(i64::MAX as u64)
        );
        for v in [-1, i64::MIN] {
            match limit_from_i64(f, Some(v)) {
                Err(ConfigError::NegativeLimit { field, value }) => {
                    assert_eq!((field, value), (f, v))
                }
                other => panic!("{v}: unexpected {other:?}"),
            }
        }
    }
}
