//! End to end on a real btcd regtest chain: a host of three nodes and a second host process of
//! one, channels within and across hosts over TCP, payments both ways, a kill -9 and restart,
//! a cooperative close and a force close whose funds are swept back to the wallet, and the
//! closed channels' monitors archived once resolved (4,000 blocks later). Every
//! signature comes from `flotilla signer` processes (one per host) over gRPC/TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use flotilla_host::store::{ChannelStatus, Direction, PaymentStatus, Store};
use flotilla_tests::{
    channel_to, free_port, fresh_chain, req, write_seed, HostProcess, SignerProcess,
};
use serde_json::{json, Value};

const FUNDING_SAT: u64 = 3_000_000;
const CHANNEL_SAT: u64 = 1_000_000;
/// Every node, and whether it lives on host B.
const ALL_NODES: [(bool, &str); 4] = [(false, "a0"), (false, "a1"), (false, "a2"), (true, "b0")];

async fn invoice(host: &mut HostProcess, payee: &str, msat: u64) -> String {
    let invoice = host
        .must(json!({"cmd": "invoice", "node": payee, "msat": msat}))
        .await;
    invoice.as_str().unwrap().to_string()
}

/// Pays the invoice from `payer` and checks the preimage matches the invoice's hash.
async fn pay(from: &mut HostProcess, payer: &str, invoice: String) -> String {
    let parsed: lightning_invoice::Bolt11Invoice = invoice.parse().unwrap();
    let paid = from
        .must(json!({"cmd": "pay", "node": payer, "invoice": invoice}))
        .await;
    let preimage = paid["preimage"].as_str().unwrap();
    let bytes = <[u8; 32] as bitcoin::hex::FromHex>::from_hex(preimage).unwrap();
    assert_eq!(
        sha256::Hash::hash(&bytes).to_byte_array(),
        parsed.payment_hash().to_byte_array()
    );
    parsed.payment_hash().to_string()
}

fn outbound_msat(channels: &Value, peer: &str) -> u64 {
    channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["peer"] == peer)
        .map(|c| c["outbound_msat"].as_u64().unwrap())
        .unwrap_or(0)
}

/// Rows of `node`'s scope in the host database's key-value table matching `filter`.
fn kv_rows(db: &Path, node: &str, filter: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let sql = format!("SELECT COUNT(*) FROM kv WHERE scope = ?1 AND {filter}");
    conn.query_row(&sql, [node], |row| row.get(0)).unwrap()
}

/// The channels a node's signer keeps (`retired`: only tombstones, else only live ones).
fn signer_channels(dir: &Path, signer: &str, node: &str, retired: bool) -> i64 {
    let db = dir
        .join(format!("{signer}-signer-state"))
        .join("signer-state.db");
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let sql = "SELECT COUNT(*) FROM signer_channels WHERE node_id = ?1 \
               AND (json_extract(state, '$.retired') IS 1) = ?2";
    conn.query_row(sql, rusqlite::params![node, retired], |row| row.get(0))
        .unwrap()
}

