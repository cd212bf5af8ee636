//! The host side of the signer protocol: a gRPC server over TLS that signers dial.
//!
//! Each node is registered once and gets a [`Transport`] at once; it stays detached (every
//! request answered `Unavailable`) until a signer opens an Attach stream for it and proves it
//! holds the node key by signing a fresh challenge. A detached node costs a map entry and two
//! watch channels; an attached one adds a task and an unbounded queue, so 10,000 nodes per host
//! need no thread of their own.
//!
//! The hub also keeps the highest version of each node's signer state it has seen (in the
//! proof and in every answer) and refuses a signer whose state is older: two copies of one
//! seed (a phone and a restored backup) would otherwise take turns, and the older would sign
//! what the newer revoked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::secp256k1::rand::{thread_rng, RngCore};
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use flotilla_proto::challenge_digest;
use flotilla_proto::wire::proto::signer_hub_server::{
    SignerHub as SignerHubService, SignerHubServer,
};
use flotilla_proto::wire::proto::{self, hub_message, signer_message, HubMessage, SignerMessage};
use flotilla_proto::wire::{decode_handover, decode_response, encode_request};
use flotilla_proto::{Handover, Request, SignerError};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Status, Streaming};

use super::link::{Reply, Transport};
use super::tls::HubTls;

/// How long a signer has, from opening the stream, to prove its key.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings find a signer that vanished without closing its connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// One signer process may serve many nodes over one connection: one stream each.
const MAX_STREAMS_PER_CONNECTION: u32 = 100_000;
/// Streams that have not proven a key yet, per connection and in all: each holds a task and
/// a queue until its proof or [`HANDSHAKE_TIMEOUT`], so anyone who can reach the port could
/// otherwise pile them up. A signer of many nodes proves them a few hundred at a time (its
/// refused streams retry), and a flood on one connection leaves room for everyone else's.
const MAX_HANDSHAKES_PER_CONNECTION: usize = 256;
const MAX_HANDSHAKES: usize = 4_096;
/// How long `shutdown` waits for connections to drain before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the hub's TLS: {0}")]
    Tls(#[source] tonic::transport::Error),
}

type Outbound = mpsc::UnboundedSender<Result<HubMessage, Status>>;

