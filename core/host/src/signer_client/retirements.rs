//! Key sets the node's signer must retire, kept until it says it did.
//!
//! Once a channel's monitor is archived the host sends the signer `RetireChannel` for the
//! channel's key set. A signer away at that moment, or a host stopping before the answer,
//! must not leave the channel's whole state on the signer for good: the key set is marked in
//! the archive's own transaction ([`Retirements::marks`]), sent again whenever the signer
//! attaches, and unmarked once the signer answered (retiring is idempotent there).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bitcoin::hex::{DisplayHex, FromHex};
use flotilla_proto::{KeysId, Request};
use tokio::runtime::Handle;

use super::link::SignerLink;
use crate::store::{Kv, KvWrite};

const NAMESPACE: &str = "signer";
const SUB: &str = "retiring";

/// One node's key sets marked for retirement on its signer.
pub struct Retirements {
    kv: Kv,
    link: SignerLink,
    runtime: Handle,
    marked: Arc<Mutex<HashSet<KeysId>>>,
}

impl Retirements {
    /// The marks saved for a node.
    pub fn load(kv: Kv, link: SignerLink, runtime: Handle) -> Result<Self, String> {
        let mut marked = HashSet::new();
        for name in kv.list(NAMESPACE, SUB).map_err(|e| e.to_string())? {
            let id = <[u8; 32]>::from_hex(&name).map_err(|_| format!("retiring mark {name}"))?;
            marked.insert(id);
        }
        Ok(Retirements {
            kv,
            link,
            runtime,
            marked: Arc::new(Mutex::new(marked)),
        })
    }

    /// The writes that mark `keys_ids`, to commit with what makes them retired.
    pub fn marks(keys_ids: &[KeysId]) -> Vec<KvWrite> {
        keys_ids
            .iter()
            .map(|id| KvWrite::put(NAMESPACE, SUB, &id.to_lower_hex_string(), Vec::new()))
            .collect()
    }

    /// The marks of `keys_ids` are committed: tells the signer.
    pub fn marked(&self, keys_ids: &[KeysId]) {
        lock(&self.marked).extend(keys_ids.iter().copied());
        self.send(keys_ids);
    }

    /// Tells the signer every key set still marked (it has just attached).
    pub fn resend(&self) {
        let ids: Vec<KeysId> = lock(&self.marked).iter().copied().collect();
        self.send(&ids);
    }

    /// Key sets marked and not yet acknowledged.
    #[cfg(test)]
    fn pending(&self) -> usize {
        lock(&self.marked).len()
    }

    fn send(&self, keys_ids: &[KeysId]) {
        if !self.link.is_attached() {
            return;
        }
        for &keys_id in keys_ids {
            let (kv, marked, runtime) =
                (self.kv.clone(), self.marked.clone(), self.runtime.clone());
            self.link.send(
                Request::RetireChannel { keys_id },
                Box::new(move |answer| match answer {
                    Ok(_) => {
                        tracing::debug!(keys_id = %keys_id.to_lower_hex_string(), "signer retired the channel");
                        // A store write waits for its commit: not on the thread that answers.
                        runtime.spawn_blocking(move || {
                            let name = keys_id.to_lower_hex_string();
                            match kv.remove(NAMESPACE, SUB, &name, false) {
                                Ok(()) => {
                                    lock(&marked).remove(&keys_id);
                                }
                                Err(e) => tracing::warn!(error = %e, "retiring mark not removed"),
                            }
                        });
                    }
                    Err(e) => tracing::warn!(keys_id = %keys_id.to_lower_hex_string(), error = %e, "signer did not retire the channel; asked again when it attaches"),
                }),
            );
        }
    }
}

fn lock(marked: &Mutex<HashSet<KeysId>>) -> std::sync::MutexGuard<'_, HashSet<KeysId>> {
    marked.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use flotilla_proto::{Handover, Response};
    use tokio::sync::watch;

    use super::*;
    use crate::signer_client::link::{Reply, Transport};
    use crate::store::Store;

    /// A signer that can be away; when attached it retires whatever it is asked to.
    struct Signer {
        attached: watch::Sender<bool>,
        asked: Mutex<Vec<KeysId>>,
    }

    impl Transport for Signer {
        fn send(&self, request: Request, reply: Reply) {
            match request {
                Request::RetireChannel { keys_id } if *self.attached.borrow() => {
                    self.asked.lock().unwrap().push(keys_id);
                    reply(Ok(Response::Accepted));
                }
                _ => reply(Err(flotilla_proto::SignerError::Unavailable)),
            }
        }
        fn attached(&self) -> watch::Receiver<bool> {
            self.attached.subscribe()
        }
        fn handover(&self) -> Option<Handover> {
            None
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_retirement_missed_while_the_signer_is_away_is_sent_when_it_attaches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("host.db")).unwrap();
        let kv: Kv = Arc::new(store.kv("node"));
        let signer = Arc::new(Signer {
            attached: watch::Sender::new(false),
            asked: Mutex::new(Vec::new()),
        });
        let node = SecretKey::from_slice(&[3; 32])
            .unwrap()
            .public_key(&Secp256k1::new());
        let link = SignerLink::new(node, signer.clone());
        let load = || Retirements::load(kv.clone(), link.clone(), Handle::current()).unwrap();

        // Archived while the signer is away: marked durably, nothing sent.
        let (a, b) = ([1; 32], [2; 32]);
        store
            .kv("node")
            .write_all(Retirements::marks(&[a, b]))
            .unwrap();
        load().marked(&[a, b]);
        assert!(signer.asked.lock().unwrap().is_empty());

        // The host restarts; the signer attaches and is asked for both, and the marks go.
        let retirements = load();
        assert_eq!(retirements.pending(), 2);
        signer.attached.send_replace(true);
        retirements.resend();
        let mut asked = signer.asked.lock().unwrap().clone();
        asked.sort();
        assert_eq!(asked, vec![a, b]);
        for _ in 0..200 {
            if retirements.pending() == 0 && kv.list(NAMESPACE, SUB).unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(retirements.pending(), 0);
        assert!(kv.list(NAMESPACE, SUB).unwrap().is_empty());
        assert_eq!(load().pending(), 0);
    }
}
