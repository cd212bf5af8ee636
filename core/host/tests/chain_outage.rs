//! btcd going away under a running host and coming back (Flotilla issue 3, "Bad input").
//!
//! While btcd is down: nothing panics, the observer's retries back off and are logged, a
//! Lightning payment over an open channel still succeeds, chain operations fail with typed
//! errors or are retried. Once btcd is back (same directory, port, credentials; its chain
//! replayed because btcd wipes regtest on start) every node reaches the new tip within a bound
//! set by the observer's backoff cap, and each new block is fetched once.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::hashes::Hash;
use bitcoin::{Amount, BlockHash, Network, Transaction, Txid};
use flotilla_host::chain::broadcaster::RETRY_MAX_BACKOFF;
use flotilla_host::chain::observer::MAX_POLL_BACKOFF;
use flotilla_host::chain::{ChainError, RpcError};
use flotilla_host::signer_client::link::SignerLink;
use flotilla_host::{Host, HostConfig, HostError, Node, PaymentOutcome};
use flotilla_regtest::{Regtest, RegtestError};
use flotilla_signer::seed_signer::SeedSigner;
use lightning::chain::chaininterface::{BroadcasterInterface, ConfirmationTarget, FeeEstimator};
use serde_json::json;

const CHANNEL_SAT: u64 = 1_000_000;
const PAYMENT_MSAT: u64 = 5_000_000;
/// Paid by the harness to node B during the outage, through the host's broadcaster.
const REBROADCAST_SAT: u64 = 50_000;
/// Blocks mined once btcd is back.
const NEW_BLOCKS: u32 = 6;
/// Failed sends of the rebroadcast transaction before btcd is restarted: attempts come 1, 2,
/// 4, 8 s apart, so after the 5th (15 s in) the next is 16 s away. The restart's replay of the
/// chain fits in that gap: btcd answers RPC while it replays, and a send landing mid-replay is
/// rightly rejected (its inputs are not yet mature), a harness artefact a real restart with a
/// kept database does not have.
const SENDS_BEFORE_RESTART: usize = 5;
/// Time, beyond waiting out the backoff, to mine and fetch a few blocks and hand them to two
/// nodes on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(15);

/// Log lines, kept so the test can check what the host reported (and echoed to stderr).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        std::io::stderr().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn install() -> Logs {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "flotilla_host::chain=info,flotilla_regtest=info,warn",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("one subscriber per test binary");
        logs
    }

    fn count(&self, needle: &str) -> usize {
        let text =
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
        text.lines().filter(|l| l.contains(needle)).count()
    }
}

