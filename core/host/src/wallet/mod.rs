//! Each hosted node's on-chain wallet: a watch-only bdk wallet (public descriptors only) whose
//! transactions are signed by a [`WalletSigner`], fed blocks by the host's shared chain observer
//! through LDK's [`Listen`](lightning::chain::Listen), and persisted as an append-only change log
//! in the node's key-value store.

mod error;
mod listen;
mod persist;
mod spend;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use bdk_wallet::chain::{BlockId, CheckPoint, Merge};
use bdk_wallet::descriptor::{Descriptor, DescriptorPublicKey};
use bdk_wallet::{Balance, KeychainKind, LoadError, LoadMismatch, Update, Wallet};
use bitcoin::{Address, Network, OutPoint, Script};
use lightning::util::persist::KVStoreSync;

pub use error::WalletError;
pub(crate) use listen::block_of;
pub use listen::Received;
pub use persist::{PRIMARY_NAMESPACE, SECONDARY_NAMESPACE};

use persist::ChangeSetLog;

/// What the wallet needs from whoever holds the keys (in-process now; a remote signer later).
pub trait WalletSigner: Send + Sync {
    /// Public (xpub-based) descriptors with checksum: (external, internal), e.g.
    /// `wpkh([fp/84'/1'/0']tpub.../0/*)#checksum`.
    fn descriptors(&self) -> Result<(String, String), WalletError>;
    /// Signs every input of `psbt` that belongs to the wallet; must refuse nothing else for now.
    fn sign_psbt(&self, psbt: &mut bitcoin::Psbt) -> Result<(), WalletError>;
}

/// A node's on-chain wallet. Cheap to share (`Send + Sync`); every method takes `&self`.
pub struct OnchainWallet {
    inner: Mutex<Inner>,
    signer: Arc<dyn WalletSigner>,
    network: Network,
}

/// Everything behind the wallet lock.
struct Inner {
    wallet: Wallet,
    log: ChangeSetLog,
    /// Inputs of transactions built but not yet handed to [`OnchainWallet::transaction_broadcast`]:
    /// kept out of coin selection so two transactions built back to back (two channel fundings)
    /// never spend the same coin. In memory only: a restart forgets unbroadcast transactions.
    reserved: HashSet<OutPoint>,
}

impl OnchainWallet {
    /// Loads the wallet from `kv` (LDK's KVStoreSync, trait object) or creates it; `birthday` is
    /// the chain tip (height + hash) at creation so a new wallet does not rescan from genesis.
    ///
    /// A stored wallet must match the signer's descriptors and `network`; `birthday` is then
    /// ignored (the stored tip wins).
    pub fn load_or_create(
        signer: Arc<dyn WalletSigner>,
        network: Network,
        kv: Arc<dyn KVStoreSync + Send + Sync>,
        birthday: BlockId,
    ) -> Result<OnchainWallet, WalletError> {
        let (external, internal) = signer.descriptors()?;
        require_public(&external)?;
        require_public(&internal)?;
        let (mut log, stored) = ChangeSetLog::open(kv)?;

        let wallet = if stored.is_empty() {
            let mut wallet = Wallet::create(external, internal)
                .network(network)
                .create_wallet_no_persist()
                .map_err(|e| WalletError::Descriptor(e.to_string()))?;
            start_at_birthday(&mut wallet, birthday)?;
            // Descriptors, network, genesis and birthday land in one write: the wallet exists in
            // the store completely or not at all.
            if let Some(initial) = wallet.take_staged() {
                log.append(&initial)?;
            }
            wallet
        } else {
            Wallet::load()
                .descriptor(KeychainKind::External, Some(external))
                .descriptor(KeychainKind::Internal, Some(internal))
                .check_network(network)
                .load_wallet_no_persist(stored)
                .map_err(load_error)?
                .ok_or_else(|| WalletError::Corrupt("stored wallet is empty".into()))?
        };

        let wallet = OnchainWallet {
            inner: Mutex::new(Inner {
                wallet,
                log,
                reserved: HashSet::new(),
            }),
            signer,
            network,
        };
        Ok(wallet)
    }

    /// The last block the wallet has processed, for syncing a restarted node from its own tip.
    /// After a restart this may lag a few blocks behind what was processed before (blocks that
    /// change nothing for the wallet are persisted in batches); those blocks are simply fed again.
    pub fn best_block(&self) -> BlockId {
        self.read().wallet.latest_checkpoint().block_id()
    }