async fn wallet_confirmed(host: &mut HostProcess, node: &str) -> u64 {
    host.must(req("balance", node)).await["wallet"]["confirmed_sat"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_open_pay_restart_and_close() {
    let (dir, chain, chain_json) = fresh_chain("e2e").await;

    let seeds: Vec<(&str, PathBuf)> = ["a0", "a1", "a2", "b0"]
        .iter()
        .map(|alias| (*alias, write_seed(&dir, alias)))
        .collect();
    let host_a_nodes: Vec<(&str, &Path)> =
        seeds[..3].iter().map(|(a, p)| (*a, p.as_path())).collect();
    let host_b_nodes: Vec<(&str, &Path)> =
        seeds[3..].iter().map(|(a, p)| (*a, p.as_path())).collect();
    let a_db = dir.join("a.db");
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = HostProcess::start(&dir, "a", &chain_json, port_a, &host_a_nodes)
        .await
        .unwrap();
    let seeds_a: Vec<&Path> = host_a_nodes.iter().map(|(_, p)| *p).collect();
    let seeds_b: Vec<&Path> = host_b_nodes.iter().map(|(_, p)| *p).collect();
    // The signer of host A keeps running across A's kill -9 and restart: it reconnects.
    let mut signer_a = SignerProcess::start(&dir, "a", &a, &seeds_a, json!({})).unwrap();
    a.ready().await.unwrap();
    let mut b = HostProcess::start(&dir, "b", &chain_json, port_b, &host_b_nodes)
        .await
        .unwrap();
    let _signer_b = SignerProcess::start(&dir, "b", &b, &seeds_b, json!({})).unwrap();
    b.ready().await.unwrap();

    // A second host on the same database is refused while the first runs.
    assert!(matches!(
        Store::open(&a_db),
        Err(flotilla_host::store::StoreError::Locked { .. })
    ));

    // Fund every wallet from the harness and confirm.
    for (on_b, node) in ALL_NODES {
        let host = if on_b { &mut b } else { &mut a };
        host.send_to_wallet(&chain, node, FUNDING_SAT).await;
    }
    chain.mine(1).await.unwrap();
    for (on_b, node) in ALL_NODES {
        let host = if on_b { &mut b } else { &mut a };
        host.wait_funded(node, FUNDING_SAT).await;
    }

    // Channels: a0->a1 and a1->a2 inside host A, a2->b0 across the two processes.
    let (a0, a1, a2, b0) = (
        a.node_id("a0"),
        a.node_id("a1"),
        a.node_id("a2"),
        b.node_id("b0"),
    );
    let links = [
        ("a0", &a1, a.addr("a1")),
        ("a1", &a2, a.addr("a2")),
        ("a2", &b0, b.addr("b0")),
    ];
    for (node, peer, addr) in &links {
        a.must(json!({"cmd": "connect", "node": node, "peer": peer, "addr": addr}))
            .await;
        a.must(json!({"cmd": "open", "node": node, "peer": peer, "sat": CHANNEL_SAT}))
            .await;
    }
    for (node, _, _) in &links {
        a.wait_for("funding broadcast", req("channels", node), |v| {
            v.as_array()
                .map(|c| c.iter().all(|c| c["funded"] == true))
                .unwrap_or(false)
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    chain.mine(3).await.unwrap();
    for node in ["a0", "a1", "a2"] {
        a.wait_for("usable channels", req("channels", node), |v| {
            let c = v.as_array().unwrap();
            !c.is_empty() && c.iter().all(|c| c["usable"] == true)
        })
        .await;
    }
    b.wait_for("usable channel", req("channels", "b0"), |v| {
        v[0]["usable"] == true
    })
    .await;

    // Payments both ways, inside the host and across hosts.
    let opened = outbound_msat(&a.must(req("channels", "a0")).await, &a1);
    let i1 = invoice(&mut a, "a1", 100_000_000).await;
    pay(&mut a, "a0", i1).await;
    // The received HTLC must be irrevocably settled before a1 can spend it back.
    a.wait_for("a1's balance settled", req("channels", "a1"), |v| {
        outbound_msat(v, &a0) >= 30_000_000
    })
    .await;
    let i2 = invoice(&mut a, "a0", 30_000_000).await;
    let h2 = pay(&mut a, "a1", i2.clone()).await;
    // Paying it again answers the first payment's outcome and pays nothing (checked by a0's
    // balance below), as a client retrying after a timeout would.
    assert_eq!(pay(&mut a, "a1", i2).await, h2);
    let i3 = invoice(&mut b, "b0", 50_000_000).await;
    let h3 = pay(&mut a, "a2", i3).await;
    b.wait_for("b0's balance settled", req("channels", "b0"), |v| {
        outbound_msat(v, &a2) >= 20_000_000
    })
    .await;
    let i4 = invoice(&mut a, "a2", 20_000_000).await;
    let h4 = pay(&mut b, "b0", i4).await;

    let payments = a.must(req("payments", "a1")).await;
    let sent = payments
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["payment_hash"] == h2)
        .unwrap();
    assert_eq!(sent["status"], "succeeded");
    assert!(sent["preimage"].is_string());

    let before_kill = a.must(req("channels", "a0")).await;
    let a0_out = outbound_msat(&before_kill, &a1);
    // Direct channel: no routing fee, so the balance moved by exactly the two amounts.
    assert_eq!(a0_out, opened - 100_000_000 + 30_000_000);

    // kill -9 host A once a2's payment to b0 settled, so the plain tables below have its
    // outcome (host_crash kills mid payment: no state is lost either way).
    a.wait_for("a2 settled", req("channels", "a2"), |v| {
        channel_to(v, &b0).map(|c| c["pending_htlcs"] == 0) == Some(true)
    })
    .await;
    a.kill9().await;
    {
        let store = Store::open(&a_db).expect("lock released by the kill");
        let a2_payments = store.payments(&a2).unwrap();
        let p3 = a2_payments
            .iter()
            .find(|p| p.payment_hash == h3 && p.direction == Direction::Outbound)
            .unwrap();
        assert_eq!(p3.status, PaymentStatus::Succeeded);
        let p4 = a2_payments
            .iter()
            .find(|p| p.payment_hash == h4 && p.direction == Direction::Inbound)
            .unwrap();
        assert_eq!(p4.status, PaymentStatus::Succeeded);
        assert!(p4.preimage.is_some());
        let chans = store.channels(&a0).unwrap();
        assert!(chans
            .iter()
            .any(|c| c.counterparty_node_id == a1 && c.status == ChannelStatus::Open));
    }

    // Restart: same channels and balances, and it keeps paying (peers reconnect by themselves).
    let mut a = HostProcess::start(&dir, "a", &chain_json, port_a, &host_a_nodes)
        .await
        .unwrap();
    a.ready().await.unwrap();
    let after = a
        .wait_for("channels back", req("channels", "a0"), |v| {
            v.as_array()
                .map(|c| c.iter().all(|c| c["usable"] == true) && !c.is_empty())
                .unwrap_or(false)
        })
        .await;
    assert_eq!(outbound_msat(&after, &a1), a0_out);
    assert_eq!(
        channel_to(&after, &a1).unwrap()["channel_id"],
        channel_to(&before_kill, &a1).unwrap()["channel_id"]
    );
    b.wait_for("reconnected", req("channels", "b0"), |v| {
        v[0]["usable"] == true
    })
    .await;
    let i5 = invoice(&mut a, "a2", 5_000_000).await;
    pay(&mut b, "b0", i5).await;

    // Cooperative close of a0-a1: both sides drop the channel; a0's share pays its wallet.
    let a0_wallet_before = wallet_confirmed(&mut a, "a0").await;
    let ch = channel_to(&after, &a1).unwrap();
    a.must(json!({"cmd": "close", "node": "a0", "channel_id": ch["channel_id"], "peer": a1}))
        .await;
    a.wait_for("close negotiated", req("channels", "a0"), |v| {
        channel_to(v, &a1).is_none()
    })
    .await;
    a.wait_for("close negotiated", req("channels", "a1"), |v| {
        channel_to(v, &a0).is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    chain.mine(1).await.unwrap();

    // Force close of a1-a2 by a1: after the delay, the sweeper brings a1's funds to its wallet.
    let a1_chans = a.must(req("channels", "a1")).await;
    let ch = channel_to(&a1_chans, &a2).unwrap();
    let a1_balance = outbound_msat(&a1_chans, &a2) / 1000;
    let wallet_before = wallet_confirmed(&mut a, "a1").await;
    a.must(json!({"cmd": "force_close", "node": "a1", "channel_id": ch["channel_id"], "peer": a2}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    chain.mine(1).await.unwrap();
    // Past the counterparty's to_self_delay (144), then give the sweeper (30 s timer) time.
    chain.mine(150).await.unwrap();
    // (a1's share of the cooperative close may land in this window too: it pays the wallet.)
    let target = a1_balance.saturating_sub(20_000);
    let mut swept = 0;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        chain.mine(1).await.unwrap();
        swept = wallet_confirmed(&mut a, "a1")
            .await
            .saturating_sub(wallet_before);
        if swept > target {
            break;
        }
    }
    assert!(swept > target, "swept {swept} of about {a1_balance}");
    let a0_swept = wallet_confirmed(&mut a, "a0").await - a0_wallet_before;
    assert!(
        a0_swept > a0_out / 1000 - 20_000,
        "coop close returned {a0_swept} of about {}",
        a0_out / 1000
    );
    let store_rows = a.must(req("payments", "a0")).await;
    assert!(!store_rows.as_array().unwrap().is_empty());

    // Closed and resolved channels are archived: LDK waits 4032 blocks after a monitor's
    // balances clear, the host looks every 144 blocks. Archived monitors are no longer fed
    // blocks nor loaded at start; the open a2-b0 channel is still watched and still pays.
    let watched = |v: &Value| v["watched_channels"].as_u64().unwrap();
    assert_eq!(watched(&a.must(req("balance", "a1")).await), 2);
    // What the host carries to a1's signer for its channels (revocations, holder commitments).
    let carried_rows = || {
        kv_rows(
            &a_db,
            &a1,
            "primary_namespace = 'signer' AND secondary_namespace IN ('revocations', 'holder_commitments')",
        )
    };
    assert!(carried_rows() > 0);
    assert_eq!(signer_channels(&dir, "a", &a1, true), 0);
    let a1_channels = signer_channels(&dir, "a", &a1, false);
    assert!(a1_channels >= 2);
    let key_sets = || {
        kv_rows(
            &a_db,
            &a1,
            "primary_namespace = 'signer' AND secondary_namespace = 'channel_keys'",
        )
    };
    let a1_key_sets = key_sets();
    let marks = || {
        kv_rows(
            &a_db,
            &a1,
            "primary_namespace = 'signer' AND secondary_namespace = 'retiring'",
        )
    };
    // A's signer is away while the channels are archived: the host cannot retire them yet.
    signer_a.kill9().await;
    chain.mine(4032 + 3 * 144).await.unwrap();
    for node in ["a0", "a1"] {
        a.wait_for("resolved channels archived", req("balance", node), |v| {
            watched(v) == 0
        })
        .await;
    }
    // a1's sides of a0-a1 and a1-a2 (a0's and a2's are in their own scopes).
    let archived = kv_rows(&a_db, &a1, "primary_namespace = 'archived_monitors'");
    assert_eq!(archived, 2);
    assert_eq!(carried_rows(), 0, "a1's notes left with its channels");
    // The host forgets the two key sets and marks them until the signer retires them.
    assert_eq!(key_sets(), a1_key_sets - 2);
    assert_eq!(marks(), 2);
    assert_eq!(signer_channels(&dir, "a", &a1, true), 0);
    // Back, the signer is asked again and keeps a tombstone of each, nothing more.
    signer_a.restart().unwrap();
    a.wait_for(
        "a1's signer retired its channels",
        req("balance", "a1"),
        |_| signer_channels(&dir, "a", &a1, true) == 2,
    )
    .await;
    assert_eq!(signer_channels(&dir, "a", &a1, false), a1_channels - 2);
    a.wait_for("a1's retiring marks cleared", req("balance", "a1"), |_| {
        marks() == 0
    })
    .await;
    assert!(watched(&a.must(req("balance", "a2")).await) >= 1);
    a.stop().await;
    let mut a = HostProcess::start(&dir, "a", &chain_json, port_a, &host_a_nodes)
        .await
        .unwrap();
    a.ready().await.unwrap();
    assert_eq!(watched(&a.must(req("balance", "a1")).await), 0);
    a.wait_for(
        "a2-b0 usable after the archive",
        req("channels", "a2"),
        |v| channel_to(v, &b0).is_some_and(|c| c["usable"] == true),
    )
    .await;
    let i6 = invoice(&mut b, "b0", 1_000_000).await;
    pay(&mut a, "a2", i6).await;

    a.stop().await;
    b.stop().await;
    chain.stop().await.unwrap();
}
