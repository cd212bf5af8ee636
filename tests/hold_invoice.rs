//! Hold invoices on real btcd and LDK peers over TCP, with in-process signers.
//!
//! A payment to a hold invoice waits, held in the channel, until the payee's user settles it
//! with the preimage (the payer learns it) or cancels it (the payer gets its money back). A
//! held payment that is never released off chain is taken back by the payer on chain once
//! its HTLC expires: the payer's signer signs the HTLC-timeout transaction and the payer's
//! wallet recovers the whole channel less fees.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use flotilla_host::store::{Direction, PaymentRow, PaymentStatus};
use flotilla_host::{Host, HostError, Node, PaymentOutcome, DEFAULT_HOLD_CLTV_DELTA};
use flotilla_proto::{Request, Response, SignerError};
use flotilla_regtest::wait_until;
use flotilla_tests::in_process::{
    events, intercepted, mine_until, outbound_msat, seed_signer, Intercept, Pair,
};
use lightning::ln::channelmanager::MIN_FINAL_CLTV_EXPIRY_DELTA;
use tokio::task::JoinHandle;

const CHANNEL_SAT: u64 = 1_000_000;
const PAYMENT_MSAT: u64 = 50_000_000;

fn hash_of(preimage: [u8; 32]) -> [u8; 32] {
    sha256::Hash::hash(&preimage).to_byte_array()
}

fn hex(bytes: &[u8]) -> String {
    bitcoin::hex::DisplayHex::to_lower_hex_string(bytes)
}

/// Pays `invoice` from `payer` in a task of its own: a held payment keeps its caller waiting.
fn pay(payer: &Arc<Node>, invoice: String) -> JoinHandle<PaymentOutcome> {
    let payer = payer.clone();
    tokio::spawn(async move {
        payer
            .pay_invoice(&invoice, Duration::from_secs(600))
            .await
            .expect("an outcome")
    })
}

fn inbound(host: &Host, payee: &Node, hash: [u8; 32]) -> Option<PaymentRow> {
    host.store()
        .payment(&payee.id.to_string(), &hex(&hash), Direction::Inbound)
        .expect("payments")
}

