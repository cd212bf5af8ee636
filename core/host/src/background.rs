//! A node's background work (events, persistence, timers), in one of two modes: LDK's
//! lightning-background-processor loop per node, or the shared driver ([`crate::driver`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lightning::events::ReplayEvent;
use lightning_background_processor::{
    process_events_async_with_kv_store_sync, GossipSync, NO_LIQUIDITY_MANAGER,
};
use lightning_rapid_gossip_sync::RapidGossipSync;

use crate::node::Node;
use crate::shared::Background;
use crate::types::{GossipSync as P2pSync, Graph, Logger, SharedScorer, Utxos};

/// Gossip is shared by the host, so no node's loop prunes or persists the graph.
type NoGossip = GossipSync<
    Arc<P2pSync>,
    Arc<RapidGossipSync<Arc<Graph>, Arc<Logger>>>,
    Arc<Graph>,
    Utxos,
    Arc<Logger>,
>;

/// A node's background task, in the host's mode.
pub(crate) async fn run(node: Arc<Node>) {
    match node.shared.background {
        Background::PerNode => per_node(node).await,
        Background::Shared => crate::driver::drive(node).await,
    }
}

/// lightning-background-processor's loop for one node, as one tokio task (no thread).
async fn per_node(node: Arc<Node>) {
    let stop = node.stopped();
    let sleeper = move |d: Duration| {
        let mut stop = stop.clone();
        Box::pin(async move {
            tokio::select! {
                _ = tokio::time::sleep(d) => false,
                _ = stop.changed() => true,
            }
        })
    };
    let handler_node = node.clone();
    let handler = move |event| {
        let node = handler_node.clone();
        async move {
            crate::events::handle(&node, event).await.map_err(|e| {
                tracing::warn!(node = %node.alias, error = %e, "event handling failed; will replay");
                ReplayEvent()
            })
        }
    };
    let gossip: NoGossip = GossipSync::None;
    let result = process_events_async_with_kv_store_sync(
        node.kv.clone(),
        handler,
        node.chain_monitor.clone(),
        node.channel_manager.clone(),
        Some(node.onion_messenger.clone()),
        gossip,
        node.peer_manager.clone(),
        NO_LIQUIDITY_MANAGER,
        Some(node.sweeper.clone()),
        node.logger.clone(),
        None::<SharedScorer>,
        sleeper,
        false,
        || {
            Some(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
            )
        },
    )
    .await;
    if let Err(e) = result {
        tracing::error!(node = %node.alias, error = %e, "background processing stopped with an error");
    }
}
