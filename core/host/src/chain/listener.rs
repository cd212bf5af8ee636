//! A node's seat at the observer: remembers the node's best block so that blocks it already has
//! are skipped, which makes joining behind a moving tip safe.

use std::sync::{Arc, Mutex};

use bitcoin::block::Header;
use bitcoin::{Block, BlockHash};
use lightning::chain::transaction::TransactionData;
use lightning::chain::{BestBlock, Listen};

/// Wraps a node's `Listen` and delivers each block exactly once, in chain order.
pub struct TrackedListener {
    inner: Arc<dyn Listen + Send + Sync>,
    best: Mutex<BestBlock>,
    name: String,
}

impl TrackedListener {
    pub fn new(name: String, inner: Arc<dyn Listen + Send + Sync>, best: BestBlock) -> Self {
        TrackedListener {
            inner,
            best: Mutex::new(best),
            name,
        }
    }

    pub fn best_block(&self) -> BestBlock {
        *self.best.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn best_hash(&self) -> BlockHash {
        self.best_block().block_hash
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a block at `height` following `prev` is the next one for this node.
    fn accept(&self, header: &Header, height: u32) -> bool {
        let mut best = self.best.lock().unwrap_or_else(|p| p.into_inner());
        if header.prev_blockhash == best.block_hash && height == best.height + 1 {
            *best = BestBlock::new(header.block_hash(), height);
            true
        } else {
            if height > best.height + 1 {
                tracing::error!(node = %self.name, height, best = best.height, "block gap; node left behind");
            }
            false
        }
    }
}

impl Listen for TrackedListener {
    fn filtered_block_connected(&self, header: &Header, txdata: &TransactionData, height: u32) {
        if self.accept(header, height) {
            self.inner.filtered_block_connected(header, txdata, height);
        }
    }

    fn block_connected(&self, block: &Block, height: u32) {
        if self.accept(&block.header, height) {
            self.inner.block_connected(block, height);
        }
    }

    fn blocks_disconnected(&self, fork_point: BestBlock) {
        let deliver = {
            let mut best = self.best.lock().unwrap_or_else(|p| p.into_inner());
            if best.height > fork_point.height {
                *best = fork_point;
                true
            } else {
                false
            }
        };
        if deliver {
            self.inner.blocks_disconnected(fork_point);
        }
    }
}
