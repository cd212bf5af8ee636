//! A node whose signer is away is parked: it drops its peers and takes no new ones (it could
//! sign nothing for them), keeps its state, and resumes when the signer attaches again. Each
//! change is an event (`signer_attached`, `signer_away`) its API clients see.

use std::sync::Arc;

use crate::node::Node;
use crate::signer_client::pending::Pending;

/// Follows the node's signer until the node stops. A task that only waits (no timer).
pub(crate) async fn watch_signer(node: Arc<Node>, pending: Arc<Pending>) {
    let mut attached = node.link.attached();
    let mut stopped = node.stopped();
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            changed = attached.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let now_attached = *attached.borrow_and_update();
        // Queued, not awaited: the node's life does not wait on its event log.
        let kind = if now_attached {
            "signer_attached"
        } else {
            "signer_away"
        };
        node.store()
            .queue_event(&node.id.to_string(), kind, &serde_json::json!({}));
        if now_attached {
            tracing::info!(node = %node.alias, "signer attached; node resumes");
            // Signatures that were pending when the signer left are asked again now.
            pending.retry_all();
            if let Err(e) = node.keys.signer_attached().await {
                tracing::warn!(node = %node.alias, error = %e, "channel key pool not refilled");
            }
            // Peers come back through the host's reconnect loop.
        } else {
            tracing::warn!(node = %node.alias, "signer away; node parked");
            node.peer_manager.disconnect_all_peers();
            // Saved now, the version this signer reached outlives a host restart even if no
            // channel save follows.
            if let Err(e) = node.keys.state_version().save_now(&node.kv) {
                tracing::error!(node = %node.alias, error = %e, "saving the signer state version failed");
            }
        }
    }
}
