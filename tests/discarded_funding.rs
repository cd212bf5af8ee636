//! A channel whose funding never went out leaves the payer's wallet whole.
//!
//! The payee's signer holds back its signature of the payer's first commitment, so the
//! payer's funding transaction is built and handed to LDK but cannot be broadcast; the payer
//! closes the channel meanwhile and LDK discards the funding. The wallet must count nothing
//! spent, and the same coins must fund the next channel, which the wallet counts once LDK
//! broadcasts it. Real btcd, real LDK peers over TCP; in-process signers, so the test can
//! hold one back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_host::Node;
use flotilla_proto::{Request, Response, SignerError};
use flotilla_regtest::wait_until;
use flotilla_tests::in_process::{fund, intercepted, seed_signer, Intercept, Pair};

const FUND_SAT: u64 = 1_100_000;
const CHANNEL_SAT: u64 = 1_000_000;

/// Refuses every counterparty commitment while `hold` is set.
struct Holds {
    hold: AtomicBool,
}

impl Intercept for Holds {
    fn intercept(&self, request: &Request) -> Option<Result<Response, SignerError>> {
        let held = matches!(request, Request::SignCounterpartyCommitment { .. });
        (held && self.hold.load(Ordering::SeqCst))
            .then(|| Err(SignerError::Refused("held by the test".into())))
    }
}

async fn funding_handed_to_ldk(payer: &Node, what: &str) {
    wait_until(what, Duration::from_secs(60), || {
        let channels = payer.channels();
        !channels.is_empty() && channels.iter().all(|c| c.funding_txo.is_some())
    })
    .await
    .expect("funding transaction handed to LDK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_funding_leaves_the_wallet_whole() {
    let payee_signer = intercepted(
        2,
        Holds {
            hold: AtomicBool::new(true),
        },
    );
    let pair = Pair::start(
        "discarded-funding",
        Arc::new(seed_signer(1)),
        payee_signer.clone(),
    )
    .await;
    let (chain, host, payer, payee) = (&pair.chain, &pair.host, &pair.payer, &pair.payee);

    fund(chain, payer, FUND_SAT).await;
    payer
        .connect(payee.id, payee.listen_addr())
        .await
        .expect("connect");

    // The funding is built and handed to LDK, but waits for the payee's signature.
    payer.open_channel(payee.id, CHANNEL_SAT, 0).expect("open");
    funding_handed_to_ldk(payer, "first funding built").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let balance = payer.wallet_balance();
    assert_eq!(
        (balance.confirmed_sat, balance.pending_sat),
        (FUND_SAT, 0),
        "nothing counted spent before the broadcast"
    );
    let channel = payer.channels().pop().expect("the channel");
    payer
        .force_close_channel(&channel.channel_id, &payee.id)
        .expect("close the unfunded channel");
    let payer_id = payer.id.to_string();
    wait_until("funding discarded", Duration::from_secs(30), || {
        host.store()
            .events(&payer_id, 0, 100)
            .map(|events| events.iter().any(|e| e.kind == "discard_funding"))
            .unwrap_or(false)
    })
    .await
    .expect("LDK discards the funding");
    let balance = payer.wallet_balance();
    assert_eq!(
        (balance.confirmed_sat, balance.pending_sat),
        (FUND_SAT, 0),
        "the discarded funding left the wallet whole"
    );

    // The same coin (the wallet's only one) funds the next channel, counted once broadcast.
    payee_signer.test.hold.store(false, Ordering::SeqCst);
    payer
        .open_channel(payee.id, CHANNEL_SAT, 0)
        .expect("open again");
    funding_handed_to_ldk(payer, "second funding built").await;
    wait_until(
        "funding broadcast and counted",
        Duration::from_secs(60),
        || payer.wallet_balance().confirmed_sat == 0,
    )
    .await
    .expect("the wallet counts the broadcast funding");
    let change = payer.wallet_balance().pending_sat;
    assert!(
        change > 0 && change < FUND_SAT - CHANNEL_SAT,
        "change {change}"
    );
    chain.mine(3).await.expect("mine");
    wait_until("channel usable", Duration::from_secs(60), || {
        payer.channels().iter().any(|c| c.is_usable)
    })
    .await
    .expect("channel usable");
    pair.stop().await;
}
