//! A running hosted node: its LDK objects and what the host's tasks and its user ask of it
//! (`builder.rs` builds it; `ops.rs`, `hold.rs`, `peers.rs` hold what a user asks).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::secp256k1::PublicKey;
use lightning::chain::chaininterface::FeeEstimator;
use lightning::ln::channel_state::ChannelDetails;
use lightning::sign::EntropySource;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::broadcast::NodeBroadcaster;
use crate::chain::ListenerId;
use crate::persist::MonitorPersister;
use crate::shared::Shared;
use crate::signer_client::link::SignerLink;
use crate::starting::Starting;
use crate::store::{KvStore, Store};
use crate::types::{
    ChainMonitor, ChannelManager, Keys, Logger, OnionMessenger, PeerManager, Sweeper,
};
use crate::wallet::OnchainWallet;

/// A running hosted node.
pub struct Node {
    pub id: PublicKey,
    pub alias: String,
    pub channel_manager: Arc<ChannelManager>,
    pub chain_monitor: Arc<ChainMonitor>,
    pub peer_manager: Arc<PeerManager>,
    pub onion_messenger: Arc<OnionMessenger>,
    pub wallet: Arc<OnchainWallet>,
    pub sweeper: Arc<Sweeper>,
    pub(crate) keys: Keys,
    /// What the node broadcasts through (its wallet told first).
    pub(crate) broadcaster: Arc<NodeBroadcaster>,
    /// The node's signer: every signature, and whether it is attached.
    pub(crate) link: SignerLink,
    pub(crate) kv: Arc<KvStore>,
    /// Writes the channel monitors, together with the manager (see `persist.rs`).
    pub(crate) persister: Arc<MonitorPersister>,
    pub(crate) shared: Shared,
    pub(crate) logger: Arc<Logger>,
    pub(crate) listen_addr: SocketAddr,
    pub(crate) listener_id: Mutex<Option<ListenerId>>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Peers' last known addresses, for reconnection (kept in memory, written through to `kv`).
    pub(crate) address_book: Mutex<HashMap<PublicKey, SocketAddr>>,
    /// Callers of `pay_invoice` waiting for their payment's outcome, by payment hash.
    pub(crate) payment_waiters: Mutex<HashMap<[u8; 32], Vec<oneshot::Sender<PaymentOutcome>>>>,
    /// Payments being handed to LDK, so one invoice paid twice at once starts only once.
    pub(crate) starting: Starting,
    /// Whether the node has an announced channel, so may forward for the network: only then
    /// are its HTLCs held back a random delay (see `driver.rs`). Assumed until its channels
    /// are first listed.
    pub(crate) announced: AtomicBool,
    /// Why the node stopped on its own (its state could not be saved), if it did.
    pub(crate) halted: Mutex<Option<String>>,
}

/// How an outgoing payment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentOutcome {
    Succeeded {
        preimage: [u8; 32],
        fee_msat: Option<u64>,
    },
    Failed {
        reason: String,
    },
}

/// Time since the Unix epoch (zero if the clock is before it).
pub(crate) fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Node {
    /// Notes whether any of `channels` (the node's open ones) is announced.
    pub(crate) fn note_announced(&self, channels: &[ChannelDetails]) {
        let any = channels.iter().any(|c| c.is_announced);
        self.announced.store(any, Ordering::Relaxed);
    }

    /// Whether the node may forward for the network (it has an announced channel).
    pub(crate) fn announced(&self) -> bool {
        self.announced.load(Ordering::Relaxed)
    }

    /// The host's store: the node's rows (payments, channels, events) are scoped by its id.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// A random `user_channel_id` for a channel this node opens or accepts.
    pub(crate) fn fresh_user_channel_id(&self) -> u128 {
        let bytes = self.keys.get_secure_random_bytes();
        let mut half = [0u8; 16];
        half.copy_from_slice(&bytes[..16]);
        u128::from_le_bytes(half)
    }

    /// Requests this node's signer has answered.
    pub fn signer_requests(&self) -> u64 {
        self.link.requests_answered()
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Resolves when the node is asked to stop.
    pub(crate) fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Leaves the chain observer and tells the node's tasks to stop.
    fn leave_and_stop(&self) {
        if let Some(id) = self
            .listener_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            self.shared.observer.leave(id);
        }
        let _ = self.stop.send(true);
    }

    /// Stops the node: leaves the observer, drops peers, ends its tasks, persists its state.
    pub(crate) async fn shutdown(&self) {
        self.leave_and_stop();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.peer_manager.disconnect_all_peers();
    }

    /// Stops the node where it stands because it cannot go on safely (its state could not be
    /// saved): as LDK's own loop, it must send nothing that rests on unsaved state. It leaves
    /// the chain observer, drops its peers and takes no new ones, ends its tasks, refuses its
    /// user's calls with the reason, and marks its row `halted` if the store still can. A
    /// restart resumes it from its last save.
    pub(crate) fn halt(&self, reason: String) {
        tracing::error!(node = %self.alias, %reason, "node stopped");
        *self.halted.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.leave_and_stop();
        self.peer_manager.disconnect_all_peers();
        if let Err(e) = self
            .shared
            .store
            .set_node_status(&self.id.to_string(), "halted")
        {
            tracing::warn!(node = %self.alias, error = %e, "could not mark the node halted");
        }
    }

    /// `Err` once the node halted (see [`Node::halt`]).
    pub(crate) fn check_running(&self) -> Result<(), crate::error::HostError> {
        match &*self.halted.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(reason) => Err(crate::error::HostError::Halted {
                node: self.alias.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Fee rate for on-chain transactions the node builds itself (channel funding, sends).
    pub(crate) fn funding_feerate(&self) -> bitcoin::FeeRate {
        let fees = self.shared.observer.fee_estimator();
        let sat_per_kw = fees.get_est_sat_per_1000_weight(
            lightning::chain::chaininterface::ConfirmationTarget::NonAnchorChannelFee,
        );
        bitcoin::FeeRate::from_sat_per_kwu(sat_per_kw as u64)
    }
}
