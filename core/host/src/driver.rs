//! The shared background mode: each node's task sleeps on its LDK futures only (events,
//! persistence, onion messages) and never on a timer; one host-wide task ticks every node's
//! timers. An idle node then costs no wakeups at all, where lightning-background-processor's
//! loop wakes every node every 10 s to check its own seven timers.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lightning::events::{Event, ReplayEvent};
use lightning::ln::msgs::OnionMessageHandler;
use lightning::sign::EntropySource;
use tokio::time::Instant;

use crate::node::Node;

/// The host-wide tick, as often as LDK's fastest timer (peer pings, onion messages).
pub(crate) const TICK: Duration = Duration::from_secs(10);
/// Ticks between channel-manager freshness ticks (60 s, as LDK asks).
const FRESHNESS_TICKS: u64 = 6;
/// Ticks between claim rebroadcasts and sweeper regeneration (30 s, as LDK's own loop).
const REBROADCAST_TICKS: u64 = 3;
/// Nodes ticked between yields, so one tick of 10,000 nodes does not hold a worker thread.
const TICK_BATCH: usize = 64;
/// How long a change of the channel manager alone may wait to be saved. LDK allows the saved
/// manager to lag (it must only never lag the saved monitors, and every monitor change is
/// saved at once, with the manager as it is then); nothing waits on such a save, so under
/// load many of them fold into one (a signature arriving, for one, changes only the manager).
/// Handled events are saved at once all the same, so they are not replayed after a crash any
/// more often than before. What a crash loses LDK recovers as from any stale manager.
const MANAGER_LINGER: Duration = Duration::from_millis(100);
/// Pause before replaying an event whose handling failed: LDK re-arms its future at once,
/// which would otherwise spin the task while, say, the database stays unavailable.
const REPLAY_PAUSE: Duration = Duration::from_millis(250);

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), ReplayEvent>> + Send>>;

