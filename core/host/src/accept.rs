//! Inbound peer connections: one listening port per node, served by lightning-net-tokio.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::node::Node;

/// Accepts peers until the node stops.
pub(crate) async fn accept_loop(node: Arc<Node>, listener: TcpListener) {
    let mut stopped = node.stopped();
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // A parked node (signer away) takes no peers: it could not sign for them.
                    if !node.link.is_attached() {
                        continue;
                    }
                    // Lightning's small messages must not wait out Nagle's algorithm.
                    let _ = stream.set_nodelay(true);
                    let Ok(stream) = stream.into_std() else { continue };
                    let pm = node.peer_manager.clone();
                    tokio::spawn(lightning_net_tokio::setup_inbound(pm, stream));
                }
                Err(e) => {
                    tracing::warn!(node = %node.alias, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}
