//! Who waits for a node's next event. A subscriber of the node API's event stream sleeps on
//! its node's signal and, woken, reads the `events` table after its cursor: the table stays
//! the one source, so nothing is held in memory per subscriber and nothing can be missed or
//! repeated. A signal fires after the commit that wrote the events, never before.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// One signal per node that has subscribers.
#[derive(Default)]
pub(super) struct EventFeed {
    nodes: Mutex<HashMap<String, watch::Sender<()>>>,
}

impl EventFeed {
    /// A receiver that changes whenever events of `node_id` are committed from now on.
    pub(super) fn subscribe(&self, node_id: &str) -> watch::Receiver<()> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .entry(node_id.to_owned())
            .or_insert_with(|| watch::channel(()).0)
            .subscribe()
    }

    /// Events of `node_id` were committed: wakes its subscribers (and forgets a node that has
    /// none left).
    pub(super) fn written(&self, node_id: &str) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(signal) = nodes.get(node_id) {
            if signal.receiver_count() == 0 {
                nodes.remove(node_id);
            } else {
                signal.send_replace(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_wakes_for_its_node_only() {
        let feed = EventFeed::default();
        let mut a = feed.subscribe("a");
        let b = feed.subscribe("b");
        feed.written("a");
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
        a.mark_unchanged();
        drop(b);
        feed.written("b");
        assert!(!feed.nodes.lock().unwrap().contains_key("b"), "forgotten");
        feed.written("a");
        a.changed().await.expect("woken");
    }
}
