//! The host: many nodes in one process over one observer, one graph and scorer, one store.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use bitcoin::Network;
use lightning::routing::gossip::{NetworkGraph, P2PGossipSync};
use lightning::routing::scoring::{ProbabilisticScorer, ProbabilisticScoringDecayParameters};
use lightning::util::persist::{
    KVStoreSync, NETWORK_GRAPH_PERSISTENCE_KEY, NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE,
    NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE, SCORER_PERSISTENCE_KEY,
    SCORER_PERSISTENCE_PRIMARY_NAMESPACE, SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
};
use lightning::util::ser::{ReadableArgs, Writeable};
use tokio::task::JoinHandle;

use crate::chain::{ChainObserver, RpcConfig};
use crate::error::HostError;
use crate::logger::LdkLogger;
use crate::node::Node;
use crate::shared::Background;
use crate::shared::Shared;
use crate::signer_client::link::SignerLink;
use crate::store::read_optional;
use crate::store::{Store, HOST_SCOPE};
use crate::types::{Graph, Scorer};

/// How long a shutdown waits for the host's own aborted tasks: longer than a blocking wait
/// inside one may last ([`SYNC_DEADLINE`](crate::signer_client::link::SYNC_DEADLINE) for a
/// signer).
const TASK_GRACE: Duration = Duration::from_secs(10);

/// How to run a host.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The host's SQLite database file.
    pub db_path: PathBuf,
    pub rpc: RpcConfig,
    pub network: Network,
    /// How often the observer asks the chain node for a new tip.
    pub poll_interval: Duration,
    /// Address nodes listen on (one port each).
    pub listen_ip: IpAddr,
    /// How long a new node waits for its signer's first attach.
    pub signer_wait: Duration,
    /// How nodes' events, persistence and timers are run.
    pub background: Background,
}

impl HostConfig {
    pub fn regtest(db_path: PathBuf, rpc: RpcConfig) -> Self {
        HostConfig {
            db_path,
            rpc,
            network: Network::Regtest,
            poll_interval: Duration::from_millis(250),
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            signer_wait: Duration::from_secs(60),
            background: Background::default(),
        }
    }
}

pub struct Host {
    config: HostConfig,
    shared: Shared,
    nodes: RwLock<HashMap<PublicKey, Arc<Node>>>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Host {
    /// Opens the store (refusing a database another host holds), loads the shared graph and
    /// scorer, and starts the chain observer. Nodes are added with [`Host::add_node`].
    pub async fn start(config: HostConfig) -> Result<Arc<Host>, HostError> {
        let store = Store::open(&config.db_path)?;
        let observer =
            ChainObserver::start(&config.rpc, config.network, config.poll_interval).await?;
        let kv = store.kv(HOST_SCOPE);
        let logger = Arc::new(LdkLogger::new("host"));
        let graph: Arc<Graph> = Arc::new(
            match read_optional(
                &kv,
                NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE,
                NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE,
                NETWORK_GRAPH_PERSISTENCE_KEY,
            )? {
                Some(bytes) => NetworkGraph::read(&mut &bytes[..], logger.clone())
                    .map_err(|e| HostError::Corrupt(format!("network graph: {e}")))?,
                None => NetworkGraph::new(config.network, logger.clone()),
            },
        );
        let decay = ProbabilisticScoringDecayParameters::default();
        let scorer: Scorer = match read_optional(
            &kv,
            SCORER_PERSISTENCE_PRIMARY_NAMESPACE,
            SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
            SCORER_PERSISTENCE_KEY,
        )? {
            Some(bytes) => {
                ProbabilisticScorer::read(&mut &bytes[..], (decay, graph.clone(), logger.clone()))
                    .map_err(|e| HostError::Corrupt(format!("scorer: {e}")))?
            }
            None => ProbabilisticScorer::new(decay, graph.clone(), logger.clone()),
        };
        let gossip = Arc::new(P2PGossipSync::new(graph.clone(), None, logger.clone()));
        let shared = Shared {
            observer,
            graph,
            scorer: Arc::new(RwLock::new(scorer)),
            gossip,
            store,
            background: config.background,
        };
        let host = Arc::new(Host {
            config,
            shared,
            nodes: RwLock::new(HashMap::new()),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&host);
        let reconnect = tokio::spawn(crate::peers::reconnect_loop(
            move || weak.upgrade().map(|h| h.nodes()).unwrap_or_default(),
            Duration::from_secs(2),
        ));
        let mut tasks = vec![reconnect];
        if host.config.background == Background::Shared {
            let weak = Arc::downgrade(&host);
            tasks.push(tokio::spawn(crate::driver::tick_loop(move || {
                weak.upgrade().map(|h| h.nodes()).unwrap_or_default()
            })));
        }
        host.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tasks);
        Ok(host)
    }

    /// Starts a node with its signer: a new one, or one the store already knows (restart).
    pub async fn add_node(&self, alias: &str, link: SignerLink) -> Result<Arc<Node>, HostError> {
        let id = link.node_id();
        if self
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
        {
            return Err(HostError::AlreadyRunning(id.to_string()));
        }
        // Come back on the same port so peers' stored addresses stay valid.
        let listen = self
            .shared
            .store
            .node(&id.to_string())?
            .and_then(|n| n.listen_addr)
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .unwrap_or(SocketAddr::new(self.config.listen_ip, 0));
        let kv = self.shared.store.kv(&id.to_string());
        let handover = crate::handover::obtain(&kv, &link, self.config.signer_wait).await?;
        let node = Node::start(alias, link, handover, self.shared.clone(), listen).await?;
        self.nodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, node.clone());
        Ok(node)
    }

    /// Stops a node and marks it stopped; its state stays in the store.
    pub async fn remove_node(&self, id: &PublicKey) -> Result<(), HostError> {
        let node = self
            .nodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .ok_or_else(|| HostError::UnknownNode(id.to_string()))?;
        node.shutdown().await;
        self.shared
            .store
            .set_node_status(&id.to_string(), "stopped")?;
        Ok(())
    }

    pub fn node(&self, id: &PublicKey) -> Result<Arc<Node>, HostError> {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| HostError::UnknownNode(id.to_string()))
    }

    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    pub fn observer(&self) -> &Arc<ChainObserver> {
        &self.shared.observer
    }

    /// Persists the shared graph and scorer.
    pub fn persist_shared(&self) -> Result<(), HostError> {
        let kv = self.shared.store.kv(HOST_SCOPE);
        kv.write(
            NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE,
            NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE,
            NETWORK_GRAPH_PERSISTENCE_KEY,
            self.shared.graph.encode(),
        )?;
        let scorer = self
            .shared
            .scorer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .encode();
        kv.write(
            SCORER_PERSISTENCE_PRIMARY_NAMESPACE,
            SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
            SCORER_PERSISTENCE_KEY,
            scorer,
        )?;
        Ok(())
    }

    /// Stops every node (each persists on its way out) and the host's own tasks.
    pub async fn shutdown(&self) {
        let nodes: Vec<_> = self
            .nodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (_, node) in nodes {
            node.shutdown().await;
        }
        // Aborted tasks are awaited too: one inside a blocking wait (a reconnect's ECDH, a
        // save) ends only when that wait returns, and must not resume after its runtime shut
        // down (tokio panics on a timer polled then).
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in &tasks {
            task.abort();
        }
        let deadline = tokio::time::Instant::now() + TASK_GRACE;
        for task in tasks {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        if let Err(e) = self.persist_shared() {
            tracing::warn!(error = %e, "persisting graph and scorer failed");
        }
    }
}
