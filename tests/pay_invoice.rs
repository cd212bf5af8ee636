//! What `pay_invoice` promises its caller, on real btcd and LDK peers over TCP (in-process
//! signers, so the test can slow one down and count what it is asked).
//!
//! An invoice paid twice at once is paid once, and both callers hear its outcome: a client
//! that retries or is tapped twice sends the same invoice again while the first payment
//! still waits for the signer's approval (slow here, as a signer asking its user is), and
//! the second must wait for the first's outcome, not be refused as a duplicate (nor make the
//! first's caller lose its answer). An invoice no payment could settle is refused with a
//! reason before the signer is asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use flotilla_host::signer_client::link::SignerLink;
use flotilla_host::{Host, HostConfig, HostError, PaymentOutcome};
use flotilla_proto::{Request, Response, SignerError};
use flotilla_tests::fresh_chain;
use flotilla_tests::in_process::{
    events, intercepted, outbound_msat, seed_signer, Intercept, Intercepted, Pair,
};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};

const CHANNEL_SAT: u64 = 1_000_000;
const APPROVAL_TAKES: Duration = Duration::from_millis(300);
const PAYMENT_MSAT: u64 = 5_000_000;
const HOUR: Duration = Duration::from_secs(3600);

/// Approves payments slowly, counting the approvals asked.
#[derive(Default)]
struct SlowApproval {
    asked: AtomicU64,
}

impl Intercept for SlowApproval {
    fn intercept(&self, request: &Request) -> Option<Result<Response, SignerError>> {
        if matches!(request, Request::ApprovePayment { .. }) {
            self.asked.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(APPROVAL_TAKES);
        }
        None
    }
}

fn slow_approval(seed: u8) -> Arc<Intercepted<SlowApproval>> {
    intercepted(seed, SlowApproval::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_paid_twice_at_once_is_paid_once() {
    let pair = Pair::with_channel(
        "pay-once",
        slow_approval(1),
        Arc::new(seed_signer(2)),
        CHANNEL_SAT,
    )
    .await;
    let (host, payer, payee) = (&pair.host, &pair.payer, &pair.payee);
    let before = outbound_msat(payer);

    let invoice = payee
        .create_invoice(Some(PAYMENT_MSAT), "once", 600)
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
    assert_eq!(
        before - outbound_msat(payer),
        PAYMENT_MSAT,
        "paid exactly once"
    );
    let received = events(host, payee, "payment_received").len();
    assert_eq!(received, 1, "received once");
    pair.stop().await;
}

/// An invoice for `currency`, signed by a key no node of the host has.
fn foreign_invoice(currency: Currency, amount_msat: Option<u64>, created: Duration) -> String {
    let builder = InvoiceBuilder::new(currency)
        .description("elsewhere".into())
        .payment_hash(sha256::Hash::from_byte_array([5; 32]))
        .payment_secret(PaymentSecret([6; 32]))
        .duration_since_epoch(created)
        .min_final_cltv_expiry_delta(18);
    let builder = match amount_msat {
        Some(msat) => builder.amount_milli_satoshis(msat),
        None => builder,
    };
    let key = SecretKey::from_slice(&[7; 32]).expect("a key");
    builder
        .build_signed(|hash| Secp256k1::new().sign_ecdsa_recoverable(hash, &key))
        .expect("invoice")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_no_payment_could_settle_is_refused_before_the_signer_is_asked() {
    let (dir, chain, _) = fresh_chain("pay-refused").await;
    let host = Host::start(HostConfig::regtest(dir.join("host.db"), chain.rpc_config()))
        .await
        .expect("host");
    let signer = slow_approval(1);
    let payer = host
        .add_node("payer", SignerLink::in_process(signer.clone()))
        .await
        .expect("payer");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let cases = [
        (
            foreign_invoice(Currency::Bitcoin, Some(PAYMENT_MSAT), now),
            "another chain",
        ),
        (foreign_invoice(Currency::Regtest, None, now), "no amount"),
        (
            foreign_invoice(Currency::Regtest, Some(PAYMENT_MSAT), now - 2 * HOUR),
            "expired",
        ),
        (
            payer
                .create_invoice(Some(PAYMENT_MSAT), "to myself", 600)
                .expect("invoice")
                .to_string(),
            "own",
        ),
    ];
    for (invoice, why) in cases {
        match payer.pay_invoice(&invoice, Duration::from_secs(10)).await {
            Err(HostError::InvalidInput(reason)) if reason.contains(why) => {}
            other => panic!("{why}: {other:?}"),
        }
    }
    assert_eq!(
        signer.test.asked.load(Ordering::SeqCst),
        0,
        "the signer was not asked"
    );
    // One that could be paid is put to the signer (and fails for want of a channel).
    let payable = foreign_invoice(Currency::Regtest, Some(PAYMENT_MSAT), now);
    let outcome = payer.pay_invoice(&payable, Duration::from_secs(10)).await;
    assert!(
        !matches!(outcome, Ok(PaymentOutcome::Succeeded { .. })),
        "{outcome:?}"
    );
    assert_eq!(
        signer.test.asked.load(Ordering::SeqCst),
        1,
        "the signer was asked"
    );
    host.shutdown().await;
    drop(chain);
    let _ = std::fs::remove_dir_all(&dir);
}
