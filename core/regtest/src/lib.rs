//! A real regtest chain from btcd, for tests, the demo and the CLI.
//!
//! [`Regtest`] starts btcd (installed on demand at a pinned version, see [`ensure_btcd`]) with
//! our own P-256 RPC certificate, mines to a fixed harness key and pays from it without a
//! wallet. Two lifetimes: [`Regtest::up`] detaches btcd so it outlives the CLI (`down` stops
//! it), [`Regtest::spawn_owned`] stops it when the handle is dropped so tests leak nothing.
//! Either way `DIR/regtest.json` ([`RegtestInfo`]) tells other processes how to reach it.
//!
//! btcd (v0.26.0, `loadBlockDB`) deletes its regtest block database on every start, so each
//! start begins a new chain at height 0. [`Regtest::stop_keep_data`] and [`Regtest::restart`]
//! carry a chain across a restart by saving its blocks and submitting them again.

mod cert;
mod error;
mod funding;
mod info;
mod install;
mod peers;
mod process;
mod restart;
mod wait;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use bitcoin::{Address, Amount, BlockHash, Txid};
use serde::Deserialize;
use serde_json::json;

pub use error::RegtestError;
pub use funding::{harness_address, FEE_RATE_SAT_PER_VB};
pub use info::{RegtestInfo, INFO_FILE};
pub use install::{cache_bin_dir, ensure_btcd, installed_btcd, BTCD_VERSION};
pub use restart::SAVED_CHAIN_FILE;
pub use wait::{wait_until, TimedOut};

use flotilla_host::chain::rpc::{RpcClient, RpcConfig};
use funding::Coins;
use process::{Launch, Layout};

/// RPC user name of every harness btcd (the password is random per start).
const RPC_USER: &str = "flotilla";
/// Grace period for btcd to shut down when a test handle is dropped.
const DROP_GRACE: Duration = Duration::from_secs(5);
/// Blocks per `generate` call, keeping each call well inside the RPC timeout.
const GENERATE_CHUNK: u32 = 1000;

/// A running regtest btcd and the harness that funds from it.
pub struct Regtest {
    dir: PathBuf,
    info: RegtestInfo,
    rpc: RpcClient,
    /// Present when this process started btcd (lets it reap the process).
    child: Option<Child>,
    /// Stop btcd when this handle is dropped (tests, demo), not for the CLI's `up`.
    stop_on_drop: bool,
    /// Serialises sends from this handle and remembers coins between them.
    coins: tokio::sync::Mutex<Coins>,
}

impl Regtest {
    /// Starts btcd detached from this process (new session): it keeps running after the
    /// handle is dropped and the process exits, until [`Regtest::stop`] or `flotilla regtest
    /// down`. The chain starts at height 0 (btcd discards a previous regtest chain).
    pub async fn up(dir: &Path) -> Result<Regtest, RegtestError> {
        Self::start(dir, true).await
    }

    /// Starts btcd owned by this handle: dropping the handle stops it (SIGTERM, then SIGKILL
    /// after a grace period), so a test never leaks a process.
    pub async fn spawn_owned(dir: &Path) -> Result<Regtest, RegtestError> {
        Self::start(dir, false).await
    }

    /// Attaches to the btcd described by `DIR/regtest.json` (started by `up`, maybe by another
    /// process). Dropping the handle leaves btcd running.
    pub fn open(dir: &Path) -> Result<Regtest, RegtestError> {
        let dir = dir
            .canonicalize()
            .map_err(|_| RegtestError::NoInfo(info::info_path(dir)))?;
        let info = info::read(&dir)?;
        let layout = Layout { dir: dir.clone() };
        if !process::is_our_btcd(info.pid, &layout) {
            return Err(RegtestError::NotRunning {
                path: info::info_path(&dir),
                pid: info.pid,
            });
        }
        let rpc = RpcClient::new(&info.rpc)?;
        Ok(Regtest {
            dir,
            info,
            rpc,
            child: None,
            stop_on_drop: false,
            coins: Default::default(),
        })
    }

