//! The concrete LDK types of a hosted node, named once.

use std::sync::{Arc, RwLock};

use lightning::chain::Filter;
use lightning::ln::peer_handler::IgnoringMessageHandler;
use lightning::onion_message::messenger::DefaultMessageRouter;
use lightning::routing::gossip::{NetworkGraph, P2PGossipSync};
use lightning::routing::router::DefaultRouter;
use lightning::routing::scoring::{ProbabilisticScorer, ProbabilisticScoringFeeParameters};
use lightning::routing::utxo::UtxoLookup;
use lightning::util::sweep::OutputSweeperSync;
use lightning_net_tokio::SocketDescriptor;

use crate::broadcast::NodeBroadcaster;
use crate::chain::FeeCache;
use crate::logger::LdkLogger;
use crate::persist::MonitorPersister;
use crate::signer_client::channel_signer_proxy::ChannelSignerProxy;
use crate::signer_client::keys_proxy::KeysProxy;
use crate::store::KvStore;
use crate::wallet::OnchainWallet;

/// Every key-related LDK interface of a node: the proxy to its signer.
pub type Keys = Arc<KeysProxy>;

pub type Logger = LdkLogger;
pub type Graph = NetworkGraph<Arc<Logger>>;
pub type Scorer = ProbabilisticScorer<Arc<Graph>, Arc<Logger>>;
pub type SharedScorer = Arc<RwLock<Scorer>>;
pub type ChainFilter = dyn Filter + Send + Sync;
pub type Utxos = Arc<dyn UtxoLookup + Send + Sync>;
pub type GossipSync = P2PGossipSync<Arc<Graph>, Utxos, Arc<Logger>>;
pub type ChainMonitor = lightning::chain::chainmonitor::ChainMonitor<
    ChannelSignerProxy,
    Arc<ChainFilter>,
    Arc<NodeBroadcaster>,
    Arc<FeeCache>,
    Arc<Logger>,
    Arc<MonitorPersister>,
    Keys,
>;
pub type Router = DefaultRouter<
    Arc<Graph>,
    Arc<Logger>,
    Keys,
    SharedScorer,
    ProbabilisticScoringFeeParameters,
    Scorer,
>;
pub type MessageRouter = DefaultMessageRouter<Arc<Graph>, Arc<Logger>, Keys>;
pub type ChannelManager = lightning::ln::channelmanager::ChannelManager<
    Arc<ChainMonitor>,
    Arc<NodeBroadcaster>,
    Keys,
    Keys,
    Keys,
    Arc<FeeCache>,
    Arc<Router>,
    Arc<MessageRouter>,
    Arc<Logger>,
>;
pub type OnionMessenger = lightning::onion_message::messenger::OnionMessenger<
    Keys,
    Keys,
    Arc<Logger>,
    Arc<ChannelManager>,
    Arc<MessageRouter>,
    Arc<ChannelManager>,
    Arc<ChannelManager>,
    IgnoringMessageHandler,
    IgnoringMessageHandler,
>;
pub type PeerManager = lightning::ln::peer_handler::PeerManager<
    SocketDescriptor,
    Arc<ChannelManager>,
    Arc<GossipSync>,
    Arc<OnionMessenger>,
    Arc<Logger>,
    IgnoringMessageHandler,
    Keys,
    Arc<ChainMonitor>,
>;
pub type Sweeper = OutputSweeperSync<
    Arc<NodeBroadcaster>,
    Arc<OnchainWallet>,
    Arc<FeeCache>,
    Arc<ChainFilter>,
    Arc<KvStore>,
    Arc<Logger>,
    Keys,
>;