/// The signers' meeting point on the host.
pub struct SignerHub {
    local_addr: SocketAddr,
    registry: Arc<Registry>,
    stop_server: Mutex<Option<oneshot::Sender<()>>>,
    server: Mutex<Option<JoinHandle<Result<(), tonic::transport::Error>>>>,
    /// The hub's own threads. LDK calls some signer methods synchronously while holding its
    /// locks, and the host's workers may all be blocked on those locks: answers must arrive on
    /// threads LDK cannot block, or a live request would wait for itself.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

/// Threads of the hub's runtime: enough for TLS and decoding; signing happens elsewhere.
const HUB_THREADS: usize = 2;

impl SignerHub {
    /// Listens on `listen` (port 0 picks one; see [`SignerHub::local_addr`]) with `tls`.
    pub async fn start(listen: SocketAddr, tls: &HubTls) -> Result<Arc<SignerHub>, HubError> {
        let bind = |source| HubError::Bind {
            addr: listen,
            source,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(HUB_THREADS)
            .thread_name("signer-hub")
            .enable_all()
            .build()
            .map_err(bind)?;
        let listener = std::net::TcpListener::bind(listen).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let local_addr = listener.local_addr().map_err(bind)?;
        let listener = {
            let _inside = runtime.enter();
            TcpListener::from_std(listener).map_err(bind)?
        };
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(KEEPALIVE_INTERVAL));
        let registry = Arc::new(Registry::default());
        let service = SignerHubServer::new(AttachService {
            registry: registry.clone(),
        });
        let tls_config = ServerTlsConfig::new()
            .identity(tls.identity())
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        let router = Server::builder()
            .tls_config(tls_config)
            .map_err(HubError::Tls)?
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .add_service(service);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = runtime.spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        }));
        tracing::info!(%local_addr, "signer hub listening");
        Ok(Arc::new(SignerHub {
            local_addr,
            registry,
            stop_server: Mutex::new(Some(stop_tx)),
            server: Mutex::new(Some(server)),
            runtime: Mutex::new(Some(runtime)),
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The transport to `node_id`'s signer; registering twice returns the same one. Detached
    /// until a signer proves the node key.
    pub fn register(&self, node_id: PublicKey) -> Arc<dyn Transport> {
        let mut nodes = lock(&self.registry.nodes);
        nodes
            .entry(node_id)
            .or_insert_with(|| Arc::new(NodeSlot::new(node_id)))
            .clone()
    }

    /// Forgets `node_id`: its stream ends, requests in flight are answered `Unavailable`, and
    /// its signer is refused from now on. The transport handed out stays detached for good.
    pub fn unregister(&self, node_id: &PublicKey) {
        let slot = lock(&self.registry.nodes).remove(node_id);
        if let Some(slot) = slot {
            slot.retire(Status::permission_denied(
                "the node was unregistered from this host",
            ));
        }
    }

    /// The latest handover `node_id`'s signer sent when it attached (`None` before the first
    /// attach, and for an unregistered node).
    pub fn handover(&self, node_id: &PublicKey) -> watch::Receiver<Option<Handover>> {
        match lock(&self.registry.nodes).get(node_id) {
            Some(slot) => slot.handover.subscribe(),
            None => watch::channel(None).1,
        }
    }

    /// Ends every stream (requests in flight answered `Unavailable`) and stops listening.
    pub async fn shutdown(&self) {
        self.registry.closed.store(true, Ordering::SeqCst);
        let slots: Vec<_> = lock(&self.registry.nodes).drain().map(|(_, s)| s).collect();
        for slot in slots {
            slot.retire(Status::unavailable("the host is shutting down"));
        }
        if let Some(stop) = lock(&self.stop_server).take() {
            let _ = stop.send(());
        }
        let server = lock(&self.server).take();
        if let Some(mut server) = server {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!("signer hub server ended with: {e}"),
                Ok(Err(e)) => tracing::warn!("signer hub server task failed: {e}"),
                Err(_) => {
                    tracing::warn!("signer hub connections did not drain; dropping them");
                    server.abort();
                }
            }
        }
    }
}

impl Drop for SignerHub {
    fn drop(&mut self) {
        if let Some(server) = lock(&self.server).take() {
            server.abort();
        }
        if let Some(runtime) = lock(&self.runtime).take() {
            // Not a blocking shutdown: the hub may be dropped inside another runtime.
            runtime.shutdown_background();
        }
    }
}

/// Poison-tolerant lock: no code here panics while holding one, and a reply callback never
/// runs under one.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Default)]
struct Registry {
    nodes: Mutex<HashMap<PublicKey, Arc<NodeSlot>>>,
    closed: AtomicBool,
    handshakes: Mutex<Handshakes>,
}

/// Streams still proving their key: in all, and by connection (its peer address).
#[derive(Default)]
struct Handshakes {
    total: usize,
    by_connection: HashMap<Option<SocketAddr>, usize>,
}

impl Registry {
    fn get(&self, node_id: &PublicKey) -> Option<Arc<NodeSlot>> {
        lock(&self.nodes).get(node_id).cloned()
    }

    /// A place for one more stream to prove its key, if the bounds leave one.
    fn handshake(self: &Arc<Self>, connection: Option<SocketAddr>) -> Result<Handshake, Status> {
        let mut handshakes = lock(&self.handshakes);
        let on_connection = handshakes
            .by_connection
            .get(&connection)
            .copied()
            .unwrap_or(0);
        if on_connection >= MAX_HANDSHAKES_PER_CONNECTION {
            return Err(Status::resource_exhausted(format!(
                "{MAX_HANDSHAKES_PER_CONNECTION} streams of this connection are still proving their key; retry"
            )));
        }
        if handshakes.total >= MAX_HANDSHAKES {
            return Err(Status::resource_exhausted(
                "too many signers are proving their keys at once; retry",
            ));
        }
        handshakes.total += 1;
        handshakes
            .by_connection
            .insert(connection, on_connection + 1);
        Ok(Handshake {
            registry: self.clone(),
            connection,
        })
    }
}

/// One stream's place among those proving their key, given back when dropped.
struct Handshake {
    registry: Arc<Registry>,
    connection: Option<SocketAddr>,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut handshakes = lock(&self.registry.handshakes);
        handshakes.total = handshakes.total.saturating_sub(1);
        if let Some(count) = handshakes.by_connection.get_mut(&self.connection) {
            *count -= 1;
            if *count == 0 {
                handshakes.by_connection.remove(&self.connection);
            }
        }
    }
}

