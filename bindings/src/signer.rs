//! Signer setup: node id derivation and the validated signer configuration.

use std::sync::Arc;

use flotilla_signer::config::{self as core_config, LimitField};
use flotilla_signer::seed;

use crate::FlotillaError;

/// Hex (66 characters) of the compressed node public key LDK derives from a 32-byte seed.
#[uniffi::export]
pub fn node_id_from_seed(seed: Vec<u8>) -> Result<String, FlotillaError> {
    Ok(seed::node_id_from_seed(&seed)?)
}

/// Spending limits the signer enforces; `null`/`None`/`nil` means no limit of that kind.
/// The defaults are those of a phone wallet (0.01 BTC a payment, 0.05 BTC an hour, 20,000 sat
/// of fee): an app that forgets to set limits still has some, and raises them, or passes
/// `null` for none, on purpose. Signed integers because Kotlin and Python have no natural
/// unsigned 64-bit type; the SignerConfig constructor refuses negative values.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PolicyLimits {
    /// Largest single outgoing payment, in millisatoshis.
    #[uniffi(default = Some(1_000_000_000))]
    pub max_payment_msat: Option<i64>,
    /// Velocity limit: total outgoing payments over any one hour, in millisatoshis.
    #[uniffi(default = Some(5_000_000_000))]
    pub max_outgoing_msat_per_hour: Option<i64>,
    /// Largest on-chain fee the signer signs for, in satoshis.
    #[uniffi(default = Some(20_000))]
    pub max_fee_sat: Option<i64>,
}

impl Default for PolicyLimits {
    /// The same defaults the foreign languages get.
    fn default() -> Self {
        PolicyLimits {
            max_payment_msat: Some(1_000_000_000),
            max_outgoing_msat_per_hour: Some(5_000_000_000),
            max_fee_sat: Some(20_000),
        }
    }
}

impl TryFrom<PolicyLimits> for core_config::PolicyLimits {
    type Error = core_config::ConfigError;

    fn try_from(l: PolicyLimits) -> Result<Self, Self::Error> {
        use core_config::limit_from_i64;
        Ok(core_config::PolicyLimits {
            max_payment_msat: limit_from_i64(LimitField::MaxPaymentMsat, l.max_payment_msat)?,
            max_outgoing_msat_per_hour: limit_from_i64(
                LimitField::MaxOutgoingMsatPerHour,
                l.max_outgoing_msat_per_hour,
            )?,
            max_fee_sat: limit_from_i64(LimitField::MaxFeeSat, l.max_fee_sat)?,
        })
    }
}

impl From<core_config::PolicyLimits> for PolicyLimits {
    fn from(l: core_config::PolicyLimits) -> Self {
        // Validated limits are at most 21M BTC in msat, far below i64::MAX.
        let signed = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
        PolicyLimits {
            max_payment_msat: signed(l.max_payment_msat),
            max_outgoing_msat_per_hour: signed(l.max_outgoing_msat_per_hour),
            max_fee_sat: signed(l.max_fee_sat),
        }
    }
}

/// A signer configuration that is valid by construction: the constructor raises on a bad seed,
/// host URL or limit. An object rather than a record, so foreign code cannot change a field
/// after it was checked.
#[derive(Debug, uniffi::Object)]
pub struct SignerConfig(core_config::SignerConfig);

#[uniffi::export]
impl SignerConfig {
    #[uniffi::constructor]
    pub fn new(
        seed: Vec<u8>,
        host_url: String,
        limits: PolicyLimits,
    ) -> Result<Arc<Self>, FlotillaError> {
        let limits = core_config::PolicyLimits::try_from(limits)?;
        let config = core_config::SignerConfig::new(&seed, &host_url, limits)?;
        Ok(Arc::new(SignerConfig(config)))
    }

    /// Hex node id of the configured seed (the same as `node_id_from_seed(seed)`).
    pub fn node_id(&self) -> String {
        self.0.node_id().to_string()
    }

    pub fn host_url(&self) -> String {
        self.0.host_url().to_string()
    }

    pub fn limits(&self) -> PolicyLimits {
        self.0.limits().into()
    }
}

impl SignerConfig {
    /// The validated core configuration, for Rust code that embeds these bindings.
    pub fn core(&self) -> &core_config::SignerConfig {
        &self.0
    }
}
