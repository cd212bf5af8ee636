//! The host's line to one node's signer, whatever carries it.
//!
//! LDK calls the host's signer proxies synchronously; some calls may answer "pending" and be
//! retried (asynchronous signing), others need an answer now (ECDH). [`SignerLink`] offers both
//! over one [`Transport`]: the in-process signer answers inline, the gRPC hub forwards the request
//! to the signer's stream and answers when the signer does.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use flotilla_proto::{Handler, Handover, Request, Response, SignerError};
use tokio::sync::{oneshot, watch};

/// Called once with the signer's answer (possibly on another thread).
pub type Reply = Box<dyn FnOnce(Result<Response, SignerError>) + Send>;

/// Carries requests to one node's signer.
pub trait Transport: Send + Sync {
    /// Sends `request`; `reply` is called exactly once, with `Unavailable` if no signer is
    /// attached or it detaches before answering.
    fn send(&self, request: Request, reply: Reply);
    /// Whether a signer is attached now, and changes to it.
    fn attached(&self) -> watch::Receiver<bool>;
    /// What the signer handed over when it last attached, if it ever did.
    fn handover(&self) -> Option<Handover>;
    /// The highest version of the node's signer state this transport has seen (0: none; a
    /// signer in this process has no rival copy to be refused for).
    fn state_version(&self) -> u64 {
        0
    }
    /// Raises the version a signer must hold to attach (to what the host saved before a
    /// restart): an attached signer below it is detached.
    fn require_state_version(&self, version: u64) {
        let _ = version;
    }
}

/// How long a synchronous call waits for the signer before failing.
pub const SYNC_DEADLINE: Duration = Duration::from_secs(5);
/// Synchronous calls waiting on one node's signer, and on all signers of the host. Each holds
/// a thread of the shared blocking pool for up to [`SYNC_DEADLINE`] (an inbound handshake, an
/// onion): without a bound, one node's peers could connect by the hundred and take every
/// thread the host has. Beyond it a call fails at once (a handshake is dropped, an onion
/// fails back), and other nodes go on.
const SYNC_CALLS_PER_NODE: usize = 8;
const SYNC_CALLS_PER_HOST: usize = 256;
static SYNC_CALLS: AtomicUsize = AtomicUsize::new(0);

/// One node's signer, as the host sees it.
#[derive(Clone)]
pub struct SignerLink {
    node_id: PublicKey,
    transport: Arc<dyn Transport>,
    answered: Arc<AtomicU64>,
    /// Synchronous calls of this node waiting now.
    waiting: Arc<AtomicUsize>,
}

