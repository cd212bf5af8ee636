//! The signer side of the signer protocol: dial the host's hub, so the customer side needs no
//! inbound port.
//!
//! One TLS connection (one tonic `Channel`) carries one Attach stream per node. Each node's
//! requests are checked and answered in arrival order on that node's own task (payment
//! approvals, which may wait on a person, on a blocking thread beside it), and each answer
//! leaves once the state it rests on is saved; nodes run concurrently.
//! Whatever breaks (host down, stream dropped, refusal because the host has not registered the
//! node yet) is retried with a bounded backoff until `stop` turns true, except a refusal of
//! stale state: the host has seen a newer state of the node than this signer's, which no
//! retry can make newer, so that node is given up and the app told ([`DialStats::stale`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use flotilla_proto::wire::proto::signer_hub_client::SignerHubClient;
use flotilla_proto::wire::proto::{self, hub_message, signer_message, HubMessage, SignerMessage};
use flotilla_proto::wire::{encode_handover, encode_response, RequestDecoder};
use flotilla_proto::{Request, Response, SignerError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::durable::{Answer, DurableHandler};

/// First wait before retrying; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers queued towards the hub per node before the node's task waits for the network.
const OUTBOUND_QUEUE: usize = 256;

/// Where the host's hub is and which CA vouches for it.
#[derive(Clone, Debug)]
pub struct DialConfig {
    /// `https://host:port`; the host name (or IP) must be in the hub's certificate.
    pub host_url: String,
    /// PEM of the hub's CA (the hub's `signer-ca.pem`); no other root is trusted.
    pub ca_pem: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("invalid host url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("the CA PEM holds no certificate")]
    Ca,
    #[error("cannot set up TLS: {0}")]
    Tls(#[source] tonic::transport::Error),
}

/// What the dialer did, readable while it runs.
#[derive(Debug, Default)]
pub struct DialStats {
    answered: AtomicU64,
    attaches: AtomicU64,
    refusals: AtomicU64,
    stale: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl DialStats {
    /// Requests answered (with a value or an error), all nodes together.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Streams the hub accepted.
    pub fn attaches(&self) -> u64 {
        self.attaches.load(Ordering::Relaxed)
    }

    /// Attaches the hub refused (bad proof, node not registered).
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// Nodes the hub refused because it has seen a newer state of theirs than this signer
    /// holds (a restored backup, a second copy of the seed): they are no longer served.
    pub fn stale(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }

    /// Connections or streams that failed otherwise (host down, TLS, dropped stream).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The latest refusal or failure, with its causes.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn note_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }
}

/// Serves `handlers` through the hub at `config.host_url` until `stop` turns true (or its
/// sender is dropped).
pub async fn serve(
    config: DialConfig,
    handlers: Vec<Arc<dyn DurableHandler>>,
    stop: watch::Receiver<bool>,
) -> Result<(), DialError> {
    serve_with_stats(config, handlers, stop, Arc::new(DialStats::default())).await
}

/// [`serve`], counting into `stats` (the demo reports `stats.answered()` as `signer_requests`).
pub async fn serve_with_stats(
    config: DialConfig,
    handlers: Vec<Arc<dyn DurableHandler>>,
    stop: watch::Receiver<bool>,
    stats: Arc<DialStats>,
) -> Result<(), DialError> {
    let channel = channel(&config)?;
    let mut nodes = JoinSet::new();
    for handler in handlers {
        let client = SignerHubClient::new(channel.clone());
        nodes.spawn(node_loop(client, handler, stop.clone(), stats.clone()));
    }
    while nodes.join_next().await.is_some() {}
    Ok(())
}

/// Checks the URL and the CA as [`serve`] will, without a runtime or a connection.
pub fn check(config: &DialConfig) -> Result<(), DialError> {
    endpoint(config).map(drop)
}

/// One lazily connected channel: it connects on first use and reconnects after a failure.
fn channel(config: &DialConfig) -> Result<Channel, DialError> {
    Ok(endpoint(config)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// The hub's endpoint: https only, trusting `config.ca_pem` alone.
fn endpoint(config: &DialConfig) -> Result<Endpoint, DialError> {
    let url_error = |reason: String| DialError::Url {
        url: config.host_url.clone(),
        reason,
    };
    let endpoint =
        Endpoint::from_shared(config.host_url.clone()).map_err(|e| url_error(error_chain(&e)))?;
    if endpoint.uri().scheme_str() != Some("https") {
        return Err(url_error("the signer only dials https".into()));
    }
    if CertificateDer::pem_slice_iter(&config.ca_pem)
        .next()
        .is_none_or(|c| c.is_err())
    {
        return Err(DialError::Ca);
    }
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&config.ca_pem));
    endpoint.tls_config(tls).map_err(DialError::Tls)
}

/// How one attach ended.
enum Ended {
    Stopped,
    /// The stream was attached and then ended: retry soon.
    AfterAttach,
    /// The hub refused the proof or the node.
    Refused,
    /// The hub has seen a newer state of this node than the signer's: retrying cannot help.
    Stale,
    /// Connection or protocol failure before the attach completed.
    Failed,
}

async fn node_loop(
    mut client: SignerHubClient<Channel>,
    handler: Arc<dyn DurableHandler>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<DialStats>,
) {
    let node = handler.node_id();
    let mut backoff = MIN_BACKOFF;
    loop {
        let ended = attach(&mut client, &handler, &mut stop, &stats).await;
        if handler.broken() {
            tracing::error!(%node, "this node's signer is broken (its state could not be saved): detached until the signer restarts");
            return;
        }
        match ended {
            Ended::Stopped => return,
            Ended::Stale => {
                tracing::error!(%node, "this signer's state is older than the host has seen: it stops serving the node; restore the newest state (or use the device that holds it)");
                return;
            }
            Ended::AfterAttach => backoff = MIN_BACKOFF,
            Ended::Refused | Ended::Failed => {}
        }
        tracing::debug!(%node, ?backoff, "retrying the hub");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Resolves when `stop` turns true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One Attach stream: prove the node key, then answer requests in order until it ends.
async fn attach(
    client: &mut SignerHubClient<Channel>,
    handler: &Arc<dyn DurableHandler>,
    stop: &mut watch::Receiver<bool>,
    stats: &Arc<DialStats>,
) -> Ended {
    let node = handler.node_id();
    let (tx, rx) = mpsc::channel::<SignerMessage>(OUTBOUND_QUEUE);
    let hello = signer_message::Msg::Hello(proto::Hello {
        node_id: node.serialize().to_vec(),
    });
    if tx.send(SignerMessage { msg: Some(hello) }).await.is_err() {
        return Ended::Failed;
    }
    let opened = tokio::select! {
        opened = client.attach(ReceiverStream::new(rx)) => opened,
        _ = stopped(stop) => return Ended::Stopped,
    };
    let mut inbound = match opened {
        Ok(response) => response.into_inner(),
        Err(status) => return failed(node, stats, &status),
    };

    let nonce = match next(node, &mut inbound, stop, stats).await {
        Next::Message(hub_message::Msg::Challenge(c)) => match <[u8; 32]>::try_from(c.nonce) {
            Ok(nonce) => nonce,
            Err(_) => return protocol_error(node, stats, "the challenge is not 32 bytes"),
        },
        Next::Message(_) => return protocol_error(node, stats, "expected a challenge"),
        Next::End(ended) => return ended,
    };
    // The version the proof names must be on disk: a host that saw it refuses anything older.
    let version = handler.state_version();
    let state_version = version.state_version();
    if version.settled().await.is_err() {
        return Ended::Failed;
    }
    let proof = signer_message::Msg::Proof(proto::Proof {
        signature: handler.sign_challenge(&nonce).serialize_compact().to_vec(),
        handover: Some(encode_handover(&handler.handover())),
        state_version,
    });
    if tx.send(SignerMessage { msg: Some(proof) }).await.is_err() {
        return Ended::Failed;
    }
    match next(node, &mut inbound, stop, stats).await {
        Next::Message(hub_message::Msg::Accepted(_)) => {}
        Next::Message(_) => return protocol_error(node, stats, "expected Accepted"),
        Next::End(ended) => return ended,
    }
    stats.attaches.fetch_add(1, Ordering::Relaxed);
    tracing::info!(%node, "attached to the hub");

    // Answers leave in request order once they settle (their state is saved), on a task of
    // their own: the next request is checked while the last one's change is being saved.
    let (answers, queued) = mpsc::channel(OUTBOUND_QUEUE);
    let mut sender = tokio::spawn(send_answers(
        queued,
        tx.clone(),
        handler.clone(),
        stats.clone(),
    ));
    let mut decoder = RequestDecoder::default();
    let ended = loop {
        let next = tokio::select! {
            // The sender stops when the stream is gone or the signer broke.
            _ = &mut sender => break Ended::AfterAttach,
            next = next(node, &mut inbound, stop, stats) => next,
        };
        let envelope = match next {
            Next::Message(hub_message::Msg::Request(envelope)) => envelope,
            Next::Message(_) => {
                protocol_error(node, stats, "expected a request");
                break Ended::AfterAttach;
            }
            Next::End(ended @ (Ended::Stopped | Ended::Stale)) => break ended,
            Next::End(_) => break Ended::AfterAttach,
        };
        let (id, request) = decoder.decode(envelope);
        if let Ok(request @ Request::ApprovePayment { .. }) = request {
            // The approval hook may wait on a person: answer beside the node's other requests
            // rather than ahead of them (answers carry ids, so the hub takes them in any order;
            // the host sends no HTLC for this payment before the answer).
            let (handler, tx, stats) = (handler.clone(), tx.clone(), stats.clone());
            tokio::task::spawn_blocking(move || {
                let answer = handler.answer(request);
                let version = answer.state_version();
                let message = response(id, &answer.settled_blocking(), version);
                if tx.blocking_send(message).is_ok() {
                    stats.answered.fetch_add(1, Ordering::Relaxed);
                }
            });
            continue;
        }
        let answer = match request {
            Ok(request) => handler.answer(request),
            Err(e) => Answer::ready(Err(e)),
        };
        if answers.send((id, answer)).await.is_err() {
            tracing::info!(%node, "the hub stream closed");
            break Ended::AfterAttach;
        }
    };
    // Answers already computed still go out (or fail with the stream) before a new attach.
    drop(answers);
    if !sender.is_finished() {
        let _ = sender.await;
    }
    ended
}

/// Sends each answer once it settles, in the order they were queued, until the stream is
/// gone or the signer broke.
async fn send_answers(
    mut queued: mpsc::Receiver<(u64, Answer)>,
    tx: mpsc::Sender<SignerMessage>,
    handler: Arc<dyn DurableHandler>,
    stats: Arc<DialStats>,
) {
    while let Some((id, answer)) = queued.recv().await {
        let version = answer.state_version();
        let message = response(id, &answer.settled().await, version);
        if tx.send(message).await.is_err() || handler.broken() {
            return;
        }
        stats.answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// The message carrying the answer to request `id`, resting on the state at `version`.
fn response(id: u64, result: &Result<Response, SignerError>, version: u64) -> SignerMessage {
    let mut envelope = encode_response(id, result);
    envelope.state_version = version;
    SignerMessage {
        msg: Some(signer_message::Msg::Response(envelope)),
    }
}

/// What the hub's stream gave next.
enum Next {
    Message(hub_message::Msg),
    /// Anything else: stopped, closed or failed, already reported.
    End(Ended),
}

async fn next(
    node: PublicKey,
    inbound: &mut Streaming<HubMessage>,
    stop: &mut watch::Receiver<bool>,
    stats: &DialStats,
) -> Next {
    // Stop first: once told to stop, take no new request even if some are waiting.
    let message = tokio::select! {
        biased;
        _ = stopped(stop) => return Next::End(Ended::Stopped),
        message = inbound.message() => message,
    };
    match message {
        Ok(Some(HubMessage { msg: Some(msg) })) => Next::Message(msg),
        Ok(Some(HubMessage { msg: None })) => {
            Next::End(protocol_error(node, stats, "empty message from the hub"))
        }
        Ok(None) => {
            tracing::info!(%node, "the hub ended the stream");
            Next::End(Ended::Failed)
        }
        Err(status) => Next::End(failed(node, stats, &status)),
    }
}

fn failed(node: PublicKey, stats: &DialStats, status: &Status) -> Ended {
    let error = error_chain(status);
    stats.note_error(error.clone());
    if matches!(
        status.code(),
        Code::PermissionDenied | Code::Unauthenticated
    ) {
        stats.refusals.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%node, "the hub refused the signer: {}", status.message());
        Ended::Refused
    } else if status.code() == Code::FailedPrecondition {
        stats.refusals.fetch_add(1, Ordering::Relaxed);
        stats.stale.fetch_add(1, Ordering::Relaxed);
        tracing::error!(%node, "the hub refused the signer: {}", status.message());
        Ended::Stale
    } else if status.code() == Code::AlreadyExists {
        stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%node, "another signer serves this node; standing by");
        Ended::Failed
    } else {
        stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%node, "signer stream failed: {error}");
        Ended::Failed
    }
}

fn protocol_error(node: PublicKey, stats: &DialStats, what: &str) -> Ended {
    stats.failures.fetch_add(1, Ordering::Relaxed);
    stats.note_error(format!("protocol error: {what}"));
    tracing::warn!(%node, "protocol error from the hub: {what}");
    Ended::Failed
}

/// An error and its causes on one line (TLS failures hide in the sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
