//! A kill -9 of the host at any moment loses no channel state.
//!
//! One host runs two nodes, x and y, with a channel x -> y; one `flotilla signer` process signs
//! for both over gRPC/TLS and keeps running (it reconnects by itself) while the host is killed
//! and restarted on the same database and hub port. Each round starts a payment without
//! waiting for it, waits a pseudo-random moment within the time a payment takes, and kills the
//! host mid commitment dance. After each restart the channel must be the same one, usable, and
//! never closed; at the end the balances must have moved by exactly the payments the nodes
//! recorded as succeeded, and a new payment must go through.
//!
//! Reproduce a failing run with the seed and span it prints: `HOST_CRASH_SEED=… HOST_CRASH_SPAN_MS=…`
//! (`HOST_CRASH_ROUNDS` sets the number of kills). `HOST_CRASH_DELAY_FROM_MS=1000` moves every
//! kill past the end of its payment's commitment dance, which checks the test itself: it then
//! passes on a host that only loses state mid dance. The host's log is kept in `host.log` of
//! the test directory, which is left in place when the test fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_host::store::{ChannelStatus, Store};
use flotilla_tests::{
    channel_to, free_port, fresh_chain, req, write_seed, HostProcess, SignerProcess,
};
use lightning::util::persist::{
    CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
    MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL,
};
use serde_json::{json, Value};

const FUNDING_SAT: u64 = 2_000_000;
const CHANNEL_SAT: u64 = 1_000_000;
/// y's side of the channel from the start, so both directions can pay.
const PUSH_MSAT: u64 = 400_000_000;
const ROUNDS: u64 = 10;
const SEED: u64 = 0x5eed_c0de_f107_11a5;
/// Kill delays are spread over at least this many milliseconds after the pay request.
const MIN_SPAN_MS: u64 = 150;
/// How long a restarted host may take to make the channel usable again.
const BACK_WITHIN: Duration = Duration::from_secs(90);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}"))
        }
        Err(_) => default,
    }
}

