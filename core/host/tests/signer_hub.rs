//! The signer protocol end to end: real gRPC over TLS on loopback, a hub and dialing signers
//! whose keys come from LDK's `KeysManager`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::secp256k1::ecdh::SharedSecret;
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::secp256k1::{PublicKey, Scalar, Secp256k1, SecretKey};
use bitcoin::ScriptBuf;
use flotilla_host::signer_client::hub::SignerHub;
use flotilla_host::signer_client::link::{SignerLink, Transport};
use flotilla_host::signer_client::tls::HubTls;
use flotilla_proto::challenge_digest;
use flotilla_proto::{Handler, Handover, Request, Response, SignerError};
use flotilla_signer::dial::{serve_with_stats, DialConfig, DialError, DialStats};
use flotilla_signer::durable::{Answer, DurableHandler};
use lightning::sign::{KeysManager, NodeSigner, Recipient};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A signer for one node key, from a seed. It may claim another node id (to test refusal).
struct TestSigner {
    keys: KeysManager,
    claimed: PublicKey,
    /// Sequence numbers of `SignMessage` requests, in the order they were handled.
    seen: Mutex<Vec<u64>>,
    /// `ApprovePayment` waits until this turns true (a person deciding).
    approve: (Mutex<bool>, std::sync::Condvar),
    /// The state version it proves and answers with.
    version: AtomicU64,
}

impl TestSigner {
    fn new(seed: u8) -> Arc<TestSigner> {
        let keys = KeysManager::new(&[seed; 32], 1, 0, true);
        let claimed = keys.get_node_id(Recipient::Node).unwrap();
        Arc::new(TestSigner {
            keys,
            claimed,
            seen: Mutex::new(Vec::new()),
            approve: Default::default(),
            version: AtomicU64::new(0),
        })
    }

    /// The signer of `seed` whose state is at `version`.
    fn at_version(seed: u8, version: u64) -> Arc<TestSigner> {
        let signer = TestSigner::new(seed);
        signer.version.store(version, Ordering::SeqCst);
        signer
    }

    /// Holds `seed`'s key but says it is `claimed`.
    fn impostor(seed: u8, claimed: PublicKey) -> Arc<TestSigner> {
        let keys = KeysManager::new(&[seed; 32], 1, 0, true);
        Arc::new(TestSigner {
            keys,
            claimed,
            seen: Mutex::new(Vec::new()),
            approve: Default::default(),
            version: AtomicU64::new(0),
        })
    }

    fn secret(&self) -> SecretKey {
        self.keys.get_node_secret_key()
    }

    fn decide(&self) {
        *self.approve.0.lock().unwrap() = true;
        self.approve.1.notify_all();
    }
}

/// Answers at once, from nothing saved, under its version.
impl DurableHandler for TestSigner {
    fn answer(&self, request: Request) -> Answer {
        let version = self.version.load(Ordering::SeqCst);
        // As the default answer does: the worker's other tasks move away while it blocks.
        Answer::ready(tokio::task::block_in_place(|| self.handle(request))).at_version(version)
    }

    fn state_version(&self) -> Answer {
        Answer::ready(Ok(Response::Accepted)).at_version(self.version.load(Ordering::SeqCst))
    }
}

impl Handler for TestSigner {
    fn node_id(&self) -> PublicKey {
        self.claimed
    }

    fn handover(&self) -> Handover {
        Handover {
            node_id: self.claimed,
            inbound_payment_key: [1; 32],
            peer_storage_key: [2; 32],
            receive_auth_key: [3; 32],
            wallet_descriptors: ("wpkh(external)".into(), "wpkh(internal)".into()),
            shutdown_script: ScriptBuf::from_bytes(vec![0x51]),
        }
    }

    fn sign_challenge(&self, challenge: &[u8; 32]) -> Signature {
        Secp256k1::new().sign_ecdsa(&challenge_digest(challenge), &self.secret())
    }

