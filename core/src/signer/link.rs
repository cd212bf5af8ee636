//! The host's line to one node's signer, whatever carries it.
//!
//! LDK calls the host's signer proxies synchronously; some calls may answer "pending" and be
//! retried (asynchronous signing), others need an answer now (ECDH). [`SignerLink`] offers both
//! over one [`Transport`]: the in-process signer answers inline, the gRPC hub forwards the request
//! to the signer's stream and answers when the signer does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use tokio::sync::{oneshot, watch};

use super::protocol::{Handler, Handover, Request, Response, SignerError};

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
}

/// How long a synchronous call waits for the signer before failing.
pub const SYNC_DEADLINE: Duration = Duration::from_secs(5);

/// One node's signer, as the host sees it.
#[derive(Clone)]
pub struct SignerLink {
    node_id: PublicKey,
    transport: Arc<dyn Transport>,
    answered: Arc<AtomicU64>,
}

impl SignerLink {
    pub fn new(node_id: PublicKey, transport: Arc<dyn Transport>) -> Self {
        SignerLink {
            node_id,
            transport,
            answered: Arc::new(AtomicU64::new(0)),
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
        crate::blocking::wait_blocking(wait)
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
