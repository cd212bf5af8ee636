//! A node's chain listener: each block reaches every component of the node once, in order,
//! closed channels are archived as the chain moves on, and what a block pays the node's
//! wallet is an event (`onchain_received`).

use std::sync::Arc;

use bitcoin::Block;
use lightning::chain::{BestBlock, Listen};

use crate::store::Store;
use crate::types::{ChainMonitor, ChannelManager, Sweeper};
use crate::wallet::{block_of, OnchainWallet};

/// The node's chain listener: every component sees each block once, in this order.
pub(crate) struct NodeChain {
    pub(crate) chain_monitor: Arc<ChainMonitor>,
    pub(crate) channel_manager: Arc<ChannelManager>,
    pub(crate) sweeper: Arc<Sweeper>,
    pub(crate) wallet: Arc<OnchainWallet>,
    /// Where the node's events go, and its id there.
    pub(crate) store: Store,
    pub(crate) node_id: String,
}

impl Listen for NodeChain {
    fn filtered_block_connected(
        &self,
        header: &bitcoin::block::Header,
        txdata: &lightning::chain::transaction::TransactionData,
        height: u32,
    ) {
        self.chain_monitor
            .filtered_block_connected(header, txdata, height);
        self.channel_manager
            .filtered_block_connected(header, txdata, height);
        self.sweeper
            .filtered_block_connected(header, txdata, height);
        self.wallet_block(&block_of(header, txdata), height);
        self.archive_if_due(height);
    }

    fn block_connected(&self, block: &Block, height: u32) {
        self.chain_monitor.block_connected(block, height);
        self.channel_manager.block_connected(block, height);
        self.sweeper.block_connected(block, height);
        self.wallet_block(block, height);
        self.archive_if_due(height);
    }

    fn blocks_disconnected(&self, fork_point: BestBlock) {
        self.chain_monitor.blocks_disconnected(fork_point);
        self.channel_manager.blocks_disconnected(fork_point);
        self.sweeper.blocks_disconnected(fork_point);
        self.wallet.blocks_disconnected(fork_point);
    }
}

/// Blocks between two looks for channels to archive: LDK archives a monitor only
/// [`ARCHIVAL_DELAY_BLOCKS`](lightning::chain::channelmonitor::ARCHIVAL_DELAY_BLOCKS) after
/// its balances were first seen empty, so a daily look costs at most a day more.
const ARCHIVE_EVERY_BLOCKS: u32 = 144;

impl NodeChain {
    /// Gives `block` to the wallet; each payment it received is an event.
    fn wallet_block(&self, block: &Block, height: u32) {
        match self.wallet.connect_block(block, height) {
            Ok(received) => {
                for r in received {
                    self.store.queue_event(
                        &self.node_id,
                        "onchain_received",
                        &serde_json::json!({"txid": r.txid.to_string(),
                                            "amount_sat": r.amount_sat, "height": height}),
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, height, "wallet could not connect block"),
        }
    }

    /// Archives the monitors of channels that are closed and fully resolved (LDK's background
    /// processor leaves this to its user): they are then neither fed blocks nor loaded at
    /// start. Driven by blocks, not a timer, so a host catching up archives as it goes.
    fn archive_if_due(&self, height: u32) {
        if height.is_multiple_of(ARCHIVE_EVERY_BLOCKS) {
            self.chain_monitor.archive_fully_resolved_channel_monitors();
        }
    }
}
