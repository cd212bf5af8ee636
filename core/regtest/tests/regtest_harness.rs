//! The regtest harness against a real btcd over real TLS (installs btcd v0.26.0 on first run).

use std::time::Duration;

use bitcoin::secp256k1::{rand, Secp256k1, SecretKey};
use bitcoin::{Address, Amount, BlockHash, CompressedPublicKey, Network, Txid};
use flotilla_host::chain::rpc::{RpcClient, RpcError};
use flotilla_regtest::{Regtest, RegtestError};
use serde_json::{json, Value};

const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

fn fresh_address() -> Address {
    let secret = SecretKey::new(&mut rand::thread_rng());
    let public = secret.public_key(&Secp256k1::signing_only());
    Address::p2wpkh(&CompressedPublicKey(public), Network::Regtest)
}

/// btcd reports amounts as BTC floats; exact in f64 for any real amount.
fn sats(btc: &Value) -> u64 {
    (btc.as_f64().expect("amount is a number") * 1e8).round() as u64
}

async fn verbose_tx(regtest: &Regtest, txid: &Txid) -> Value {
    regtest
        .rpc()
        .call("getrawtransaction", json!([txid, 1]))
        .await
        .unwrap()
}

async fn mempool(regtest: &Regtest) -> Vec<Txid> {
    regtest
        .rpc()
        .call("getrawmempool", json!([]))
        .await
        .unwrap()
}

async fn block_txids(regtest: &Regtest, hash: &BlockHash) -> Vec<Txid> {
    let block: Value = regtest
        .rpc()
        .call("getblock", json!([hash, 1]))
        .await
        .unwrap();
    serde_json::from_value(block["tx"].clone()).unwrap()
}

/// Whether `pid` is a live, non-zombie process.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Kills a detached btcd if the test fails before stopping it.
struct KillOnDrop(u32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if running(self.0) {
            unsafe {
                libc::kill(self.0 as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

#[tokio::test]
async fn fund_pays_exact_amount_and_confirms() {
    let dir = tempfile::tempdir().unwrap();
    let regtest = Regtest::spawn_owned(dir.path()).await.unwrap();
    assert_eq!(regtest.height().await.unwrap(), 0);
    assert_eq!(regtest.mine(101).await.unwrap().len(), 101);
    assert_eq!(regtest.height().await.unwrap(), 101);

    let to = fresh_address();
    let amount = Amount::from_sat(123_456_789);
    let txid = regtest.fund(&to, amount).await.unwrap();
    assert_eq!(regtest.height().await.unwrap(), 102);

    let tx = verbose_tx(&regtest, &txid).await;
    assert_eq!(tx["confirmations"].as_u64(), Some(1), "{tx}");
    assert_eq!(sats(&tx["vout"][0]["value"]), amount.to_sat());
    assert_eq!(
        tx["vout"][0]["scriptPubKey"]["hex"].as_str(),
        Some(to.script_pubkey().to_hex_string().as_str())
    );
    let out: Value = regtest
        .rpc()
        .call("gettxout", json!([txid, 0]))
        .await
        .unwrap();
    assert_eq!(sats(&out["value"]), amount.to_sat());
    assert_eq!(out["confirmations"].as_u64(), Some(1));
    assert_eq!(out["coinbase"].as_bool(), Some(false));
}

#[tokio::test]
async fn several_sends_share_one_block_and_large_ones_combine_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let regtest = Regtest::spawn_owned(dir.path()).await.unwrap();
    regtest.mine(101).await.unwrap();
    let (a, b, c) = (fresh_address(), fresh_address(), fresh_address());
    let t1 = regtest.send(&a, Amount::from_int_btc(1)).await.unwrap();
    let t2 = regtest.send(&b, Amount::from_int_btc(2)).await.unwrap();
    // No coin holds 80 BTC (coinbases pay 50): this must spend several.
    let t3 = regtest.send(&c, Amount::from_int_btc(80)).await.unwrap();
    assert_eq!(regtest.height().await.unwrap(), 101, "send must not mine");
    let pool = mempool(&regtest).await;
    for t in [t1, t2, t3] {
        assert!(pool.contains(&t), "{t} not in mempool {pool:?}");
    }

    let block = regtest.mine(1).await.unwrap()[0];
    let included = block_txids(&regtest, &block).await;
    for t in [t1, t2, t3] {
        assert!(included.contains(&t), "{t} not in block");
    }
    let big = verbose_tx(&regtest, &t3).await;
    assert!(big["vin"].as_array().unwrap().len() >= 2, "{big}");
    assert_eq!(sats(&big["vout"][0]["value"]), 80 * 100_000_000);
    assert!(mempool(&regtest).await.is_empty());
}

#[tokio::test]
async fn send_on_a_fresh_chain_mines_to_maturity_and_refuses_the_impossible() {
    let dir = tempfile::tempdir().unwrap();
    let regtest = Regtest::spawn_owned(dir.path()).await.unwrap();
    let txid = regtest
        .send(&fresh_address(), Amount::from_int_btc(10))
        .await
        .unwrap();
    assert_eq!(regtest.height().await.unwrap(), 100);
    assert_eq!(mempool(&regtest).await, vec![txid]);

    // Regtest's whole supply is ~15,000 BTC: refused at once, without mining.
    let err = regtest
        .send(&fresh_address(), Amount::from_int_btc(20_000))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegtestError::InsufficientFunds { .. }),
        "{err}"
    );
    let err = regtest
        .send(&fresh_address(), Amount::from_sat(100))
        .await
        .unwrap_err();
    assert!(matches!(err, RegtestError::BadAmount { .. }), "{err}");
    assert_eq!(regtest.height().await.unwrap(), 100);
}

#[tokio::test]
async fn wrong_password_is_unauthorized_and_stopped_node_refuses_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let regtest = Regtest::spawn_owned(dir.path()).await.unwrap();
    let good = regtest.rpc_config();
    let mut bad = good.clone();
    bad.password.push('x');
    let err = RpcClient::new(&bad)
        .unwrap()
        .call::<u64>("getblockcount", json!([]))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Unauthorized), "{err}");

    let pid = regtest.info().pid;
    regtest.stop().await.unwrap();
    assert!(!running(pid));
    let client = RpcClient::new(&good).unwrap();
    let call = client.call::<u64>("getblockcount", json!([]));
    let err = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("a stopped node must fail fast, not hang")
        .unwrap_err();
    assert!(matches!(err, RpcError::Connect { .. }), "{err}");
    assert!(matches!(
        Regtest::open(dir.path()),
        Err(RegtestError::NoInfo(_))
    ));
}

