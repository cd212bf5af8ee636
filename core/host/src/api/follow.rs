//! The event stream of one subscriber: the node's event log read after its cursor a page at a
//! time, then, caught up, a sleep on the node's signal until the next commit. No task, timer
//! or buffer per subscriber beyond one page: the stream is a future tonic polls as the client
//! reads, so ten thousand idle subscribers are ten thousand parked futures.

use std::collections::VecDeque;
use std::pin::Pin;

use futures_util::Stream;
use tokio::sync::watch;
use tonic::Status;

use super::auth::Gate;
use super::messages::{self, DEFAULT_PAGE};
use crate::store::EventRow;
use flotilla_proto::node as pb;

pub(super) type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

struct Follow {
    gate: Gate,
    /// The token, checked again each time the stream wakes: a revoked one ends it.
    token: String,
    node_id: String,
    /// The last id sent.
    cursor: i64,
    page: VecDeque<EventRow>,
    signal: watch::Receiver<()>,
    /// Becomes true when the server stops.
    stop: watch::Receiver<bool>,
    ended: bool,
}

/// Events of `node_id` after `after`, then live, for the holder of `token`.
pub(super) fn follow(
    gate: Gate,
    token: String,
    node_id: String,
    after: i64,
    stop: watch::Receiver<bool>,
) -> EventStream {
    let signal = gate.host.store().event_signal(&node_id);
    let state = Follow {
        gate,
        token,
        node_id,
        cursor: after,
        page: VecDeque::new(),
        signal,
        stop,
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(state, next))
}

async fn next(mut f: Follow) -> Option<(Result<pb::Event, Status>, Follow)> {
    if f.ended {
        return None;
    }
    loop {
        if let Some(row) = f.page.pop_front() {
            f.cursor = row.id;
            return Some((Ok(messages::event(row)), f));
        }
        // Marked before the read: a commit after it wakes the wait below.
        f.signal.borrow_and_update();
        match f
            .gate
            .host
            .store()
            .events(&f.node_id, f.cursor, DEFAULT_PAGE)
        {
            Ok(rows) if !rows.is_empty() => {
                f.page = rows.into();
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "event stream cannot read the log");
                let status =
                    Status::internal(format!("cannot read events; resume after {}", f.cursor));
                return Some(end(f, status));
            }
        }
        let stopped = tokio::select! {
            woken = f.signal.changed() => {
                if woken.is_err() {
                    return None;
                }
                false
            }
            _ = f.stop.wait_for(|stopped| *stopped) => true,
        };
        if stopped {
            let status =
                Status::unavailable(format!("the host is stopping; resume after {}", f.cursor));
            return Some(end(f, status));
        }
        if let Err(status) = f.gate.check(&f.token) {
            return Some(end(f, status));
        }
    }
}

/// The stream's last item: `status`.
fn end(mut f: Follow, status: Status) -> (Result<pb::Event, Status>, Follow) {
    f.ended = true;
    (Err(status), f)
}
