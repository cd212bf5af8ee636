//! A node's channel monitors, saved together with the channel manager that knows them.
//!
//! LDK force-closes a channel whose saved manager is behind its saved monitor. Writing each
//! monitor the moment it changes (LDK's default persister) and the manager a moment later
//! leaves a window where a crash costs a force close. Here a monitor change is only noted
//! ([`ChannelMonitorUpdateStatus::InProgress`]); the node's driver then saves
//! ([`crate::save`]), which writes the noted changes and the manager in one transaction, the changes taken first, so
//! what is saved of a monitor is never ahead of the saved manager (a manager ahead of its
//! monitors is fine: it keeps the in-flight updates and replays them on start). Only after the
//! commit does LDK hear the updates completed, and only then does it send the messages that
//! depend on them. Changes that arrive while a save runs are saved by the next one.
//!
//! A monitor grows with every commitment of its channel, so rewriting it per update would
//! cost more with each payment. A save writes each update's own bytes instead, and the whole
//! monitor only every [`FULL_EVERY`] updates (then the updates before it are deleted), in the
//! layout of LDK's `MonitorUpdatingPersister`, whose reader loads them ([`read_monitors`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bitcoin::BlockHash;
use lightning::chain::chainmonitor::Persist;
use lightning::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::ln::types::ChannelId;
use lightning::util::persist::{
    MonitorName, MonitorUpdatingPersister, ARCHIVED_CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
    ARCHIVED_CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
    CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE, CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
    CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
    MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL,
};
use lightning::util::ser::Writeable;
use tokio::sync::Notify;

use crate::broadcast::NodeBroadcaster;
use crate::chain::FeeCache;
use crate::logger::LdkLogger;
use crate::signer_client::channel_signer_proxy::ChannelSignerProxy;
use crate::signer_client::keys_proxy::KeysProxy;
use crate::store::{KvStore, KvWrite};

/// A monitor is written whole when an update id is a multiple of this (as LDK's own
/// update-writing persister decides), so at most this many updates are replayed on load.
pub const FULL_EVERY: u64 = 64;

/// Update id LDK used for every update after a close before 0.1; always written whole.
const LEGACY_CLOSED_UPDATE_ID: u64 = u64::MAX;

/// The node's keys: the proxy to its signer.
type Keys = Arc<KeysProxy>;

/// LDK's reader of monitors stored with their updates.
type Reader = MonitorUpdatingPersister<
    Arc<KvStore>,
    Arc<LdkLogger>,
    Keys,
    Keys,
    Arc<NodeBroadcaster>,
    Arc<FeeCache>,
>;

/// What waits for the next save of one channel.
#[derive(Default)]
pub(crate) struct Noted {
    /// The monitor's storage key.
    pub(crate) key: String,
    /// Updates to write, in order, with their encoding.
    pub(crate) updates: Vec<(u64, Vec<u8>)>,
    /// The whole monitor must be written (new channel, chain sync, or every [`FULL_EVERY`]).
    pub(crate) whole: bool,
    /// Update ids to report completed once saved.
    pub(crate) complete: Vec<u64>,
}

/// The chain monitor's persister for one node.
pub struct MonitorPersister {
    kv: Arc<KvStore>,
    reader: Reader,
    /// Whether changes wait for a save (the shared driver) or are written at once, whole
    /// (LDK's own background loop, which saves only the manager).
    deferred: bool,
    /// The node's keys: their notes for the signer go when a channel is archived.
    keys: Keys,
    /// Changes waiting for a save, by channel.
    noted: Mutex<HashMap<ChannelId, Noted>>,
    wake: Notify,
}