#[tokio::test]
async fn detached_up_outlives_its_handle_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let regtest = Regtest::up(dir.path()).await.unwrap();
    let pid = regtest.info().pid;
    let _guard = KillOnDrop(pid);
    regtest.mine(3).await.unwrap();
    drop(regtest);
    assert!(running(pid));

    let attached = Regtest::open(dir.path()).unwrap();
    assert_eq!(attached.info().pid, pid);
    assert_eq!(attached.height().await.unwrap(), 3);
    assert!(matches!(
        Regtest::up(dir.path()).await,
        Err(RegtestError::AlreadyRunning { pid: p, .. }) if p == pid
    ));
    attached.stop().await.unwrap();
    assert!(!running(pid));

    // The directory can be reused; btcd starts regtest from genesis on every start.
    let again = Regtest::spawn_owned(dir.path()).await.unwrap();
    assert_ne!(again.info().pid, pid);
    assert_eq!(again.height().await.unwrap(), 0);
}

#[tokio::test]
async fn two_instances_sync_split_and_reorg() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Regtest::spawn_owned(d1.path()).await.unwrap();
    let b = Regtest::spawn_owned(d2.path()).await.unwrap();
    a.mine(110).await.unwrap();
    a.connect_to(&b).await.unwrap();
    a.wait_synced(&b, SYNC_TIMEOUT).await.unwrap();
    assert_eq!(b.height().await.unwrap(), 110);

    // Blocks and transactions flow both ways.
    let tip = *b.mine(2).await.unwrap().last().unwrap();
    assert_eq!(a.wait_synced(&b, SYNC_TIMEOUT).await.unwrap(), tip);
    let txid = a
        .send(&fresh_address(), Amount::from_int_btc(1))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
    while !mempool(&b).await.contains(&txid) {
        assert!(tokio::time::Instant::now() < deadline, "tx not relayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Split: each side mines its own branch; b's is longer.
    a.disconnect_from(&b).await.unwrap();
    let a_tip = *a.mine(1).await.unwrap().last().unwrap();
    let b_tip = *b.mine(3).await.unwrap().last().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.best_block_hash().await.unwrap(), a_tip);
    assert_eq!(a.height().await.unwrap(), 113);

    // Rejoin: a reorgs onto b's branch.
    b.connect_to(&a).await.unwrap();
    assert_eq!(a.wait_synced(&b, SYNC_TIMEOUT).await.unwrap(), b_tip);
    assert_eq!(a.height().await.unwrap(), 115);
}
