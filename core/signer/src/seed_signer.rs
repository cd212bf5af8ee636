//! The customer-side signer: holds the seed, answers the host's requests, refuses what its
//! policy forbids.
//!
//! Keys come from LDK's own `KeysManager` built from the seed, so a seed's node id and channel
//! keys are exactly those of an LDK node with that seed. Every channel request is checked against
//! the signer's own state ([`crate::state`]) and rules ([`crate::policy`]) before anything is
//! signed; the updated state is saved before the answer leaves (answers are computed at once
//! and wait for the save, [`crate::durable`]).

mod channel;
mod node;
mod onchain;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::bip32::{ChildNumber, Xpriv, Xpub};
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use bitcoin::{CompressedPublicKey, Network, ScriptBuf, TxOut};
use channel::ChannelKeys;
use flotilla_proto::{challenge_digest, Handler, Handover, KeysId, Request, Response, SignerError};
use lightning::sign::{KeysManager, NodeSigner, Recipient, SignerProvider};

use crate::durable::{Answer, DurableHandler, Progress};
use crate::fee_cap::{FeeCap, MarketReport, MAX_MARKET_FEERATE_PER_KW, MIN_FEERATE_PER_KW};
use crate::policy::{ApprovalHook, Policy, Refusal};
use crate::state::{SignerState, StateError, StateStore, Txn};
use crate::wallet_keys::{WalletKeys, WalletKeysError};

/// Highest commitment number (they count down from here).
pub const MAX_COMMITMENT_NUMBER: u64 = (1 << 48) - 1;
/// Most key sets or points one request may ask for: bounds the work a host can demand.
pub const MAX_BATCH: u32 = 1000;

/// BOLT 7 message types of the gossip the node signs.
pub const CHANNEL_ANNOUNCEMENT: u16 = 256;
pub const NODE_ANNOUNCEMENT: u16 = 257;
pub const CHANNEL_UPDATE: u16 = 258;

/// Why a [`SeedSigner`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("key derivation failed: {0}")]
    Keys(String),
    #[error(transparent)]
    Wallet(#[from] WalletKeysError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// A market feerate report the signer cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MarketError {
    #[error(
        "market feerate {0} sat per 1,000 weight is outside {MIN_FEERATE_PER_KW}..={MAX_MARKET_FEERATE_PER_KW}"
    )]
    OutOfRange(u32),
}

/// Seconds since the Unix epoch (the velocity window's clock).
type Clock = Box<dyn Fn() -> u64 + Send + Sync>;

struct Kept {
    state: SignerState,
    store: Box<dyn StateStore>,
}

/// A node's signer: seed-derived keys, its own state, its policy.
pub struct SeedSigner {
    node_id: PublicKey,
    node_secret: SecretKey,
    keys: KeysManager,
    wallet: WalletKeys,
    handover: Handover,
    policy: Policy,
    /// Scripts the signer counts as its own wallet (closes and sweeps may pay them).
    own_scripts: HashSet<ScriptBuf>,
    approval: Option<Arc<dyn ApprovalHook>>,
    /// The market feerate the app last reported: it raises the fee cap while fresh.
    market: Mutex<Option<MarketReport>>,
    /// Derived once per channel: LDK's signer computes its public keys anew on each call.
    channels: Mutex<HashMap<KeysId, ChannelKeys>>,
    kept: Mutex<Kept>,
    /// How far `kept`'s changes are on disk.
    progress: Arc<Progress>,
    secp: Secp256k1<All>,
    clock: Clock,
}

impl SeedSigner {
    /// Derives every key from `seed` (as LDK's `KeysManager` does) and loads the saved state.
    /// A policy without any limit is said loudly: such a signer signs any payment amount, any
    /// hourly total and any fee its host asks for (each payment still needs its approval).
    pub fn new(
        seed: &[u8; 32],
        network: Network,
        policy: Policy,
        state: Box<dyn StateStore>,
    ) -> Result<Self, SetupError> {
        let signer = SeedSigner::build(seed, network, policy, state)?;
        if signer.policy.limits.is_unlimited() {
            tracing::warn!(
                node = %signer.node_id,
                "this signer has no limits: it signs payments of any amount, any total per hour \
                 and any fee; set max_payment_msat, max_outgoing_msat_per_hour and max_fee_sat"
            );
        }
        Ok(signer)
    }

