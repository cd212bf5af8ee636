//! A node's broadcaster: the host's shared one, with the node's wallet told first.

use std::sync::Arc;

use bitcoin::Transaction;
use lightning::chain::chaininterface::BroadcasterInterface;

use crate::chain::Broadcaster;
use crate::wallet::OnchainWallet;

/// What a node's LDK parts broadcast through. The node's wallet counts a transaction of its
/// own (a channel's funding, a sweep to it) from the moment it goes out and not before: a
/// funding LDK discards unbroadcast (the peer left before signing) leaves the wallet as it
/// was, its inputs only reserved, and a restart in between forgets nothing it should keep.
pub struct NodeBroadcaster {
    shared: Arc<Broadcaster>,
    wallet: Arc<OnchainWallet>,
}

impl NodeBroadcaster {
    pub fn new(shared: Arc<Broadcaster>, wallet: Arc<OnchainWallet>) -> Self {
        NodeBroadcaster { shared, wallet }
    }
}

impl BroadcasterInterface for NodeBroadcaster {
    fn broadcast_transactions(&self, txs: &[&Transaction]) {
        for tx in txs {
            // The chain still gets it; the wallet learns it from its block at the latest.
            if let Err(e) = self.wallet.transaction_broadcast(tx) {
                tracing::warn!(txid = %tx.compute_txid(), error = %e, "wallet did not record a broadcast");
            }
        }
        self.shared.broadcast_transactions(txs);
    }
}
