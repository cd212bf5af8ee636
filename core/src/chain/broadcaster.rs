//! One transaction broadcaster for every node of a host.

use std::sync::atomic::{AtomicU64, Ordering};

use bitcoin::Transaction;
use lightning::chain::chaininterface::BroadcasterInterface;
use tokio::runtime::Handle;

use super::rpc::{RpcClient, RpcError};

/// Sends transactions with `sendrawtransaction` without blocking the caller (LDK calls this
/// from inside its locks). Failures are logged: LDK rebroadcasts what still matters.
pub struct Broadcaster {
    rpc: RpcClient,
    runtime: Handle,
    sent: AtomicU64,
}

impl Broadcaster {
    pub fn new(rpc: RpcClient, runtime: Handle) -> Self {
        Broadcaster {
            rpc,
            runtime,
            sent: AtomicU64::new(0),
        }
    }

    /// Transactions handed to the chain node so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Broadcasts and waits for the chain node's answer (wallet sends, tests).
    pub async fn send(&self, tx: &Transaction) -> Result<bitcoin::Txid, RpcError> {
        let hex = bitcoin::consensus::encode::serialize_hex(tx);
        let txid: String = self
            .rpc
            .call("sendrawtransaction", serde_json::json!([hex]))
            .await?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        txid.parse().map_err(|_| RpcError::Decode {
            method: "sendrawtransaction".into(),
            reason: format!("not a txid: {txid}"),
        })
    }
}

impl BroadcasterInterface for Broadcaster {
    fn broadcast_transactions(&self, txs: &[&Transaction]) {
        for tx in txs {
            let hex = bitcoin::consensus::encode::serialize_hex(*tx);
            let txid = tx.compute_txid();
            let rpc = self.rpc.clone();
            self.sent.fetch_add(1, Ordering::Relaxed);
            self.runtime.spawn(async move {
                match rpc
                    .call::<String>("sendrawtransaction", serde_json::json!([hex]))
                    .await
                {
                    Ok(_) => tracing::debug!(%txid, "broadcast"),
                    // "already in block chain/mempool" is the common, harmless case on rebroadcast.
                    Err(e) => tracing::info!(%txid, error = %e, "broadcast not accepted"),
                }
            });
        }
    }
}