async fn status_becomes(host: &Host, payee: &Node, hash: [u8; 32], status: PaymentStatus) {
    wait_until("payment status", Duration::from_secs(60), || {
        inbound(host, payee, hash).is_some_and(|row| row.status == status)
    })
    .await
    .unwrap_or_else(|_| panic!("{status}: {:?}", inbound(host, payee, hash)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_payment_waits_for_its_user_to_settle_or_cancel_it() {
    let pair = Pair::with_channel(
        "hold",
        Arc::new(seed_signer(1)),
        Arc::new(seed_signer(2)),
        CHANNEL_SAT,
    )
    .await;
    let (chain, host, payer, payee) = (&pair.chain, &pair.host, &pair.payer, &pair.payee);
    let before = outbound_msat(payer);
    let hold_invoice = |hash: [u8; 32]| {
        payee.create_hold_invoice(PAYMENT_MSAT, hash, "escrow", 600, DEFAULT_HOLD_CLTV_DELTA)
    };

    // Settled: the payer's payment completes with the user's preimage.
    let preimage = [7; 32];
    let hash = hash_of(preimage);
    let invoice = hold_invoice(hash).expect("invoice").to_string();
    assert!(
        matches!(hold_invoice(hash), Err(HostError::InvalidInput(_))),
        "one invoice per hash"
    );
    let paying = pay(payer, invoice);
    status_becomes(host, payee, hash, PaymentStatus::Held).await;
    let held = events(host, payee, "payment_held");
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["payment_hash"], hex(&hash));
    assert_eq!(held[0]["amount_msat"], PAYMENT_MSAT);
    let deadline = held[0]["claim_deadline"]
        .as_u64()
        .expect("a claim deadline");
    let height = u64::from(chain.height().await.expect("height"));
    assert!(
        deadline > height + u64::from(DEFAULT_HOLD_CLTV_DELTA) - 30,
        "about the invoice's delta from now: {deadline} at {height}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!paying.is_finished(), "the payer waits while it is held");
    assert!(
        matches!(
            payee.settle_held_payment([9; 32]),
            Err(HostError::NotFound(_))
        ),
        "a preimage of no held payment is refused"
    );
    payee.settle_held_payment(preimage).expect("settle");
    match paying.await.expect("payer task") {
        PaymentOutcome::Succeeded { preimage: got, .. } => assert_eq!(got, preimage),
        other => panic!("{other:?}"),
    }
    status_becomes(host, payee, hash, PaymentStatus::Succeeded).await;
    let row = inbound(host, payee, hash).expect("row");
    assert_eq!(row.preimage, Some(hex(&preimage)));
    assert_eq!(row.amount_msat, Some(PAYMENT_MSAT));

    // Cancelled while held: the payer's payment fails and its money stays.
    let cancelled = hash_of([8; 32]);
    let paying = pay(payer, hold_invoice(cancelled).expect("invoice").to_string());
    status_becomes(host, payee, cancelled, PaymentStatus::Held).await;
    payee.cancel_hold_invoice(cancelled).expect("cancel");
    match paying.await.expect("payer task") {
        PaymentOutcome::Failed { .. } => {}
        other => panic!("{other:?}"),
    }
    let row = inbound(host, payee, cancelled).expect("row");
    assert_eq!(row.status, PaymentStatus::Failed);
    assert_eq!(
        row.failure_reason.as_deref(),
        Some("cancelled by the node's user")
    );
    assert!(matches!(
        payee.settle_held_payment([8; 32]),
        Err(HostError::InvalidInput(_))
    ));

    // Cancelled before it is paid: a payment to it is sent back at once.
    let unpaid = hash_of([10; 32]);
    let invoice = hold_invoice(unpaid).expect("invoice").to_string();
    payee.cancel_hold_invoice(unpaid).expect("cancel unpaid");
    match pay(payer, invoice).await.expect("payer task") {
        PaymentOutcome::Failed { .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        inbound(host, payee, unpaid).map(|r| r.status),
        Some(PaymentStatus::Failed)
    );
    assert_eq!(
        events(host, payee, "payment_held").len(),
        2,
        "only two held"
    );
    assert_eq!(events(host, payee, "payment_cancelled").len(), 2);
    assert!(matches!(
        payee.cancel_hold_invoice(hash_of([11; 32])),
        Err(HostError::NotFound(_))
    ));
    assert!(matches!(
        payee.create_hold_invoice(PAYMENT_MSAT, [12; 32], "short", 600, 10),
        Err(HostError::InvalidInput(_))
    ));

    // Exactly the settled payment moved.
    let after = outbound_msat(payer);
    assert_eq!(before - after, PAYMENT_MSAT, "{before} -> {after}");
    pair.stop().await;
}

/// Counts the HTLC-timeout transactions the payer's signer signs.
#[derive(Default)]
struct CountsHtlcTimeouts(AtomicU64);

impl Intercept for CountsHtlcTimeouts {
    fn intercept(&self, request: &Request) -> Option<Result<Response, SignerError>> {
        if matches!(request, Request::SignHolderHtlcTransaction { .. }) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        None
    }
}

/// Once armed, refuses the peer's commitments: the payee can no longer send a held HTLC
/// back off chain (as a payee gone for good could not).
#[derive(Default)]
struct Stuck(AtomicBool);

impl Intercept for Stuck {
    fn intercept(&self, request: &Request) -> Option<Result<Response, SignerError>> {
        (matches!(request, Request::SignCounterpartyCommitment { .. })
            && self.0.load(Ordering::SeqCst))
        .then(|| Err(SignerError::Refused("held by the test".into())))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_payment_never_released_is_taken_back_on_chain_by_the_payer() {
    const HTLC_SAT: u64 = 90_000;
    /// Fees of the open, the commitment, the HTLC-timeout and the sweeps, with room to spare.
    const FEES_SAT: u64 = 30_000;
    let payer_signer = intercepted(1, CountsHtlcTimeouts::default());
    let payee_signer = intercepted(2, Stuck::default());
    let pair = Pair::with_channel(
        "hold-timeout",
        payer_signer.clone(),
        payee_signer.clone(),
        CHANNEL_SAT,
    )
    .await;
    let (chain, host, payer, payee) = (&pair.chain, &pair.host, &pair.payer, &pair.payee);
    let hash = hash_of([7; 32]);
    let invoice = payee
        .create_hold_invoice(
            HTLC_SAT * 1_000,
            hash,
            "never released",
            600,
            MIN_FINAL_CLTV_EXPIRY_DELTA,
        )
        .expect("invoice")
        .to_string();
    let paying = pay(payer, invoice);
    status_becomes(host, payee, hash, PaymentStatus::Held).await;
    payee_signer.test.0.store(true, Ordering::SeqCst);

    // Past the HTLC's expiry (and LDK's grace) the payer closes and times the HTLC out.
    let expiry = payer.channels()[0].pending_outbound_htlcs[0].cltv_expiry;
    let height = chain.height().await.expect("height");
    chain.mine(expiry + 4 - height).await.expect("mine");
    wait_until("payer closed", Duration::from_secs(60), || {
        payer.channels().is_empty()
    })
    .await
    .expect("the payer closes the channel");
    // A block at a time until the HTLC-timeout confirms deep enough to fail the payment.
    mine_until(chain, 30, || paying.is_finished()).await;
    match paying.await.expect("payer task") {
        PaymentOutcome::Failed { .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(
        payer_signer.test.0.load(Ordering::SeqCst) >= 1,
        "the payer's signer signed the HTLC-timeout"
    );
    // The payee's LDK gave up the payment at its claim deadline.
    assert_eq!(
        inbound(host, payee, hash).map(|r| r.status),
        Some(PaymentStatus::Failed)
    );

    // The payer's outputs (its balance and the timed-out HTLC) wait out the payee's
    // to_self_delay, then are swept to its wallet.
    chain.mine(144).await.expect("mine");
    // The wallet had the channel and 100,000 sat more before the open; without the HTLC it
    // could not get back above the channel and 10,000 sat.
    let recovered = || {
        let _ = payer.sweeper.regenerate_and_broadcast_spend_if_necessary();
        payer.wallet_balance().confirmed_sat > CHANNEL_SAT + 100_000 - FEES_SAT
    };
    assert!(
        mine_until(chain, 20, recovered).await,
        "the whole channel, the HTLC included, less fees: {:?}",
        payer.wallet_balance()
    );
    pair.stop().await;
}
