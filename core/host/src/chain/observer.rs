//! The one chain observer of a host: polls the chain node, fetches each new block once and
//! feeds every node; follows reorgs; syncs late joiners from their own best block.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bitcoin::block::Header;
use bitcoin::{Block, BlockHash, Network};
use lightning::chain::transaction::TransactionData;
use lightning::chain::{BestBlock, Listen};
use lightning_block_sync::init::{synchronize_listeners, validate_best_block_header};
use lightning_block_sync::poll::{ChainPoller, ValidatedBlockHeader};
use lightning_block_sync::{Cache, SpvClient};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::broadcaster::Broadcaster;
use super::cache::HeaderCache;
use super::fees::FeeCache;
use super::listener::TrackedListener;
use super::rpc::{RpcClient, RpcConfig, RpcError};
use super::source::RpcBlockSource;

/// Longest wait between two polls of a chain node that does not answer (the wait doubles from
/// the poll interval up to this). Once the chain node is back, nodes learn of its new blocks
/// within this plus one poll interval plus the time to fetch the blocks.
pub const MAX_POLL_BACKOFF: Duration = Duration::from_secs(30);

/// Why the observer could not start or a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("chain RPC: {0}")]
    Rpc(#[from] RpcError),
    #[error("chain node unreachable after {attempts} attempts: {last}")]
    Unreachable { attempts: u32, last: String },
    #[error("syncing node {node} failed: {reason}")]
    Sync { node: String, reason: String },
    #[error("the chain observer has stopped")]
    Stopped,
}

/// Counters for the demo summary and benchmarks.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ObserverStats {
    pub tip_height: u32,
    pub blocks_connected: u64,
    pub blocks_disconnected: u64,
    pub block_deliveries: u64,
    pub getblock_calls: u64,
    pub getblockheader_calls: u64,
    pub nodes: usize,
    /// Polls of the chain node that failed, since start.
    pub poll_failures: u64,
    /// Polls failed in a row up to now; non-zero while the chain node is unreachable.
    pub consecutive_poll_failures: u64,
}

/// Every node's listener; delivers each block to all of them by reference (no copy per node).
#[derive(Default)]
struct Fanout {
    listeners: RwLock<HashMap<u64, Arc<TrackedListener>>>,
    best: RwLock<Option<BestBlock>>,
    connected: AtomicU64,
    disconnected: AtomicU64,
    deliveries: AtomicU64,
    poll_failures: AtomicU64,
    consecutive_poll_failures: AtomicU64,
}

