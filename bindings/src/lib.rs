//! UniFFI bindings for Flotilla, loaded from Kotlin, Python and Swift.
//!
//! Thin wrappers only: each item converts foreign types and errors to and from `flotilla_signer`,
//! where every rule lives. UniFFI catches any Rust panic at the boundary and raises it in the
//! foreign language (so the release profile must keep `panic = "unwind"`).

mod error;
mod remote_signer;
mod signer;

pub use error::FlotillaError;
pub use remote_signer::{
    ApproverError, Network, PaymentApprover, PaymentToApprove, RemoteSigner, SignerStatus,
};
pub use signer::{node_id_from_seed, PolicyLimits, SignerConfig};

uniffi::setup_scaffolding!();
