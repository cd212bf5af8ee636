//! A running signer inside the app (`RemoteSigner`): it dials the host, holds the node's keys
//! and asks the app's `PaymentApprover` before each outgoing payment is signed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use bitcoin::hex::DisplayHex;
use flotilla_signer::embedded::EmbeddedSigner;
use flotilla_signer::policy::{ApprovalHook, PaymentApproval};

use crate::signer::SignerConfig;
use crate::FlotillaError;

/// The chain the node runs on (it decides the signer's wallet addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Network {
    Bitcoin,
    Testnet,
    Testnet4,
    Signet,
    Regtest,
}

impl From<Network> for bitcoin::Network {
    fn from(n: Network) -> Self {
        match n {
            Network::Bitcoin => bitcoin::Network::Bitcoin,
            Network::Testnet => bitcoin::Network::Testnet,
            Network::Testnet4 => bitcoin::Network::Testnet4,
            Network::Signet => bitcoin::Network::Signet,
            Network::Regtest => bitcoin::Network::Regtest,
        }
    }
}

/// An outgoing payment the host asks the signer to allow, shown to the approver.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PaymentToApprove {
    /// Hex; the invoice's payment hash.
    pub payment_hash: String,
    /// What the payee receives, in millisatoshis (routing fees come on top).
    pub amount_msat: i64,
    /// Hex node id of the payee.
    pub destination: String,
}

/// Raised by an approver that could not decide; the payment is then declined.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ApproverError {
    #[error("approver failed: {reason}")]
    Failed { reason: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for ApproverError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        ApproverError::Failed { reason: e.reason }
    }
}

/// Implemented by the app: return true to let the payment be signed, false to decline it.
/// Called on a thread of the signer's, after the policy limits passed; the node's other
/// signatures go on meanwhile, so a person may take their time (the host waits for the answer).
#[uniffi::export(with_foreign)]
pub trait PaymentApprover: Send + Sync {
    fn approve(&self, payment: PaymentToApprove) -> Result<bool, ApproverError>;
}

/// Fails closed: an approver that raises (or panics) declines.
struct Approval(Arc<dyn PaymentApprover>);

impl ApprovalHook for Approval {
    fn approve(&self, payment: &PaymentApproval) -> bool {
        let shown = PaymentToApprove {
            payment_hash: payment.payment_hash.to_lower_hex_string(),
            amount_msat: i64::try_from(payment.amount_msat).unwrap_or(i64::MAX),
            destination: payment.destination.to_string(),
        };
        match catch_unwind(AssertUnwindSafe(|| self.0.approve(shown))) {
            Ok(Ok(approved)) => approved,
            Ok(Err(e)) => {
                tracing::warn!("payment declined: {e}");
                false
            }
            Err(_) => {
                tracing::warn!("payment declined: the approver panicked");
                false
            }
        }
    }
}

/// What the signer has done since it started.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SignerStatus {
    pub running: bool,
    /// Streams the host accepted (1 once attached; more after reconnects).
    pub attaches: u64,
    /// Requests answered, refusals included.
    pub answered: u64,
    /// Attaches the host refused (node not registered there, wrong key).
    pub refusals: u64,
    /// Connections that failed otherwise (host down, TLS).
    pub failures: u64,
    pub last_error: Option<String>,
    /// The host has seen a newer state of this node than this signer holds (a restored
    /// backup, a second copy of the seed): it refuses this signer, which stops serving the
    /// node. Run the signer that holds the newest state.
    pub stale_state: bool,
}

/// The node's signer, running on a thread of its own until `stop` (or until it is freed).
#[derive(uniffi::Object)]
pub struct RemoteSigner(EmbeddedSigner);

#[uniffi::export]
impl RemoteSigner {
    /// Starts signing for `config`'s node: dials `config.host_url` trusting only `ca_pem`,
    /// keeps its channel state in `state_dir` (one signer per node and directory at a time),
    /// and asks `approver`, if any, before each outgoing payment.
    #[uniffi::constructor]
    pub fn start(
        config: Arc<SignerConfig>,
        network: Network,
        ca_pem: String,
        state_dir: String,
        approver: Option<Arc<dyn PaymentApprover>>,
    ) -> Result<Arc<Self>, FlotillaError> {
        let hook = approver.map(|a| Arc::new(Approval(a)) as Arc<dyn ApprovalHook>);
        let signer = EmbeddedSigner::start(
            config.core(),
            network.into(),
            ca_pem.into_bytes(),
            Path::new(&state_dir),
            hook,
        )?;
        Ok(Arc::new(RemoteSigner(signer)))
    }

    /// The market feerate in sat/vB, from the app's own source (a fee API it trusts, never
    /// the host): for an hour, every fee cap scales with it above 10 sat/vB, so a fee spike
    /// does not leave the wallet unable to close or sweep. Raises `InvalidFeerate` outside
    /// 1.012 to 4,000 sat/vB.
    pub fn report_market_feerate(&self, sat_per_vbyte: f64) -> Result<(), FlotillaError> {
        let per_kw = sat_per_vbyte * 250.0;
        if !per_kw.is_finite() || !(0.0..=f64::from(u32::MAX)).contains(&per_kw) {
            return Err(FlotillaError::InvalidFeerate(format!(
                "market feerate {sat_per_vbyte} sat/vB is not a feerate"
            )));
        }
        Ok(self.0.report_market_feerate(per_kw.round() as u32)?)
    }

    /// Stops answering; the host parks the node until a signer attaches again. Idempotent.
    pub fn stop(&self) {
        self.0.stop();
    }

    pub fn status(&self) -> SignerStatus {
        let stats = self.0.stats();
        SignerStatus {
            running: self.0.is_running(),
            attaches: stats.attaches(),
            answered: stats.answered(),
            refusals: stats.refusals(),
            failures: stats.failures(),
            last_error: stats.last_error(),
            stale_state: stats.stale() > 0,
        }
    }
}
