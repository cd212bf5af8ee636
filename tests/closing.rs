//! Closes on real btcd and LDK peers over TCP, with in-process signers so the test can slow
//! one down or make it refuse.
//!
//! A close asked while a payment is in flight begins (LDK refuses to begin one while the
//! channel waits for a save or a signature, which here is most of a busy channel's life),
//! the payment settles or fails cleanly, and both wallets receive their balances. A closing
//! signature the payer's signer refuses is recorded for the node's user, the channel waits in
//! its negotiation, and LDK's own deadline then closes it unilaterally: nothing is lost (a
//! sweep the payee's signer refuses is recorded once too, and swept once it allows it). An
//! HTLC still in flight when the payer closes unilaterally is claimed on chain by the payee
//! with its preimage (the claim signed by its signer), and the payer's payment succeeds from
//! that claim.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use flotilla_host::{Node, PaymentOutcome};
use flotilla_proto::{Request, Response, SignerError};
use flotilla_regtest::wait_until;
use flotilla_tests::in_process::{
    events, intercepted, mine_until, seed_signer, wait_for_mempool, Intercept, Pair,
};
use lightning::ln::channel_state::ChannelShutdownState;

const CHANNEL_SAT: u64 = 1_000_000;
const PAID_SAT: u64 = 50_000;
const PAYMENT_MSAT: u64 = PAID_SAT * 1_000;
/// What the closing transaction may pay in fees (regtest's fee estimates are the floor).
const MAX_CLOSING_FEE_SAT: u64 = 2_000;

/// Signs the peer's commitments slowly, so a payment stays in flight for a while.
struct SlowCommitments;

