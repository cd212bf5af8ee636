//! Sending from a node's on-chain wallet: built here, signed by the node's signer (whose policy
//! decides which destinations and amounts it signs), broadcast through the shared broadcaster.

use bitcoin::{Address, Amount, Txid};
use lightning::chain::chaininterface::BroadcasterInterface;
use serde_json::json;

use crate::error::HostError;
use crate::node::Node;

impl Node {
    /// Pays `amount_sat` to `address` from the node's wallet at the node's funding feerate;
    /// returns the transaction's id once it is broadcast. The event `onchain_sent` records it.
    pub fn send_onchain(&self, address: &str, amount_sat: u64) -> Result<Txid, HostError> {
        self.check_running()?;
        let network = self.wallet.network();
        let to = address
            .trim()
            .parse::<Address<_>>()
            .map_err(|e| HostError::InvalidInput(format!("address: {e}")))?
            .require_network(network)
            .map_err(|_| HostError::InvalidInput(format!("address: not a {network} address")))?;
        if amount_sat == 0 {
            return Err(HostError::InvalidInput(
                "amount_sat: must be above zero".into(),
            ));
        }
        let tx =
            self.wallet
                .build_send(&to, Amount::from_sat(amount_sat), self.funding_feerate())?;
        let txid = tx.compute_txid();
        self.broadcaster.broadcast_transactions(&[&tx]);
        self.store().insert_event(
            &self.id.to_string(),
            "onchain_sent",
            &json!({"txid": txid.to_string(), "address": to.to_string(), "amount_sat": amount_sat}),
        )?;
        Ok(txid)
    }
}
