//! The one error type every exported call raises: `FlotillaException` in Kotlin, `FlotillaError`
//! in Python and Swift, with one subclass (or case) per kind of bad input.

use flotilla_signer::config::ConfigError;
use flotilla_signer::dial::DialError;
use flotilla_signer::embedded::EmbedError;
use flotilla_signer::seed::SeedError;
use flotilla_signer::seed_signer::{MarketError, SetupError};

/// Flat: foreign code sees the variant and the Rust message, nothing it would have to keep in
/// step with core's richer error types.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum FlotillaError {
    /// The seed is not 32 bytes (or, with odds of about 2^-127, not a valid BIP32 seed).
    #[error("{0}")]
    InvalidSeed(String),
    /// The host URL is malformed or not one the signer may dial.
    #[error("{0}")]
    InvalidHostUrl(String),
    /// A policy limit is negative or beyond all bitcoin that exists.
    #[error("{0}")]
    InvalidLimit(String),
    /// The CA PEM holds no usable certificate.
    #[error("{0}")]
    InvalidCa(String),
    /// The signer's state cannot be used: another signer holds it, or it is unreadable.
    #[error("{0}")]
    StateUnavailable(String),
    /// The signer could not start (its thread or its keys).
    #[error("{0}")]
    StartFailed(String),
    /// A market feerate that is not a number, or outside what any market has seen.
    #[error("{0}")]
    InvalidFeerate(String),
}

impl From<MarketError> for FlotillaError {
    fn from(e: MarketError) -> Self {
        FlotillaError::InvalidFeerate(e.to_string())
    }
}

impl From<SeedError> for FlotillaError {
    fn from(e: SeedError) -> Self {
        FlotillaError::InvalidSeed(e.to_string())
    }
}

impl From<ConfigError> for FlotillaError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Seed(e) => e.into(),
            ConfigError::InvalidHostUrl(_) => FlotillaError::InvalidHostUrl(e.to_string()),
            ConfigError::NegativeLimit { .. } | ConfigError::LimitTooLarge { .. } => {
                FlotillaError::InvalidLimit(e.to_string())
            }
        }
    }
}

impl From<EmbedError> for FlotillaError {
    fn from(e: EmbedError) -> Self {
        let text = e.to_string();
        match e {
            EmbedError::Dial(DialError::Url { .. }) => FlotillaError::InvalidHostUrl(text),
            EmbedError::Dial(DialError::Ca | DialError::Tls(_)) => FlotillaError::InvalidCa(text),
            EmbedError::State(_) | EmbedError::Setup(SetupError::State(_)) => {
                FlotillaError::StateUnavailable(text)
            }
            EmbedError::Setup(_) | EmbedError::Runtime(_) => FlotillaError::StartFailed(text),
        }
    }
}
