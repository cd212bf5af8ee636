//! Chain input (blocks from the host's shared observer through LDK's [`Listen`]) and change
//! destinations for LDK's output sweeper.

use bdk_wallet::chain::BlockId;
use bdk_wallet::chain::Merge;
use bdk_wallet::KeychainKind;
use bitcoin::block::Header;
use bitcoin::{Amount, Block, ScriptBuf, Txid};
use lightning::chain::transaction::TransactionData;
use lightning::chain::{BestBlock, Listen};
use lightning::sign::ChangeDestinationSourceSync;

use super::{rebuild, OnchainWallet, WalletError};

/// Blocks connected without anything for the wallet are persisted in batches of this many: the
/// chain tip then lags at most this far behind in the store, and a restarted node replays at
/// most this many blocks. Anything that touches the wallet's coins is persisted at once.
const TIP_PERSIST_INTERVAL: usize = 32;

/// A payment to the wallet from outside it, in a block just connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub txid: Txid,
    pub amount_sat: u64,
}

impl OnchainWallet {
    /// Connects `block` at `height` on top of the wallet's chain.
    ///
    /// A block the wallet already has, or one below its oldest kept checkpoint, is ignored (a
    /// restarted node may be fed blocks again). A different block at a height the wallet has
    /// replaces that block and everything above it (a reorg, even without
    /// [`disconnect_to`](Self::disconnect_to) first). A block that does not build on a block the
    /// wallet has is refused: the wallet would otherwise silently miss the blocks in between.
    ///
    /// Returns what the block paid the wallet from outside it (none for a block it had).
    pub fn connect_block(&self, block: &Block, height: u32) -> Result<Vec<Received>, WalletError> {
        let mut inner = self.lock()?;
        let hash = block.block_hash();
        let replaces_blocks = height <= inner.wallet.latest_checkpoint().height();
        if replaces_blocks {
            match inner.wallet.local_chain().get(height) {
                Some(known) if known.hash() == hash => return Ok(Vec::new()),
                None => return Ok(Vec::new()),
                Some(_) => {}
            }
        }
        let prev_height = height.checked_sub(1).ok_or_else(|| {
            WalletError::Chain(format!(
                "block {hash} at height 0 is not this network's genesis"
            ))
        })?;
        let connected_to = BlockId {
            height: prev_height,
            hash: block.header.prev_blockhash,
        };
        inner
            .wallet
            .apply_block_connected_to(block, height, connected_to)
            .map_err(|e| {
                WalletError::Chain(format!(
                    "block {hash} at height {height} does not connect: {e}"
                ))
            })?;

        // A reorg is persisted at once so the store never keeps a tip on a stale branch.
        let worth_persisting = inner.wallet.staged().is_some_and(|staged| {
            replaces_blocks
                || !staged.tx_graph.is_empty()
                || !staged.indexer.is_empty()
                || staged.local_chain.blocks.len() >= TIP_PERSIST_INTERVAL
        });
        if worth_persisting {
            inner.persist()?;
        }
        // Paid to the wallet and spending none of its coins: received from outside.
        let received = block
            .txdata
            .iter()
            .filter_map(|tx| {
                let (sent, received) = inner.wallet.sent_and_received(tx);
                (sent == Amount::ZERO && received > Amount::ZERO).then(|| Received {
                    txid: tx.compute_txid(),
                    amount_sat: received.to_sat(),
                })
            })
            .collect();
        Ok(received)
    }

    /// Drops every block above `fork_point` (a reorg in progress); transactions confirmed only in
    /// those blocks stop counting as confirmed until the new branch confirms them again.
    pub fn disconnect_to(&self, fork_point: BlockId) -> Result<(), WalletError> {
        let mut inner = self.lock()?;
        let stale: Vec<u32> = inner
            .wallet
            .local_chain()
            .iter_checkpoints()
            .map(|cp| cp.height())
            .take_while(|&height| height > fork_point.height)
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        if let Some(known) = inner.wallet.local_chain().get(fork_point.height) {
            if known.hash() != fork_point.hash {
                tracing::warn!(
                    height = fork_point.height,
                    "wallet's block at the fork point differs from the chain's"
                );
            }
        }
        // bdk cannot drop blocks in place; the wallet is rebuilt from its complete state without
        // them. Everything in memory is made durable first, then the removal is logged, so the
        // store never disagrees with memory about what was dropped.
        inner.persist()?;
        let mut removal = bdk_wallet::ChangeSet::default();
        for &height in &stale {
            removal.local_chain.blocks.insert(height, None);
        }
        inner.log.append(&removal)?;
        let mut state = super::persist::snapshot(&inner.wallet);
        for height in &stale {
            state.local_chain.blocks.remove(height);
        }
        inner.wallet = rebuild(state)?;
        Ok(())
    }

    /// A fresh internal (change) script, durable before it is returned.
    pub fn new_change_script(&self) -> Result<ScriptBuf, WalletError> {
        let mut inner = self.lock()?;
        let info = inner.wallet.reveal_next_address(KeychainKind::Internal);
        // Keep bdk from picking the same script as change for a transaction built meanwhile.
        inner.wallet.mark_used(KeychainKind::Internal, info.index);
        inner.persist()?;
        Ok(info.address.script_pubkey())
    }
}

impl Listen for OnchainWallet {
    fn filtered_block_connected(&self, header: &Header, txdata: &TransactionData, height: u32) {
        if let Err(e) = self.connect_block(&block_of(header, txdata), height) {
            tracing::error!(error = %e, height, "wallet could not connect block");
        }
    }

    fn block_connected(&self, block: &Block, height: u32) {
        if let Err(e) = self.connect_block(block, height) {
            tracing::error!(error = %e, height, "wallet could not connect block");
        }
    }

    fn blocks_disconnected(&self, fork_point: BestBlock) {
        let fork_point = BlockId {
            height: fork_point.height,
            hash: fork_point.block_hash,
        };
        if let Err(e) = self.disconnect_to(fork_point) {
            // Not fatal: the first block of the new branch replaces the stale ones anyway.
            tracing::error!(error = %e, height = fork_point.height, "wallet could not disconnect blocks");
        }
    }
}

/// The block the wallet reads from a filtered one: bdk reads only the header and the
/// transactions; positions do not matter to it.
pub(crate) fn block_of(header: &Header, txdata: &TransactionData) -> Block {
    Block {
        header: *header,
        txdata: txdata.iter().map(|(_, tx)| (*tx).clone()).collect(),
    }
}

impl ChangeDestinationSourceSync for OnchainWallet {
    fn get_change_destination_script(&self) -> Result<ScriptBuf, ()> {
        self.new_change_script().map_err(|e| {
            tracing::error!(error = %e, "no change destination for swept funds");
        })
    }
}
