//! Answers that wait for the signer's state to be on disk.
//!
//! A signer answers from its memory at once and saves the change in the background (group
//! commit), so one node's next request is checked while the last one's change is still being
//! written. An answer leaves the signer only once every change made before it was computed is
//! durable: whatever the host holds, the signer remembers after a crash. A change that fails
//! to save stops the signer for good (its memory is then ahead of its disk): every answer not
//! yet sent, and every later request, is refused as unavailable.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use flotilla_proto::{Handler, Request, Response, SignerError};
use tokio::sync::Notify;

/// How far one signer's changes have been saved.
#[derive(Debug, Default)]
pub struct Progress {
    saved: Mutex<Saved>,
    /// Wakes blocking waiters.
    changed: Condvar,
    /// Wakes async waiters.
    notify: Notify,
}

#[derive(Debug, Default)]
struct Saved {
    /// Changes handed to the store so far; each is numbered by this count after it.
    submitted: u64,
    /// Every change up to this number is durable.
    durable: u64,
    failed: bool,
}

impl Progress {
    /// Numbers the next change; hand changes to the store in this order, which is the order
    /// it makes them durable in.
    pub fn submit(&self) -> u64 {
        let mut saved = self.lock();
        saved.submitted += 1;
        saved.submitted
    }

    /// The store's word on change `seq`.
    pub fn saved(&self, seq: u64, ok: bool) {
        {
            let mut saved = self.lock();
            if ok {
                saved.durable = saved.durable.max(seq);
            } else {
                saved.failed = true;
            }
        }
        self.changed.notify_all();
        self.notify.notify_waiters();
    }

    /// True once a change failed to save: the signer answers nothing more.
    pub fn failed(&self) -> bool {
        self.lock().failed
    }