impl MonitorPersister {
    pub(crate) fn new(
        kv: Arc<KvStore>,
        deferred: bool,
        keys: Keys,
        broadcaster: Arc<NodeBroadcaster>,
        fees: Arc<FeeCache>,
        logger: Arc<LdkLogger>,
    ) -> MonitorPersister {
        // The reader never writes: its update threshold does not matter.
        let reader = MonitorUpdatingPersister::new(
            kv.clone(),
            logger,
            FULL_EVERY,
            keys.clone(),
            keys.clone(),
            broadcaster,
            fees,
        );
        MonitorPersister {
            kv,
            reader,
            keys,
            deferred,
            noted: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    /// Every stored monitor with its stored updates applied.
    pub(crate) fn read_monitors(
        &self,
    ) -> Result<Vec<(BlockHash, ChannelMonitor<ChannelSignerProxy>)>, lightning::io::Error> {
        self.reader.read_all_channel_monitors_with_updates()
    }

    /// Whether a monitor change waits for a save.
    pub(crate) fn is_dirty(&self) -> bool {
        !self.noted().is_empty()
    }

    /// Takes every change noted so far, by channel, for a save to write.
    pub(crate) fn take_noted(&self) -> HashMap<ChannelId, Noted> {
        std::mem::take(&mut *self.noted())
    }

    /// Writes `changes` in one transaction.
    pub(crate) fn write_all(&self, changes: Vec<KvWrite>) -> Result<(), lightning::io::Error> {
        self.kv.write_all(changes)
    }

    fn noted(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, Noted>> {
        self.noted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves when a monitor change waits for a save (at once if one arrived since the
    /// last call).
    pub(crate) async fn changed(&self) {
        self.wake.notified().await
    }

    fn note(
        &self,
        name: MonitorName,
        channel: ChannelId,
        change: impl FnOnce(&mut Noted),
    ) -> ChannelMonitorUpdateStatus {
        change(self.noted().entry(channel).or_insert_with(|| Noted {
            key: name.to_string(),
            ..Noted::default()
        }));
        self.wake.notify_one();
        ChannelMonitorUpdateStatus::InProgress
    }

    fn write_now(
        &self,
        name: MonitorName,
        monitor: &ChannelMonitor<ChannelSignerProxy>,
    ) -> ChannelMonitorUpdateStatus {
        // With the notes for the signer LDK handed over before this update (`carried.rs`).
        let mut writes = whole_monitor(&name.to_string(), monitor);
        writes.extend(self.keys.unsaved_notes());
        match self.kv.write_all(writes) {
            Ok(()) => ChannelMonitorUpdateStatus::Completed,
            Err(e) => {
                tracing::error!(monitor = %name, error = %e, "writing a channel monitor failed");
                ChannelMonitorUpdateStatus::UnrecoverableError
            }
        }
    }
}

/// The whole monitor (marked as LDK's update-writing persister marks it, so a reader that
/// would ignore the updates refuses it) and the removal of the updates it contains.
pub(crate) fn whole_monitor(
    key: &str,
    monitor: &ChannelMonitor<ChannelSignerProxy>,
) -> Vec<KvWrite> {
    let mut value = MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL.to_vec();
    value.extend_from_slice(&monitor.encode());
    vec![
        KvWrite::put(
            CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
            CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
            key,
            value,
        ),
        KvWrite::clear(CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE, key),
    ]
}

impl Persist<ChannelSignerProxy> for MonitorPersister {
    fn persist_new_channel(
        &self,
        name: MonitorName,
        monitor: &ChannelMonitor<ChannelSignerProxy>,
    ) -> ChannelMonitorUpdateStatus {
        if !self.deferred {
            return self.write_now(name, monitor);
        }
        let id = monitor.get_latest_update_id();
        self.note(name, monitor.channel_id(), |n| {
            n.whole = true;
            n.complete.push(id);
        })
    }

    fn update_persisted_channel(
        &self,
        name: MonitorName,
        update: Option<&ChannelMonitorUpdate>,
        monitor: &ChannelMonitor<ChannelSignerProxy>,
    ) -> ChannelMonitorUpdateStatus {
        if !self.deferred {
            return self.write_now(name, monitor);
        }
        match update {
            Some(update) => {
                let id = update.update_id;
                let bytes = update.encode();
                self.note(name, monitor.channel_id(), |n| {
                    n.whole |= id == LEGACY_CLOSED_UPDATE_ID || id % FULL_EVERY == 0;
                    n.updates.push((id, bytes));
                    n.complete.push(id);
                })
            }
            // A chain-sync write: nothing to complete, but the monitor may hold updates the
            // saved manager does not know yet, so it waits for the next save as well.
            None => self.note(name, monitor.channel_id(), |n| n.whole = true),
        }
    }

    fn archive_persisted_channel(&self, name: MonitorName) {
        let key = name.to_string();
        let monitor = match self.reader.read_channel_monitor_with_updates(&key) {
            Ok((_, monitor)) => monitor,
            Err(e) => {
                tracing::warn!(monitor = %key, error = %e, "cannot archive a channel monitor");
                return;
            }
        };
        // The archived copy replaces the live one and its updates in one transaction, and the
        // channel's notes for the signer go with them (it signs nothing more for it).
        let funding = monitor.get_funding_txo().into_bitcoin_outpoint();
        let mut changes = vec![
            KvWrite::put(
                ARCHIVED_CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
                ARCHIVED_CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
                &key,
                monitor.encode(),
            ),
            KvWrite::remove(
                CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
                CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
                &key,
            ),
            KvWrite::clear(CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE, &key),
        ];
        let (retired, notes) = self.keys.carried().forget_funding(funding);
        changes.extend(notes);
        changes.extend(self.keys.retire_writes(&retired));
        if let Err(e) = self.kv.write_all(changes) {
            tracing::warn!(error = %e, "archiving a channel monitor failed");
            return;
        }
        // Only once the host will never load the monitor again may the signer forget it.
        self.keys.retire_channels(&retired);
    }
}
