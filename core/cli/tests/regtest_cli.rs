//! `flotilla regtest up|mine|fund|down` as a user runs them: a real btcd, errors on bad input
//! (installs btcd v0.26.0 on first run).

use std::path::Path;
use std::process::{Command, Output};

use bitcoin::secp256k1::{rand, Secp256k1, SecretKey};
use bitcoin::{Address, CompressedPublicKey, Network, Txid};
use flotilla_regtest::{Regtest, RegtestError};
use serde_json::{json, Value};

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

/// Whether `pid` is a live, non-zombie process.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn flotilla(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `flotilla regtest down` if a CLI test fails half way.
struct DownOnDrop<'a>(&'a Path);
impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        if self.0.join("regtest.json").exists() {
            let _ = flotilla(&["regtest", "down"], self.0);
        }
    }
}

#[tokio::test]
async fn cli_up_mine_fund_down_and_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let addr = fresh_address().to_string();

    let out = flotilla(&["regtest", "mine", "1"], d);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("regtest.json"),
        "{}",
        text(&out.stderr)
    );

    let out = flotilla(&["regtest", "up"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _down = DownOnDrop(d);
    assert!(text(&out.stdout).contains("btcd up"));

    let out = flotilla(&["regtest", "mine", "101"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("height 101"),
        "{}",
        text(&out.stdout)
    );

    let out = flotilla(&["regtest", "fund", &addr, "150000"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let txid: Txid = stdout
        .split(':')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no txid in {stdout:?}"));
    let regtest = Regtest::open(d).unwrap();
    let tx = verbose_tx(&regtest, &txid).await;
    assert_eq!(sats(&tx["vout"][0]["value"]), 150_000);
    assert_eq!(tx["confirmations"].as_u64(), Some(1));

    for (args, says) in [
        (vec!["fund", "garbage", "1000"], "not a bitcoin address"),
        (
            vec!["fund", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "1000"],
            "not a regtest address",
        ),
        (vec!["fund", addr.as_str(), "0"], "more than 0"),
        (vec!["fund", addr.as_str(), "-5"], "whole number"),
        (
            vec!["fund", addr.as_str(), "99999999999999999"],
            "more than regtest",
        ),
        (vec!["mine", "0"], "block count"),
    ] {
        let mut full = vec!["regtest"];
        full.extend(args.iter().copied());
        let out = flotilla(&full, d);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    let pid = regtest.info().pid;
    let out = flotilla(&["regtest", "down"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!running(pid));
    assert!(matches!(Regtest::open(d), Err(RegtestError::NoInfo(_))));
}