async fn wait_until(what: &str, timeout: Duration, ready: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// A node's signer in this process (state in memory, no limits).
fn signer(byte: u8) -> SignerLink {
    let signer = SeedSigner::in_memory(&[byte; 32], Network::Regtest).unwrap();
    SignerLink::in_process(Arc::new(signer))
}

fn at(node: &Node, tip: BlockHash) -> bool {
    node.channel_manager.current_best_block().block_hash == tip
        && node.wallet.best_block().hash == tip
}

async fn pay(from: &Node, to: &Node, what: &str) {
    let invoice = to.create_invoice(Some(PAYMENT_MSAT), what, 600).unwrap();
    let outcome = from
        .pay_invoice(&invoice.to_string(), Duration::from_secs(60))
        .await
        .unwrap();
    match outcome {
        PaymentOutcome::Succeeded { preimage, .. } => assert_eq!(
            bitcoin::hashes::sha256::Hash::hash(&preimage).to_byte_array(),
            invoice.payment_hash().to_byte_array(),
            "{what}: preimage does not match the invoice"
        ),
        other => panic!("{what}: {other:?}"),
    }
}

/// Two nodes with a confirmed, usable channel from A to B.
async fn two_nodes_with_a_channel(host: &Host, chain: &Regtest) -> (Arc<Node>, Arc<Node>) {
    let a = host.add_node("a", signer(1)).await.unwrap();
    let b = host.add_node("b", signer(2)).await.unwrap();
    chain
        .send(&a.new_address().unwrap(), Amount::from_sat(CHANNEL_SAT * 2))
        .await
        .unwrap();
    chain.mine(1).await.unwrap();
    wait_until("A's wallet funded", Duration::from_secs(60), || {
        a.wallet_balance().confirmed_sat >= CHANNEL_SAT * 2
    })
    .await;
    a.connect(b.id, b.listen_addr()).await.unwrap();
    a.open_channel(b.id, CHANNEL_SAT, 0).unwrap();
    wait_until("funding broadcast", Duration::from_secs(60), || {
        a.channels().iter().any(|c| c.funding_txo.is_some())
    })
    .await;
    // Let the funding transaction reach the mempool before mining it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    chain.mine(3).await.unwrap();
    wait_until("channel usable", Duration::from_secs(120), || {
        [&a, &b]
            .iter()
            .all(|n| n.channels().len() == 1 && n.channels()[0].is_usable)
    })
    .await;
    (a, b)
}

/// A harness payment to `to`, left unconfirmed, and its raw transaction.
async fn unconfirmed_payment(chain: &Regtest, to: &Node) -> (Txid, Transaction) {
    let txid = chain
        .send(
            &to.new_address().unwrap(),
            Amount::from_sat(REBROADCAST_SAT),
        )
        .await
        .unwrap();
    let hex: String = chain
        .rpc()
        .call("getrawtransaction", json!([txid.to_string()]))
        .await
        .unwrap();
    let bytes = <Vec<u8> as bitcoin::hex::FromHex>::from_hex(&hex).unwrap();
    (txid, bitcoin::consensus::deserialize(&bytes).unwrap())
}

async fn in_mempool(chain: &Regtest, txid: &Txid) -> bool {
    chain
        .rpc()
        .call::<Vec<Txid>>("getrawmempool", json!([]))
        .await
        .map(|m| m.contains(txid))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btcd_down_mid_run_then_back() {
    let logs = Logs::install();
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Regtest::spawn_owned(&dir.path().join("regtest"))
        .await
        .unwrap();
    chain.mine(101).await.unwrap();
    let config = HostConfig::regtest(dir.path().join("host.db"), chain.rpc_config());
    let poll_interval = config.poll_interval;
    let host = Host::start(config).await.unwrap();
    let observer = host.observer().clone();
    let (a, b) = two_nodes_with_a_channel(&host, &chain).await;
    let (pending_txid, pending_tx) = unconfirmed_payment(&chain, &b).await;
    let tip = chain.best_block_hash().await.unwrap();
    wait_until("nodes at the tip", Duration::from_secs(30), || {
        at(&a, tip) && at(&b, tip)
    })
    .await;
    let fee_before = observer
        .fee_estimator()
        .get_est_sat_per_1000_weight(ConfirmationTarget::NonAnchorChannelFee);

    // --- btcd goes away for real.
    let height = chain.height().await.unwrap();
    let rpc_addr: SocketAddr = chain.rpc_config().url["https://".len()..].parse().unwrap();
    assert_eq!(chain.stop_keep_data().await.unwrap(), height);
    let down = Instant::now();
    let refused = std::net::TcpStream::connect(rpc_addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(matches!(
        chain.height().await,
        Err(RegtestError::Rpc(RpcError::Connect { .. }))
    ));
    let failures_at_stop = observer.stats().poll_failures;

    // A payment needs no chain.
    pay(&a, &b, "payment during the outage").await;

    // Chain operations: a direct broadcast is a typed error, LDK's fire-and-forget broadcast
    // is retried (checked once btcd is back), fee estimates answer from the cache at once.
    let broadcaster = observer.broadcaster();
    let err = broadcaster.send(&pending_tx).await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    broadcaster.broadcast_transactions(&[&pending_tx]);
    let refresh = Instant::now();
    observer.fee_estimator().refresh(&chain.rpc()).await;
    assert!(
        refresh.elapsed() < Duration::from_secs(2),
        "fee refresh hung"
    );
    assert_eq!(
        observer
            .fee_estimator()
            .get_est_sat_per_1000_weight(ConfirmationTarget::NonAnchorChannelFee),
        fee_before
    );

    // A node joining now cannot sync: a typed error, promptly (the observer is not stuck in
    // its backoff), and nothing half-written that would stop it joining later.
    let joining = Instant::now();
    match host.add_node("c", signer(3)).await {
        Err(HostError::Chain(ChainError::Sync { .. })) => {}
        Err(e) => panic!("unexpected error adding a node during the outage: {e}"),
        Ok(_) => panic!("a node joined without a chain node"),
    }
    assert!(
        joining.elapsed() < Duration::from_secs(10),
        "joining took {:?}",
        joining.elapsed()
    );

    // Retries are bounded: the poll backoff doubles from the poll interval, so an outage of
    // `elapsed` allows at most log2(elapsed / poll_interval + 1) + 1 failed polls.
    wait_until("broadcast retries", Duration::from_secs(40), || {
        logs.count("broadcast did not reach the chain node") >= SENDS_BEFORE_RESTART
    })
    .await;
    let outage = down.elapsed();
    let during = observer.stats();
    let failed = during.poll_failures - failures_at_stop;
    let ceiling = (outage.as_secs_f64() / poll_interval.as_secs_f64() + 1.0).log2() as u64 + 2;
    assert!(
        (3..=ceiling).contains(&failed),
        "{failed} failed polls in {outage:?} (ceiling {ceiling})"
    );
    assert!(during.consecutive_poll_failures >= 3);
    assert_eq!(logs.count("chain poll failed") as u64, during.poll_failures);

    // --- btcd is back on the same directory, port and credentials, with the same chain.
    assert_eq!(chain.restart().await.unwrap(), height);
    let back = Instant::now();
    assert_eq!(chain.best_block_hash().await.unwrap(), tip);
    let before = observer.stats();

    // Bound: the observer's next poll is at most one backoff (capped at MAX_POLL_BACKOFF) away,
    // then blocks come every poll interval; the broadcaster's retry likewise waits at most
    // RETRY_MAX_BACKOFF. SLACK covers mining, fetching and delivering.
    let bound = MAX_POLL_BACKOFF.max(RETRY_MAX_BACKOFF) + poll_interval + SLACK;
    let deadline = back + bound;
    while !in_mempool(&chain, &pending_txid).await {
        assert!(
            Instant::now() < deadline,
            "broadcast not retried within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hashes = chain.mine(NEW_BLOCKS).await.unwrap();
    let new_tip = *hashes.last().unwrap();
    wait_until(
        "every node at the new tip",
        deadline.saturating_duration_since(Instant::now()),
        || at(&a, new_tip) && at(&b, new_tip),
    )
    .await;
    let after = observer.stats();
    assert_eq!(after.tip_height, height + NEW_BLOCKS);
    assert_eq!(after.consecutive_poll_failures, 0);
    assert_eq!(
        after.getblock_calls - before.getblock_calls,
        NEW_BLOCKS as u64,
        "one getblock per new block, however many nodes"
    );
    assert_eq!(
        after.block_deliveries - before.block_deliveries,
        2 * NEW_BLOCKS as u64
    );
    assert_eq!(logs.count("chain node reachable again"), 1);
    println!(
        "outage {outage:?}, {failed} failed polls; nodes at the new tip {:?} after btcd came back (bound {bound:?})",
        back.elapsed()
    );

    // The retried broadcast confirmed and B's wallet saw it.
    wait_until("B's wallet sees the rebroadcast payment", SLACK, || {
        b.wallet_balance().confirmed_sat == REBROADCAST_SAT
    })
    .await;

    // The node refused during the outage joins now, at the tip, and payments still work.
    let c = host.add_node("c", signer(3)).await.unwrap();
    assert!(at(&c, new_tip));
    pay(&a, &b, "payment after the outage").await;

    host.shutdown().await;
    chain.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btcd_down_at_start_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on the discard port.
    let rpc = flotilla_host::chain::RpcConfig {
        url: "http://127.0.0.1:9".into(),
        user: "u".into(),
        password: "p".into(),
        ca_path: None,
    };
    let started = Instant::now();
    let err = Host::start(HostConfig::regtest(dir.path().join("host.db"), rpc))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, HostError::Chain(ChainError::Unreachable { .. })),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}