impl Fanout {
    fn snapshot(&self) -> Vec<Arc<TrackedListener>> {
        self.listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

impl Listen for Fanout {
    fn filtered_block_connected(&self, header: &Header, txdata: &TransactionData, height: u32) {
        let listeners = self.snapshot();
        for l in &listeners {
            l.filtered_block_connected(header, txdata, height);
        }
        self.note_connected(header, height, listeners.len());
    }

    fn block_connected(&self, block: &Block, height: u32) {
        let listeners = self.snapshot();
        for l in &listeners {
            l.block_connected(block, height);
        }
        self.note_connected(&block.header, height, listeners.len());
    }

    fn blocks_disconnected(&self, fork_point: BestBlock) {
        for l in self.snapshot() {
            l.blocks_disconnected(fork_point);
        }
        let old = self
            .best
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .replace(fork_point);
        let depth = old
            .map(|b| b.height.saturating_sub(fork_point.height))
            .unwrap_or(0);
        self.disconnected.fetch_add(depth as u64, Ordering::Relaxed);
        tracing::info!(
            fork_height = fork_point.height,
            depth,
            "reorg: disconnected to fork point"
        );
    }
}

impl Fanout {
    fn note_connected(&self, header: &Header, height: u32, listeners: usize) {
        *self.best.write().unwrap_or_else(|p| p.into_inner()) =
            Some(BestBlock::new(header.block_hash(), height));
        self.connected.fetch_add(1, Ordering::Relaxed);
        self.deliveries
            .fetch_add(listeners as u64, Ordering::Relaxed);
    }
}

enum Command {
    Sync {
        name: String,
        parts: Vec<(BlockHash, Arc<dyn Listen + Send + Sync>)>,
        reply: oneshot::Sender<Result<BestBlock, ChainError>>,
    },
    Join {
        id: u64,
        listener: Arc<TrackedListener>,
        reply: oneshot::Sender<Result<(), ChainError>>,
    },
    Leave {
        id: u64,
    },
}

/// Shared chain access for one host.
pub struct ChainObserver {
    source: Arc<RpcBlockSource>,
    fees: Arc<FeeCache>,
    broadcaster: Arc<Broadcaster>,
    network: Network,
    fanout: Arc<Fanout>,
    commands: mpsc::UnboundedSender<Command>,
    next_id: AtomicU64,
}

/// A node's registration; dropping it does not leave, call [`ChainObserver::leave`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

/// Lets lightning-block-sync take our source by `Deref` without cloning it.
#[derive(Clone)]
struct SourceRef(Arc<RpcBlockSource>);
impl Deref for SourceRef {
    type Target = RpcBlockSource;
    fn deref(&self) -> &RpcBlockSource {
        &self.0
    }
}

impl ChainObserver {
    /// Connects to the chain node (bounded retries), then polls it every `poll_interval`.
    pub async fn start(
        rpc: &RpcConfig,
        network: Network,
        poll_interval: Duration,
    ) -> Result<Arc<ChainObserver>, ChainError> {
        let client = RpcClient::new(rpc)?;
        let source = Arc::new(RpcBlockSource::new(client.clone()));
        let tip = first_tip(&source).await?;
        let fees = Arc::new(FeeCache::default());
        fees.refresh(&client).await;
        let broadcaster = Arc::new(Broadcaster::new(client, tokio::runtime::Handle::current()));
        let fanout = Arc::new(Fanout::default());
        *fanout.best.write().unwrap_or_else(|p| p.into_inner()) =
            Some(BestBlock::new(tip.header.block_hash(), tip.height));
        let (tx, rx) = mpsc::unbounded_channel();
        let observer = Arc::new(ChainObserver {
            source: source.clone(),
            fees: fees.clone(),
            broadcaster,
            network,
            fanout: fanout.clone(),
            commands: tx,
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(run(source, fees, fanout, network, tip, rx, poll_interval));
        Ok(observer)
    }

    pub fn fee_estimator(&self) -> Arc<FeeCache> {
        self.fees.clone()
    }

    pub fn broadcaster(&self) -> Arc<Broadcaster> {
        self.broadcaster.clone()
    }

    pub fn network(&self) -> Network {
        self.network
    }

    /// The observer's best block.
    pub fn best_block(&self) -> Option<BestBlock> {
        *self.fanout.best.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a node: syncs it from its own best block to the tip through the shared caches, then
    /// feeds it every new block. Returns once the node is at the tip.
    pub async fn join(
        &self,
        name: String,
        listener: Arc<dyn Listen + Send + Sync>,
        best: BestBlock,
    ) -> Result<ListenerId, ChainError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tracked = Arc::new(TrackedListener::new(name, listener, best));
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Join {
                id,
                listener: tracked,
                reply,
            })
            .map_err(|_| ChainError::Stopped)?;
        rx.await.map_err(|_| ChainError::Stopped)??;
        Ok(ListenerId(id))
    }

    /// Catches up listeners that each start from their own best block (a node's channel
    /// manager, monitors, sweeper, wallet after a restart) to the chain tip, through the shared
    /// caches. Returns the tip they all reached.
    pub async fn sync(
        &self,
        name: String,
        parts: Vec<(BlockHash, Arc<dyn Listen + Send + Sync>)>,
    ) -> Result<BestBlock, ChainError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Sync { name, parts, reply })
            .map_err(|_| ChainError::Stopped)?;
        rx.await.map_err(|_| ChainError::Stopped)?
    }

    /// Stops feeding a node.
    pub fn leave(&self, id: ListenerId) {
        let _ = self.commands.send(Command::Leave { id: id.0 });
    }

    pub fn stats(&self) -> ObserverStats {
        let rpc = self.source.rpc();
        ObserverStats {
            tip_height: self.best_block().map(|b| b.height).unwrap_or(0),
            blocks_connected: self.fanout.connected.load(Ordering::Relaxed),
            blocks_disconnected: self.fanout.disconnected.load(Ordering::Relaxed),
            block_deliveries: self.fanout.deliveries.load(Ordering::Relaxed),
            getblock_calls: rpc.call_count("getblock"),
            getblockheader_calls: rpc.call_count("getblockheader"),
            nodes: self
                .fanout
                .listeners
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .len(),
            poll_failures: self.fanout.poll_failures.load(Ordering::Relaxed),
            consecutive_poll_failures: self
                .fanout
                .consecutive_poll_failures
                .load(Ordering::Relaxed),
        }
    }
}

async fn first_tip(source: &Arc<RpcBlockSource>) -> Result<ValidatedBlockHeader, ChainError> {
    const ATTEMPTS: u32 = 4;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match validate_best_block_header(SourceRef(source.clone())).await {
            Ok(tip) => return Ok(tip),
            Err(e) => {
                // A wrong password or URL will not get better by waiting.
                let probe = source.best_block_hash().await;
                if let Err(err) = probe {
                    if err.is_permanent() {
                        return Err(err.into());
                    }
                }
                last = format!("{:?}", e.into_inner());
                tracing::warn!(attempt, error = %last, "chain node not ready, retrying");
                tokio::time::sleep(Duration::from_millis(250 * 2u64.pow(attempt))).await;
            }
        }
    }
    Err(ChainError::Unreachable {
        attempts: ATTEMPTS,
        last,
    })
}

