//! Linking two regtest instances over P2P, e.g. to split and rejoin a chain for reorg tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flotilla_host::chain::rpc::RpcError;
use serde::Deserialize;
use serde_json::json;

use super::{Regtest, RegtestError};
use crate::process::ua_tag;

/// How long a link or unlink may take to show on both sides.
const LINK_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Deserialize)]
struct PeerInfo {
    id: u64,
    #[serde(default)]
    subver: String,
}

/// Ids of `node`'s peers that are the instance listening on `p2p_addr` (recognised by the
/// user-agent comment each harness btcd carries, which also covers inbound connections).
async fn peers_matching(node: &Regtest, p2p_addr: &SocketAddr) -> Result<Vec<u64>, RegtestError> {
    let tag = format!("({})", ua_tag(p2p_addr));
    let peers: Vec<PeerInfo> = node.rpc().call("getpeerinfo", json!([])).await?;
    Ok(peers
        .into_iter()
        .filter(|p| p.subver.contains(&tag))
        .map(|p| p.id)
        .collect())
}

/// Makes `node` keep a connection to `other` (btcd `addnode add`) and waits until both see it.
pub(crate) async fn connect(node: &Regtest, other: &Regtest) -> Result<(), RegtestError> {
    let target = other.info().p2p_addr.to_string();
    match node
        .rpc()
        .call::<Option<serde_json::Value>>("addnode", json!([target, "add"]))
        .await
    {
        Ok(_) => {}
        // Asking twice is fine: the link exists.
        Err(RpcError::Rpc { message, .. }) if message.contains("already") => {}
        Err(e) => return Err(e.into()),
    }
    let start = Instant::now();
    loop {
        let there = !peers_matching(node, &other.info().p2p_addr)
            .await?
            .is_empty();
        let back = !peers_matching(other, &node.info().p2p_addr)
            .await?
            .is_empty();
        if there && back {
            return Ok(());
        }
        if start.elapsed() > LINK_TIMEOUT {
            return Err(RegtestError::Timeout {
                what: format!("P2P link to {target}"),
                waited_secs: LINK_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Drops every connection between `node` and `other`, in both directions, and waits until
/// neither lists the other.
pub(crate) async fn disconnect(node: &Regtest, other: &Regtest) -> Result<(), RegtestError> {
    for (a, b) in [(node, other), (other, node)] {
        // Forget the persistent link so btcd does not redial; absent links are fine.
        let _ = a
            .rpc()
            .call::<Option<serde_json::Value>>(
                "addnode",
                json!([b.info().p2p_addr.to_string(), "remove"]),
            )
            .await;
    }
    let start = Instant::now();
    loop {
        let mut linked = false;
        for (a, b) in [(node, other), (other, node)] {
            for id in peers_matching(a, &b.info().p2p_addr).await? {
                linked = true;
                // Fails harmlessly if the peer went away meanwhile.
                let _ = a
                    .rpc()
                    .call::<Option<serde_json::Value>>(
                        "node",
                        json!(["disconnect", id.to_string()]),
                    )
                    .await;
            }
        }
        if !linked {
            return Ok(());
        }
        if start.elapsed() > LINK_TIMEOUT {
            return Err(RegtestError::Timeout {
                what: format!("P2P unlink from {}", other.info().p2p_addr),
                waited_secs: LINK_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
