//! The in-process signer: the customer's [`SeedSigner`] run inside the host process. For tests
//! and the benchmark's baseline only; production nodes get their signatures from a remote
//! signer that dials the host's hub.

use std::sync::Arc;

use bitcoin::secp256k1::PublicKey;
use bitcoin::Network;

use super::link::SignerLink;
use super::policy::Policy;
use super::protocol::Handler;
use super::service::{SeedSigner, SetupError};
use super::state::MemoryStateStore;

/// A node's signer living in this process.
pub struct InProcessSigner {
    signer: Arc<SeedSigner>,
}

impl InProcessSigner {
    /// A signer with no limits and state in memory.
    pub fn from_seed(seed: &[u8; 32], network: Network) -> Result<Self, SetupError> {
        let state = Box::new(MemoryStateStore::new());
        let signer = SeedSigner::new(seed, network, Policy::default(), state)?;
        Ok(InProcessSigner {
            signer: Arc::new(signer),
        })
    }

    pub fn node_id(&self) -> PublicKey {
        self.signer.node_id()
    }

    /// The host's line to this signer: answers inline, on the caller's thread.
    pub fn link(&self) -> SignerLink {
        SignerLink::in_process(self.signer.clone())
    }
}