async fn run(
    source: Arc<RpcBlockSource>,
    fees: Arc<FeeCache>,
    fanout: Arc<Fanout>,
    network: Network,
    mut tip: ValidatedBlockHeader,
    mut commands: mpsc::UnboundedReceiver<Command>,
    poll_interval: Duration,
) {
    let mut cache = HeaderCache::new(2016);
    cache.block_connected(tip.header.block_hash(), tip);
    let backoff_cap = MAX_POLL_BACKOFF.max(poll_interval);
    let mut backoff = poll_interval;
    // The next poll is a deadline rather than a sleep inside the poll branch, so that nodes
    // joining or syncing while the chain node is down get their (typed) answer at once
    // instead of waiting out the backoff.
    let next_poll = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(next_poll);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return, // the observer was dropped
                Some(Command::Sync { name, parts, reply }) => {
                    let listeners: Vec<(BlockHash, &(dyn Listen + Send + Sync))> =
                        parts.iter().map(|(hash, l)| (*hash, &**l)).collect();
                    let result = sync_with_retry(&source, network, &mut cache, &name, listeners).await;
                    // Hand the listeners back before answering: the caller may need sole ownership.
                    drop(parts);
                    let _ = reply.send(result);
                }
                Some(Command::Join { id, listener, reply }) => {
                    let best = listener.best_hash();
                    let name = listener.name().to_string();
                    let result = sync_with_retry(&source, network, &mut cache, &name, vec![(best, &*listener)])
                        .await
                        .map(|_| ());
                    if result.is_ok() {
                        fanout.listeners.write().unwrap_or_else(|p| p.into_inner()).insert(id, listener);
                    }
                    let _ = reply.send(result);
                }
                Some(Command::Leave { id }) => {
                    fanout.listeners.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
                }
            },
            () = &mut next_poll => {
                let poller = ChainPoller::new(SourceRef(source.clone()), network);
                let mut client = SpvClient::new(tip, poller, &mut cache, &*fanout);
                let delay = match client.poll_best_tip().await {
                    Ok((_, changed)) => {
                        let failed = fanout.consecutive_poll_failures.swap(0, Ordering::Relaxed);
                        if failed > 0 {
                            tracing::info!(failed_polls = failed, "chain node reachable again");
                        }
                        backoff = poll_interval;
                        if changed {
                            let best = fanout.best.read().unwrap_or_else(|p| p.into_inner()).map(|b| b.block_hash);
                            if let Some(header) = best.and_then(|h| cache.look_up(&h).copied()) {
                                tip = header;
                            }
                            fees.refresh(source.rpc()).await;
                        }
                        poll_interval
                    }
                    Err(e) => {
                        fanout.poll_failures.fetch_add(1, Ordering::Relaxed);
                        let failed = fanout.consecutive_poll_failures.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::warn!(error = ?e.into_inner(), failed_polls = failed, retry_in = ?backoff, "chain poll failed");
                        let delay = backoff;
                        backoff = (backoff * 2).min(backoff_cap);
                        delay
                    }
                };
                next_poll.as_mut().reset(tokio::time::Instant::now() + delay);
            }
        }
    }
}

async fn sync_with_retry<L: Listen + ?Sized>(
    source: &Arc<RpcBlockSource>,
    network: Network,
    cache: &mut HeaderCache,
    name: &str,
    listeners: Vec<(BlockHash, &L)>,
) -> Result<BestBlock, ChainError> {
    let mut attempts = 0;
    loop {
        match synchronize_listeners(SourceRef(source.clone()), network, cache, listeners.clone())
            .await
        {
            Ok(tip) => return Ok(BestBlock::new(tip.header.block_hash(), tip.height)),
            Err(e) if attempts < 3 => {
                attempts += 1;
                tracing::warn!(node = name, error = ?e.into_inner(), "sync failed, retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempts)).await;
            }
            Err(e) => {
                return Err(ChainError::Sync {
                    node: name.to_string(),
                    reason: format!("{:?}", e.into_inner()),
                })
            }
        }
    }
}