/// Runs one node's event handling, HTLC forwarding and channel-manager persistence until the
/// node is stopped, then persists the channel manager a last time.
pub(crate) async fn drive(node: Arc<Node>) {
    let mut stop = node.stopped();
    let failed = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(AtomicBool::new(false));
    let handler = {
        let node = node.clone();
        let (failed, handled) = (failed.clone(), handled.clone());
        move |event: Event| -> HandlerFuture {
            let node = node.clone();
            let failed = failed.clone();
            handled.store(true, Ordering::Relaxed);
            Box::pin(async move {
                crate::events::handle(&node, event).await.map_err(|e| {
                    tracing::warn!(node = %node.alias, error = %e, "event handling failed; will replay");
                    failed.store(true, Ordering::Relaxed);
                    ReplayEvent()
                })
            })
        }
    };
    let cm = &node.channel_manager;
    // What LDK's loop does on start: no tick may be missed for a node that joins mid-interval.
    cm.timer_tick_occurred();
    node.chain_monitor.rebroadcast_pending_claims();
    let mut forwards_due: Option<Instant> = None;
    // HTLCs are due but the signer is away: decoding their onions needs it (ECDH), so they
    // wait for it (their expiry is hours away) rather than fail.
    let mut held = false;
    let mut attached = node.link.attached();
    let mut manager_due: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        // Save before handling events too: monitor updates wait for it, and so do the
        // messages LDK sends once they completed.
        if !persist_if_needed(&node, &mut manager_due) {
            return;
        }
        cm.process_pending_events_async(&handler).await;
        node.chain_monitor
            .process_pending_events_async(&handler)
            .await;
        node.onion_messenger
            .process_pending_events_async(&handler)
            .await;
        // Handled events are saved at once, so a crash replays as few as before.
        if handled.swap(false, Ordering::Relaxed) {
            manager_due = Some(Instant::now());
        }
        // Last, as in LDK's loop: it may wait on the channel manager's locks.
        node.peer_manager.process_events();

        if cm.needs_pending_htlc_processing() {
            let due = *forwards_due.get_or_insert_with(|| {
                Instant::now()
                    + forward_delay(node.announced(), || node.keys.get_secure_random_bytes())
            });
            if Instant::now() >= due {
                held = !node.link.is_attached();
                if !held {
                    cm.process_pending_htlc_forwards();
                    forwards_due = None;
                }
            }
        } else {
            forwards_due = None;
            held = false;
        }

        if !persist_if_needed(&node, &mut manager_due) {
            return;
        }

        if failed.swap(false, Ordering::Relaxed) {
            tokio::select! {
                _ = tokio::time::sleep(REPLAY_PAUSE) => {}
                _ = stop.changed() => break,
            }
            continue;
        }
        let forwards = async {
            match forwards_due {
                Some(_) if held => {
                    if attached.wait_for(|a| *a).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        let manager_save = async {
            match manager_due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = cm.get_event_or_persistence_needed_future() => {}
            _ = node.chain_monitor.get_update_future() => {}
            _ = node.onion_messenger.get_update_future() => {}
            _ = node.persister.changed() => {}
            _ = forwards => {}
            _ = manager_save => {}
        }
    }
    // Like LDK's loop on exit: monitor updates may have raced the last regular save.
    if let Err(e) = save(&node) {
        tracing::error!(node = %node.alias, error = %e, "final channel manager persist failed");
    }
}

/// Saves the channel manager and the monitors waiting for it: at once if a monitor changed,
/// within [`MANAGER_LINGER`] if only the manager did (`manager_due`). False if the save failed
/// (as LDK's loop, a node whose state cannot be saved must not go on).
fn persist_if_needed(node: &Node, manager_due: &mut Option<Instant>) -> bool {
    // Both flags are read (and the manager's cleared) before the save encodes anything.
    if node.channel_manager.get_and_clear_needs_persistence() {
        manager_due.get_or_insert_with(|| Instant::now() + MANAGER_LINGER);
    }
    let manager_due_now = manager_due.is_some_and(|due| Instant::now() >= due);
    if !node.persister.is_dirty() && !manager_due_now {
        return true;
    }
    *manager_due = None;
    match save(node) {
        Ok(()) => true,
        Err(e) => {
            node.halt(format!("saving its channels failed: {e}"));
            false
        }
    }
}

fn save(node: &Node) -> Result<(), lightning::io::Error> {
    crate::save::save(
        &node.persister,
        &node.chain_monitor,
        &node.channel_manager,
        &node.keys,
    )
}

/// Shortest and longest wait before a node with announced channels forwards HTLCs (and
/// receives: LDK processes both together).
const FORWARD_DELAY_MS: (u64, u64) = (10, 50);

/// How long pending HTLCs wait before they are processed. A node that may forward for the
/// network (it has an announced channel) waits a random [`FORWARD_DELAY_MS`], so forward timing
/// does not reveal the route (LDK's own loop waits ~50 ms). A node whose channels are all
/// unannounced (most hosted nodes) can only be the payment's end, which its peer knows
/// already: a delay hides nothing there and would add its whole length to every payment it
/// receives, so it processes them at once (under load they still batch: they pile up while
/// the node's task is busy).
fn forward_delay(announced: bool, random: impl FnOnce() -> [u8; 32]) -> Duration {
    if !announced {
        return Duration::ZERO;
    }
    let bytes = random();
    let r = u16::from_le_bytes([bytes[0], bytes[1]]) as u64;
    let (min, max) = FORWARD_DELAY_MS;
    Duration::from_micros(min * 1000 + r * (max - min) * 1000 / u16::MAX as u64)
}

/// Ticks every running node's timers, the work LDK's loop does on its own timers per node:
/// peer pings and onion-message expiry every tick, channel-manager freshness every minute,
/// claim rebroadcasts and sweeper spends every 30 s.
pub(crate) async fn tick_loop(nodes: impl Fn() -> Vec<Arc<Node>>) {
    let mut ticker = tokio::time::interval_at(Instant::now() + TICK, TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        ticker.tick().await;
        ticks += 1;
        for (i, node) in nodes().iter().enumerate() {
            tick_node(node, ticks);
            if i % TICK_BATCH == TICK_BATCH - 1 {
                tokio::task::yield_now().await;
            }
        }
    }
}

fn tick_node(node: &Node, ticks: u64) {
    node.peer_manager.timer_tick_occurred();
    node.onion_messenger.timer_tick_occurred();
    if ticks.is_multiple_of(FRESHNESS_TICKS) {
        node.channel_manager.timer_tick_occurred();
    }
    if ticks.is_multiple_of(REBROADCAST_TICKS) {
        node.chain_monitor.rebroadcast_pending_claims();
        if node
            .sweeper
            .regenerate_and_broadcast_spend_if_necessary()
            .is_err()
        {
            tracing::warn!(node = %node.alias, "sweeper could not regenerate its spends");
        }
    }
    // Timers queue messages (pings, channel updates); send them now, not at the next event.
    node.peer_manager.process_events();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nodes_with_announced_channels_wait_before_processing_htlcs() {
        let ms = |byte: u8| forward_delay(true, || [byte; 32]).as_millis() as u64;
        assert_eq!(ms(0), FORWARD_DELAY_MS.0);
        assert_eq!(ms(0xff), FORWARD_DELAY_MS.1);
        assert!((FORWARD_DELAY_MS.0..FORWARD_DELAY_MS.1).contains(&ms(0x80)));
        let unannounced = forward_delay(false, || panic!("no randomness needed"));
        assert_eq!(unannounced, Duration::ZERO);
    }
}