/// One registered node: its transport, and its live stream if a signer is attached.
struct NodeSlot {
    node_id: PublicKey,
    attached: watch::Sender<bool>,
    handover: watch::Sender<Option<Handover>>,
    next_id: AtomicU64,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    session: Option<Session>,
    generations: u64,
    /// The highest signer state version seen for the node (or required by the host).
    seen_version: u64,
    /// Unregistered: no signer may attach again.
    retired: bool,
}

/// One attached stream. Dropping it ends the stream: the outbound queue closes and `_ends`
/// wakes the stream's task.
struct Session {
    generation: u64,
    /// The attached signer's state version (from its proof, raised by its answers).
    version: u64,
    out: Outbound,
    pending: HashMap<u64, Reply>,
    _ends: oneshot::Sender<()>,
}

impl Session {
    /// Ends the stream with `status` and answers its requests in flight `Unavailable`.
    fn close(self, status: Option<Status>) {
        if let Some(status) = status {
            let _ = self.out.send(Err(status));
        }
        for (_, reply) in self.pending {
            reply(Err(SignerError::Unavailable));
        }
    }
}

impl NodeSlot {
    fn new(node_id: PublicKey) -> NodeSlot {
        NodeSlot {
            node_id,
            attached: watch::Sender::new(false),
            handover: watch::Sender::new(None),
            next_id: AtomicU64::new(1),
            state: Mutex::new(SlotState::default()),
        }
    }

    /// Makes `out` the node's stream unless a live one exists. Returns the session's
    /// generation and the signal that it ended, or why the node cannot attach.
    fn attach(
        &self,
        out: Outbound,
        handover: Handover,
        version: u64,
    ) -> Result<(u64, oneshot::Receiver<()>), Status> {
        let (ends_tx, ends_rx) = oneshot::channel();
        let mut state = lock(&self.state);
        if state.retired {
            return Err(Status::permission_denied(format!(
                "node {} is not registered on this host",
                self.node_id
            )));
        }
        // One signer per node at a time: two with different state could each sign what the
        // other would refuse. A second one waits (its dial loop retries) until the first's
        // stream ends; a vanished signer's stream ends at the latest at the keepalive timeout.
        if state.session.as_ref().is_some_and(|s| !s.out.is_closed()) {
            return Err(Status::already_exists(format!(
                "node {} already has a signer attached",
                self.node_id
            )));
        }
        if version < state.seen_version {
            return Err(self.stale(version, state.seen_version));
        }
        // Accepted goes out before the session is installed: no request can overtake it.
        let accepted = HubMessage {
            msg: Some(hub_message::Msg::Accepted(proto::Accepted {})),
        };
        if out.send(Ok(accepted)).is_err() {
            return Err(Status::cancelled("stream closed"));
        }
        state.seen_version = version;
        state.generations += 1;
        let generation = state.generations;
        let old = state.session.replace(Session {
            generation,
            version,
            out,
            pending: HashMap::new(),
            _ends: ends_tx,
        });
        // Handover first, so whoever sees `attached` turn true finds it.
        self.handover.send_replace(Some(handover));
        self.attached.send_replace(true);
        drop(state);
        if let Some(old) = old {
            // Its stream was already gone; answer what it left in flight.
            old.close(None);
        }
        Ok((generation, ends_rx))
    }