/// splitmix64: the delay of round `round` under `seed`, reproducible from the two numbers.
fn mix(seed: u64, round: u64) -> u64 {
    let mut z = seed.wrapping_add(round.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One payment started just before a kill.
struct Round {
    n: u64,
    payer: &'static str,
    payee: &'static str,
    amount_msat: u64,
    hash: String,
    delay_ms: u64,
}

impl Round {
    fn describe(&self) -> String {
        format!(
            "kill {} ({} -> {} {} msat, killed {} ms after the pay request)",
            self.n, self.payer, self.payee, self.amount_msat, self.delay_ms
        )
    }
}

/// What the test drives: the host (replaced at each restart) and what a restart needs.
struct Setup {
    dir: PathBuf,
    chain_json: PathBuf,
    port: u16,
    log: PathBuf,
    seeds: Vec<(&'static str, PathBuf)>,
}

impl Setup {
    async fn start_host(&self, note: &str) -> HostProcess {
        append_log(&self.log, &format!("===== test: host start ({note}) ====="));
        let nodes: Vec<(&str, &Path)> = self.seeds.iter().map(|(a, p)| (*a, p.as_path())).collect();
        HostProcess::start_logged(
            &self.dir,
            "h",
            &self.chain_json,
            self.port,
            &nodes,
            &self.log,
        )
        .await
        .unwrap_or_else(|e| panic!("host start ({note}): {e}"))
    }

    fn db(&self) -> PathBuf {
        self.dir.join("h.db")
    }

    /// The lines of the host's log that tell about a closed or stale channel (or any error),
    /// with the test's start markers, for failure messages.
    fn log_excerpt(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .map(strip_ansi)
            .filter(|l| {
                l.contains("===== test")
                    || l.contains("ERROR")
                    || l.contains("stale")
                    || l.contains("force")
                    || l.contains("refus")
                    || l.contains("close")
            })
            .collect();
        let tail = lines.len().saturating_sub(60);
        format!(
            "host log {} (errors and closes, last {} lines):\n{}",
            self.log.display(),
            lines.len() - tail,
            lines[tail..].join("\n")
        )
    }

    fn stale_manager_logged(&self) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains("A ChannelManager is stale compared to the current ChannelMonitor")
    }
}

fn append_log(log: &Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("host log");
    writeln!(f, "{line}").expect("write host log");
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn invoice(host: &mut HostProcess, payee: &str, msat: u64) -> (String, String) {
    let invoice = host
        .must(json!({"cmd": "invoice", "node": payee, "msat": msat}))
        .await;
    let invoice = invoice.as_str().expect("an invoice").to_string();
    let parsed: lightning_invoice::Bolt11Invoice = invoice.parse().expect("a valid invoice");
    (invoice, parsed.payment_hash().to_string())
}

/// The channel `channel_id` in `node`'s `channels` answer.
async fn channel(host: &mut HostProcess, node: &str, channel_id: &str) -> Option<Value> {
    let chans = host.must(req("channels", node)).await;
    chans
        .as_array()?
        .iter()
        .find(|c| c["channel_id"] == channel_id)
        .cloned()
}

fn msat(c: &Value, field: &str) -> u64 {
    c[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {c}"))
}

/// Fails if the database of the stopped host holds a closed channel or a `channel_closed`
/// event for any node: closing is what a stale channel manager makes LDK do on restart.
fn assert_nothing_closed(setup: &Setup, node_ids: &[(&str, String)], when: &str) {
    let store = Store::open(&setup.db())
        .unwrap_or_else(|e| panic!("{when}: open the host database: {e:?}"));
    let mut closed = Vec::new();
    for (alias, id) in node_ids {
        for e in store.events(id, 0, 100_000).expect("events") {
            if e.kind == "channel_closed" {
                closed.push(format!("{alias}: channel_closed event {}", e.data));
            }
        }
        for c in store.channels(id).expect("channels") {
            if matches!(c.status, ChannelStatus::Closed | ChannelStatus::Closing) {
                closed.push(format!(
                    "{alias}: channel {} is {} ({})",
                    c.channel_id,
                    c.status,
                    c.close_reason.as_deref().unwrap_or("no reason")
                ));
            }
        }
    }
    drop(store);
    if !closed.is_empty() {
        panic!(
            "channel closed, found {when}:\n  {}\nstale channel manager logged: {}\n{}",
            closed.join("\n  "),
            setup.stale_manager_logged(),
            setup.log_excerpt()
        );
    }
}

/// Monitors are stored as LDK's update-writing persister stores them: whole ones marked with
/// its sentinel (so a reader that would ignore the updates refuses them), and fewer than
/// `FULL_EVERY` updates beside each (older ones are deleted when the whole monitor is written).
fn assert_monitor_layout(db: &Path) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("host database");
    let mut monitors = conn
        .prepare("SELECT scope, key, value FROM kv WHERE primary_namespace = ?1")
        .unwrap();
    let monitors: Vec<(String, String, Vec<u8>)> = monitors
        .query_map([CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(monitors.len(), 2, "one monitor per side of the channel");
    for (scope, key, value) in monitors {
        assert!(
            value.starts_with(MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL),
            "monitor {key} of {scope} is not marked as stored with its updates"
        );
        let updates: u64 = conn
            .query_row(
                "SELECT count(*) FROM kv WHERE scope = ?1
                 AND primary_namespace = ?2 AND secondary_namespace = ?3",
                [
                    scope.as_str(),
                    CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
                    key.as_str(),
                ],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            updates < flotilla_host::persist::FULL_EVERY,
            "{updates} updates kept beside monitor {key} of {scope}"
        );
    }
}

/// Waits until the channel is usable on both sides again; fails at once if either side no
/// longer lists it (LDK closed it), or after [`BACK_WITHIN`].
async fn wait_channel_back(host: &mut HostProcess, setup: &Setup, channel_id: &str, after: &str) {
    let deadline = Instant::now() + BACK_WITHIN;
    loop {
        let x = channel(host, "x", channel_id).await;
        let y = channel(host, "y", channel_id).await;
        for (alias, c) in [("x", &x), ("y", &y)] {
            if c.is_none() {
                panic!(
                    "channel force-closed after {after}: {alias} no longer lists channel \
                     {channel_id} (x lists {}, y lists {}); stale channel manager logged: {}\n{}",
                    host.must(req("channels", "x")).await,
                    host.must(req("channels", "y")).await,
                    setup.stale_manager_logged(),
                    setup.log_excerpt()
                );
            }
        }
        let (x, y) = (x.unwrap(), y.unwrap());
        if x["usable"] == true && y["usable"] == true {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "channel {channel_id} not usable again {}s after {after}: x {x}, y {y}\n{}",
                BACK_WITHIN.as_secs(),
                setup.log_excerpt()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Both sides' outbound msat once neither lists a pending HTLC.
async fn settled_balances(host: &mut HostProcess, channel_id: &str) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let x = channel(host, "x", channel_id).await.expect("x's channel");
        let y = channel(host, "y", channel_id).await.expect("y's channel");
        if x["pending_htlcs"] == 0 && y["pending_htlcs"] == 0 {
            return (msat(&x, "outbound_msat"), msat(&y, "outbound_msat"));
        }
        assert!(
            Instant::now() < deadline,
            "HTLCs still pending after 60 s: x {x}, y {y}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `node`'s payment rows by (payment hash, direction).
async fn payment_rows(host: &mut HostProcess, node: &str) -> HashMap<(String, String), Value> {
    host.must(req("payments", node))
        .await
        .as_array()
        .expect("payments")
        .iter()
        .map(|p| {
            let key = (
                p["payment_hash"].as_str().unwrap_or_default().to_string(),
                p["direction"].as_str().unwrap_or_default().to_string(),
            );
            (key, p.clone())
        })
        .collect()
}

fn status(rows: &HashMap<(String, String), Value>, hash: &str, direction: &str) -> String {
    rows.get(&(hash.to_string(), direction.to_string()))
        .map(|p| p["status"].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|| "absent".into())
}

/// Compares the balances with what the payers' tables say about every round's payment;
/// `Err` describes the mismatch (the caller retries while events may still be catching up).
async fn check_accounting(
    host: &mut HostProcess,
    channel_id: &str,
    rounds: &[Round],
    start: (u64, u64),
    accept_pending: bool,
) -> Result<String, String> {
    let (x_out, y_out) = settled_balances(host, channel_id).await;
    let rows: HashMap<&str, _> = [
        ("x", payment_rows(host, "x").await),
        ("y", payment_rows(host, "y").await),
    ]
    .into_iter()
    .collect();
    let mut x_gain: i128 = 0;
    let mut table = Vec::new();
    let mut problems = Vec::new();
    for r in rounds {
        let paid = status(&rows[r.payer], &r.hash, "outbound");
        let received = status(&rows[r.payee], &r.hash, "inbound");
        table.push(format!(
            "  {}: payer {paid}, payee {received}",
            r.describe()
        ));
        if paid == "succeeded" {
            let signed = if r.payer == "x" { -1 } else { 1 };
            x_gain += signed * i128::from(r.amount_msat);
            let amount =
                rows[r.payer][&(r.hash.clone(), "outbound".to_string())]["amount_msat"].as_u64();
            if amount != Some(r.amount_msat) {
                problems.push(format!(
                    "{}: payer recorded amount {amount:?}",
                    r.describe()
                ));
            }
        }
        if (paid == "succeeded") != (received == "succeeded") {
            problems.push(format!(
                "{}: payer says {paid}, payee says {received}",
                r.describe()
            ));
        }
        // A row the host wrote just before the kill, for a payment LDK never saved, stays
        // pending: it must have moved nothing (the balances say), but give LDK time first.
        if paid == "pending" && !accept_pending {
            problems.push(format!("{}: payer still says pending", r.describe()));
        }
    }
    let x_expected = i128::from(start.0) + x_gain;
    let y_expected = i128::from(start.1) - x_gain;
    if i128::from(x_out) != x_expected || i128::from(y_out) != y_expected {
        problems.push(format!(
            "balances moved by other than the succeeded payments: x outbound {x_out} msat \
             (expected {x_expected}), y outbound {y_out} msat (expected {y_expected}); sum \
             {} at the start, {} now",
            start.0 + start.1,
            x_out + y_out
        ));
    }
    let table = table.join("\n");
    if problems.is_empty() {
        Ok(table)
    } else {
        Err(format!("{}\nrounds:\n{table}", problems.join("\n")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_payment_keeps_channel() {
    let rounds_n = env_u64("HOST_CRASH_ROUNDS", ROUNDS);
    let seed = env_u64("HOST_CRASH_SEED", SEED);
    let test_start = Instant::now();

    let (dir, chain, chain_json) = fresh_chain("host-crash").await;
    let setup = Setup {
        chain_json,
        port: free_port(),
        log: dir.join("host.log"),
        seeds: vec![("x", write_seed(&dir, "x")), ("y", write_seed(&dir, "y"))],
        dir: dir.clone(),
    };
    eprintln!("host log: {}", setup.log.display());

    let mut host = setup.start_host("first").await;
    let seed_paths: Vec<&Path> = setup.seeds.iter().map(|(_, p)| p.as_path()).collect();
    let mut signer = SignerProcess::start(&dir, "h", &host, &seed_paths, json!({})).unwrap();
    host.ready().await.unwrap();
    let (x, y) = (host.node_id("x"), host.node_id("y"));
    let node_ids = [("x", x.clone()), ("y", y.clone())];

    // 1. The channel x -> y, with y's share pushed so that both sides can pay.
    host.send_to_wallet(&chain, "x", FUNDING_SAT).await;
    chain.mine(1).await.unwrap();
    host.wait_funded("x", FUNDING_SAT).await;
    let y_addr = host.addr("y");
    host.must(json!({"cmd": "connect", "node": "x", "peer": y, "addr": y_addr}))
        .await;
    host.must(
        json!({"cmd": "open", "node": "x", "peer": y, "sat": CHANNEL_SAT,
                     "push_msat": PUSH_MSAT}),
    )
    .await;
    host.wait_for("funding broadcast", req("channels", "x"), |v| {
        channel_to(v, &y).map(|c| c["funded"] == true) == Some(true)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    chain.mine(6).await.unwrap();
    for (node, peer) in [("x", &y), ("y", &x)] {
        host.wait_for("usable channel", req("channels", node), |v| {
            channel_to(v, peer).map(|c| c["usable"] == true) == Some(true)
        })
        .await;
    }
    let channel_id = channel_to(&host.must(req("channels", "x")).await, &y).unwrap()["channel_id"]
        .as_str()
        .unwrap()
        .to_string();

    // How long a payment takes here (remote signatures included), both ways.
    let mut took = Vec::new();
    for (payer, payee) in [("x", "y"), ("y", "x"), ("x", "y"), ("y", "x")] {
        let (inv, _) = invoice(&mut host, payee, 1_000_000).await;
        let t = Instant::now();
        host.must(json!({"cmd": "pay", "node": payer, "invoice": inv}))
            .await;
        took.push(t.elapsed().as_millis() as u64);
        settled_balances(&mut host, &channel_id).await;
    }
    let slowest = *took.iter().max().unwrap();
    let span_ms = env_u64("HOST_CRASH_SPAN_MS", MIN_SPAN_MS.max(slowest * 3 / 2));
    let from_ms = env_u64("HOST_CRASH_DELAY_FROM_MS", 0);
    eprintln!(
        "payments took {took:?} ms; {rounds_n} kills, HOST_CRASH_SEED={seed:#x} \
         HOST_CRASH_SPAN_MS={span_ms} HOST_CRASH_DELAY_FROM_MS={from_ms}"
    );
    let start = settled_balances(&mut host, &channel_id).await;

    // 2. Kill the host mid payment, restart it, and check the channel each time.
    let mut rounds = Vec::new();
    for n in 1..=rounds_n {
        let (payer, payee) = if n % 2 == 1 { ("x", "y") } else { ("y", "x") };
        let amount_msat = 2_000_000 + n * 1_000;
        let (inv, hash) = invoice(&mut host, payee, amount_msat).await;
        let round = Round {
            n,
            payer,
            payee,
            amount_msat,
            hash,
            delay_ms: from_ms + mix(seed, n) % span_ms,
        };
        eprintln!("{}", round.describe());
        host.send(&json!({"cmd": "pay", "node": payer, "invoice": inv}))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(round.delay_ms)).await;
        host.kill9().await;
        let after = round.describe();
        rounds.push(round);

        // 3. Nothing closed, on disk or after the restart.
        assert_nothing_closed(&setup, &node_ids, &format!("in the database after {after}"));
        host = setup.start_host(&format!("after {after}")).await;
        host.ready().await.unwrap();
        wait_channel_back(&mut host, &setup, &channel_id, &after).await;
    }

    // 4. Every payment the payer's table says succeeded moved its amount, none other moved
    // anything (direct channel: no fee), and the channel still pays.
    let settle_from = Instant::now();
    let table = loop {
        let waited = settle_from.elapsed();
        let accept_pending = waited > Duration::from_secs(20);
        match check_accounting(&mut host, &channel_id, &rounds, start, accept_pending).await {
            Ok(table) => break table,
            Err(e) if waited > Duration::from_secs(60) => {
                panic!("after {rounds_n} kills: {e}\n{}", setup.log_excerpt())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    eprintln!("after {rounds_n} kills, balances match the payments:\n{table}");
    let before = settled_balances(&mut host, &channel_id).await;
    let (inv, _) = invoice(&mut host, "y", 5_000_000).await;
    host.must(json!({"cmd": "pay", "node": "x", "invoice": inv}))
        .await;
    let (inv, _) = invoice(&mut host, "x", 3_000_000).await;
    host.must(json!({"cmd": "pay", "node": "y", "invoice": inv}))
        .await;
    let after = settled_balances(&mut host, &channel_id).await;
    assert_eq!(
        after,
        (before.0 - 2_000_000, before.1 + 2_000_000),
        "the payments after the kills moved other amounts"
    );

    host.stop().await;
    assert_nothing_closed(&setup, &node_ids, "in the database at the end");
    assert_monitor_layout(&setup.db());
    assert!(
        !setup.stale_manager_logged(),
        "LDK found a stale channel manager\n{}",
        setup.log_excerpt()
    );
    signer.kill9().await;
    chain.stop().await.unwrap();
    eprintln!("host_crash took {:?}", test_start.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
