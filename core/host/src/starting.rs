//! Payments being started on a node, by payment hash.
//!
//! Between its check for an earlier payment of an invoice and LDK taking the new one,
//! `pay_invoice` waits for the signer's approval. A second call for the same invoice in that
//! window (a client retrying, a double tap) would pass the same check, and LDK would refuse
//! it as a duplicate while the first goes on. So the starts of one hash take turns: the
//! second finds the first's payment in flight and waits for its outcome instead.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Starting {
    hashes: Mutex<HashSet<[u8; 32]>>,
    done: Notify,
}

/// The right to start a payment of one hash, until dropped.
pub(crate) struct Turn<'a> {
    starting: &'a Starting,
    hash: [u8; 32],
}

impl Starting {
    /// Waits until no other start of `hash` is under way.
    pub(crate) async fn turn(&self, hash: [u8; 32]) -> Turn<'_> {
        loop {
            // Registered before the check, so a turn ending in between still wakes it.
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.hashes().insert(hash) {
                return Turn {
                    starting: self,
                    hash,
                };
            }
            done.await;
        }
    }

    fn hashes(&self) -> MutexGuard<'_, HashSet<[u8; 32]>> {
        self.hashes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.starting.hashes().remove(&self.hash);
        self.starting.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn starts_of_one_hash_take_turns_and_others_do_not_wait() {
        let starting = Arc::new(Starting::default());
        let first = starting.turn([1; 32]).await;
        let other = tokio::time::timeout(Duration::from_secs(1), starting.turn([2; 32])).await;
        assert!(other.is_ok(), "another hash starts at once");
        drop(other);

        let waiting = {
            let starting = starting.clone();
            tokio::spawn(async move {
                let _second = starting.turn([1; 32]).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the same hash waits for the first");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the second starts once the first is done")
            .expect("no panic");
    }
}