    fn handle(&self, request: Request) -> Result<Response, SignerError> {
        match request {
            Request::Ecdh { other_key, tweak } => {
                let tweak = tweak
                    .map(|t| {
                        Scalar::from_be_bytes(t).map_err(|_| SignerError::Malformed("tweak".into()))
                    })
                    .transpose()?;
                let secret = self
                    .keys
                    .ecdh(Recipient::Node, &other_key, tweak.as_ref())
                    .map_err(|_| SignerError::Refused("ecdh failed".into()))?;
                Ok(Response::SharedSecret(secret.secret_bytes()))
            }
            Request::SignMessage { msg } => {
                let seq = u64::from_le_bytes(
                    msg.get(..8)
                        .and_then(|b| b.try_into().ok())
                        .unwrap_or_default(),
                );
                if msg.ends_with(b"slow") {
                    std::thread::sleep(Duration::from_millis(500));
                }
                self.seen.lock().unwrap().push(seq);
                Ok(Response::Message(seq.to_string()))
            }
            Request::ApprovePayment { .. } => {
                let (decided, changed) = &self.approve;
                let guard = decided.lock().unwrap();
                drop(changed.wait_while(guard, |d| !*d).unwrap());
                Ok(Response::Accepted)
            }
            other => Err(SignerError::Refused(format!(
                "{} is not served in this test",
                other.kind()
            ))),
        }
    }
}

fn point(i: u32) -> PublicKey {
    let mut bytes = [0u8; 32];
    bytes[28..].copy_from_slice(&(i + 1).to_be_bytes());
    bytes[0] = 0x11;
    PublicKey::from_secret_key(&Secp256k1::new(), &SecretKey::from_slice(&bytes).unwrap())
}

/// ECDH computed here from the secret key, independently of the signer's code.
fn expected_ecdh(secret: &SecretKey, other: &PublicKey, tweak: Option<[u8; 32]>) -> [u8; 32] {
    let secret = match tweak {
        Some(t) => secret
            .mul_tweak(&Scalar::from_be_bytes(t).unwrap())
            .unwrap(),
        None => *secret,
    };
    SharedSecret::new(other, &secret).secret_bytes()
}

struct Host {
    hub: Arc<SignerHub>,
    tls: HubTls,
}

