//! One transaction broadcaster for every node of a host.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bitcoin::Transaction;
use lightning::chain::chaininterface::BroadcasterInterface;
use tokio::runtime::Handle;

use super::rpc::{RpcClient, RpcError};

/// First wait before sending again a transaction the chain node did not receive.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two sends of the same transaction.
pub const RETRY_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Sends of one transaction before giving up: 1+2+4+8+16 s, then every 30 s, about 4 minutes
/// in all, which rides out a chain node restart without keeping tasks forever.
const RETRY_ATTEMPTS: u32 = 12;

/// Sends transactions with `sendrawtransaction` without blocking the caller (LDK calls this
/// from inside its locks). A send that did not reach the chain node (down, restarting) is
/// retried with a bounded backoff, since LDK does not rebroadcast everything (funding
/// transactions, for one); a rejection is logged: LDK rebroadcasts what still matters.
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
            self.runtime.spawn(send_with_retry(rpc, hex, txid));
        }
    }
}

/// One transaction's broadcast: retried while the chain node is unreachable, at most
/// [`RETRY_ATTEMPTS`] sends, every failure logged.
async fn send_with_retry(rpc: RpcClient, hex: String, txid: bitcoin::Txid) {
    let mut wait = RETRY_FIRST;
    for attempt in 1..=RETRY_ATTEMPTS {
        match rpc
            .call::<String>("sendrawtransaction", serde_json::json!([&hex]))
            .await
        {
            Ok(_) => {
                tracing::debug!(%txid, attempt, "broadcast");
                return;
            }
            Err(e) if e.is_unreachable() && attempt < RETRY_ATTEMPTS => {
                tracing::warn!(%txid, attempt, error = %e, retry_in = ?wait, "broadcast did not reach the chain node");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX_BACKOFF);
            }
            Err(e) if e.is_unreachable() => {
                tracing::warn!(%txid, attempt, error = %e, "broadcast given up: chain node unreachable");
                return;
            }
            // "already in block chain/mempool" is the common, harmless case on rebroadcast.
            Err(e) => {
                tracing::info!(%txid, error = %e, "broadcast not accepted");
                return;
            }
        }
    }
}
