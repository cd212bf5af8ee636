//! The concrete LDK types of a hosted node, named once.

use std::sync::{Arc, RwLock};

use lightning::chain::Filter;
use lightning::ln::channelmanager::SimpleArcChannelManager;
use lightning::ln::peer_handler::SimpleArcPeerManager;
use lightning::onion_message::messenger::SimpleArcOnionMessenger;
use lightning::routing::gossip::{NetworkGraph, P2PGossipSync};
use lightning::routing::scoring::ProbabilisticScorer;
use lightning::routing::utxo::UtxoLookup;
use lightning::sign::{InMemorySigner, KeysManager};
use lightning::util::sweep::OutputSweeperSync;
use lightning_net_tokio::SocketDescriptor;

use super::logger::LdkLogger;
use crate::chain::{Broadcaster, FeeCache};
use crate::store::KvStore;
use crate::wallet::OnchainWallet;

pub type Logger = LdkLogger;
pub type Graph = NetworkGraph<Arc<Logger>>;
pub type Scorer = ProbabilisticScorer<Arc<Graph>, Arc<Logger>>;
pub type SharedScorer = Arc<RwLock<Scorer>>;
pub type ChainFilter = dyn Filter + Send + Sync;
pub type Utxos = Arc<dyn UtxoLookup + Send + Sync>;
pub type GossipSync = P2PGossipSync<Arc<Graph>, Utxos, Arc<Logger>>;
pub type ChainMonitor = lightning::chain::chainmonitor::ChainMonitor<
    InMemorySigner,
    Arc<ChainFilter>,
    Arc<Broadcaster>,
    Arc<FeeCache>,
    Arc<Logger>,
    Arc<KvStore>,
    Arc<KeysManager>,
>;
pub type ChannelManager = SimpleArcChannelManager<ChainMonitor, Broadcaster, FeeCache, Logger>;
pub type OnionMessenger = SimpleArcOnionMessenger<ChainMonitor, Broadcaster, FeeCache, Logger>;
pub type PeerManager = SimpleArcPeerManager<
    SocketDescriptor,
    ChainMonitor,
    Broadcaster,
    FeeCache,
    Utxos,
    Logger,
    ChainFilter,
    KvStore,
>;
pub type Sweeper = OutputSweeperSync<
    Arc<Broadcaster>,
    Arc<OnchainWallet>,
    Arc<FeeCache>,
    Arc<ChainFilter>,
    Arc<KvStore>,
    Arc<Logger>,
    Arc<KeysManager>,
>;
