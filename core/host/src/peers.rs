//! Peer connections out of a node, and the address book that lets them come back after a
//! restart or a dropped connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use flotilla_proto::SignerError;
use lightning::util::persist::KVStoreSync;

use crate::error::HostError;
use crate::node::Node;

/// How long a TCP connect to a peer may take (as lightning-net-tokio's own connect).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const PEERS_NAMESPACE: &str = "flotilla_peers";

impl Node {
    /// Connects to a peer over TCP and remembers its address for reconnection.
    pub async fn connect(&self, peer: PublicKey, addr: SocketAddr) -> Result<(), HostError> {
        self.kv.write(
            PEERS_NAMESPACE,
            "",
            &peer.to_string(),
            addr.to_string().into_bytes(),
        )?;
        self.address_book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, addr);
        self.connect_once(peer, addr).await
    }

    /// Drops the connection to `peer` and forgets its address, so the node does not dial it
    /// again (the peer may still dial in).
    pub fn disconnect(&self, peer: &PublicKey) -> Result<(), HostError> {
        self.kv
            .remove(PEERS_NAMESPACE, "", &peer.to_string(), false)?;
        self.address_book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
        self.peer_manager.disconnect_by_node_id(*peer);
        Ok(())
    }

    /// Connected peers: node id, address (if known) and whether the peer dialled in.
    pub fn peers(&self) -> Vec<(PublicKey, Option<String>, bool)> {
        self.peer_manager
            .list_peers()
            .into_iter()
            .map(|p| {
                (
                    p.counterparty_node_id,
                    p.socket_address.map(|a| a.to_string()),
                    p.is_inbound_connection,
                )
            })
            .collect()
    }

    pub fn is_connected(&self, peer: &PublicKey) -> bool {
        self.peer_manager.peer_by_node_id(peer).is_some()
    }

    async fn connect_once(&self, peer: PublicKey, addr: SocketAddr) -> Result<(), HostError> {
        if self.is_connected(&peer) {
            return Ok(());
        }
        if !self.link.is_attached() {
            return Err(SignerError::Unavailable.into());
        }
        let unreachable = || HostError::PeerUnreachable {
            peer: peer.to_string(),
            addr: addr.to_string(),
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable())?
            .map_err(|_| unreachable())?;
        // Lightning's small messages must not wait out Nagle's algorithm (a commitment dance
        // is several one-message round trips; lightning-net-tokio leaves Nagle on).
        let _ = stream.set_nodelay(true);
        let stream = stream.into_std().map_err(|_| unreachable())?;
        tokio::spawn(lightning_net_tokio::setup_outbound(
            self.peer_manager.clone(),
            peer,
            stream,
        ));
        // The handshake completes asynchronously; wait for it, bounded.
        for _ in 0..100 {
            if self.is_connected(&peer) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(unreachable())
    }

    /// Known peers with their last address.
    pub fn known_peers(&self) -> Vec<(PublicKey, SocketAddr)> {
        let book = self.address_book.lock().unwrap_or_else(|p| p.into_inner());
        book.iter().map(|(peer, addr)| (*peer, *addr)).collect()
    }

    /// Known peers this node has channels with but is not connected to (none while parked).
    fn missing_peers(&self) -> Vec<(PublicKey, SocketAddr)> {
        if !self.link.is_attached() || self.check_running().is_err() {
            return Vec::new();
        }
        let counterparties: std::collections::HashSet<PublicKey> = self
            .channel_manager
            .list_channels()
            .iter()
            .map(|c| c.counterparty.node_id)
            .collect();
        self.known_peers()
            .into_iter()
            .filter(|(peer, _)| counterparties.contains(peer) && !self.is_connected(peer))
            .collect()
    }

    /// Reconnects to `missing` peers.
    async fn reconnect(&self, missing: Vec<(PublicKey, SocketAddr)>) {
        for (peer, addr) in missing {
            if let Err(e) = self.connect_once(peer, addr).await {
                tracing::debug!(node = %self.alias, %peer, error = %e, "reconnect failed");
            }
        }
    }
}

/// Reads a node's address book once, at start; [`Node::connect`] keeps it and the store in step.
pub(crate) fn load_address_book(kv: &dyn KVStoreSync) -> HashMap<PublicKey, SocketAddr> {
    let keys = kv.list(PEERS_NAMESPACE, "").unwrap_or_default();
    keys.into_iter()
        .filter_map(|k| {
            let peer: PublicKey = k.parse().ok()?;
            let addr = kv.read(PEERS_NAMESPACE, "", &k).ok()?;
            let addr: SocketAddr = String::from_utf8(addr).ok()?.parse().ok()?;
            Some((peer, addr))
        })
        .collect()
}

/// One loop for the whole host (not a timer per node) that restores dropped peer connections.
/// Each round checks every node in place and spawns work only for nodes missing a peer, all at
/// once, so one unreachable peer does not hold up the others.
pub(crate) async fn reconnect_loop(nodes: impl Fn() -> Vec<Arc<Node>>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let mut round = tokio::task::JoinSet::new();
        for node in nodes() {
            let missing = node.missing_peers();
            if !missing.is_empty() {
                round.spawn(async move { node.reconnect(missing).await });
            }
        }
        while round.join_next().await.is_some() {}
    }
}
