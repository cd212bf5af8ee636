//! An invoice paid twice at once is paid once, and both callers hear its outcome.
//!
//! A client that retries or is tapped twice sends the same invoice again while the first
//! payment still waits for the signer's approval: the second must wait for the first's
//! outcome, not be refused as a duplicate (nor make the first's caller lose its answer). The
//! payer's signer takes its time to approve, as one asking its user would.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::secp256k1::PublicKey;
use flotilla_core::host::{Host, HostConfig, PaymentOutcome};
use flotilla_core::signer::link::SignerLink;
use flotilla_core::signer::protocol::{Handler, Handover, Request, Response, SignerError};
use flotilla_core::signer::service::SeedSigner;
use flotilla_tests::fresh_chain;
use flotilla_tests::in_process::{fund, open_usable, seed_signer};

const CHANNEL_SAT: u64 = 1_000_000;
const APPROVAL_TAKES: Duration = Duration::from_millis(300);
const PAYMENT_MSAT: u64 = 5_000_000;

/// A signer slow to approve payments.
struct SlowApproval(SeedSigner);

impl Handler for SlowApproval {
    fn node_id(&self) -> PublicKey {
        self.0.node_id()
    }

    fn handover(&self) -> Handover {
        self.0.handover()
    }

    fn sign_challenge(&self, challenge: &[u8; 32]) -> Signature {
        self.0.sign_challenge(challenge)
    }

    fn handle(&self, request: Request) -> Result<Response, SignerError> {
        if matches!(request, Request::ApprovePayment { .. }) {
            std::thread::sleep(APPROVAL_TAKES);
        }
        self.0.handle(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_paid_twice_at_once_is_paid_once() {
    let (dir, chain, _) = fresh_chain("pay-once").await;
    let host = Host::start(HostConfig::regtest(dir.join("host.db"), chain.rpc_config()))
        .await
        .expect("host");
    let payer = host
        .add_node(
            "payer",
            SignerLink::in_process(Arc::new(SlowApproval(seed_signer(1)))),
        )
        .await
        .expect("payer");
    let payee = host
        .add_node("payee", SignerLink::in_process(Arc::new(seed_signer(2))))
        .await
        .expect("payee");
    fund(&chain, &payer, CHANNEL_SAT + 100_000).await;
    open_usable(&chain, &payer, &payee, CHANNEL_SAT).await;
    let outbound = || -> u64 {
        payer
            .channels()
            .iter()
            .map(|c| c.outbound_capacity_msat)
            .sum()
    };
    let before = outbound();

    let invoice = payee
        .create_invoice(PAYMENT_MSAT, "once", 600)
        .expect("invoice")
        .to_string();
    // Two tasks, so both calls run at once on the runtime's two workers.
    let pay = || {
        let (payer, invoice) = (payer.clone(), invoice.clone());
        tokio::spawn(async move { payer.pay_invoice(&invoice, Duration::from_secs(60)).await })
    };
    let (first, second) = (pay(), pay());
    let (first, second) = (first.await.expect("first"), second.await.expect("second"));
    let hash = invoice.parse::<lightning_invoice::Bolt11Invoice>().unwrap();
    let hash = hash.payment_hash().to_byte_array();
    for (who, result) in [("first", first), ("second", second)] {
        match result {
            Ok(PaymentOutcome::Succeeded { preimage, .. }) => {
                assert_eq!(sha256::Hash::hash(&preimage).to_byte_array(), hash, "{who}")
            }
            other => panic!("{who} caller: {other:?}"),
        }
    }
    assert_eq!(before - outbound(), PAYMENT_MSAT, "paid exactly once");
    let payee_id = payee.id.to_string();
    let received = host
        .store()
        .events(&payee_id, 0, 100)
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == "payment_received")
        .count();
    assert_eq!(received, 1, "received once");
    host.shutdown().await;
    drop(chain);
    let _ = std::fs::remove_dir_all(&dir);
}
