//! Asynchronous signing on the host: a request LDK may wait for is sent once, LDK hears
//! "pending", and when the signer answers LDK is told to retry (`signer_unblocked`), finding the
//! answer ready. One `Pending` per node, shared by its node and channel proxies.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bitcoin::hashes::{sha256, Hash, HashEngine};
use tokio::runtime::Handle;

use super::link::SignerLink;
use super::protocol::{Request, Response, SignerError};

/// Which LDK component retries a signing operation once its answer is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The channel manager (commitment signatures, revocation secrets, closing).
    Channels = 1,
    /// The chain monitor (holder commitments, justice, HTLC and anchor transactions).
    Monitors = 2,
}

/// Tells the node's LDK components to retry operations that waited on the signer.
pub type Unblock = Box<dyn Fn(Retry) + Send + Sync>;

/// Identifies a request by what it signs, so LDK's retry finds its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl Key {
    /// Hashes a request kind with the data that distinguishes one such request from another.
    pub fn of(kind: &str, parts: &[&[u8]]) -> Key {
        let mut engine = sha256::Hash::engine();
        engine.input(kind.as_bytes());
        for part in parts {
            engine.input(&(part.len() as u64).to_le_bytes());
            engine.input(part);
        }
        Key(sha256::Hash::from_engine(engine).to_byte_array())
    }
}

type Answer = Result<Response, SignerError>;

/// One node's outstanding and answered signing requests.
pub struct Pending {
    link: SignerLink,
    runtime: Handle,
    state: Mutex<State>,
    unblock: OnceLock<Unblock>,
    /// Retries asked for but not yet run (bits of [`Retry`]), so a burst of answers costs one retry.
    scheduled: AtomicU8,
}

#[derive(Default)]
struct State {
    in_flight: HashSet<Key>,
    ready: HashMap<Key, Answer>,
}

impl Pending {
    pub fn new(link: SignerLink, runtime: Handle) -> Arc<Self> {
        Arc::new(Pending {
            link,
            runtime,
            state: Mutex::new(State::default()),
            unblock: OnceLock::new(),
            scheduled: AtomicU8::new(0),
        })
    }

    pub fn link(&self) -> &SignerLink {
        &self.link
    }

    /// Wires the retry to the node's channel manager and chain monitor, once they exist.
    pub fn set_unblock(&self, unblock: Unblock) {
        let _ = self.unblock.set(unblock);
    }

    /// The answer to `request` if the signer gave it; otherwise sends it (once) and returns
    /// `Err(())`, LDK's "pending". A refusal stays `Err` (logged); the operation waits until the
    /// signer's policy or the user changes, and the channel stays consistent meanwhile.
    /// `request` is built only when it is sent: LDK calls again to collect the answer, and
    /// again while it is in flight, and building it copies the whole transaction.
    // `Err(())` is LDK's own "pending" in every signer method this serves.
    #[allow(clippy::result_unit_err)]
    pub fn sign(
        self: &Arc<Self>,
        key: Key,
        retry: Retry,
        request: impl FnOnce() -> Request,
    ) -> Result<Response, ()> {
        {
            let mut state = self.lock();
            if let Some(answer) = state.ready.remove(&key) {
                return Self::deliver(key, answer, &mut state);
            }
            if !state.in_flight.insert(key) {
                return Err(());
            }
        }
        let request = request();
        let inline = Arc::new(AtomicBool::new(true));
        let this = self.clone();
        let still_inline = inline.clone();
        let kind = request.kind();
        self.link.send(
            request,
            Box::new(move |answer| {
                {
                    let mut state = this.lock();
                    state.in_flight.remove(&key);
                    match answer {
                        // Nothing to keep: LDK asks again when the signer is back (see `retry_all`).
                        Err(SignerError::Unavailable | SignerError::Timeout) => return,
                        answer => {
                            state.ready.insert(key, answer);
                        }
                    }
                }
                if !still_inline.load(Ordering::SeqCst) {
                    this.schedule(retry);
                }
            }),
        );
        inline.store(false, Ordering::SeqCst);
        let mut state = self.lock();
        match state.ready.remove(&key) {
            Some(answer) => Self::deliver(key, answer, &mut state),
            None => {
                tracing::trace!(kind, "signature pending");
                Err(())
            }
        }
    }

    fn deliver(key: Key, answer: Answer, state: &mut State) -> Result<Response, ()> {
        match answer {
            Ok(response) => Ok(response),
            Err(e) => {
                tracing::warn!(error = %e, "signer refused; operation stays pending");
                // Kept, so LDK's retries do not ask again and again.
                state.ready.insert(key, Err(e));
                Err(())
            }
        }
    }

    /// Asks LDK to retry everything (the signer is back, or a policy changed): forget refusals.
    pub fn retry_all(self: &Arc<Self>) {
        self.lock().ready.retain(|_, answer| answer.is_ok());
        self.schedule(Retry::Channels);
        self.schedule(Retry::Monitors);
    }

    fn schedule(self: &Arc<Self>, retry: Retry) {
        let bit = retry as u8;
        if self.scheduled.fetch_or(bit, Ordering::SeqCst) & bit != 0 {
            return;
        }
        let this = self.clone();
        // Never inline: the answer may arrive while LDK holds the locks the retry takes.
        self.runtime.spawn(async move {
            if this.scheduled.fetch_and(!bit, Ordering::SeqCst) & bit != 0 {
                if let Some(unblock) = this.unblock.get() {
                    unblock(retry);
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
