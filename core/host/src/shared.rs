//! What every node of a host shares: the chain observer, the network graph and scorer, the
//! gossip handler, the store, and how background work runs.

use std::sync::Arc;

use crate::chain::ChainObserver;
use crate::store::Store;
use crate::types::{GossipSync, Graph, SharedScorer};

/// What every node of a host shares.
#[derive(Clone)]
pub struct Shared {
    pub observer: Arc<ChainObserver>,
    pub graph: Arc<Graph>,
    pub scorer: SharedScorer,
    pub gossip: Arc<GossipSync>,
    pub store: Store,
    pub background: Background,
}

/// How a host runs its nodes' background work (events, persistence, timers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Background {
    /// lightning-background-processor's async loop, one per node, each with its own timers:
    /// every node wakes at least every 10 s even when idle.
    PerNode,
    /// Per-node tasks that wake only on their node's events, plus one host-wide timer task.
    /// The default: lighter when idle (see ARCHITECTURE.md, "Background processing").
    #[default]
    Shared,
}