    /// The stream of `generation` ended: the node is detached unless a newer stream took over.
    fn detach(&self, generation: u64) {
        let mut state = lock(&self.state);
        if state.session.as_ref().map(|s| s.generation) != Some(generation) {
            return;
        }
        let session = state.session.take();
        self.attached.send_replace(false);
        drop(state);
        tracing::info!(node = %self.node_id, "signer detached");
        if let Some(session) = session {
            session.close(None);
        }
    }

    fn retire(&self, status: Status) {
        let mut state = lock(&self.state);
        state.retired = true;
        let session = state.session.take();
        self.attached.send_replace(false);
        drop(state);
        if let Some(session) = session {
            session.close(Some(status));
        }
    }

    fn stale(&self, version: u64, seen: u64) -> Status {
        Status::failed_precondition(format!(
            "stale signer state: the signer's state of node {} is at version {version}, older \
             than version {seen} the host has seen from this node's signer (a restored backup or \
             another copy of the seed?); it would sign what the newer state revoked, so it is \
             refused: run the signer that holds the newest state",
            self.node_id
        ))
    }

    /// Raises the version a signer must hold; an attached signer below it is detached.
    fn require_version(&self, version: u64) {
        let mut state = lock(&self.state);
        state.seen_version = state.seen_version.max(version);
        let seen = state.seen_version;
        if state.session.as_ref().is_none_or(|s| s.version >= seen) {
            return;
        }
        let session = state.session.take();
        self.attached.send_replace(false);
        drop(state);
        if let Some(session) = session {
            tracing::warn!(node = %self.node_id, signer = session.version, seen, "stale signer detached");
            let status = self.stale(session.version, seen);
            session.close(Some(status));
        }
    }

    /// The signer's answer to request `id` on the stream of `generation`.
    fn answer(&self, generation: u64, envelope: proto::ResponseEnvelope) {
        let version = envelope.state_version;
        let (id, result) = decode_response(envelope);
        let reply = {
            let state = &mut *lock(&self.state);
            match state.session.as_mut() {
                Some(session) if session.generation == generation => {
                    session.version = session.version.max(version);
                    state.seen_version = state.seen_version.max(version);
                    session.pending.remove(&id)
                }
                _ => None,
            }
        };
        match reply {
            Some(reply) => reply(result),
            None => tracing::warn!(node = %self.node_id, id, "answer to no request in flight"),
        }
    }
}

impl Transport for NodeSlot {
    fn send(&self, request: Request, reply: Reply) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = HubMessage {
            msg: Some(hub_message::Msg::Request(encode_request(id, &request))),
        };
        let mut state = lock(&self.state);
        let queued = match state.session.as_mut() {
            Some(session) if session.out.send(Ok(message)).is_ok() => {
                session.pending.insert(id, reply);
                None
            }
            _ => Some(reply),
        };
        drop(state);
        if let Some(reply) = queued {
            reply(Err(SignerError::Unavailable));
        }
    }

    fn attached(&self) -> watch::Receiver<bool> {
        self.attached.subscribe()
    }

    fn handover(&self) -> Option<Handover> {
        self.handover.borrow().clone()
    }

    fn state_version(&self) -> u64 {
        lock(&self.state).seen_version
    }

    fn require_state_version(&self, version: u64) {
        self.require_version(version)
    }
}

/// The gRPC service: each Attach stream gets a task that proves the signer, then carries
/// its answers back to the node's pending requests.
struct AttachService {
    registry: Arc<Registry>,
}

#[tonic::async_trait]
impl SignerHubService for AttachService {
    type AttachStream = UnboundedReceiverStream<Result<HubMessage, Status>>;

    async fn attach(
        &self,
        request: tonic::Request<Streaming<SignerMessage>>,
    ) -> Result<tonic::Response<Self::AttachStream>, Status> {
        if self.registry.closed.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the host is shutting down"));
        }
        let handshake = self.registry.handshake(request.remote_addr())?;
        // Unbounded, but before the proof only the hub writes to it (one challenge).
        let (out, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(run_stream(
            self.registry.clone(),
            request.into_inner(),
            out,
            handshake,
        ));
        Ok(tonic::Response::new(UnboundedReceiverStream::new(out_rx)))
    }
}

