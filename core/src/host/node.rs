//! One hosted node: its LDK objects, wired to the host's shared chain, graph and store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::secp256k1::PublicKey;
use bitcoin::{Block, BlockHash};
use lightning::chain::chaininterface::FeeEstimator;
use lightning::chain::channelmonitor::ChannelMonitor;
use lightning::chain::{BestBlock, ChannelMonitorUpdateStatus, Listen};
use lightning::ln::channel_state::ChannelDetails;
use lightning::ln::channelmanager::{ChainParameters, ChannelManagerReadArgs};
use lightning::ln::msgs::DecodeError;
use lightning::ln::peer_handler::{IgnoringMessageHandler, MessageHandler};
use lightning::onion_message::messenger::DefaultMessageRouter;
use lightning::routing::router::DefaultRouter;
use lightning::routing::scoring::ProbabilisticScoringFeeParameters;
use lightning::sign::{EntropySource, NodeSigner};
use lightning::util::config::UserConfig;
use lightning::util::persist::{
    KVStoreSync, CHANNEL_MANAGER_PERSISTENCE_KEY, CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE, OUTPUT_SWEEPER_PERSISTENCE_KEY,
    OUTPUT_SWEEPER_PERSISTENCE_PRIMARY_NAMESPACE, OUTPUT_SWEEPER_PERSISTENCE_SECONDARY_NAMESPACE,
};
use lightning::util::ser::ReadableArgs;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::broadcast::NodeBroadcaster;
use super::error::HostError;
use super::logger::LdkLogger;
use super::persist::MonitorPersister;
use super::starting::Starting;
use super::types::{
    ChainFilter, ChainMonitor, ChannelManager, GossipSync, Graph, Keys, Logger, OnionMessenger,
    PeerManager, SharedScorer, Sweeper,
};
use crate::chain::{ChainObserver, FeeCache, ListenerId};
use crate::signer::channel_proxy::RemoteChannelSigner;
use crate::signer::link::SignerLink;
use crate::signer::node_proxy::{RemoteKeys, RemoteWalletSigner};
use crate::signer::pending::{Pending, Retry};
use crate::signer::protocol::Handover;
use crate::store::{KvStore, NodeRow, Rows, Store};
use crate::wallet::OnchainWallet;

/// What every node of a host shares.
#[derive(Clone)]
pub struct Shared {
    pub observer: Arc<ChainObserver>,
    pub graph: Arc<Graph>,
    pub scorer: SharedScorer,
    pub gossip: Arc<GossipSync>,
    pub store: Store,
    pub background: super::Background,
}

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
    /// The node's signer: every signature, and whether it is attached.
    pub(crate) link: SignerLink,
    pub(crate) kv: Arc<KvStore>,
    /// Writes the channel monitors, together with the manager (see `persist.rs`).
    pub(crate) persister: Arc<MonitorPersister>,
    pub(crate) shared: Shared,
    pub(crate) logger: Arc<Logger>,
    listen_addr: SocketAddr,
    listener_id: Mutex<Option<ListenerId>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Peers' last known addresses, for reconnection (kept in memory, written through to `kv`).
    pub(crate) address_book: Mutex<HashMap<PublicKey, SocketAddr>>,
    /// Callers of `pay_invoice` waiting for their payment's outcome, by payment hash.
    pub(crate) payment_waiters: Mutex<HashMap<[u8; 32], Vec<oneshot::Sender<PaymentOutcome>>>>,
    /// Payments being handed to LDK, so one invoice paid twice at once starts only once.
    pub(crate) starting: Starting,
    /// Whether the node has an announced channel, so may forward for the network: only then
    /// are its HTLCs held back a random delay (see `driver.rs`). Assumed until its channels
    /// are first listed.
    announced: AtomicBool,
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

/// The node's chain listener: every component sees each block once, in this order.
struct NodeChain {
    chain_monitor: Arc<ChainMonitor>,
    channel_manager: Arc<ChannelManager>,
    sweeper: Arc<Sweeper>,
    wallet: Arc<OnchainWallet>,
}

impl Listen for NodeChain {
    fn filtered_block_connected(
        &self,
        header: &bitcoin::block::Header,
        txdata: &lightning::chain::transaction::TransactionData,
        height: u32,
    ) {
        self.chain_monitor
            .filtered_block_connected(header, txdata, height);
        self.channel_manager
            .filtered_block_connected(header, txdata, height);
        self.sweeper
            .filtered_block_connected(header, txdata, height);
        self.wallet.filtered_block_connected(header, txdata, height);
        self.archive_if_due(height);
    }

    fn block_connected(&self, block: &Block, height: u32) {
        self.chain_monitor.block_connected(block, height);
        self.channel_manager.block_connected(block, height);
        self.sweeper.block_connected(block, height);
        self.wallet.block_connected(block, height);
        self.archive_if_due(height);
    }