    fn build(
        seed: &[u8; 32],
        network: Network,
        policy: Policy,
        mut state: Box<dyn StateStore>,
    ) -> Result<Self, SetupError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // The start time only salts fresh channel key ids; derived keys depend on the seed alone.
        let keys = KeysManager::new(seed, now.as_secs(), now.subsec_nanos(), true);
        let node_id = keys
            .get_node_id(Recipient::Node)
            .map_err(|()| SetupError::Keys("no node id".into()))?;
        let secp = Secp256k1::new();
        let wallet = WalletKeys::new(seed, network)?;
        let (external, internal) = wallet.descriptors();
        let (receive, change) =
            wallet_scripts(seed, network, policy.wallet_lookahead.max(1), &secp)?;
        // Closed and swept funds land on the wallet's first change address.
        let shutdown_script = change[0].clone();
        let own_wallet: HashSet<ScriptBuf> = receive.into_iter().chain(change).collect();
        let handover = Handover {
            node_id,
            inbound_payment_key: inbound_payment_key(seed, &secp)?,
            peer_storage_key: keys.get_peer_storage_key().inner,
            receive_auth_key: keys.get_receive_auth_key().0,
            wallet_descriptors: (external, internal),
            shutdown_script,
        };
        let mut own_scripts = own_wallet;
        // KeysManager's own destination and shutdown scripts are the seed's too.
        if let Ok(script) = keys.get_destination_script([0; 32]) {
            own_scripts.insert(script);
        }
        if let Ok(script) = keys.get_shutdown_scriptpubkey() {
            own_scripts.insert(script.into_inner());
        }
        let loaded = state.load()?;
        Ok(SeedSigner {
            node_id,
            node_secret: keys.get_node_secret_key(),
            keys,
            wallet,
            handover,
            policy,
            own_scripts,
            approval: None,
            market: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            kept: Mutex::new(Kept {
                state: loaded,
                store: state,
            }),
            progress: Arc::default(),
            secp,
            clock: Box::new(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            }),
        })
    }

    /// A signer with no limits and its state in memory: the in-process baseline of tests and
    /// benchmarks (the host reaches it through `SignerLink::in_process`), never a customer's.
    pub fn in_memory(seed: &[u8; 32], network: Network) -> Result<Self, SetupError> {
        let state = Box::new(crate::state::MemoryStateStore::new());
        SeedSigner::build(seed, network, Policy::default(), state)
    }

    /// Asks `hook` before each outgoing payment is approved.
    pub fn with_approval(mut self, hook: Arc<dyn ApprovalHook>) -> Self {
        self.approval = Some(hook);
        self
    }

    /// The market feerate as the app sees it, from its own source (never the host's): for an
    /// hour the fee cap scales with it ([`crate::fee_cap`]), so a fee spike does not leave the
    /// wallet unable to close or sweep.
    pub fn report_market_feerate(&self, feerate_per_kw: u32) -> Result<(), MarketError> {
        if !(MIN_FEERATE_PER_KW..=MAX_MARKET_FEERATE_PER_KW).contains(&feerate_per_kw) {
            return Err(MarketError::OutOfRange(feerate_per_kw));
        }
        *lock(&self.market) = Some(MarketReport {
            feerate_per_kw,
            at_secs: (self.clock)(),
        });
        Ok(())
    }

    /// The fee cap in force now.
    fn fee_cap(&self) -> FeeCap {
        let market = lock(&self.market).and_then(|m| m.fresh((self.clock)()));
        FeeCap::new(self.policy.limits.max_fee_sat, market)
    }

    #[cfg(test)]
    fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// A copy of the remembered state (for inspection and tests).
    pub fn state(&self) -> SignerState {
        lock(&self.kept).state.clone()
    }

    /// Runs `f` in a transaction on the state; its change stays only if `f` succeeds, so
    /// refusals and failures leave no trace. The change is handed to the store to save, and
    /// answers wait for it ([`crate::durable`]). Costs what `f` touches, not the size of the
    /// state.
    fn transact<T>(
        &self,
        f: impl FnOnce(&mut Txn) -> Result<T, SignerError>,
    ) -> Result<T, SignerError> {
        let mut guard = lock(&self.kept);
        let Kept { state, store } = &mut *guard;
        let mut txn = Txn::new(state);
        let out = f(&mut txn)?;
        let change = txn.change();
        if !change.is_empty() {
            // Numbered and submitted under the lock: the store saves in this order.
            let (seq, progress, node) =
                (self.progress.submit(), self.progress.clone(), self.node_id);
            let saved = Box::new(move |result: Result<(), StateError>| {
                if let Err(e) = &result {
                    tracing::error!(%node, error = %e, "signer state not saved: this node's signer stops answering");
                }
                progress.saved(seq, result.is_ok());
            });
            store.submit_change(&txn, &change, saved);
        }
        txn.keep();
        Ok(out)
    }

    fn refuse(&self, kind: &str, refusal: Refusal) -> SignerError {
        tracing::warn!(
            node = %self.node_id,
            request = kind,
            rule = refusal.rule,
            reason = %refusal.reason,
            "signer refused"
        );
        SignerError::Refused(format!("{}: {}", refusal.rule, refusal.reason))
    }

    fn malformed(&self, kind: &str, reason: impl Into<String>) -> SignerError {
        let reason = reason.into();
        tracing::warn!(node = %self.node_id, request = kind, reason = %reason, "malformed request");
        SignerError::Malformed(reason)
    }

    fn check_outputs(&self, kind: &str, outputs: &[TxOut]) -> Result<(), SignerError> {
        self.policy
            .check_destinations(
                &self.own_scripts,
                outputs.iter().map(|o| o.script_pubkey.as_script()),
            )
            .map_err(|r| self.refuse(kind, r))
    }

    /// Routes a request to its family's handler: a request naming a channel's key set to the
    /// channel handler (`channel.rs`), a spend of coins on chain to `onchain.rs`, the rest (the
    /// node key, payment approvals, fresh key sets) to `node.rs`. A key set the signer retired
    /// is refused first, whatever the family.
    fn dispatch(&self, request: Request) -> Result<Response, SignerError> {
        let kind = request.kind();
        // Retiring again is a no-op the host may repeat (it does not know the first arrived).
        let retire = matches!(request, Request::RetireChannel { .. });
        if let Some(keys_id) = request.keys_id().filter(|_| !retire) {
            self.policy
                .check_not_retired(&lock(&self.kept).state, keys_id)
                .map_err(|r| self.refuse(kind, r))?;
        }
        if request.keys_id().is_some() {
            self.channel_request(kind, request)
        } else if matches!(
            request,
            Request::SpendOutputs { .. } | Request::SignPsbt { .. }
        ) {
            self.onchain_request(kind, request)
        } else {
            self.node_request(kind, request)
        }
    }
}

