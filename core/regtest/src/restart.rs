//! Stopping btcd and starting it again with the same chain, address and credentials.
//!
//! btcd v0.26.0 deletes its block database whenever it starts with `--regtest`
//! (`loadBlockDB` calls `removeRegressionDB`, which ignores no option), so the data directory
//! alone cannot carry a chain across a restart. Instead the blocks are saved before the stop
//! and submitted again after the start: the chain comes back with the same hashes, as a
//! chain node restarting on a kept data directory would. Only the mempool is lost (btcd does
//! not keep one across restarts either).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bitcoin::{Block, BlockHash};
use flotilla_host::chain::rpc::RpcClient;
use serde_json::json;

use super::{cert, ensure_btcd, info, Regtest, RegtestError};
use crate::funding::Coins;
use crate::process::{self, Launch, Layout};

/// File in the regtest directory holding the saved chain: one block in hex per line, from
/// height 1 up.
pub const SAVED_CHAIN_FILE: &str = "saved-chain.hex";

impl Regtest {
    /// Stops btcd but keeps its chain for [`Regtest::restart`]: saves every block to
    /// `DIR/saved-chain.hex` first, then stops the process (RPC port closed, connections
    /// refused). The handle keeps the ports, password and certificate. Returns the saved
    /// height. Blocks mined by someone else after the save are lost.
    pub async fn stop_keep_data(&mut self) -> Result<u32, RegtestError> {
        let height = save_chain(&self.rpc, &self.dir).await?;
        self.stop_process().await?;
        tracing::info!(height, "regtest btcd stopped, chain saved");
        Ok(height)
    }

    /// Starts btcd again after [`Regtest::stop_keep_data`] on the same directory, RPC and P2P
    /// ports, RPC credentials and TLS certificate (existing clients keep working), and
    /// replays the saved chain so it is back at the same tip. If the replay fails, btcd is
    /// stopped again and the saved chain kept, so the restart can be retried. Returns the tip
    /// height.
    pub async fn restart(&mut self) -> Result<u32, RegtestError> {
        let layout = Layout {
            dir: self.dir.clone(),
        };
        if process::is_our_btcd(self.info.pid, &layout) {
            return Err(RegtestError::AlreadyRunning {
                path: info::info_path(&self.dir),
                pid: self.info.pid,
            });
        }
        let saved_path = saved_path(&self.dir);
        let saved = match std::fs::read_to_string(&saved_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegtestError::NoSavedChain(saved_path))
            }
            Err(e) => {
                return Err(RegtestError::io(
                    format!("cannot read {}", saved_path.display()),
                    e,
                ))
            }
        };
        let rpc_addr = rpc_addr(&self.info.rpc.url)?;
        let btcd = ensure_btcd().await?;
        let (cert, key) = cert::paths(&self.dir);
        let launch = Launch {
            btcd: &btcd,
            layout: &layout,
            user: &self.info.rpc.user,
            password: &self.info.rpc.password,
            cert: &cert,
            key: &key,
            mining_address: &self.info.mining_address,
            detach: !self.stop_on_drop,
        };
        let child = process::start_at(&launch, rpc_addr, self.info.p2p_addr, &self.rpc).await?;
        self.info.pid = child.id();
        self.child = Some(child);
        // Unconfirmed coins the harness remembered died with the old mempool.
        *self.coins.get_mut() = Coins::default();
        let height = match replay(&self.rpc, &saved).await {
            Ok(height) => height,
            Err(e) => {
                if let Err(stop) = self.stop_process().await {
                    tracing::warn!(error = %stop, "stopping btcd after a failed replay");
                }
                return Err(e);
            }
        };
        if let Err(e) = info::write(&self.dir, &self.info) {
            let _ = self.stop_process().await;
            return Err(e);
        }
        // Replayed: a later restart must not bring back this (possibly outgrown) chain.
        let _ = std::fs::remove_file(&saved_path);
        tracing::info!(
            pid = self.info.pid,
            height,
            "regtest btcd restarted with its chain"
        );
        Ok(height)
    }

    /// Stops the btcd process (RPC `stop`, then SIGTERM and SIGKILL if it lingers) and removes
    /// `regtest.json`; the handle stays.
    pub(super) async fn stop_process(&mut self) -> Result<(), RegtestError> {
        let pid = self.info.pid;
        let layout = Layout {
            dir: self.dir.clone(),
        };
        if let Err(e) = self.rpc.call::<serde_json::Value>("stop", json!([])).await {
            if !process::is_unreachable(&e) {
                tracing::warn!("RPC stop failed ({e}); signalling btcd instead");
            }
        }
        let mut child = self.child.take();
        process::wait_exit_or_kill(child.as_mut(), pid, &layout, process::STOP_GRACE).await?;
        info::remove_if_pid(&self.dir, pid);
        Ok(())
    }
}