    fn blocks_disconnected(&self, fork_point: BestBlock) {
        self.chain_monitor.blocks_disconnected(fork_point);
        self.channel_manager.blocks_disconnected(fork_point);
        self.sweeper.blocks_disconnected(fork_point);
        self.wallet.blocks_disconnected(fork_point);
    }
}

/// Blocks between two looks for channels to archive: LDK archives a monitor only
/// [`ARCHIVAL_DELAY_BLOCKS`](lightning::chain::channelmonitor::ARCHIVAL_DELAY_BLOCKS) after
/// its balances were first seen empty, so a daily look costs at most a day more.
const ARCHIVE_EVERY_BLOCKS: u32 = 144;

impl NodeChain {
    /// Archives the monitors of channels that are closed and fully resolved (LDK's background
    /// processor leaves this to its user): they are then neither fed blocks nor loaded at
    /// start. Driven by blocks, not a timer, so a host catching up archives as it goes.
    fn archive_if_due(&self, height: u32) {
        if height.is_multiple_of(ARCHIVE_EVERY_BLOCKS) {
            self.chain_monitor.archive_fully_resolved_channel_monitors();
        }
    }
}

/// A monitor being caught up before the chain monitor takes it over.
type MonitorListener = (
    ChannelMonitor<RemoteChannelSigner>,
    Arc<NodeBroadcaster>,
    Arc<FeeCache>,
    Arc<Logger>,
);

