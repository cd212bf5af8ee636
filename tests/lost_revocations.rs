//! The peer's revocations reach the signer with the next commitment, across a host restart.
//!
//! The signer signs a new counterparty commitment only once the peer revoked the one before
//! the last, and learns revocations only from the copy the host attaches to the next
//! counterparty commitment it asks for (the host sends them nowhere else; these signers count
//! both ways, and would see a standalone one). Holder commitments likewise ride on the next
//! secret release. Payments go through before a host restart and after it:
//! after it only because the host saved the latest revocation with the monitor update that
//! recorded it (without that, the first commitment after the restart is refused with
//! `counterparty_not_revoked` and the payment fails). Real btcd, real LDK peers over TCP; the
//! signers run in-process so the test can drop their messages.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_host::signer_client::link::SignerLink;
use flotilla_host::store::StoreError;
use flotilla_host::{Host, HostConfig, HostError, Node, PaymentOutcome};
use flotilla_proto::{Request, Response, SignerError};
use flotilla_regtest::wait_until;
use flotilla_regtest::Regtest;
use flotilla_tests::fresh_chain;
use flotilla_tests::in_process::{
    fund, intercepted, open_usable, outbound_msat, Intercept, Intercepted,
};

const CHANNEL_SAT: u64 = 1_000_000;
const PAYMENT_MSAT: u64 = 5_000_000;
const PAYMENTS_EACH_SIDE_OF_RESTART: u64 = 3;

/// Counts how the peer's revocations and holder commitments reach the signer.
#[derive(Default)]
struct CountsRevocations {
    attached: AtomicU64,
    holders_attached: AtomicU64,
    standalone: AtomicU64,
    /// Validations of a channel's first holder commitment, which its funding waits for.
    first_commitments: AtomicU64,
}

impl Intercept for CountsRevocations {
    fn intercept(&self, request: &Request) -> Option<Result<Response, SignerError>> {
        match request {
            Request::SignCounterpartyCommitment {
                revocation: Some(_),
                ..
            } => self.attached.fetch_add(1, Ordering::Relaxed),
            Request::ReleaseCommitmentSecret {
                holder: Some(_), ..
            } => self.holders_attached.fetch_add(1, Ordering::Relaxed),
            // The funding of a channel we open is signed only after the peer's signature of
            // our first commitment is validated: that one is asked on its own, by design.
            Request::ValidateHolderCommitment { holder, .. }
                if holder.tx.commitment_number() == FIRST_COMMITMENT =>
            {
                self.first_commitments.fetch_add(1, Ordering::Relaxed)
            }
            Request::ValidateCounterpartyRevocation { .. }
            | Request::ValidateHolderCommitment { .. } => {
                self.standalone.fetch_add(1, Ordering::Relaxed)
            }
            _ => 0,
        };
        None
    }
}

/// LDK's first commitment number (they count down).
const FIRST_COMMITMENT: u64 = (1 << 48) - 1;

type Signer = Arc<Intercepted<CountsRevocations>>;

fn signer(seed: u8) -> Signer {
    intercepted(seed, CountsRevocations::default())
}

async fn start(chain: &Regtest, db: &Path, signers: &[Signer]) -> (Arc<Host>, Vec<Arc<Node>>) {
    // A host that just shut down lets go of the database once its aborted tasks are gone.
    let mut tries = 0;
    let host = loop {
        match Host::start(HostConfig::regtest(db.to_path_buf(), chain.rpc_config())).await {
            Err(HostError::Store(StoreError::Locked { .. })) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            started => break started.expect("host"),
        }
    };
    let mut nodes = Vec::new();
    for (i, signer) in signers.iter().enumerate() {
        let link = SignerLink::in_process(signer.clone());
        nodes.push(host.add_node(&format!("n{i}"), link).await.expect("node"));
    }
    (host, nodes)
}

async fn usable(payer: &Node, payee: &Node, what: &str) {
    let _ = payer.connect(payee.id, payee.listen_addr()).await;
    wait_until(what, Duration::from_secs(120), || {
        payer.channels().iter().any(|c| c.is_usable)
    })
    .await
    .expect("channel usable");
}

async fn pay(payer: &Node, payee: &Node, n: u64) {
    let invoice = payee
        .create_invoice(Some(PAYMENT_MSAT), &format!("payment {n}"), 600)
        .expect("invoice");
    let outcome = payer
        .pay_invoice(&invoice.to_string(), Duration::from_secs(60))
        .await
        .expect("pay");
    match outcome {
        PaymentOutcome::Succeeded { preimage, .. } => {
            use bitcoin::hashes::{sha256, Hash};
            assert_eq!(
                sha256::Hash::hash(&preimage).to_byte_array(),
                invoice.payment_hash().to_byte_array(),
                "payment {n}: the preimage matches"
            );
        }
        PaymentOutcome::Failed { reason } => panic!("payment {n} failed: {reason}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_the_signer_with_the_next_commitment_across_a_host_restart() {
    let (dir, chain, _) = fresh_chain("lost-revocations").await;
    let db = dir.join("host.db");
    let signers = [signer(1), signer(2)];

    let (host, nodes) = start(&chain, &db, &signers).await;
    let (payer, payee) = (&nodes[0], &nodes[1]);
    fund(&chain, payer, CHANNEL_SAT + 100_000).await;
    open_usable(&chain, payer, payee, CHANNEL_SAT).await;
    let start_msat = outbound_msat(payer);

    for n in 0..PAYMENTS_EACH_SIDE_OF_RESTART {
        pay(payer, payee, n).await;
    }
    let count = |counter: fn(&CountsRevocations) -> &AtomicU64| -> u64 {
        signers
            .iter()
            .map(|s| counter(&s.test).load(Ordering::Relaxed))
            .sum()
    };
    let before_restart = count(|s| &s.attached);
    // Each payment: every side asks for two counterparty commitments, each after the peer's
    // revocation of an earlier one (the last may still be on its way when the payer learns
    // the outcome).
    assert!(
        before_restart >= 3 * PAYMENTS_EACH_SIDE_OF_RESTART,
        "revocations attached: {before_restart}"
    );
    // And every side releases two secrets, each with the holder commitment that replaces it.
    let holders = count(|s| &s.holders_attached);
    assert!(
        holders >= 3 * PAYMENTS_EACH_SIDE_OF_RESTART,
        "holder commitments attached: {holders}"
    );

    host.shutdown().await;
    drop((host, nodes));
    let (host, nodes) = start(&chain, &db, &signers).await;
    let (payer, payee) = (&nodes[0], &nodes[1]);
    usable(payer, payee, "channel back after the restart").await;
    for n in PAYMENTS_EACH_SIDE_OF_RESTART..2 * PAYMENTS_EACH_SIDE_OF_RESTART {
        pay(payer, payee, n).await;
    }
    assert!(
        count(|s| &s.attached) > before_restart,
        "revocations attached after the restart"
    );
    assert!(
        count(|s| &s.holders_attached) > holders,
        "holder commitments attached after the restart"
    );
    assert_eq!(
        count(|s| &s.standalone),
        0,
        "no revocation or holder commitment sent on its own"
    );
    assert_eq!(
        count(|s| &s.first_commitments),
        1,
        "the one funded channel's first commitment, validated before its funding was signed"
    );
    // Every payment moved the balance once (no fees on a direct channel).
    let paid = 2 * PAYMENTS_EACH_SIDE_OF_RESTART * PAYMENT_MSAT;
    assert_eq!(outbound_msat(payer), start_msat - paid);
    host.shutdown().await;
    drop(chain);
    let _ = std::fs::remove_dir_all(&dir);
}
