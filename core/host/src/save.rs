//! One save of a node: its noted monitor changes and its channel manager in one transaction,
//! and only then LDK told which monitor updates completed (see [`crate::persist`]).

use lightning::util::persist::{
    CHANNEL_MANAGER_PERSISTENCE_KEY, CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
    CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
};
use lightning::util::ser::Writeable;

use crate::persist::{whole_monitor, MonitorPersister};
use crate::signer_client::keys_proxy::KeysProxy;
use crate::store::KvWrite;
use crate::types::{ChainMonitor, ChannelManager};

/// Saves the node's noted monitor changes and its channel manager in one transaction, then
/// tells the chain monitor which updates completed.
pub(crate) fn save(
    persister: &MonitorPersister,
    chain_monitor: &ChainMonitor,
    manager: &ChannelManager,
    keys: &KeysProxy,
) -> Result<(), lightning::io::Error> {
    // Taken before the manager is encoded: the manager knows every update taken here.
    let noted = persister.take_noted();
    let mut changes = Vec::new();
    let mut completed = Vec::with_capacity(noted.len());
    for (channel, n) in noted {
        if n.whole {
            // May hold later updates too: the manager, encoded below, knows them as well.
            if let Ok(monitor) = chain_monitor.get_monitor(channel) {
                changes.extend(whole_monitor(&n.key, &monitor));
            }
        } else {
            for (id, bytes) in n.updates {
                changes.push(KvWrite::put(
                    CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
                    &n.key,
                    &id.to_string(),
                    bytes,
                ));
            }
        }
        completed.push((channel, n.complete));
    }
    let manager_bytes = manager.encode();
    // Taken last: LDK hands a revocation or holder commitment to the signer proxy before it
    // changes the channel or makes the update that records it, so whatever the updates above
    // and the manager just encoded know has its note here. Taken before the manager (as it
    // once was), a holder commitment validated in between was in the saved manager but not in
    // the notes: after a kill, LDK asked for the secret it revokes with no commitment for the
    // signer to check, which the signer refused, and the channel stopped for good.
    changes.extend(keys.unsaved_notes());
    changes.push(KvWrite::put(
        CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
        CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
        CHANNEL_MANAGER_PERSISTENCE_KEY,
        manager_bytes,
    ));
    // On failure the driver stops the node (as LDK's loop would): nothing is completed, so
    // LDK sends nothing that depends on the lost changes, and a restart replays them.
    persister.write_all(changes)?;
    for (channel, ids) in completed {
        for id in ids {
            // Err only for a monitor removed meanwhile: nothing waits on it.
            let _ = chain_monitor.channel_monitor_updated(channel, id);
        }
    }
    Ok(())
}
