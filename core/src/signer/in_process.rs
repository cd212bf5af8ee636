//! The in-process signer: keys derived from a seed held in this process. For tests, the demo's
//! baseline and benchmarks only; production nodes get their signatures from a remote signer.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::secp256k1::PublicKey;
use bitcoin::Network;
use lightning::sign::{KeysManager, NodeSigner, Recipient};

use super::wallet_keys::SeedWalletSigner;
use crate::wallet::{WalletError, WalletSigner};

/// Everything a node needs signed, from one 32-byte seed.
pub struct InProcessSigner {
    keys: Arc<KeysManager>,
    wallet: Arc<SeedWalletSigner>,
    node_id: PublicKey,
}

impl InProcessSigner {
    pub fn from_seed(seed: &[u8; 32], network: Network) -> Result<Self, WalletError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // The start time only salts fresh channel keys, so restarts never reuse them.
        let keys = Arc::new(KeysManager::new(
            seed,
            now.as_secs(),
            now.subsec_nanos(),
            true,
        ));
        let node_id = keys
            .get_node_id(Recipient::Node)
            .map_err(|_| WalletError::Signing("node key unavailable".into()))?;
        let wallet = Arc::new(SeedWalletSigner::new(seed, network)?);
        Ok(InProcessSigner {
            keys,
            wallet,
            node_id,
        })
    }

    pub fn node_id(&self) -> PublicKey {
        self.node_id
    }

    /// LDK's node, channel and on-chain output signing.
    pub fn keys(&self) -> Arc<KeysManager> {
        self.keys.clone()
    }

    /// Signs the on-chain wallet's PSBTs.
    pub fn wallet_signer(&self) -> Arc<dyn WalletSigner> {
        self.wallet.clone()
    }
}