async fn run_stream(
    registry: Arc<Registry>,
    mut inbound: Streaming<SignerMessage>,
    out: Outbound,
    place: Handshake,
) {
    let handshake =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&registry, &mut inbound, &out)).await;
    drop(place);
    let (slot, generation, mut ends) = match handshake {
        Ok(Ok(attached)) => attached,
        Ok(Err(status)) => {
            tracing::warn!("signer refused: {}", status.message());
            let _ = out.send(Err(status));
            return;
        }
        Err(_) => {
            let _ = out.send(Err(Status::deadline_exceeded(
                "no valid proof of the node key in time",
            )));
            return;
        }
    };
    tracing::info!(node = %slot.node_id, "signer attached");
    // Only the session keeps the outbound queue open from now on, so ending it ends the stream.
    drop(out);
    loop {
        tokio::select! {
            _ = &mut ends => return,
            message = inbound.message() => match message {
                Ok(Some(SignerMessage { msg: Some(signer_message::Msg::Response(envelope)) })) => {
                    slot.answer(generation, envelope)
                }
                Ok(Some(_)) => {
                    tracing::warn!(node = %slot.node_id, "signer sent something other than an answer");
                    break;
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::info!(node = %slot.node_id, "signer stream failed: {status}");
                    break;
                }
            },
        }
    }
    slot.detach(generation);
}

/// Hello, challenge, proof. Returns the node's slot once its signer has proven the node key.
async fn handshake(
    registry: &Registry,
    inbound: &mut Streaming<SignerMessage>,
    out: &Outbound,
) -> Result<(Arc<NodeSlot>, u64, oneshot::Receiver<()>), Status> {
    let hello = match inbound.message().await? {
        Some(SignerMessage {
            msg: Some(signer_message::Msg::Hello(hello)),
        }) => hello,
        _ => return Err(Status::invalid_argument("expected Hello first")),
    };
    let node_id = public_key(&hello.node_id)
        .ok_or_else(|| Status::invalid_argument("Hello: node_id is not a compressed public key"))?;

    let mut nonce = [0u8; 32];
    thread_rng().fill_bytes(&mut nonce);
    let challenge = HubMessage {
        msg: Some(hub_message::Msg::Challenge(proto::Challenge {
            nonce: nonce.to_vec(),
        })),
    };
    out.send(Ok(challenge))
        .map_err(|_| Status::cancelled("stream closed"))?;

    let proof = match inbound.message().await? {
        Some(SignerMessage {
            msg: Some(signer_message::Msg::Proof(proof)),
        }) => proof,
        _ => {
            return Err(Status::invalid_argument(
                "expected Proof after the challenge",
            ))
        }
    };
    // The signature first: only a holder of the key learns whether the node is registered.
    let signature = Signature::from_compact(&proof.signature)
        .map_err(|_| Status::unauthenticated("Proof: not a compact ECDSA signature"))?;
    Secp256k1::verification_only()
        .verify_ecdsa(&challenge_digest(&nonce), &signature, &node_id)
        .map_err(|_| {
            Status::unauthenticated(format!(
                "the proof does not verify for node {node_id}: the signer does not hold its key"
            ))
        })?;
    let handover = proof
        .handover
        .ok_or_else(|| Status::invalid_argument("Proof: handover missing"))
        .and_then(|h| decode_handover(h).map_err(|e| Status::invalid_argument(e.to_string())))?;
    if handover.node_id != node_id {
        return Err(Status::invalid_argument(
            "the handover is for another node than the Hello",
        ));
    }
    let slot = registry.get(&node_id).ok_or_else(|| {
        Status::permission_denied(format!("node {node_id} is not registered on this host"))
    })?;
    let (generation, ends) = slot.attach(out.clone(), handover, proof.state_version)?;
    Ok((slot, generation, ends))
}

fn public_key(bytes: &[u8]) -> Option<PublicKey> {
    if bytes.len() != 33 {
        return None;
    }
    PublicKey::from_slice(bytes).ok()
}