/// A stored value, or `None` when it was never written.
pub(crate) fn read_optional(
    kv: &dyn KVStoreSync,
    primary: &str,
    secondary: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, HostError> {
    match kv.read(primary, secondary, key) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == lightning::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Time since the Unix epoch (zero if the clock is before it).
pub(crate) fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Channel settings for hosted nodes: private channels between known peers.
pub fn user_config() -> UserConfig {
    let mut config = UserConfig::default();
    config
        .channel_handshake_limits
        .force_announced_channel_preference = false;
    config.channel_handshake_config.announce_for_forwarding = false;
    // Lets a test or small host open a channel and use it after a few blocks.
    config.channel_handshake_config.minimum_depth = 1;
    config.channel_handshake_limits.max_minimum_depth = 6;
    // Inbound opens are put to the signer's policy first (see events.rs).
    config.manually_accept_inbound_channels = true;
    config
}

impl Node {
    /// Builds a node from the store (or fresh), catches it up with the chain and starts it.
    pub(crate) async fn start(
        alias: &str,
        link: SignerLink,
        handover: Handover,
        shared: Shared,
        listen: SocketAddr,
    ) -> Result<Arc<Node>, HostError> {
        let id = handover.node_id;
        let id_hex = id.to_string();
        let store = shared.store.clone();
        let observer = shared.observer.clone();
        let network = observer.network();
        let kv = Arc::new(store.kv(&id_hex));
        let pending = Pending::new(link.clone(), tokio::runtime::Handle::current());
        let keys: Keys = Arc::new(RemoteKeys::load(
            handover.clone(),
            pending.clone(),
            kv.clone() as Arc<dyn KVStoreSync + Send + Sync>,
        )?);
        if link.is_attached() {
            if let Err(e) = keys.signer_attached().await {
                tracing::warn!(node = %id, error = %e, "could not fill the channel key pool yet");
            }
        }
        let logger = Arc::new(LdkLogger::new(format!("{alias}:{}", &id_hex[..8])));
        let fees = observer.fee_estimator();
        let tip = observer.best_block().ok_or(HostError::NoChainTip)?;

        let birthday = bdk_wallet::chain::BlockId {
            height: tip.height,
            hash: tip.block_hash,
        };
        let wallet = Arc::new(OnchainWallet::load_or_create(
            Arc::new(RemoteWalletSigner::new(link.clone(), &handover)),
            network,
            kv.clone() as Arc<dyn KVStoreSync + Send + Sync>,
            birthday,
        )?);
        let broadcaster = Arc::new(NodeBroadcaster::new(observer.broadcaster(), wallet.clone()));

        let persister = Arc::new(MonitorPersister::new(
            kv.clone(),
            shared.background == super::Background::Shared,
            keys.clone(),
            broadcaster.clone(),
            fees.clone(),
            logger.clone(),
        ));
        let chain_monitor: Arc<ChainMonitor> = Arc::new(ChainMonitor::new(
            None,
            broadcaster.clone(),
            logger.clone(),
            fees.clone(),
            persister.clone(),
            keys.clone(),
            keys.get_peer_storage_key(),
        ));
        let router = Arc::new(DefaultRouter::new(
            shared.graph.clone(),
            logger.clone(),
            keys.clone(),
            shared.scorer.clone(),
            ProbabilisticScoringFeeParameters::default(),
        ));
        let message_router = Arc::new(DefaultMessageRouter::new(
            shared.graph.clone(),
            keys.clone(),
        ));

        // Channel monitors first: the channel manager is read against them.
        let mut monitors: Vec<(BlockHash, ChannelMonitor<RemoteChannelSigner>)> = persister
            .read_monitors()
            .map_err(|e| HostError::Corrupt(format!("channel monitors of {id_hex}: {e}")))?;
        let manager_bytes = read_optional(
            &*kv,
            CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
            CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
            CHANNEL_MANAGER_PERSISTENCE_KEY,
        )?;
        let channel_manager = match manager_bytes {
            Some(bytes) => {
                let args = ChannelManagerReadArgs::new(
                    keys.clone(),
                    keys.clone(),
                    keys.clone(),
                    fees.clone(),
                    chain_monitor.clone(),
                    broadcaster.clone(),
                    router.clone(),
                    message_router.clone(),
                    logger.clone(),
                    user_config(),
                    monitors.iter().map(|(_, m)| m).collect(),
                );
                let (_, manager) = <(BlockHash, ChannelManager)>::read(&mut &bytes[..], args)
                    .map_err(|e: DecodeError| {
                        HostError::Corrupt(format!("channel manager of {id_hex}: {e}"))
                    })?;
                manager
            }
            None => {
                if !monitors.is_empty() {
                    return Err(HostError::Corrupt(format!(
                        "{id_hex} has channel monitors but no channel manager"
                    )));
                }
                let params = ChainParameters {
                    network,
                    best_block: tip,
                };
                ChannelManager::new(
                    fees.clone(),
                    chain_monitor.clone(),
                    broadcaster.clone(),
                    router,
                    message_router.clone(),
                    logger.clone(),
                    keys.clone(),
                    keys.clone(),
                    keys.clone(),
                    user_config(),
                    params,
                    now().as_secs() as u32,
                )
            }
        };
        let channel_manager = Arc::new(channel_manager);

        let sweeper_bytes = read_optional(
            &*kv,
            OUTPUT_SWEEPER_PERSISTENCE_PRIMARY_NAMESPACE,
            OUTPUT_SWEEPER_PERSISTENCE_SECONDARY_NAMESPACE,
            OUTPUT_SWEEPER_PERSISTENCE_KEY,
        )?;
        let sweeper: Arc<Sweeper> = Arc::new(match sweeper_bytes {
            Some(bytes) => {
                let args = (
                    broadcaster.clone(),
                    fees.clone(),
                    None::<Arc<ChainFilter>>,
                    keys.clone(),
                    wallet.clone(),
                    kv.clone(),
                    logger.clone(),
                );
                let (_, sweeper) = <(BestBlock, Sweeper)>::read(&mut &bytes[..], args)
                    .map_err(|e| HostError::Corrupt(format!("sweeper of {id_hex}: {e}")))?;
                sweeper
            }
            None => Sweeper::new(
                channel_manager.current_best_block(),
                broadcaster.clone(),
                fees.clone(),
                None,
                keys.clone(),
                wallet.clone(),
                kv.clone(),
                logger.clone(),
            ),
        });

        // Catch every component up from its own best block, through the shared block cache.
        let monitor_listeners: Vec<(BlockHash, Arc<MonitorListener>)> = monitors
            .drain(..)
            .map(|(best, m)| {
                (
                    best,
                    Arc::new((m, broadcaster.clone(), fees.clone(), logger.clone())),
                )
            })
            .collect();
        let wallet_best = wallet.best_block();
        let mut parts: Vec<(BlockHash, Arc<dyn Listen + Send + Sync>)> = vec![
            (
                channel_manager.current_best_block().block_hash,
                channel_manager.clone(),
            ),
            (sweeper.current_best_block().block_hash, sweeper.clone()),
            (wallet_best.hash, wallet.clone()),
        ];
        for (best, m) in &monitor_listeners {
            parts.push((*best, m.clone()));
        }
        let synced = observer.sync(alias.to_string(), parts).await?;
        for (_, m) in monitor_listeners {
            let (monitor, ..) = Arc::try_unwrap(m)
                .map_err(|_| HostError::Corrupt("monitor still shared after sync".into()))?;
            let channel_id = monitor.channel_id();
            match chain_monitor.load_existing_monitor(channel_id, monitor) {
                Ok(ChannelMonitorUpdateStatus::Completed) => {}
                other => {
                    return Err(HostError::Corrupt(format!(
                        "loading monitor {channel_id}: {other:?}"
                    )))
                }
            }
        }

        let onion_messenger: Arc<OnionMessenger> = Arc::new(OnionMessenger::new(
            keys.clone(),
            keys.clone(),
            logger.clone(),
            channel_manager.clone(),
            message_router,
            channel_manager.clone(),
            channel_manager.clone(),
            IgnoringMessageHandler {},
            IgnoringMessageHandler {},
        ));
        let handlers = MessageHandler {
            chan_handler: channel_manager.clone(),
            route_handler: shared.gossip.clone(),
            onion_message_handler: onion_messenger.clone(),
            custom_message_handler: IgnoringMessageHandler {},
            send_only_message_handler: chain_monitor.clone(),
        };
        let peer_manager: Arc<PeerManager> = Arc::new(PeerManager::new(
            handlers,
            now().as_secs() as u32,
            &keys.get_secure_random_bytes(),
            logger.clone(),
            keys.clone(),
        ));

        // The preferred port (the one peers stored last time), else any free one.
        let tcp = match tokio::net::TcpListener::bind(listen).await {
            Ok(tcp) => tcp,
            Err(_) if listen.port() != 0 => {
                let any = SocketAddr::new(listen.ip(), 0);
                tokio::net::TcpListener::bind(any)
                    .await
                    .map_err(|source| HostError::Listen { addr: any, source })?
            }
            Err(source) => {
                return Err(HostError::Listen {
                    addr: listen,
                    source,
                })
            }
        };
        let listen_addr = tcp.local_addr().map_err(HostError::Io)?;
        let (stop, _) = watch::channel(false);

        let address_book = super::peers::load_address_book(&*kv);
        let node = Arc::new(Node {
            id,
            alias: alias.to_string(),
            channel_manager: channel_manager.clone(),
            chain_monitor: chain_monitor.clone(),
            peer_manager: peer_manager.clone(),
            onion_messenger,
            wallet: wallet.clone(),
            sweeper: sweeper.clone(),
            keys,
            link,
            kv,
            persister,
            shared: shared.clone(),
            logger,
            listen_addr,
            listener_id: Mutex::new(None),
            stop,
            tasks: Mutex::new(Vec::new()),
            payment_waiters: Mutex::new(HashMap::new()),
            starting: Starting::default(),
            address_book: Mutex::new(address_book),
            announced: AtomicBool::new(true),
        });

        // Answers that arrive after LDK heard "pending" make it retry.
        let (weak_manager, weak_monitor) = (
            Arc::downgrade(&node.channel_manager),
            Arc::downgrade(&node.chain_monitor),
        );
        pending.set_unblock(Box::new(move |retry| match retry {
            Retry::Channels => {
                if let Some(manager) = weak_manager.upgrade() {
                    manager.signer_unblocked(None);
                }
            }
            Retry::Monitors => {
                if let Some(monitor) = weak_monitor.upgrade() {
                    monitor.signer_unblocked(None);
                }
            }
        }));

        // A refused signature leaves its operation waiting: the node's user hears of it.
        let (events, node_hex) = (shared.store.clone(), id_hex.clone());
        pending.set_on_refusal(Box::new(move |refused| {
            events.queue_event(
                &node_hex,
                "signature_refused",
                &serde_json::json!({
                    "request": refused.kind,
                    "channel_id": refused.channel_id.map(|c| c.to_string()),
                    "reason": refused.reason,
                }),
            )
        }));

        let chain = Arc::new(NodeChain {
            chain_monitor,
            channel_manager,
            sweeper,
            wallet,
        });
        let listener_id = observer.join(alias.to_string(), chain, synced).await?;
        *node.listener_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener_id);

        store.upsert_node(&NodeRow {
            node_id: id_hex,
            alias: alias.to_string(),
            listen_addr: Some(listen_addr.to_string()),
            status: "running".into(),
            // The store keeps the first insert's time on a restart.
            created_at: now().as_secs() as i64,
        })?;

        let tasks = vec![
            tokio::spawn(super::accept::accept_loop(node.clone(), tcp)),
            tokio::spawn(super::background::run(node.clone())),
            tokio::spawn(super::parking::watch_signer(node.clone(), pending)),
        ];
        *node.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        let mut rows = Rows::default();
        super::events::refresh_channels(&node, &mut rows)?;
        node.store().write_rows(rows)?;
        Ok(node)
    }

    /// Notes whether any of `channels` (the node's open ones) is announced.
    pub(crate) fn note_announced(&self, channels: &[ChannelDetails]) {
        let any = channels.iter().any(|c| c.is_announced);
        self.announced.store(any, Ordering::Relaxed);
    }

    /// Whether the node may forward for the network (it has an announced channel).
    pub(crate) fn announced(&self) -> bool {
        self.announced.load(Ordering::Relaxed)
    }

    pub(crate) fn store(&self) -> &Store {
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

    /// Stops the node: leaves the observer, drops peers, ends its tasks, persists its state.
    pub(crate) async fn shutdown(&self) {
        if let Some(id) = self
            .listener_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            self.shared.observer.leave(id);
        }
        let _ = self.stop.send(true);
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.peer_manager.disconnect_all_peers();
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
