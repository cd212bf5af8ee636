//! Asynchronous signing on the host: a request LDK may wait for is sent once, LDK hears
//! "pending", and when the signer answers LDK is told to retry (`signer_unblocked`), finding the
//! answer ready. One `Pending` per node, shared by its node and channel proxies.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bitcoin::hashes::{sha256, Hash, HashEngine};
use flotilla_proto::{Request, Response, SignerError};
use lightning::ln::types::ChannelId;
use tokio::runtime::Handle;

use super::link::SignerLink;

/// Which LDK component retries a signing operation once its answer is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Retry {
    /// The channel manager (commitment signatures, revocation secrets, closing).
    Channels = 1,
    /// The chain monitor (holder commitments, justice, HTLC and anchor transactions).
    Monitors = 2,
}

/// Tells the node's LDK components to retry operations that waited on the signer.
pub type Unblock = Box<dyn Fn(Retry) + Send + Sync>;

/// Told of each refusal once, as it arrives (the operation waits on it meanwhile).
pub type OnRefusal = Box<dyn Fn(Refused) + Send + Sync>;

/// A signature the signer's policy refused.
#[derive(Clone, Debug)]
pub struct Refused {
    /// The request's kind (`sign_closing_transaction`, …).
    pub kind: &'static str,
    /// The channel, when the request carries its parameters (every signature of a funded
    /// channel does; a revocation secret asked alone does not).
    pub channel_id: Option<ChannelId>,
    pub reason: String,
}

/// Identifies a request by the channel it is for (its keys id) and what it signs, so LDK's
/// retry finds its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    channel: [u8; 32],
    what: [u8; 32],
}

impl Key {
    /// Hashes a request kind with the data that distinguishes one such request of `channel`
    /// from another.
    pub fn of(channel: [u8; 32], kind: &str, parts: &[&[u8]]) -> Key {
        let mut engine = sha256::Hash::engine();
        engine.input(kind.as_bytes());
        for part in parts {
            engine.input(&(part.len() as u64).to_le_bytes());
            engine.input(part);
        }
        Key {
            channel,
            what: sha256::Hash::from_engine(engine).to_byte_array(),
        }
    }
}

type Answer = Result<Response, SignerError>;

/// One node's outstanding and answered signing requests.
pub struct Pending {
    link: SignerLink,
    runtime: Handle,
    state: Mutex<State>,
    unblock: OnceLock<Unblock>,
    on_refusal: OnceLock<OnRefusal>,
    /// Retries asked for but not yet run (bits of [`Retry`]), so a burst of answers costs one retry.
    scheduled: AtomicU8,
}

#[derive(Default)]
struct State {
    in_flight: HashMap<Key, Retry>,
    ready: HashMap<Key, Answer>,
    /// Channels (and the component retrying them) with an answer whose retry waits for the
    /// channel's other requests to be answered too.
    held: HashSet<([u8; 32], Retry)>,
}

impl State {
    /// Notes an answer to `key` (lost: the signer went away) and says whether LDK should retry
    /// now. While another request of the same channel for the same component is in flight the
    /// retry waits for its answer (the signer answers in order, so it is right behind): LDK's
    /// retry rebuilds every commitment the channel waits on, and one still unanswered would be
    /// built for nothing, or built and set aside when it must go out after the other.
    fn answered(&mut self, key: Key, retry: Retry, answer: Answer, inline: bool) -> bool {
        self.in_flight.remove(&key);
        let lost = matches!(answer, Err(SignerError::Unavailable | SignerError::Timeout));
        if !lost {
            // Nothing to keep if lost: LDK asks again when the signer is back (`retry_all`).
            self.ready.insert(key, answer);
        }
        let group = (key.channel, retry);
        let busy = self
            .in_flight
            .iter()
            .any(|(k, r)| k.channel == key.channel && *r == retry);
        if busy {
            if !lost && !inline {
                self.held.insert(group);
            }
            return false;
        }
        // An inline answer is collected by the call that sent it; a lost one needs no retry
        // of its own, but answers held for it do.
        self.held.remove(&group) || (!lost && !inline)
    }
}