    /// Waits (see [`Durable`]) for every change submitted so far.
    pub fn barrier(self: &Arc<Self>) -> Durable {
        Durable {
            seq: self.lock().submitted,
            progress: self.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Saved> {
        self.saved.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reached(&self, seq: u64) -> Option<Result<(), SignerError>> {
        self.lock().reached(seq)
    }
}

impl Saved {
    /// Whether change `seq` and every one before it are settled: durable, or one failed.
    fn reached(&self, seq: u64) -> Option<Result<(), SignerError>> {
        if self.failed {
            Some(Err(SignerError::Unavailable))
        } else if self.durable >= seq {
            Some(Ok(()))
        } else {
            None
        }
    }
}

/// Resolves once every change up to a point is durable, or with
/// [`SignerError::Unavailable`] once any change failed to save.
#[derive(Debug)]
pub struct Durable {
    progress: Arc<Progress>,
    seq: u64,
}

impl Durable {
    pub async fn wait(&self) -> Result<(), SignerError> {
        loop {
            let notified = self.progress.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a save in between still wakes it.
            notified.as_mut().enable();
            if let Some(reached) = self.progress.reached(self.seq) {
                return reached;
            }
            notified.await;
        }
    }

    /// [`Durable::wait`] on a synchronous path (without starving the runtime).
    pub fn wait_blocking(&self) -> Result<(), SignerError> {
        if let Some(reached) = self.progress.reached(self.seq) {
            return reached;
        }
        flotilla_sqlite::blocking::wait_blocking(|| {
            let mut saved = self.progress.lock();
            loop {
                if let Some(reached) = saved.reached(self.seq) {
                    return reached;
                }
                saved = self
                    .progress
                    .changed
                    .wait(saved)
                    .unwrap_or_else(|p| p.into_inner());
            }
        })
    }
}

/// A signer's answer, computed, and what it waits for before it may be sent.
#[derive(Debug)]
pub struct Answer {
    result: Result<Response, SignerError>,
    durable: Option<Durable>,
    state_version: u64,
}

impl Answer {
    /// An answer that depends on nothing unsaved.
    pub fn ready(result: Result<Response, SignerError>) -> Self {
        Answer {
            result,
            durable: None,
            state_version: 0,
        }
    }

    /// An answer to send once `durable` resolves.
    pub fn after(result: Result<Response, SignerError>, durable: Durable) -> Self {
        Answer {
            result,
            durable: Some(durable),
            state_version: 0,
        }
    }

    /// Says the answer rests on the signer's state at `version`, which `durable` must cover.
    pub fn at_version(mut self, version: u64) -> Self {
        self.state_version = version;
        self
    }

    /// The state version the answer rests on, once settled (0: not reported).
    pub fn state_version(&self) -> u64 {
        self.state_version
    }

    /// The answer to send, once it may be sent.
    pub async fn settled(self) -> Result<Response, SignerError> {
        if let Some(durable) = &self.durable {
            durable.wait().await?;
        }
        self.result
    }

    /// [`Answer::settled`] on a synchronous path.
    pub fn settled_blocking(self) -> Result<Response, SignerError> {
        if let Some(durable) = &self.durable {
            durable.wait_blocking()?;
        }
        self.result
    }
}

/// A [`Handler`] whose answers may wait for its state to be saved: what the dial loop serves.
pub trait DurableHandler: Handler {
    /// Answers one request without waiting for its state to be saved: the answer may be sent
    /// once it settles (every change made before it is durable), and the next request may be
    /// answered meanwhile. Called on an async task, so it must not block; by default it runs
    /// [`Handler::handle`] with the worker's other tasks handed away first.
    fn answer(&self, request: Request) -> Answer {
        Answer::ready(flotilla_sqlite::blocking::wait_blocking(|| {
            self.handle(request)
        }))
    }
    /// True once the signer can answer nothing more (its state could not be saved): the
    /// dialer then detaches the node, which parks on the host until the signer is restarted.
    fn broken(&self) -> bool {
        false
    }
    /// The version of the state the signer answers from, settled as an answer is (its
    /// result is only `Accepted`): what the signer proves its state's age with when it
    /// attaches. 0 for a signer without versioned state.
    fn state_version(&self) -> Answer {
        Answer::ready(Ok(Response::Accepted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<Response, SignerError> {
        Ok(Response::Accepted)
    }

    #[test]
    fn an_answer_waits_for_every_change_before_it() {
        let progress = Arc::new(Progress::default());
        let (first, second) = (progress.submit(), progress.submit());
        let answer = progress.barrier();
        assert!(progress.reached(answer.seq).is_none());
        progress.saved(first, true);
        assert!(
            progress.reached(answer.seq).is_none(),
            "one change is still unsaved"
        );
        progress.saved(second, true);
        assert!(matches!(answer.wait_blocking(), Ok(())));
        // Nothing submitted since: the next answer is ready at once.
        assert!(matches!(
            Answer::after(ok(), progress.barrier()).settled_blocking(),
            Ok(Response::Accepted)
        ));
    }

    #[test]
    fn a_failed_save_withholds_every_later_answer() {
        let progress = Arc::new(Progress::default());
        let (first, second) = (progress.submit(), progress.submit());
        let answer = Answer::after(ok(), progress.barrier());
        progress.saved(first, false);
        // The later change saved, but it was made on top of the lost one.
        progress.saved(second, true);
        assert!(progress.failed());
        assert!(matches!(
            answer.settled_blocking(),
            Err(SignerError::Unavailable)
        ));
    }

    #[tokio::test]
    async fn an_async_waiter_wakes_when_the_change_is_saved() {
        let progress = Arc::new(Progress::default());
        let seq = progress.submit();
        let answer = Answer::after(ok(), progress.barrier());
        let waiter = tokio::spawn(answer.settled());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let saver = progress.clone();
        std::thread::spawn(move || saver.saved(seq, true));
        assert!(matches!(waiter.await.unwrap(), Ok(Response::Accepted)));
    }
}