impl SignerLink {
    pub fn new(node_id: PublicKey, transport: Arc<dyn Transport>) -> Self {
        SignerLink {
            node_id,
            transport,
            answered: Arc::new(AtomicU64::new(0)),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A signer in this process (tests and the benchmark's baseline).
    pub fn in_process(handler: Arc<dyn Handler>) -> Self {
        let node_id = handler.node_id();
        SignerLink::new(node_id, Arc::new(InProcess::new(handler)))
    }

    pub fn node_id(&self) -> PublicKey {
        self.node_id
    }

    pub fn attached(&self) -> watch::Receiver<bool> {
        self.transport.attached()
    }

    pub fn handover(&self) -> Option<Handover> {
        self.transport.handover()
    }

    /// See [`Transport::state_version`].
    pub fn state_version(&self) -> u64 {
        self.transport.state_version()
    }

    /// See [`Transport::require_state_version`].
    pub fn require_state_version(&self, version: u64) {
        self.transport.require_state_version(version)
    }

    pub fn is_attached(&self) -> bool {
        *self.transport.attached().borrow()
    }

    /// Requests the signer answered (signatures, points, approvals, refusals).
    pub fn requests_answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Sends `request` and calls `reply` with the answer, without waiting.
    pub fn send(&self, request: Request, reply: Reply) {
        let answered = self.answered.clone();
        self.transport.send(
            request,
            Box::new(move |result| {
                if !matches!(result, Err(SignerError::Unavailable | SignerError::Timeout)) {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                reply(result)
            }),
        );
    }

    /// Asks and awaits the answer.
    pub async fn call(&self, request: Request) -> Result<Response, SignerError> {
        let (tx, rx) = oneshot::channel();
        self.send(
            request,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.await.unwrap_or(Err(SignerError::Unavailable))
    }

    /// Asks and blocks this thread for the answer, up to `deadline`. On a multi-threaded tokio
    /// runtime the worker hands its other tasks away first, so waiting does not starve them.
    pub fn call_blocking(
        &self,
        request: Request,
        deadline: Duration,
    ) -> Result<Response, SignerError> {
        if !self.is_attached() {
            return Err(SignerError::Unavailable);
        }
        let Some(_slot) = SyncSlot::take(&self.waiting) else {
            tracing::warn!(node = %self.node_id, kind = request.kind(), "too many calls wait on signers; refused at once");
            return Err(SignerError::Unavailable);
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.send(
            request,
            Box::new(move |result| {
                let _ = tx.try_send(result);
            }),
        );
        // The in-process signer has answered already: no need to hand the worker away.
        if let Ok(result) = rx.try_recv() {
            return result;
        }
        let wait = move || match rx.recv_timeout(deadline) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(SignerError::Timeout),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(SignerError::Unavailable),
        };
        flotilla_sqlite::blocking::wait_blocking(wait)
    }
}

/// One synchronous call's place under the node's and the host's bounds, given back on drop.
struct SyncSlot {
    node: Arc<AtomicUsize>,
}

impl SyncSlot {
    fn take(node: &Arc<AtomicUsize>) -> Option<SyncSlot> {
        let taken = |count: &AtomicUsize, bound: usize| {
            count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < bound).then_some(n + 1)
                })
                .is_ok()
        };
        if !taken(node, SYNC_CALLS_PER_NODE) {
            return None;
        }
        if !taken(&SYNC_CALLS, SYNC_CALLS_PER_HOST) {
            node.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(SyncSlot { node: node.clone() })
    }
}

impl Drop for SyncSlot {
    fn drop(&mut self) {
        self.node.fetch_sub(1, Ordering::AcqRel);
        SYNC_CALLS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The in-process transport: the handler answers on the caller's thread.
struct InProcess {
    handler: Arc<dyn Handler>,
    attached: watch::Sender<bool>,
}

impl InProcess {
    fn new(handler: Arc<dyn Handler>) -> Self {
        InProcess {
            handler,
            attached: watch::Sender::new(true),
        }
    }
}

impl Transport for InProcess {
    fn send(&self, request: Request, reply: Reply) {
        reply(self.handler.handle(request))
    }

    fn attached(&self) -> watch::Receiver<bool> {
        self.attached.subscribe()
    }

    fn handover(&self) -> Option<Handover> {
        Some(self.handler.handover())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use bitcoin::secp256k1::{Secp256k1, SecretKey};

    use super::*;

    /// A signer that never answers: every synchronous call waits out its deadline.
    #[derive(Default)]
    struct Silent(Mutex<Vec<Reply>>);

    impl Transport for Silent {
        fn send(&self, _: Request, reply: Reply) {
            self.0.lock().unwrap().push(reply);
        }
        fn attached(&self) -> watch::Receiver<bool> {
            watch::channel(true).1
        }
        fn handover(&self) -> Option<Handover> {
            None
        }
    }

    fn link(seed: u8) -> SignerLink {
        let secret = SecretKey::from_slice(&[seed; 32]).unwrap();
        let node = PublicKey::from_secret_key(&Secp256k1::new(), &secret);
        SignerLink::new(node, Arc::new(Silent::default()))
    }

    fn request() -> Request {
        Request::SignMessage { msg: vec![1] }
    }

    #[test]
    fn a_node_holds_only_so_many_threads_waiting_on_its_signer() {
        let (flooded, other) = (link(1), link(2));
        let wait = Duration::from_millis(1_500);
        let waiting: Vec<_> = (0..SYNC_CALLS_PER_NODE)
            .map(|_| {
                let link = flooded.clone();
                std::thread::spawn(move || link.call_blocking(request(), wait))
            })
            .collect();
        while flooded.waiting.load(Ordering::Acquire) < SYNC_CALLS_PER_NODE {
            std::thread::sleep(Duration::from_millis(5));
        }
        // One more of the same node is refused at once, without a thread or a request.
        let start = Instant::now();
        assert!(matches!(
            flooded.call_blocking(request(), wait),
            Err(SignerError::Unavailable)
        ));
        assert!(start.elapsed() < Duration::from_millis(500));
        // Another node still waits on its own signer (up to its deadline).
        assert!(matches!(
            other.call_blocking(request(), Duration::from_millis(50)),
            Err(SignerError::Timeout)
        ));
        for thread in waiting {
            assert!(matches!(thread.join().unwrap(), Err(SignerError::Timeout)));
        }
        // The places come back.
        assert_eq!(flooded.waiting.load(Ordering::Acquire), 0);
        assert!(matches!(
            flooded.call_blocking(request(), Duration::from_millis(10)),
            Err(SignerError::Timeout)
        ));
    }
}