    async fn start(dir: &Path, detach: bool) -> Result<Regtest, RegtestError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RegtestError::io(format!("cannot create {}", dir.display()), e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| RegtestError::io(format!("cannot resolve {}", dir.display()), e))?;
        let layout = Layout { dir: dir.clone() };
        if let Ok(old) = info::read(&dir) {
            if process::is_our_btcd(old.pid, &layout) {
                return Err(RegtestError::AlreadyRunning {
                    path: info::info_path(&dir),
                    pid: old.pid,
                });
            }
        }
        let btcd = ensure_btcd().await?;
        let (cert, key) = cert::write(&dir)?;
        let password = random_hex(16);
        let mining_address = harness_address().to_string();
        let config_for = |rpc_addr| RpcConfig {
            url: format!("https://{rpc_addr}"),
            user: RPC_USER.to_string(),
            password: password.clone(),
            ca_path: Some(cert.clone()),
        };
        let launch = Launch {
            btcd: &btcd,
            layout: &layout,
            user: RPC_USER,
            password: &password,
            cert: &cert,
            key: &key,
            mining_address: &mining_address,
            detach,
        };
        let started = process::start(&launch, |addr| {
            RpcClient::new(&config_for(addr)).map_err(Into::into)
        })
        .await?;
        let mut child = started.child;
        let info = RegtestInfo {
            rpc: config_for(started.rpc_addr),
            p2p_addr: started.p2p_addr,
            pid: child.id(),
            mining_address,
        };
        let written = RpcClient::new(&info.rpc)
            .map_err(RegtestError::from)
            .and_then(|rpc| info::write(&dir, &info).map(|()| rpc));
        let rpc = match written {
            Ok(rpc) => rpc,
            Err(e) => {
                process::stop_child_blocking(&mut child, DROP_GRACE);
                return Err(e);
            }
        };
        tracing::info!(pid = info.pid, rpc = %info.rpc.url, "regtest btcd up in {}", dir.display());
        Ok(Regtest {
            dir,
            info,
            rpc,
            child: Some(child),
            stop_on_drop: !detach,
            coins: Default::default(),
        })
    }

    /// How to reach this btcd (what `regtest.json` holds).
    pub fn info(&self) -> &RegtestInfo {
        &self.info
    }

    /// The regtest directory (canonical path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn rpc_config(&self) -> RpcConfig {
        self.info.rpc.clone()
    }

    /// A client for this btcd's RPC (cheap; shares nothing with other clients but the config).
    pub fn rpc(&self) -> RpcClient {
        self.rpc.clone()
    }

    /// Current chain height.
    pub async fn height(&self) -> Result<u32, RegtestError> {
        Ok(self.rpc.call("getblockcount", json!([])).await?)
    }

    /// Hash of the current tip.
    pub async fn best_block_hash(&self) -> Result<BlockHash, RegtestError> {
        Ok(self.rpc.call("getbestblockhash", json!([])).await?)
    }

    /// Mines `blocks` blocks to the harness address (btcd `generate`), returning their hashes
    /// in chain order. Mempool transactions are included.
    pub async fn mine(&self, blocks: u32) -> Result<Vec<BlockHash>, RegtestError> {
        generate(&self.rpc, blocks).await
    }

    /// Pays `amount` to `to` from the harness key and leaves it unconfirmed; the payment is
    /// output 0 of the returned transaction. Mines only when the harness has too few mature
    /// coins (a fresh chain needs 100 blocks), which also confirms earlier unconfirmed sends.
    pub async fn send(&self, to: &Address, amount: Amount) -> Result<Txid, RegtestError> {
        let mut coins = self.coins.lock().await;
        funding::send(&self.rpc, &mut coins, &to.script_pubkey(), amount).await
    }

    /// [`Regtest::send`], then mines one block and checks that it confirmed the payment.
    pub async fn fund(&self, to: &Address, amount: Amount) -> Result<Txid, RegtestError> {
        #[derive(Deserialize)]
        struct BlockTxids {
            tx: Vec<Txid>,
        }
        let txid = self.send(to, amount).await?;
        let hashes = self.mine(1).await?;
        let hash = hashes
            .first()
            .ok_or_else(|| RegtestError::unexpected("generate", "no block hash returned"))?;
        let block: BlockTxids = self.rpc.call("getblock", json!([hash, 1])).await?;
        if block.tx.contains(&txid) {
            Ok(txid)
        } else {
            Err(RegtestError::NotConfirmed(txid))
        }
    }

    /// Links this instance to `other` over P2P (persistent, both directions relay blocks and
    /// transactions) and waits until both see the connection.
    pub async fn connect_to(&self, other: &Regtest) -> Result<(), RegtestError> {
        peers::connect(self, other).await
    }

    /// Removes every P2P connection between this instance and `other` and waits until it is
    /// gone on both sides, so each can mine its own branch.
    pub async fn disconnect_from(&self, other: &Regtest) -> Result<(), RegtestError> {
        peers::disconnect(self, other).await
    }

    /// Waits until this instance and `other` have the same tip, and returns it.
    pub async fn wait_synced(
        &self,
        other: &Regtest,
        timeout: Duration,
    ) -> Result<BlockHash, RegtestError> {
        let start = Instant::now();
        loop {
            let (a, b) = (
                self.best_block_hash().await?,
                other.best_block_hash().await?,
            );
            if a == b {
                return Ok(a);
            }
            if start.elapsed() > timeout {
                return Err(RegtestError::Timeout {
                    what: format!("sync to the same tip (have {a}, other has {b})"),
                    waited_secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops btcd: RPC `stop`, then SIGTERM and SIGKILL if it does not exit in time, and
    /// removes `regtest.json`. The chain is gone with it (btcd wipes regtest data on start;
    /// [`Regtest::stop_keep_data`] keeps it).
    pub async fn stop(mut self) -> Result<(), RegtestError> {
        self.stop_process().await
    }
}

impl Drop for Regtest {
    fn drop(&mut self) {
        if !self.stop_on_drop {
            return;
        }
        if let Some(mut child) = self.child.take() {
            process::stop_child_blocking(&mut child, DROP_GRACE);
            info::remove_if_pid(&self.dir, self.info.pid);
        }
    }
}

/// btcd `generate`, chunked; returns the new block hashes in order.
pub(crate) async fn generate(rpc: &RpcClient, blocks: u32) -> Result<Vec<BlockHash>, RegtestError> {
    let mut hashes = Vec::with_capacity(blocks as usize);
    let mut left = blocks;
    while left > 0 {
        let n = left.min(GENERATE_CHUNK);
        let chunk: Vec<BlockHash> = rpc.call("generate", json!([n])).await?;
        if chunk.len() != n as usize {
            return Err(RegtestError::unexpected(
                "generate",
                format!("asked for {n} blocks, got {}", chunk.len()),
            ));
        }
        hashes.extend(chunk);
        left -= n;
    }
    Ok(hashes)
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", bitcoin::secp256k1::rand::random::<u8>()))
        .collect()
}