impl Intercept for SlowCommitments {
    fn intercept(&self, request: &Request) -> Option<Result<Response, SignerError>> {
        if matches!(request, Request::SignCounterpartyCommitment { .. }) {
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }
}

/// Refuses every closing transaction, as a fee cap below the closing fee would.
struct RefusesClosing;

impl Intercept for RefusesClosing {
    fn intercept(&self, request: &Request) -> Option<Result<Response, SignerError>> {
        matches!(request, Request::SignClosingTransaction { .. })
            .then(|| Err(SignerError::Refused("max_fee: the test's cap".into())))
    }
}

/// Refuses every sweep until disarmed, as a fee cap below the sweep's fee would; counts them.
#[derive(Default)]
struct RefusesSweeps {
    disarmed: AtomicBool,
    refused: AtomicU64,
}

impl Intercept for RefusesSweeps {
    fn intercept(&self, request: &Request) -> Option<Result<Response, SignerError>> {
        let refuse = matches!(request, Request::SpendOutputs { .. })
            && !self.disarmed.load(Ordering::SeqCst);
        refuse.then(|| {
            self.refused.fetch_add(1, Ordering::SeqCst);
            Err(SignerError::Refused("max_fee: the test's sweep cap".into()))
        })
    }
}

/// Once armed, signs the first of the peer's commitments and refuses every later one: an
/// HTLC is committed on both sides, and the commitment that would settle it is never signed.
/// Counts the claims of HTLC outputs on the peer's commitment it signs.
#[derive(Default)]
struct HoldsSettlement {
    armed: AtomicBool,
    signed: AtomicU64,
    htlc_claims: AtomicU64,
}

impl Intercept for HoldsSettlement {
    fn intercept(&self, request: &Request) -> Option<Result<Response, SignerError>> {
        if matches!(request, Request::SignCounterpartyHtlcTransaction { .. }) {
            self.htlc_claims.fetch_add(1, Ordering::SeqCst);
        }
        let commitment = matches!(request, Request::SignCounterpartyCommitment { .. });
        (commitment
            && self.armed.load(Ordering::SeqCst)
            && self.signed.fetch_add(1, Ordering::SeqCst) >= 1)
            .then(|| Err(SignerError::Refused("held by the test".into())))
    }
}

fn shutdown_states(node: &Node) -> Vec<Option<ChannelShutdownState>> {
    node.channels()
        .iter()
        .map(|c| c.channel_shutdown_state)
        .collect()
}

async fn no_channels(node: &Node, what: &str) {
    wait_until(what, Duration::from_secs(60), || node.channels().is_empty())
        .await
        .expect(what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_asked_mid_payment_begins_and_the_payment_resolves() {
    let pair = Pair::with_channel(
        "close-busy",
        Arc::new(seed_signer(1)),
        intercepted(2, SlowCommitments),
        CHANNEL_SAT,
    )
    .await;
    let (chain, payer, payee) = (&pair.chain, &pair.payer, &pair.payee);
    let left_in_wallet = payer.wallet_balance().confirmed_sat;

    let invoice = payee
        .create_invoice(Some(PAYMENT_MSAT), "before the close", 600)
        .expect("invoice");
    let hash = invoice.payment_hash().to_byte_array();
    let invoice = invoice.to_string();
    let paying = {
        let payer = payer.clone();
        tokio::spawn(async move { payer.pay_invoice(&invoice, Duration::from_secs(60)).await })
    };
    wait_until("payment in flight", Duration::from_secs(30), || {
        payer
            .channels()
            .iter()
            .any(|c| !c.pending_outbound_htlcs.is_empty())
    })
    .await
    .expect("in flight");
    let channel = payer.channels()[0].channel_id;
    payer
        .close_channel(&channel, &payee.id)
        .await
        .expect("a close asked mid-payment begins");
    // The payment resolves either way: LDK's payee fails an HTLC it decodes after it has
    // answered the shutdown (a race under load), and then the payer keeps the amount.
    let paid_sat = match paying.await.expect("pay task") {
        Ok(PaymentOutcome::Succeeded { preimage, .. }) => {
            assert_eq!(sha256::Hash::hash(&preimage).to_byte_array(), hash);
            PAID_SAT
        }
        Ok(PaymentOutcome::Failed { reason }) => {
            eprintln!("the payment in flight at the close failed cleanly: {reason}");
            0
        }
        other => panic!("the payment in flight when the close was asked: {other:?}"),
    };
    no_channels(payer, "payer's channel closed").await;
    no_channels(payee, "payee's channel closed").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    chain.mine(1).await.expect("mine");
    wait_until("payer's wallet paid", Duration::from_secs(60), || {
        let got = payer.wallet_balance().confirmed_sat - left_in_wallet;
        (CHANNEL_SAT - paid_sat - MAX_CLOSING_FEE_SAT..CHANNEL_SAT - paid_sat).contains(&got)
    })
    .await
    .expect("the payer's balance, less the closing fee, reaches its wallet");
    assert_eq!(
        payee.wallet_balance().confirmed_sat,
        paid_sat,
        "the payee's balance reaches its wallet in full (the funder pays the fee)"
    );
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_closing_signature_is_recorded_and_the_channel_still_closes() {
    let payee_signer = intercepted(2, RefusesSweeps::default());
    let pair = Pair::with_channel(
        "close-refused",
        intercepted(1, RefusesClosing),
        payee_signer.clone(),
        CHANNEL_SAT,
    )
    .await;
    let (chain, host, payer, payee) = (&pair.chain, &pair.host, &pair.payer, &pair.payee);
    let invoice = payee
        .create_invoice(Some(PAYMENT_MSAT), "then close", 600)
        .expect("invoice")
        .to_string();
    match payer.pay_invoice(&invoice, Duration::from_secs(60)).await {
        Ok(PaymentOutcome::Succeeded { .. }) => {}
        other => panic!("{other:?}"),
    }
    let channel = payer.channels()[0].channel_id;
    payer
        .close_channel(&channel, &payee.id)
        .await
        .expect("close begins");

    // The refusal reaches the node's events, naming the channel and the reason, once.
    let refusals = || events(host, payer, "signature_refused");
    wait_until("refusal recorded", Duration::from_secs(30), || {
        !refusals().is_empty()
    })
    .await
    .expect("the refusal is recorded");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recorded = refusals();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["request"], "sign_closing_transaction");
    assert_eq!(recorded[0]["channel_id"], channel.to_string());
    assert!(
        recorded[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the test's cap")),
        "{recorded:?}"
    );
    // The channel waits in its negotiation, unusable; nothing went on chain.
    let negotiating = vec![Some(ChannelShutdownState::NegotiatingClosingFee)];
    assert_eq!(shutdown_states(payer), negotiating);
    assert_eq!(shutdown_states(payee), negotiating);

    // LDK gives a negotiation two timer ticks, then closes unilaterally (the signer signs
    // the payer's commitment: its policy refuses only the closing). Ticks come each minute;
    // the test hurries them.
    for _ in 0..3 {
        payer.channel_manager.timer_tick_occurred();
        payee.channel_manager.timer_tick_occurred();
    }
    no_channels(payer, "payer's channel closed").await;
    no_channels(payee, "payee's channel closed").await;
    let closed = || events(host, payer, "channel_closed");
    wait_until("closed event", Duration::from_secs(30), || {
        !closed().is_empty()
    })
    .await
    .expect("the close is recorded");
    let reason = closed()[0]["reason"].to_string();
    assert!(reason.contains("closing_signed"), "{reason}");
    // The payer's commitment confirms; the payee's output, paid to its key directly, is
    // swept to its wallet once deep enough. Its signer refuses the sweep at first: the
    // payee's user is told once, however often the sweeper asks (at every block; the test
    // asks for it rather than wait for the node's 30 s tick).
    wait_for_mempool(chain).await;
    chain.mine(7).await.expect("mine");
    let refused = || payee_signer.test.refused.load(Ordering::SeqCst);
    let sweep = || {
        let _ = payee.sweeper.regenerate_and_broadcast_spend_if_necessary();
    };
    let asked = mine_until(chain, 30, || {
        sweep();
        refused() >= 1
    });
    assert!(asked.await, "the payee's sweep is asked for and refused");
    chain.mine(1).await.expect("mine");
    wait_until("sweep refused again", Duration::from_secs(30), || {
        sweep();
        refused() >= 2
    })
    .await
    .expect("the sweeper asks again at the next block");
    let recorded = events(host, payee, "signature_refused");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["request"], "spend_outputs");
    assert!(recorded[0]["channel_id"].is_null(), "{recorded:?}");
    assert!(
        recorded[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the test's sweep cap")),
        "{recorded:?}"
    );
    assert_eq!(payee.wallet_balance().pending_sat, 0, "nothing swept yet");

    // The signer allows it: the sweep is signed at the sweeper's next try.
    payee_signer.test.disarmed.store(true, Ordering::SeqCst);
    wait_until("payee's sweep broadcast", Duration::from_secs(60), || {
        sweep();
        payee.wallet_balance().pending_sat > 0
    })
    .await
    .expect("the payee sweeps its balance");
    // The sweep may reach the wallet before btcd's mempool (or be replaced by a fee bump).
    let swept = || {
        (PAID_SAT - MAX_CLOSING_FEE_SAT..PAID_SAT).contains(&payee.wallet_balance().confirmed_sat)
    };
    assert!(
        mine_until(chain, 12, swept).await,
        "the payee's balance, less the sweep's fee, reaches its wallet: {:?}",
        payee.wallet_balance()
    );
    assert!(payer.claimable_on_chain_sat() > CHANNEL_SAT - PAID_SAT - MAX_CLOSING_FEE_SAT);
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_htlc_in_flight_at_a_force_close_is_claimed_on_chain_with_its_preimage() {
    let payee_signer = intercepted(2, HoldsSettlement::default());
    let pair = Pair::with_channel(
        "close-htlc",
        Arc::new(seed_signer(1)),
        payee_signer.clone(),
        CHANNEL_SAT,
    )
    .await;
    let (chain, host, payer, payee) = (&pair.chain, &pair.host, &pair.payer, &pair.payee);

    // The payee claims (its monitor learns the preimage), but the commitment that would
    // settle the HTLC with the payer is never signed: the payment stays in flight.
    payee_signer.test.armed.store(true, Ordering::SeqCst);
    let invoice = payee
        .create_invoice(Some(PAYMENT_MSAT), "settled on chain", 3600)
        .expect("invoice");
    let hash = invoice.payment_hash().to_byte_array();
    let paying = {
        let (payer, invoice) = (payer.clone(), invoice.to_string());
        tokio::spawn(async move { payer.pay_invoice(&invoice, Duration::from_secs(300)).await })
    };
    wait_until("payee claimed", Duration::from_secs(30), || {
        !events(host, payee, "payment_received").is_empty()
    })
    .await
    .expect("the payee claims the HTLC");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !paying.is_finished(),
        "the payer cannot know the preimage yet"
    );

    // The payer closes unilaterally with the HTLC on its commitment. The payee's monitor
    // claims it on chain with the preimage (signed by its signer), and the payer's learns the
    // preimage from that claim: the payment succeeds.
    let channel = payer.channels()[0].channel_id;
    payer
        .force_close_channel(&channel, &payee.id)
        .expect("force close");
    mine_until(chain, 20, || paying.is_finished()).await;
    match paying.await.expect("pay task") {
        Ok(PaymentOutcome::Succeeded { preimage, .. }) => {
            assert_eq!(sha256::Hash::hash(&preimage).to_byte_array(), hash)
        }
        other => panic!("the HTLC was not settled on chain: {other:?}"),
    }
    assert!(payee_signer.test.htlc_claims.load(Ordering::SeqCst) >= 1);
    // The payee's claim reaches its wallet (less the claim's fee).
    wait_until(
        "payee's claim in its wallet",
        Duration::from_secs(30),
        || {
            let got = payee.wallet_balance().confirmed_sat;
            (PAID_SAT - MAX_CLOSING_FEE_SAT..PAID_SAT).contains(&got)
        },
    )
    .await
    .expect("the HTLC's value reaches the payee's wallet");
    pair.stop().await;
}
