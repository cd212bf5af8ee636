//! Idempotency keys: a client that retries a create or send call (after a timeout, a dropped
//! connection) with the same key gets the first call's answer, and the work (a payment, a
//! channel, an invoice) is done once. The first answer is kept in the database, so this holds
//! across restarts of the host too.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;

use bitcoin::hashes::{sha256, Hash};
use prost::Message;
use tonic::Status;

use super::auth::unix_now;
use crate::events::hex;
use crate::node::Node;
use crate::store::FirstAnswer;

/// Longest key accepted (a UUID is 36 characters).
const MAX_KEY_BYTES: usize = 128;

/// Calls under way with a key, so a second one with the same key waits for none and does
/// nothing: it is told to retry.
#[derive(Default)]
pub(super) struct Idempotency {
    in_flight: Mutex<HashSet<(String, String)>>,
}

/// Removes its key from the calls under way when the call ends, however it ends.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<(String, String)>>,
    entry: (String, String),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.entry);
    }
}

impl Idempotency {
    /// Runs `call` for `node`, or, if `key` was used before, answers as the first time. The
    /// same key with another method or request is INVALID_ARGUMENT; with a call under way,
    /// ABORTED (retry). A call that failed kept nothing, so its retry runs again.
    pub(super) async fn run<Req, Resp, Fut>(
        &self,
        node: &Node,
        method: &str,
        key: &str,
        request: &Req,
        call: impl FnOnce() -> Fut,
    ) -> Result<Resp, Status>
    where
        Req: Message,
        Resp: Message + Default,
        Fut: Future<Output = Result<Resp, Status>>,
    {
        if key.is_empty() {
            return call().await;
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(Status::invalid_argument(format!(
                "idempotency_key: longer than {MAX_KEY_BYTES} bytes"
            )));
        }
        let node_id = node.id.to_string();
        let _in_flight = self.enter(&node_id, key)?;
        let request_sha256 = hex(&sha256::Hash::hash(&request.encode_to_vec()).to_byte_array());
        let store = node.store();
        let stored = store.first_answer(&node_id, key).map_err(internal)?;
        if let Some(first) = stored {
            if first.method != method || first.request_sha256 != request_sha256 {
                return Err(Status::invalid_argument(format!(
                    "idempotency_key: already used for another request ({})",
                    first.method
                )));
            }
            return Resp::decode(&first.response[..]).map_err(internal);
        }
        let answer = call().await?;
        let first = FirstAnswer {
            method: method.to_owned(),
            request_sha256,
            response: answer.encode_to_vec(),
        };
        store
            .keep_first_answer(&node_id, key, first, unix_now())
            .map_err(internal)?;
        Ok(answer)
    }

    fn enter(&self, node_id: &str, key: &str) -> Result<InFlight<'_>, Status> {
        let entry = (node_id.to_owned(), key.to_owned());
        let mut set = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(entry.clone()) {
            return Err(Status::aborted(
                "idempotency_key: a call with this key is under way; retry it",
            ));
        }
        Ok(InFlight {
            set: &self.in_flight,
            entry,
        })
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "idempotency record failed");
    Status::internal(e.to_string())
}
