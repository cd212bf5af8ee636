//! Builds a node: its LDK objects from the store (or fresh), wired to the host's shared chain,
//! graph and store, caught up with the chain, then started.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use bitcoin::BlockHash;
use flotilla_proto::Handover;
use lightning::chain::channelmonitor::ChannelMonitor;
use lightning::chain::{BestBlock, ChannelMonitorUpdateStatus, Listen};
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
use tokio::sync::watch;

use crate::broadcast::NodeBroadcaster;
use crate::chain::FeeCache;
use crate::error::HostError;
use crate::logger::LdkLogger;
use crate::node::{now, Node};
use crate::node_chain::NodeChain;
use crate::persist::MonitorPersister;
use crate::shared::{Background, Shared};
use crate::signer_client::channel_signer_proxy::ChannelSignerProxy;
use crate::signer_client::keys_proxy::KeysProxy;
use crate::signer_client::link::SignerLink;
use crate::signer_client::pending::{Pending, Retry};
use crate::signer_client::wallet_signer_proxy::WalletSignerProxy;
use crate::starting::Starting;
use crate::store::{read_optional, NodeRow, Rows};
use crate::types::{
    ChainFilter, ChainMonitor, ChannelManager, Keys, Logger, OnionMessenger, PeerManager, Sweeper,
};
use crate::wallet::OnchainWallet;

/// A monitor being caught up before the chain monitor takes it over.
type MonitorListener = (
    ChannelMonitor<ChannelSignerProxy>,
    Arc<NodeBroadcaster>,
    Arc<FeeCache>,
    Arc<Logger>,
);

/// Channel settings for hosted nodes: private channels between known peers.
pub(crate) fn user_config() -> UserConfig {
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
        let keys: Keys = Arc::new(KeysProxy::load(
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
            Arc::new(WalletSignerProxy::new(link.clone(), &handover)),
            network,
            kv.clone() as Arc<dyn KVStoreSync + Send + Sync>,
            birthday,
        )?);
        let broadcaster = Arc::new(NodeBroadcaster::new(observer.broadcaster(), wallet.clone()));

        let persister = Arc::new(MonitorPersister::new(
            kv.clone(),
            shared.background == Background::Shared,
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
        let mut monitors: Vec<(BlockHash, ChannelMonitor<ChannelSignerProxy>)> = persister
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

        let address_book = crate::peers::load_address_book(&*kv);
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
            broadcaster,
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
            halted: Mutex::new(None),
        });
        // Fundings still waiting for the peer's first signature keep their coins.
        crate::funding::reserve_pending(&node)?;

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

        // A refused signature leaves its operation waiting: the node's user hears of it. A
        // channel the node is opening whose commitment is refused never opens: it is
        // abandoned now (nothing is on chain), not left until LDK gives up on it an hour later.
        let (events, node_hex) = (shared.store.clone(), id_hex.clone());
        let (weak_manager, runtime) = (
            Arc::downgrade(&node.channel_manager),
            tokio::runtime::Handle::current(),
        );
        pending.set_on_refusal(Box::new(move |refused| {
            events.queue_event(
                &node_hex,
                "signature_refused",
                &serde_json::json!({
                    "request": refused.kind,
                    "channel_id": refused.channel_id.map(|c| c.to_string()),
                    "reason": refused.reason,
                }),
            );
            let Some(channel_id) = refused.channel_id else {
                return;
            };
            if refused.kind != "sign_counterparty_commitment" {
                return;
            }
            let (weak_manager, events, node_hex) =
                (weak_manager.clone(), events.clone(), node_hex.clone());
            // Never inline: the refusal may arrive while LDK holds the manager's locks.
            runtime.spawn(async move {
                let Some(manager) = weak_manager.upgrade() else {
                    return;
                };
                crate::funding::abandon_unopened(
                    &manager,
                    &events,
                    &node_hex,
                    channel_id,
                    &refused.reason,
                );
            });
        }));

        let chain = Arc::new(NodeChain {
            chain_monitor,
            channel_manager,
            sweeper,
            wallet,
            store: shared.store.clone(),
            node_id: id_hex.clone(),
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
            tokio::spawn(crate::accept::accept_loop(node.clone(), tcp)),
            tokio::spawn(crate::background::run(node.clone())),
            tokio::spawn(crate::parking::watch_signer(node.clone(), pending)),
        ];
        *node.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        let mut rows = Rows::default();
        crate::events::refresh_channels(&node, &mut rows)?;
        node.store().write_rows(rows)?;
        Ok(node)
    }
}
