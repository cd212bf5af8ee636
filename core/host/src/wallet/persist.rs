//! Durable wallet state: an append-only log of bdk [`ChangeSet`]s in the node's key-value store.
//!
//! Each persisted change is one key (`cs_` + zero-padded sequence number) holding one JSON
//! ChangeSet; loading merges them in sequence order. One key is one atomic write, and every prefix
//! of the log is a valid wallet, so a crash between two writes always leaves a loadable wallet.
//! When the log grows long it is compacted: the full state is written as one new entry first, then
//! the older entries are removed oldest first. A crash part-way through removal leaves a suffix of
//! the old log followed by the snapshot, which merges to the snapshot's state (later entries win).

use std::io;
use std::sync::Arc;

use bdk_wallet::chain::indexer::Indexer;
use bdk_wallet::chain::Merge;
use bdk_wallet::{ChangeSet, KeychainKind, Wallet};
use lightning::util::persist::KVStoreSync;

use super::WalletError;

/// Primary namespace of the wallet's keys in the node's store.
pub const PRIMARY_NAMESPACE: &str = "bdk_wallet";
/// Secondary namespace (none: the wallet has only one kind of key).
pub const SECONDARY_NAMESPACE: &str = "";
const KEY_PREFIX: &str = "cs_";
/// Entries in the log beyond which the next append compacts it into one snapshot.
pub(crate) const COMPACT_AFTER: usize = 64;
/// Checkpoints kept below the tip when compacting, so reorgs up to this depth still connect.
/// Older checkpoints are kept only where a wallet transaction is anchored.
pub(crate) const RECENT_CHECKPOINTS: u32 = 288;

pub(crate) type KvStore = Arc<dyn KVStoreSync + Send + Sync>;

/// The wallet's change log in a [`KVStoreSync`].
pub(crate) struct ChangeSetLog {
    kv: KvStore,
    /// Sequence numbers present in the store, ascending.
    entries: Vec<u64>,
    next_seq: u64,
}

impl ChangeSetLog {
    /// Opens the log and merges every stored entry in order (an empty ChangeSet if none).
    pub(crate) fn open(kv: KvStore) -> Result<(Self, ChangeSet), WalletError> {
        let mut entries = Vec::new();
        for key in kv.list(PRIMARY_NAMESPACE, SECONDARY_NAMESPACE)? {
            // Keys without our prefix belong to no one we know of; they are left alone.
            if let Some(digits) = key.strip_prefix(KEY_PREFIX) {
                let seq = digits
                    .parse::<u64>()
                    .map_err(|_| WalletError::Corrupt(format!("unexpected wallet key {key:?}")))?;
                entries.push(seq);
            }
        }
        entries.sort_unstable();
        entries.dedup();

        let mut merged = ChangeSet::default();
        for &seq in &entries {
            let key = key_of(seq);
            let bytes = kv.read(PRIMARY_NAMESPACE, SECONDARY_NAMESPACE, &key)?;
            let changeset: ChangeSet = serde_json::from_slice(&bytes)
                .map_err(|e| WalletError::Corrupt(format!("{key}: {e}")))?;
            merged.merge(changeset);
        }
        let next_seq = match entries.last() {
            Some(&last) => last
                .checked_add(1)
                .ok_or_else(|| WalletError::Corrupt("wallet log sequence exhausted".into()))?,
            None => 0,
        };
        Ok((
            ChangeSetLog {
                kv,
                entries,
                next_seq,
            },
            merged,
        ))
    }

    /// Durably appends `changeset` as the newest entry. Nothing changes if the write fails.
    pub(crate) fn append(&mut self, changeset: &ChangeSet) -> Result<(), WalletError> {
        let bytes = serde_json::to_vec(changeset).map_err(io::Error::other)?;
        let seq = self.next_seq;
        let next = seq
            .checked_add(1)
            .ok_or_else(|| WalletError::Corrupt("wallet log sequence exhausted".into()))?;
        self.kv
            .write(PRIMARY_NAMESPACE, SECONDARY_NAMESPACE, &key_of(seq), bytes)?;
        self.entries.push(seq);
        self.next_seq = next;
        Ok(())
    }

    /// Whether the log has grown long enough to be worth compacting.
    pub(crate) fn needs_compaction(&self) -> bool {
        self.entries.len() > COMPACT_AFTER
    }

    /// Replaces the whole log by `snapshot`, which must hold the wallet's complete state.
    ///
    /// The snapshot is written before anything is removed; a failed removal leaves the remaining
    /// old entries in place (still consistent) to be removed by the next compaction.
    pub(crate) fn compact(&mut self, snapshot: &ChangeSet) -> Result<(), WalletError> {
        let old: Vec<u64> = self.entries.clone();
        self.append(snapshot)?;
        for seq in old {
            self.kv
                .remove(PRIMARY_NAMESPACE, SECONDARY_NAMESPACE, &key_of(seq), false)?;
            self.entries.retain(|&s| s != seq);
        }
        Ok(())
    }
}

fn key_of(seq: u64) -> String {
    format!("{KEY_PREFIX}{seq:020}")
}

/// The complete in-memory state of `wallet` as one ChangeSet (what a fresh load would need).
pub(crate) fn snapshot(wallet: &Wallet) -> ChangeSet {
    let mut locked = bdk_wallet::locked_outpoints::ChangeSet::default();
    for outpoint in wallet.list_locked_outpoints() {
        locked.outpoints.insert(outpoint, true);
    }
    ChangeSet {
        descriptor: Some(wallet.public_descriptor(KeychainKind::External).clone()),
        change_descriptor: Some(wallet.public_descriptor(KeychainKind::Internal).clone()),
        network: Some(wallet.network()),
        local_chain: wallet.local_chain().initial_changeset(),
        tx_graph: wallet.tx_graph().initial_changeset(),
        indexer: wallet.spk_index().initial_changeset(),
        locked_outpoints: locked,
    }
}

/// Drops checkpoints a wallet no longer needs: it keeps genesis, the last
/// [`RECENT_CHECKPOINTS`] blocks (so recent reorgs still connect) and every block that anchors a
/// wallet transaction (so those stay confirmed). Without this, every block ever seen would stay in
/// memory and in the store, for each of the host's thousands of wallets.
pub(crate) fn prune_checkpoints(changeset: &mut ChangeSet) {
    let blocks = &mut changeset.local_chain.blocks;
    let Some(tip) = blocks
        .iter()
        .rev()
        .find_map(|(height, hash)| hash.map(|_| *height))
    else {
        return;
    };
    let anchored: std::collections::BTreeSet<u32> = changeset
        .tx_graph
        .anchors
        .iter()
        .map(|(anchor, _)| anchor.block_id.height)
        .collect();
    let keep_from = tip.saturating_sub(RECENT_CHECKPOINTS);
    blocks.retain(|height, hash| {
        hash.is_some() && (*height == 0 || *height >= keep_from || anchored.contains(height))
    });
}