impl Pending {
    pub fn new(link: SignerLink, runtime: Handle) -> Arc<Self> {
        Arc::new(Pending {
            link,
            runtime,
            state: Mutex::new(State::default()),
            unblock: OnceLock::new(),
            on_refusal: OnceLock::new(),
            scheduled: AtomicU8::new(0),
        })
    }

    pub fn link(&self) -> &SignerLink {
        &self.link
    }

    pub fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// Wires the retry to the node's channel manager and chain monitor, once they exist.
    pub fn set_unblock(&self, unblock: Unblock) {
        let _ = self.unblock.set(unblock);
    }

    /// Whom to tell of a refusal (the node records it for its user).
    pub fn set_on_refusal(&self, on_refusal: OnRefusal) {
        let _ = self.on_refusal.set(on_refusal);
    }

    /// The answer to `request` if the signer gave it; otherwise sends it (once) and returns
    /// `Err(())`, LDK's "pending". A refusal stays `Err` (logged and told once, see
    /// [`Pending::set_on_refusal`]); the operation waits until the signer's policy or the user
    /// changes, and the channel stays consistent meanwhile.
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
            if state.in_flight.insert(key, retry).is_some() {
                return Err(());
            }
        }
        let request = request();
        let inline = Arc::new(AtomicBool::new(true));
        let this = self.clone();
        let still_inline = inline.clone();
        let kind = request.kind();
        let channel_id = request
            .params()
            .and_then(|p| p.funding_outpoint)
            .map(ChannelId::v1_from_funding_outpoint);
        self.link.send(
            request,
            Box::new(move |answer| {
                if let Err(SignerError::Refused(reason)) = &answer {
                    this.refused(Refused {
                        kind,
                        channel_id,
                        reason: reason.clone(),
                    });
                }
                let inline = still_inline.load(Ordering::SeqCst);
                let now = this.lock().answered(key, retry, answer, inline);
                if now {
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
                // Kept, so LDK's retries do not ask again and again.
                state.ready.insert(key, Err(e));
                Err(())
            }
        }
    }

    /// Logs a refusal and tells the node of it. Live requests the node makes itself (a sweep)
    /// come here too, when the caller judges the refusal news.
    pub fn refused(&self, refused: Refused) {
        tracing::warn!(kind = refused.kind, channel = ?refused.channel_id, reason = %refused.reason,
            "signer refused; operation stays pending");
        if let Some(on_refusal) = self.on_refusal.get() {
            on_refusal(refused);
        }
    }

    /// Forgets what is kept for a retired channel (answers LDK will not collect, refusals).
    pub fn forget(&self, channel: [u8; 32]) {
        let mut state = self.lock();
        state.in_flight.retain(|k, _| k.channel != channel);
        state.ready.retain(|k, _| k.channel != channel);
        state.held.retain(|(c, _)| *c != channel);
    }

    /// Asks LDK to retry everything (the signer is back, or a policy changed): forget refusals.
    pub fn retry_all(self: &Arc<Self>) {
        {
            let mut state = self.lock();
            state.ready.retain(|_, answer| answer.is_ok());
            state.held.clear();
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use flotilla_proto::Handover;
    use tokio::sync::watch;

    use super::*;
    use crate::signer_client::link::{Reply, Transport};

    /// Keeps every request's reply for the test to answer when it likes.
    #[derive(Default)]
    struct Held {
        replies: Mutex<Vec<Reply>>,
    }

    impl Transport for Held {
        fn send(&self, _request: Request, reply: Reply) {
            self.replies.lock().unwrap().push(reply);
        }
        fn attached(&self) -> watch::Receiver<bool> {
            watch::Sender::new(true).subscribe()
        }
        fn handover(&self) -> Option<Handover> {
            None
        }
    }

    impl Held {
        /// Answers the oldest request still waiting.
        fn answer(&self, answer: Answer) {
            let reply = self.replies.lock().unwrap().remove(0);
            reply(answer);
        }
    }

    fn secret(idx: u64) -> Request {
        Request::ReleaseCommitmentSecret {
            keys_id: [0; 32],
            idx,
            holder: None,
        }
    }

    /// Lets spawned retries run; returns how many ran since the last call.
    async fn retries_run(count: &AtomicUsize) -> usize {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        count.swap(0, Ordering::SeqCst)
    }

    /// A node's `Pending` whose requests wait for the test to answer them.
    fn held_pending() -> (Arc<Held>, Arc<Pending>) {
        let held = Arc::new(Held::default());
        let node = SecretKey::from_slice(&[7; 32])
            .unwrap()
            .public_key(&Secp256k1::new());
        let pending = Pending::new(SignerLink::new(node, held.clone()), Handle::current());
        (held, pending)
    }

    #[tokio::test]
    async fn a_channel_is_retried_once_its_last_request_is_answered() {
        let (held, pending) = held_pending();
        let retries = Arc::new(AtomicUsize::new(0));
        let counted = retries.clone();
        pending.set_unblock(Box::new(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        let (a, b) = ([1; 32], [2; 32]);
        let ask = |channel, what: &str| {
            pending.sign(Key::of(channel, what, &[]), Retry::Channels, || secret(1))
        };
        let secret_answer = || Ok(Response::Secret([9; 32]));

        assert!(ask(a, "first").is_err());
        assert!(ask(a, "second").is_err());
        assert!(ask(b, "other").is_err());
        // a's first answer waits for its second; b is another channel.
        held.answer(secret_answer());
        assert_eq!(retries_run(&retries).await, 0);
        held.answer(secret_answer());
        assert_eq!(retries_run(&retries).await, 1);
        assert!(matches!(ask(a, "first"), Ok(Response::Secret(s)) if s == [9; 32]));
        assert!(matches!(ask(a, "second"), Ok(Response::Secret(s)) if s == [9; 32]));
        held.answer(secret_answer());
        assert_eq!(retries_run(&retries).await, 1);

        // An answer held behind a request the signer never answers (it went away) is still
        // retried when that request is lost; a lost request alone asks for no retry.
        assert!(ask(a, "third").is_err());
        assert!(ask(a, "fourth").is_err());
        held.answer(secret_answer());
        assert_eq!(retries_run(&retries).await, 0);
        held.answer(Err(SignerError::Unavailable));
        assert_eq!(retries_run(&retries).await, 1);
        assert!(ask(b, "lost").is_err());
        held.answer(Err(SignerError::Unavailable));
        assert_eq!(retries_run(&retries).await, 0);
    }

    #[tokio::test]
    async fn a_refusal_is_kept_and_told_once_until_its_channel_retires() {
        let (held, pending) = held_pending();
        let key = Key::of([1; 32], "commitment", &[]);
        let ask = || pending.sign(key, Retry::Channels, || secret(1));
        let sent = || held.replies.lock().unwrap().len();

        let told = Arc::new(Mutex::new(Vec::new()));
        let told_to = told.clone();
        pending.set_on_refusal(Box::new(move |r| told_to.lock().unwrap().push(r)));

        assert!(ask().is_err());
        held.answer(Err(SignerError::Refused("limit".into())));
        // The refusal is kept: LDK's retries do not ask again, and it is told once.
        assert!(ask().is_err());
        assert!(ask().is_err());
        assert_eq!(sent(), 0);
        let told: Vec<_> = told.lock().unwrap().drain(..).collect();
        assert_eq!(told.len(), 1);
        assert_eq!(
            (told[0].kind, told[0].channel_id, told[0].reason.as_str()),
            ("release_commitment_secret", None, "limit")
        );
        pending.forget([1; 32]);
        assert!(pending.lock().ready.is_empty());
        assert!(ask().is_err());
        assert_eq!(sent(), 1);
    }
}
