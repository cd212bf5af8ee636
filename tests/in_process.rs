//! Hosts in the test's own process with in-process signers, for tests that reach inside a
//! node (hold a signer back, call its API directly). Real btcd and real LDK peers over TCP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Amount, Network};
use flotilla_host::signer_client::link::SignerLink;
use flotilla_host::{Host, HostConfig, Node};
use flotilla_proto::{Handler, Handover, Request, Response, SignerError};
use flotilla_regtest::wait_until;
use flotilla_regtest::Regtest;
use flotilla_signer::seed_signer::SeedSigner;

/// The signer of seed `[seed; 32]`: default policy, state in memory.
pub fn seed_signer(seed: u8) -> SeedSigner {
    SeedSigner::in_memory(&[seed; 32], Network::Regtest).expect("signer")
}

/// Sends `sat` to `node`'s wallet, mines it, and waits until the wallet has exactly that.
pub async fn fund(chain: &Regtest, node: &Node, sat: u64) {
    chain
        .send(&node.new_address().expect("address"), Amount::from_sat(sat))
        .await
        .expect("fund");
    chain.mine(1).await.expect("mine");
    wait_until("wallet funded", Duration::from_secs(60), || {
        node.wallet_balance().confirmed_sat == sat
    })
    .await
    .expect("funded");
}

/// Opens a channel of `sat` from `payer` to `payee` and waits until it is usable.
pub async fn open_usable(chain: &Regtest, payer: &Node, payee: &Node, sat: u64) {
    payer
        .connect(payee.id, payee.listen_addr())
        .await
        .expect("connect");
    payer.open_channel(payee.id, sat, 0).expect("open");
    wait_until("funding broadcast", Duration::from_secs(60), || {
        let channels = payer.channels();
        !channels.is_empty() && channels.iter().all(|c| c.funding_txo.is_some())
    })
    .await
    .expect("funding");
    // Let the funding reach the mempool before mining it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    chain.mine(3).await.expect("mine");
    wait_until("channel usable", Duration::from_secs(60), || {
        payer.channels().iter().any(|c| c.is_usable)
    })
    .await
    .expect("channel usable");
}

/// Waits (up to a minute) until btcd's mempool holds a transaction: a close is broadcast
/// when the node gets to it, which on a loaded machine can be seconds after the test asked.
pub async fn wait_for_mempool(chain: &Regtest) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pool: Vec<bitcoin::Txid> = chain
            .rpc()
            .call("getrawmempool", serde_json::json!([]))
            .await
            .expect("getrawmempool");
        if !pool.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing reached the mempool in a minute"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Mines a block at a time, at most `blocks`, until `done` holds, giving the nodes a second
/// before each block (a transaction may reach btcd's mempool after the block that was
/// meant to confirm it, or wait for a block to be built). Whether `done` came to hold.
pub async fn mine_until(chain: &Regtest, blocks: u32, done: impl Fn() -> bool) -> bool {
    for _ in 0..blocks {
        if wait_until("mined until", Duration::from_secs(1), &done)
            .await
            .is_ok()
        {
            return true;
        }
        chain.mine(1).await.expect("mine");
    }
    wait_until("mined until", Duration::from_secs(1), &done)
        .await
        .is_ok()
}

/// What `node` can send over all its channels.
pub fn outbound_msat(node: &Node) -> u64 {
    node.channels()
        .iter()
        .map(|c| c.outbound_capacity_msat)
        .sum()
}

/// The data of `node`'s events of `kind`, oldest first (its first 1,000 events).
pub fn events(host: &Host, node: &Node, kind: &str) -> Vec<serde_json::Value> {
    host.store()
        .events(&node.id.to_string(), 0, 1_000)
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.data)
        .collect()
}

/// A fresh chain and a host running two nodes, `payer` and `payee`, on the given signers.
pub struct Pair {
    pub dir: PathBuf,
    pub chain: Regtest,
    pub host: Arc<Host>,
    pub payer: Arc<Node>,
    pub payee: Arc<Node>,
}

impl Pair {
    pub async fn start(name: &str, payer: Arc<dyn Handler>, payee: Arc<dyn Handler>) -> Pair {
        let (dir, chain, _) = crate::fresh_chain(name).await;
        let host = Host::start(HostConfig::regtest(dir.join("host.db"), chain.rpc_config()))
            .await
            .expect("host");
        let payer = host
            .add_node("payer", SignerLink::in_process(payer))
            .await
            .expect("payer");
        let payee = host
            .add_node("payee", SignerLink::in_process(payee))
            .await
            .expect("payee");
        Pair {
            dir,
            chain,
            host,
            payer,
            payee,
        }
    }

    /// As [`Pair::start`], then a usable channel of `sat` from payer to payee (the payer's
    /// wallet funded with 100,000 sat more, for the funding's fee).
    pub async fn with_channel(
        name: &str,
        payer: Arc<dyn Handler>,
        payee: Arc<dyn Handler>,
        sat: u64,
    ) -> Pair {
        let pair = Pair::start(name, payer, payee).await;
        fund(&pair.chain, &pair.payer, sat + 100_000).await;
        open_usable(&pair.chain, &pair.payer, &pair.payee, sat).await;
        pair
    }

    /// Stops the host and the chain and removes the test's directory.
    pub async fn stop(self) {
        self.host.shutdown().await;
        drop(self.chain);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a test does with a request before the seed signer sees it: answers it itself
/// (`Some`, a refusal say) or lets it through (`None`), having counted or delayed it.
pub trait Intercept: Send + Sync + 'static {
    fn intercept(&self, request: &Request) -> Option<Result<Response, SignerError>>;
}

/// A seed signer (as [`seed_signer`]) behind a test's [`Intercept`].
pub struct Intercepted<I> {
    signer: SeedSigner,
    pub test: I,
}

pub fn intercepted<I: Intercept>(seed: u8, test: I) -> Arc<Intercepted<I>> {
    Arc::new(Intercepted {
        signer: seed_signer(seed),
        test,
    })
}

impl<I: Intercept> Handler for Intercepted<I> {
    fn node_id(&self) -> PublicKey {
        self.signer.node_id()
    }

    fn handover(&self) -> Handover {
        self.signer.handover()
    }

    fn sign_challenge(&self, challenge: &[u8; 32]) -> Signature {
        self.signer.sign_challenge(challenge)
    }

    fn handle(&self, request: Request) -> Result<Response, SignerError> {
        match self.test.intercept(&request) {
            Some(answer) => answer,
            None => self.signer.handle(request),
        }
    }
}