fn saved_path(dir: &Path) -> PathBuf {
    dir.join(SAVED_CHAIN_FILE)
}

/// The RPC listen address in an `https://IP:PORT` URL, as the harness writes it.
fn rpc_addr(url: &str) -> Result<SocketAddr, RegtestError> {
    url.rsplit("://")
        .next()
        .and_then(|a| a.trim_end_matches('/').parse().ok())
        .ok_or_else(|| {
            RegtestError::unexpected("restart", format!("RPC URL {url:?} has no IP:PORT"))
        })
}

/// Writes every block above genesis to `DIR/saved-chain.hex` (temporary file, then rename, so
/// a crash never leaves half a chain to replay). Returns the saved height.
async fn save_chain(rpc: &RpcClient, dir: &Path) -> Result<u32, RegtestError> {
    let height: u32 = rpc.call("getblockcount", json!([])).await?;
    let mut text = String::new();
    for h in 1..=height {
        let hash: BlockHash = rpc.call("getblockhash", json!([h])).await?;
        let hex: String = rpc.call("getblock", json!([hash, 0])).await?;
        text.push_str(hex.trim());
        text.push('\n');
    }
    let path = saved_path(dir);
    let tmp = dir.join(format!(".{SAVED_CHAIN_FILE}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)
        .map_err(|e| RegtestError::io(format!("cannot write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        RegtestError::io(format!("cannot write {}", path.display()), e)
    })?;
    Ok(height)
}

/// Submits the saved blocks in order and checks that btcd ends on the saved tip.
async fn replay(rpc: &RpcClient, saved: &str) -> Result<u32, RegtestError> {
    let mut last = None;
    let mut height = 0u32;
    for hex in saved.lines().map(str::trim).filter(|l| !l.is_empty()) {
        height += 1;
        let block: Block = decode_block(hex).map_err(|reason| {
            RegtestError::unexpected("restart", format!("saved block {height}: {reason}"))
        })?;
        // btcd answers `null` when it accepts the block, else the reason as a string.
        let rejected: Option<String> = rpc.call("submitblock", json!([hex])).await?;
        if let Some(reason) = rejected {
            return Err(RegtestError::unexpected(
                "submitblock",
                format!("saved block {height} rejected: {reason}"),
            ));
        }
        last = Some(block.block_hash());
    }
    let tip: BlockHash = rpc.call("getbestblockhash", json!([])).await?;
    let count: u32 = rpc.call("getblockcount", json!([])).await?;
    match last {
        Some(hash) if hash != tip || count != height => Err(RegtestError::unexpected(
            "restart",
            format!("replayed to {hash} at {height}, btcd is at {tip} at {count}"),
        )),
        _ => Ok(count),
    }
}

fn decode_block(hex: &str) -> Result<Block, String> {
    let bytes = <Vec<u8> as bitcoin::hex::FromHex>::from_hex(hex).map_err(|e| e.to_string())?;
    bitcoin::consensus::deserialize(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_addr_from_url() {
        assert_eq!(
            rpc_addr("https://127.0.0.1:18443").unwrap(),
            "127.0.0.1:18443".parse().unwrap()
        );
        assert!(rpc_addr("https://localhost").is_err());
    }
}