impl Host {
    async fn start() -> Host {
        let tls = HubTls::generate(&["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let hub = SignerHub::start("127.0.0.1:0".parse().unwrap(), &tls)
            .await
            .unwrap();
        Host { hub, tls }
    }

    fn config(&self) -> DialConfig {
        DialConfig {
            host_url: format!("https://127.0.0.1:{}", self.hub.local_addr().port()),
            ca_pem: self.tls.ca_pem().to_vec(),
        }
    }
}

struct Signer {
    stop: watch::Sender<bool>,
    stats: Arc<DialStats>,
    task: JoinHandle<Result<(), DialError>>,
}

impl Signer {
    fn spawn(config: DialConfig, handlers: Vec<Arc<TestSigner>>) -> Signer {
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(DialStats::default());
        let handlers = handlers
            .into_iter()
            .map(|h| h as Arc<dyn DurableHandler>)
            .collect();
        let task = tokio::spawn(serve_with_stats(config, handlers, stop_rx, stats.clone()));
        Signer { stop, stats, task }
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        let result = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "serve did not return Ok on stop"
        );
    }
}

async fn wait_attached(transport: &Arc<dyn Transport>, want: bool) {
    let mut attached = transport.attached();
    tokio::time::timeout(Duration::from_secs(15), attached.wait_for(|a| *a == want))
        .await
        .unwrap_or_else(|_| panic!("attached never became {want}"))
        .unwrap();
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn message(seq: u64, slow: bool) -> Request {
    let mut msg = seq.to_le_bytes().to_vec();
    if slow {
        msg.extend_from_slice(b"slow");
    }
    Request::SignMessage { msg }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reach_the_right_node_in_order_over_one_connection() {
    let host = Host::start().await;
    let (a, c) = (TestSigner::new(1), TestSigner::new(2));
    let ta = host.hub.register(a.node_id());
    let tc = host.hub.register(c.node_id());
    assert!(!*ta.attached().borrow());
    assert!(host.hub.handover(&a.node_id()).borrow().is_none());
    let signer = Signer::spawn(host.config(), vec![a.clone(), c.clone()]);
    wait_attached(&ta, true).await;
    wait_attached(&tc, true).await;
    let handover = host.hub.handover(&a.node_id()).borrow().clone().unwrap();
    assert_eq!(handover.node_id, a.node_id());
    assert_eq!(handover.wallet_descriptors.0, "wpkh(external)");

    // ECDH answered by each node's own key.
    let link_a = SignerLink::new(a.node_id(), ta.clone());
    let link_c = SignerLink::new(c.node_id(), tc.clone());
    let other = point(7);
    let tweak = Some([9u8; 32]);
    for (link, signer_key) in [(&link_a, a.secret()), (&link_c, c.secret())] {
        match link
            .call(Request::Ecdh {
                other_key: other,
                tweak,
            })
            .await
        {
            Ok(Response::SharedSecret(s)) => {
                assert_eq!(s, expected_ecdh(&signer_key, &other, tweak))
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    // A signer error travels back typed.
    let refused = link_a.call(Request::NewChannelKeys { count: 1 }).await;
    assert!(matches!(refused, Err(SignerError::Refused(r)) if r.contains("new_channel_keys")));

    // Round-trip latency of one call.
    let rounds = 300;
    let started = Instant::now();
    for i in 0..rounds {
        let answer = link_a
            .call(Request::Ecdh {
                other_key: point(i),
                tweak: None,
            })
            .await;
        assert!(matches!(answer, Ok(Response::SharedSecret(_))));
    }
    let each = started.elapsed() / rounds;
    eprintln!("signer hub: one call round trip over TLS loopback: {each:?} (mean of {rounds})");

    // Many requests sent at once are handled in the order sent.
    let (tx, mut rx) = mpsc::unbounded_channel();
    for seq in 0..500u64 {
        let tx = tx.clone();
        ta.send(
            message(seq, false),
            Box::new(move |r| {
                let _ = tx.send((seq, r));
            }),
        );
    }
    for _ in 0..500 {
        let (seq, answer) = rx.recv().await.unwrap();
        assert!(matches!(answer, Ok(Response::Message(m)) if m == seq.to_string()));
    }
    assert_eq!(*a.seen.lock().unwrap(), (0..500u64).collect::<Vec<_>>());
    assert!(c.seen.lock().unwrap().is_empty());
    assert!(signer.stats.answered() >= 2 + 1 + rounds as u64 + 500);
    assert_eq!(signer.stats.attaches(), 2);

    signer.stop().await;
    wait_attached(&ta, false).await;
    wait_attached(&tc, false).await;
    host.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_waiting_for_approval_does_not_hold_up_the_nodes_other_requests() {
    let host = Host::start().await;
    let a = TestSigner::new(4);
    let ta = host.hub.register(a.node_id());
    let signer = Signer::spawn(host.config(), vec![a.clone()]);
    wait_attached(&ta, true).await;
    let link = SignerLink::new(a.node_id(), ta.clone());

    let (tx, mut approved) = mpsc::unbounded_channel();
    ta.send(
        Request::ApprovePayment {
            payment_hash: [7; 32],
            amount_msat: 1_000,
            destination: point(1),
        },
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    // Requests sent after it are answered, in order, while the approval is undecided.
    for seq in 0..20u64 {
        let answer = tokio::time::timeout(Duration::from_secs(5), link.call(message(seq, false)))
            .await
            .expect("answered while an approval waits");
        assert!(matches!(answer, Ok(Response::Message(m)) if m == seq.to_string()));
    }
    assert!(approved.try_recv().is_err(), "approved before the decision");
    a.decide();
    let answer = tokio::time::timeout(Duration::from_secs(5), approved.recv()).await;
    assert!(
        matches!(answer, Ok(Some(Ok(Response::Accepted)))),
        "{answer:?}"
    );
    assert_eq!(*a.seen.lock().unwrap(), (0..20u64).collect::<Vec<_>>());
    signer.stop().await;
    host.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_in_flight_are_answered_under_their_own_ids() {
    let host = Host::start().await;
    let a = TestSigner::new(3);
    let ta = host.hub.register(a.node_id());
    let signer = Signer::spawn(host.config(), vec![a.clone()]);
    wait_attached(&ta, true).await;

    for in_flight in [1_000u32, 10_000] {
        let expected: Vec<_> = (0..in_flight)
            .map(|i| expected_ecdh(&a.secret(), &point(i), None))
            .collect();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        for i in 0..in_flight {
            let tx = tx.clone();
            ta.send(
                Request::Ecdh {
                    other_key: point(i),
                    tweak: None,
                },
                Box::new(move |r| {
                    let _ = tx.send((i, r));
                }),
            );
        }
        let mut answered = HashSet::new();
        for _ in 0..in_flight {
            let (i, answer) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .unwrap()
                .unwrap();
            match answer {
                Ok(Response::SharedSecret(s)) => assert_eq!(s, expected[i as usize], "request {i}"),
                other => panic!("request {i}: {other:?}"),
            }
            assert!(answered.insert(i), "request {i} answered twice");
        }
        let elapsed = started.elapsed();
        eprintln!(
            "signer hub: {in_flight} ECDH calls in flight at once: {elapsed:?}, {:.0} calls/s",
            f64::from(in_flight) / elapsed.as_secs_f64()
        );
    }
    signer.stop().await;
    host.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostors_and_unregistered_nodes_are_refused() {
    let host = Host::start().await;
    let b = TestSigner::new(5);
    let tb = host.hub.register(b.node_id());
    // Holds key 4, claims node B.
    let impostor = Signer::spawn(host.config(), vec![TestSigner::impostor(4, b.node_id())]);
    wait_until("the impostor's refusal", || impostor.stats.refusals() >= 2).await;
    assert!(!*tb.attached().borrow());
    assert!(host.hub.handover(&b.node_id()).borrow().is_none());
    assert_eq!(impostor.stats.attaches(), 0);
    let reason = impostor.stats.last_error().unwrap();
    assert!(reason.contains("does not verify"), "{reason}");
    let answer = SignerLink::new(b.node_id(), tb.clone())
        .call(message(1, false))
        .await;
    assert!(matches!(answer, Err(SignerError::Unavailable)));
    impostor.stop().await;

    // A real key the host does not know is refused, and attaches once registered (the
    // signer keeps retrying).
    let d = TestSigner::new(6);
    let stranger = Signer::spawn(host.config(), vec![d.clone()]);
    wait_until("the stranger's refusal", || stranger.stats.refusals() >= 1).await;
    let reason = stranger.stats.last_error().unwrap();
    assert!(reason.contains("not registered"), "{reason}");
    assert_eq!(stranger.stats.attaches(), 0);
    let td = host.hub.register(d.node_id());
    wait_attached(&td, true).await;
    let answer = SignerLink::new(d.node_id(), td.clone())
        .call(message(2, false))
        .await;
    assert!(matches!(answer, Ok(Response::Message(m)) if m == "2"));

    // Unregistering ends the stream and refuses the node again.
    let refusals = stranger.stats.refusals();
    host.hub.unregister(&d.node_id());
    wait_attached(&td, false).await;
    wait_until("refusal after unregister", || {
        stranger.stats.refusals() > refusals
    })
    .await;
    assert!(matches!(
        SignerLink::new(d.node_id(), td)
            .call(message(3, false))
            .await,
        Err(SignerError::Unavailable)
    ));
    stranger.stop().await;
    host.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_signer_detaches_and_a_restarted_one_reattaches() {
    let host = Host::start().await;
    let a = TestSigner::new(7);
    let ta = host.hub.register(a.node_id());
    let signer = Signer::spawn(host.config(), vec![a.clone()]);
    wait_attached(&ta, true).await;

    // One slow request keeps the rest waiting on the signer; then the signer stops.
    let (tx, mut rx) = mpsc::unbounded_channel();
    for seq in 0..20u64 {
        let tx = tx.clone();
        ta.send(
            message(seq, seq == 0),
            Box::new(move |r| {
                let _ = tx.send((seq, r));
            }),
        );
    }
    // The slow request takes 500 ms: stop the signer while it runs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(signer.stats.answered(), 0);
    signer.stop().await;
    wait_attached(&ta, false).await;
    let mut unavailable = 0;
    for _ in 0..20 {
        let (seq, answer) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        match answer {
            Err(SignerError::Unavailable) => unavailable += 1,
            Ok(Response::Message(m)) => assert_eq!(m, seq.to_string()),
            other => panic!("request {seq}: {other:?}"),
        }
    }
    assert!(
        unavailable >= 19,
        "only {unavailable} of 20 answered Unavailable"
    );
    // Detached: answered at once.
    let link = SignerLink::new(a.node_id(), ta.clone());
    assert!(matches!(
        link.call(message(99, false)).await,
        Err(SignerError::Unavailable)
    ));

    // Back again.
    let again = Signer::spawn(host.config(), vec![a.clone()]);
    wait_attached(&ta, true).await;
    let other = point(3);
    match link
        .call(Request::Ecdh {
            other_key: other,
            tweak: None,
        })
        .await
    {
        Ok(Response::SharedSecret(s)) => assert_eq!(s, expected_ecdh(&a.secret(), &other, None)),
        other => panic!("unexpected answer {other:?}"),
    }

    // A second signer for the same node is refused while the first is attached...
    let second = Signer::spawn(host.config(), vec![a.clone()]);
    wait_until("the second signer's refusal", || {
        second
            .stats
            .last_error()
            .is_some_and(|e| e.contains("already has a signer attached"))
    })
    .await;
    assert_eq!(second.stats.attaches(), 0);
    assert_eq!(
        again.stats.last_error(),
        None,
        "the first signer was disturbed"
    );
    assert!(*ta.attached().borrow());
    // ...and takes over once the first is gone (after at most one backoff).
    again.stop().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match link.call(message(5, false)).await {
            Ok(Response::Message(m)) => break assert_eq!(m, "5"),
            Err(SignerError::Unavailable) => assert!(Instant::now() < deadline, "never answered"),
            other => panic!("unexpected answer {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.stop().await;
    wait_attached(&ta, false).await;

    // Shutting the hub down detaches everything.
    let last = Signer::spawn(host.config(), vec![a.clone()]);
    wait_attached(&ta, true).await;
    host.hub.shutdown().await;
    wait_attached(&ta, false).await;
    wait_until("the signer to notice", || last.stats.failures() >= 1).await;
    last.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_with_another_ca_is_refused_at_tls() {
    let host = Host::start().await;
    let a = TestSigner::new(8);
    let ta = host.hub.register(a.node_id());
    let foreign = HubTls::generate(&["127.0.0.1".to_string()]).unwrap();
    let mut config = host.config();
    config.ca_pem = foreign.ca_pem().to_vec();
    let signer = Signer::spawn(config, vec![a.clone()]);
    wait_until("a TLS failure", || signer.stats.failures() >= 2).await;
    let reason = signer.stats.last_error().unwrap();
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
    assert_eq!(signer.stats.attaches(), 0);
    assert!(!*ta.attached().borrow());
    signer.stop().await;

    // Bad configuration is an error, not a retry loop.
    let (_stop, stop_rx) = watch::channel(false);
    let mut plain = host.config();
    plain.host_url = plain.host_url.replace("https", "http");
    let err = serve_with_stats(plain, vec![], stop_rx.clone(), Arc::default()).await;
    assert!(matches!(err, Err(DialError::Url { .. })), "{err:?}");
    let mut no_ca = host.config();
    no_ca.ca_pem = b"nothing here".to_vec();
    let err = serve_with_stats(no_ca, vec![], stop_rx, Arc::default()).await;
    assert!(matches!(err, Err(DialError::Ca)), "{err:?}");
    host.hub.shutdown().await;
}

/// Two copies of one seed take turns: the phone's state moved on while attached, then a backup
/// of an older state dials in. It is refused for good (the dialer stops serving the node and
/// says why), the phone attaches again, and a host that raises the required version (from what
/// it saved before a restart) detaches a signer below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_signer_state_is_refused_for_good() {
    let host = Host::start().await;
    let phone = TestSigner::at_version(7, 5);
    let node = phone.node_id();
    let transport = host.hub.register(node);
    let link = SignerLink::new(node, transport.clone());
    let signer = Signer::spawn(host.config(), vec![phone.clone()]);
    wait_attached(&transport, true).await;
    assert_eq!(transport.state_version(), 5, "the proof's version");
    phone.version.store(9, Ordering::SeqCst);
    assert!(matches!(
        link.call(message(1, false)).await,
        Ok(Response::Message(_))
    ));
    assert_eq!(transport.state_version(), 9, "raised by the answer");
    signer.stop().await;
    wait_attached(&transport, false).await;

    let backup = Signer::spawn(host.config(), vec![TestSigner::at_version(7, 6)]);
    wait_until("the backup's refusal", || backup.stats.stale() == 1).await;
    let reason = backup.stats.last_error().unwrap_or_default();
    assert!(reason.contains("stale signer state"), "{reason}");
    assert!(
        reason.contains("version 6") && reason.contains("version 9"),
        "{reason}"
    );
    assert_eq!(backup.stats.attaches(), 0);
    assert!(!*transport.attached().borrow());
    // It gave the node up rather than retrying: its serve loop ends on its own.
    wait_until("the backup to stop serving", || backup.task.is_finished()).await;
    assert_eq!(backup.stats.refusals(), 1, "no retry after a stale refusal");
    backup.stop().await;

    // The phone, at the newest state, attaches and answers.
    let signer = Signer::spawn(host.config(), vec![phone.clone()]);
    wait_attached(&transport, true).await;
    assert!(matches!(
        link.call(message(2, false)).await,
        Ok(Response::Message(_))
    ));
    // The host restarted with version 12 saved: the phone at 9 is detached and refused.
    transport.require_state_version(12);
    wait_attached(&transport, false).await;
    wait_until("the phone's stale refusal", || signer.stats.stale() == 1).await;
    assert_eq!(transport.state_version(), 12);
    signer.stop().await;
    host.hub.shutdown().await;
}

/// Streams that never prove a key cost the hub a task each until the handshake timeout: one
/// connection may hold only so many, is refused beyond (RESOURCE_EXHAUSTED, which a signer
/// retries), keeps no one else out meanwhile, and gets its places back when they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unproven_streams_are_bounded_per_connection() {
    use flotilla_proto::wire::proto::signer_hub_client::SignerHubClient;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

    let host = Host::start().await;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(host.tls.ca_pem()));
    let channel = Endpoint::from_shared(host.config().host_url)
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = SignerHubClient::new(channel);
    let open = || {
        let (tx, rx) = mpsc::channel::<flotilla_proto::wire::proto::SignerMessage>(1);
        let mut client = client.clone();
        async move { (tx, client.attach(ReceiverStream::new(rx)).await) }
    };
    let mut flood = Vec::new();
    loop {
        let (tx, opened) = open().await;
        match opened {
            Ok(stream) => flood.push((tx, stream)),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
                break;
            }
        }
        assert!(flood.len() <= 256, "no bound on unproven streams");
    }
    assert_eq!(flood.len(), 256);

    // A signer on its own connection attaches meanwhile.
    let a = TestSigner::new(31);
    let ta = host.hub.register(a.node_id());
    let signer = Signer::spawn(host.config(), vec![a.clone()]);
    wait_attached(&ta, true).await;

    // The flood ends: the connection may open streams again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_tx, opened) = open().await;
        if opened.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the places never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signer.stop().await;
    host.hub.shutdown().await;
}
