//! A node's channel monitors, saved together with the channel manager that knows them.
//!
//! LDK force-closes a channel whose saved manager is behind its saved monitor. Writing each
//! monitor the moment it changes (LDK's default persister) and the manager a moment later
//! leaves a window where a crash costs a force close. Here a monitor change is only noted
//! ([`ChannelMonitorUpdateStatus::InProgress`]); the node's driver then calls [`save`], which
//! writes the changed monitors and the manager in one transaction, the monitors encoded first,
//! so a saved monitor is never ahead of the saved manager (a manager ahead of its monitors is
//! fine: it keeps the in-flight updates and replays them on start). Only after the commit does
//! LDK hear the updates completed, and only then does it send the messages that depend on them.
//! Updates that arrive while a save runs are saved by the next one, which they wake.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use lightning::chain::chainmonitor::Persist;
use lightning::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::ln::types::ChannelId;
use lightning::util::persist::{
    MonitorName, CHANNEL_MANAGER_PERSISTENCE_KEY, CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE, CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
};
use lightning::util::ser::Writeable;
use tokio::sync::Notify;

use super::types::{ChainMonitor, ChannelManager};
use crate::signer::channel_proxy::RemoteChannelSigner;
use crate::store::{KvStore, KvWrite};

/// The chain monitor's persister for one node.
pub struct MonitorPersister {
    kv: Arc<KvStore>,
    /// Whether monitors wait for [`save`] (the shared driver) or are written at once (LDK's
    /// own background loop, which saves only the manager).
    deferred: bool,
    /// Channels whose monitor changed with no update to complete (chain sync) since the last
    /// save: LDK does not list them as pending.
    synced: Mutex<HashSet<ChannelId>>,
    /// Something waits for [`save`].
    dirty: AtomicBool,
    wake: Notify,
}

impl MonitorPersister {
    pub(crate) fn new(kv: Arc<KvStore>, deferred: bool) -> MonitorPersister {
        MonitorPersister {
            kv,
            deferred,
            synced: Mutex::new(HashSet::new()),
            dirty: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// Whether a monitor change waits for [`save`].
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Resolves when a monitor change waits for [`save`] (at once if one arrived since the
    /// last call).
    pub(crate) async fn changed(&self) {
        self.wake.notified().await
    }

    fn note(&self, channel: Option<ChannelId>) -> ChannelMonitorUpdateStatus {
        if let Some(channel) = channel {
            self.synced
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(channel);
        }
        self.dirty.store(true, Ordering::Release);
        self.wake.notify_one();
        ChannelMonitorUpdateStatus::InProgress
    }

    fn write_now(
        &self,
        name: MonitorName,
        monitor: &ChannelMonitor<RemoteChannelSigner>,
    ) -> ChannelMonitorUpdateStatus {
        match self.kv.write_all(vec![monitor_entry(&name, monitor)]) {
            Ok(()) => ChannelMonitorUpdateStatus::Completed,
            Err(e) => {
                tracing::error!(monitor = %name, error = %e, "writing a channel monitor failed");
                ChannelMonitorUpdateStatus::UnrecoverableError
            }
        }
    }
}

fn monitor_entry(name: &MonitorName, monitor: &ChannelMonitor<RemoteChannelSigner>) -> KvWrite {
    KvWrite {
        primary: CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE.to_owned(),
        secondary: CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE.to_owned(),
        key: name.to_string(),
        value: monitor.encode(),
    }
}

impl Persist<RemoteChannelSigner> for MonitorPersister {
    fn persist_new_channel(
        &self,
        name: MonitorName,
        monitor: &ChannelMonitor<RemoteChannelSigner>,
    ) -> ChannelMonitorUpdateStatus {
        if self.deferred {
            // Listed as pending by the chain monitor until `save` completes it.
            self.note(None)
        } else {
            self.write_now(name, monitor)
        }
    }

    fn update_persisted_channel(
        &self,
        name: MonitorName,
        update: Option<&ChannelMonitorUpdate>,
        monitor: &ChannelMonitor<RemoteChannelSigner>,
    ) -> ChannelMonitorUpdateStatus {
        if !self.deferred {
            return self.write_now(name, monitor);
        }
        match update {
            Some(_) => self.note(None),
            // A chain-sync write: the monitor may hold updates the saved manager does not know
            // yet, so it waits for the next save as well.
            None => self.note(Some(monitor.channel_id())),
        }
    }

    fn archive_persisted_channel(&self, name: MonitorName) {
        // Long after the channel closed: nothing of it is pending any more.
        Persist::<RemoteChannelSigner>::archive_persisted_channel(&*self.kv, name)
    }
}

/// Saves the node's changed monitors and its channel manager in one transaction, then tells
/// the chain monitor which updates completed.
pub(crate) fn save(
    persister: &MonitorPersister,
    chain_monitor: &ChainMonitor,
    manager: &ChannelManager,
) -> Result<(), lightning::io::Error> {
    persister.dirty.store(false, Ordering::Release);
    // Taken before the monitors are encoded: every listed update is in the bytes written.
    let pending = chain_monitor.list_pending_monitor_updates();
    let synced = std::mem::take(&mut *persister.synced.lock().unwrap_or_else(|p| p.into_inner()));
    let channels: HashSet<ChannelId> = pending.keys().copied().chain(synced).collect();
    let mut entries = Vec::with_capacity(channels.len() + 1);
    for channel in &channels {
        // A monitor gone meanwhile (archived) has nothing left to save.
        if let Ok(monitor) = chain_monitor.get_monitor(*channel) {
            entries.push(monitor_entry(&monitor.persistence_key(), &monitor));
        }
    }
    // The manager last: it knows at least every update the monitors above contain.
    entries.push(KvWrite {
        primary: CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE.to_owned(),
        secondary: CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE.to_owned(),
        key: CHANNEL_MANAGER_PERSISTENCE_KEY.to_owned(),
        value: manager.encode(),
    });
    if let Err(e) = persister.kv.write_all(entries) {
        // Nothing was written: the same channels wait for the next save.
        persister
            .synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(channels);
        persister.dirty.store(true, Ordering::Release);
        return Err(e);
    }
    for (channel, updates) in pending {
        for update in updates {
            // Err only for a monitor removed meanwhile: nothing waits on it.
            let _ = chain_monitor.channel_monitor_updated(channel, update);
        }
    }
    Ok(())
}