impl Handler for SeedSigner {
    fn node_id(&self) -> PublicKey {
        self.node_id
    }

    fn handover(&self) -> Handover {
        self.handover.clone()
    }

    fn sign_challenge(&self, challenge: &[u8; 32]) -> Signature {
        self.secp
            .sign_ecdsa(&challenge_digest(challenge), &self.node_secret)
    }

    fn handle(&self, request: Request) -> Result<Response, SignerError> {
        self.answer(request).settled_blocking()
    }
}

impl DurableHandler for SeedSigner {
    fn broken(&self) -> bool {
        self.progress.failed()
    }

    fn answer(&self, request: Request) -> Answer {
        // The one way in (`handle` comes here too): a broken signer answers nothing.
        if self.progress.failed() {
            return Answer::ready(Err(SignerError::Unavailable));
        }
        let kind = request.kind();
        // LDK asserts on data it expects to be well-formed; from a host that data is input, so
        // a panic is one more way of saying "malformed".
        let result = catch_unwind(AssertUnwindSafe(|| self.dispatch(request)))
            .unwrap_or_else(|_| Err(self.malformed(kind, "LDK rejected the request's data")));
        // Even an answer that changed nothing may rest on a change still being saved.
        self.versioned(result)
    }

    fn state_version(&self) -> Answer {
        self.versioned(Ok(Response::Accepted))
    }
}

impl SeedSigner {
    /// `result`, sent once every change made so far is saved, with the state's version. The
    /// version is read first: every change it counts was submitted under the same lock, so
    /// the barrier taken after covers them all, and the host never hears of a version the
    /// signer could lose in a crash.
    fn versioned(&self, result: Result<Response, SignerError>) -> Answer {
        let version = lock(&self.kept).state.version;
        Answer::after(result, self.progress.barrier()).at_version(version)
    }
}

/// A mutex whose holder panicked is still consistent here: state is replaced only whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// LDK's inbound-payment key material: the private key at `m/5'`, as `KeysManager` derives it.
fn inbound_payment_key(seed: &[u8; 32], secp: &Secp256k1<All>) -> Result<[u8; 32], SetupError> {
    let err = |e: bitcoin::bip32::Error| SetupError::Keys(e.to_string());
    let master = Xpriv::new_master(Network::Testnet, seed).map_err(err)?;
    let key = master
        .derive_priv(secp, &[ChildNumber::Hardened { index: 5 }])
        .map_err(err)?;
    Ok(key.private_key.secret_bytes())
}

/// The first `count` scripts of the wallet's external and internal chains, as
/// [`WalletKeys`] derives them (`wpkh(m/84'/coin'/0'/chain/i)`). Derived with plain BIP32
/// rather than through the descriptor: a thousand addresses per chain must be cheap.
fn wallet_scripts(
    seed: &[u8; 32],
    network: Network,
    count: u32,
    secp: &Secp256k1<All>,
) -> Result<(Vec<ScriptBuf>, Vec<ScriptBuf>), SetupError> {
    let err = |e: bitcoin::bip32::Error| SetupError::Keys(e.to_string());
    let coin = if network == Network::Bitcoin { 0 } else { 1 };
    let master = Xpriv::new_master(network, seed).map_err(err)?;
    let path = [
        ChildNumber::from_hardened_idx(84).map_err(err)?,
        ChildNumber::from_hardened_idx(coin).map_err(err)?,
        ChildNumber::from_hardened_idx(0).map_err(err)?,
    ];
    let account = Xpub::from_priv(secp, &master.derive_priv(secp, &path).map_err(err)?);
    let chain = |index: u32| -> Result<Vec<ScriptBuf>, SetupError> {
        let chain = account
            .ckd_pub(secp, ChildNumber::from_normal_idx(index).map_err(err)?)
            .map_err(err)?;
        (0..count)
            .map(|i| {
                let child = chain
                    .ckd_pub(secp, ChildNumber::from_normal_idx(i).map_err(err)?)
                    .map_err(err)?;
                Ok(ScriptBuf::new_p2wpkh(
                    &CompressedPublicKey(child.public_key).wpubkey_hash(),
                ))
            })
            .collect()
    };
    Ok((chain(0)?, chain(1)?))
}