    /// Reveals a fresh receive address; it is durable before it is returned, so it is never
    /// handed out twice, even across a restart.
    pub fn new_address(&self) -> Result<Address, WalletError> {
        let mut inner = self.lock()?;
        let info = inner.wallet.reveal_next_address(KeychainKind::External);
        inner.persist()?;
        Ok(info.address)
    }

    /// Confirmed, pending (ours: trusted; others': untrusted) and immature coins.
    pub fn balance(&self) -> Balance {
        self.read().wallet.balance()
    }

    /// Whether `script` is one of the wallet's revealed (or look-ahead) scripts.
    pub fn is_mine(&self, script: &Script) -> bool {
        self.read().wallet.is_mine(script.to_owned())
    }

    /// The network the wallet was created for.
    pub fn network(&self) -> Network {
        self.network
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, WalletError> {
        self.inner.lock().map_err(|_| WalletError::Poisoned)
    }

    /// For read-only accessors that cannot return an error: after a panic elsewhere they still
    /// report what the wallet holds instead of panicking in turn; every mutating path refuses a
    /// poisoned lock through [`lock`](Self::lock).
    fn read(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Writes whatever the wallet has staged. On failure the changes stay staged, so the next
    /// successful persist carries them.
    fn persist(&mut self) -> Result<(), WalletError> {
        let Some(staged) = self.wallet.staged() else {
            return Ok(());
        };
        self.log.append(staged)?;
        self.wallet.take_staged();
        if self.log.needs_compaction() {
            self.compact();
        }
        Ok(())
    }

    /// Rewrites the log as one pruned snapshot and reloads the wallet from it (which drops the
    /// pruned checkpoints from memory too). Failure is harmless: the log is still complete.
    fn compact(&mut self) {
        let mut snapshot = persist::snapshot(&self.wallet);
        persist::prune_checkpoints(&mut snapshot);
        if let Err(e) = self.log.compact(&snapshot) {
            tracing::warn!(error = %e, "wallet log compaction failed; will retry");
            return;
        }
        match rebuild(snapshot) {
            Ok(wallet) => self.wallet = wallet,
            Err(e) => tracing::warn!(error = %e, "reloading compacted wallet failed"),
        }
    }
}

/// A watch-only wallet from a complete ChangeSet (nothing staged).
fn rebuild(changeset: bdk_wallet::ChangeSet) -> Result<Wallet, WalletError> {
    Wallet::load()
        .load_wallet_no_persist(changeset)
        .map_err(load_error)?
        .ok_or_else(|| WalletError::Corrupt("empty wallet state".into()))
}

/// The host must never hold keys: a descriptor that parses only with private keys is refused.
fn require_public(descriptor: &str) -> Result<(), WalletError> {
    Descriptor::<DescriptorPublicKey>::from_str(descriptor)
        .map(|_| ())
        .map_err(|e| WalletError::Descriptor(format!("not a public descriptor: {e}")))
}

/// Makes a new wallet's chain start at `birthday` instead of genesis.
fn start_at_birthday(wallet: &mut Wallet, birthday: BlockId) -> Result<(), WalletError> {
    let genesis = wallet.local_chain().genesis_hash();
    if birthday.height == 0 {
        return if birthday.hash == genesis {
            Ok(())
        } else {
            Err(WalletError::Chain(format!(
                "birthday at height 0 is {}, not this network's genesis {genesis}",
                birthday.hash
            )))
        };
    }
    let genesis = BlockId {
        height: 0,
        hash: genesis,
    };
    let chain = CheckPoint::from_block_ids([genesis, birthday])
        .map_err(|_| WalletError::Chain("birthday does not follow genesis".into()))?;
    wallet
        .apply_update(Update {
            chain: Some(chain),
            ..Default::default()
        })
        .map_err(|e| WalletError::Chain(format!("birthday: {e}")))
}

fn load_error(e: LoadError) -> WalletError {
    match e {
        LoadError::Descriptor(e) => WalletError::Descriptor(e.to_string()),
        LoadError::Mismatch(LoadMismatch::Network { loaded, expected }) => {
            WalletError::InvalidInput(format!(
                "stored wallet is for {loaded}, requested {expected}"
            ))
        }
        LoadError::Mismatch(LoadMismatch::Descriptor { keychain, .. }) => WalletError::Descriptor(
            format!("stored wallet's {keychain:?} descriptor differs from the signer's"),
        ),
        other => WalletError::Corrupt(other.to_string()),
    }
}
