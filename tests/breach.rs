//! A peer that broadcasts a commitment it revoked loses the whole channel to the node's
//! justice transaction, which the node's signer signs. Real btcd and LDK peers over TCP;
//! in-process signers, so the test can keep what the cheating peer's signer was shown.
//!
//! The cheater is a hosted node too: the test keeps each holder commitment its signer is
//! sent (with the peer's signature), and, once the cheater has paid part of its balance back
//! and revoked the richer commitment, signs that one with the cheater's own channel keys
//! (derived from its seed as LDK's `KeysManager` does) and broadcasts it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{EcdsaSighashType, Transaction, Witness};
use flotilla_host::chain::rpc::RpcClient;
use flotilla_host::{Node, PaymentOutcome};
use flotilla_proto::{KeysId, Request, Response, SignerError};
use flotilla_regtest::wait_until;
use flotilla_tests::in_process::{intercepted, mine_until, Intercept, Pair};
use lightning::ln::chan_utils::{
    make_funding_redeemscript, ChannelTransactionParameters, HolderCommitmentTransaction,
};
use lightning::sign::ecdsa::EcdsaChannelSigner;
use lightning::sign::KeysManager;

const CHANNEL_SAT: u64 = 1_000_000;
/// What the cheater is paid, then pays back: the revoked commitment gives it `PAID_SAT`,
/// the current one `PAID_SAT - PAID_BACK_SAT`.
const PAID_SAT: u64 = 90_000;
const PAID_BACK_SAT: u64 = 60_000;
/// What fees (commitment, justice, sweep) may take from what the victim recovers.
const MAX_FEES_SAT: u64 = 10_000;
const CHEATER_SEED: u8 = 2;

/// Keeps the cheater's holder commitments (newest last) and its channel's parameters.
#[derive(Default)]
struct KeepsCommitments {
    seen: Mutex<Vec<(KeysId, HolderCommitmentTransaction)>>,
    params: Mutex<Option<ChannelTransactionParameters>>,
}

impl Intercept for KeepsCommitments {
    fn intercept(&self, request: &Request) -> Option<Result<Response, SignerError>> {
        let holder = match request {
            Request::ReleaseCommitmentSecret {
                keys_id,
                holder: Some(holder),
                ..
            }
            | Request::ValidateHolderCommitment { keys_id, holder } => Some((keys_id, holder)),
            _ => None,
        };
        if let Some((keys_id, holder)) = holder {
            self.seen
                .lock()
                .unwrap()
                .push((*keys_id, holder.tx.clone()));
        }
        if let Some(params) = request.params() {
            *self.params.lock().unwrap() = Some(params.clone());
        }
        None
    }
}

/// Counts the justice transactions the victim's signer signs.
#[derive(Default)]
struct CountsJustice {
    signed: AtomicU64,
}

impl Intercept for CountsJustice {
    fn intercept(&self, request: &Request) -> Option<Result<Response, SignerError>> {
        if matches!(
            request,
            Request::SignJusticeRevokedOutput { .. } | Request::SignJusticeRevokedHtlc { .. }
        ) {
            self.signed.fetch_add(1, Ordering::SeqCst);
        }
        None
    }
}

async fn pay(payer: &Node, payee: &Node, sat: u64) {
    let invoice = payee
        .create_invoice(Some(sat * 1_000), "breach", 600)
        .expect("invoice")
        .to_string();
    match payer.pay_invoice(&invoice, Duration::from_secs(60)).await {
        Ok(PaymentOutcome::Succeeded { .. }) => {}
        other => panic!("payment: {other:?}"),
    }
    for node in [payer, payee] {
        wait_until("settled", Duration::from_secs(30), || {
            node.channels()
                .iter()
                .all(|c| c.pending_outbound_htlcs.is_empty() && c.pending_inbound_htlcs.is_empty())
        })
        .await
        .expect("settled");
    }
    // The last commitment of the settlement reaches the signer with the next release.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// The cheater's commitment signed by both sides: the peer's signature it was sent and its
/// own, made with its channel keys.
fn fully_signed(
    keys_id: &KeysId,
    params: &ChannelTransactionParameters,
    holder: &HolderCommitmentTransaction,
) -> Transaction {
    let secp = Secp256k1::new();
    let keys = KeysManager::new(&[CHEATER_SEED; 32], 1, 2, true).derive_channel_keys(keys_id);
    let own = keys
        .sign_holder_commitment(params, holder, &secp)
        .expect("the cheater signs its own commitment");
    let ours = params.holder_pubkeys.funding_pubkey;
    let theirs = params
        .counterparty_parameters
        .as_ref()
        .expect("counterparty")
        .pubkeys
        .funding_pubkey;
    let redeem = make_funding_redeemscript(&ours, &theirs);
    let sig = |s| bitcoin::ecdsa::Signature {
        signature: s,
        sighash_type: EcdsaSighashType::All,
    };
    let (first, second) = if ours.serialize() < theirs.serialize() {
        (own, holder.counterparty_sig)
    } else {
        (holder.counterparty_sig, own)
    };
    let mut tx = holder.trust().built_transaction().transaction.clone();
    let mut witness = Witness::new();
    witness.push(Vec::<u8>::new());
    witness.push_ecdsa_signature(&sig(first));
    witness.push_ecdsa_signature(&sig(second));
    witness.push(redeem.as_bytes());
    tx.input[0].witness = witness;
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_commitment_on_chain_loses_the_cheater_the_channel() {
    let victim_signer = intercepted(1, CountsJustice::default());
    let cheater_signer = intercepted(CHEATER_SEED, KeepsCommitments::default());
    let pair = Pair::with_channel(
        "breach",
        victim_signer.clone(),
        cheater_signer.clone(),
        CHANNEL_SAT,
    )
    .await;
    let (chain, victim, cheater) = (&pair.chain, &pair.payer, &pair.payee);

    pay(victim, cheater, PAID_SAT).await;
    let (keys_id, richer) = cheater_signer
        .test
        .seen
        .lock()
        .unwrap()
        .iter()
        .min_by_key(|(_, tx)| tx.commitment_number())
        .cloned()
        .expect("a holder commitment");
    pay(cheater, victim, PAID_BACK_SAT).await;
    let newest = cheater_signer
        .test
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, tx)| tx.commitment_number())
        .min()
        .unwrap();
    assert!(newest < richer.commitment_number(), "revoked since");
    let params = cheater_signer.test.params.lock().unwrap().clone().unwrap();
    let cheat = fully_signed(&keys_id, &params, &richer);
    assert!(
        cheat.output.iter().any(|o| o.value.to_sat() == PAID_SAT),
        "the revoked commitment pays the cheater {PAID_SAT} sat: {:?}",
        cheat.output
    );

    let victim_wallet = victim.wallet_balance().confirmed_sat;
    let rpc = RpcClient::new(&chain.rpc_config()).expect("rpc");
    rpc.call::<String>(
        "sendrawtransaction",
        serde_json::json!([serialize_hex(&cheat)]),
    )
    .await
    .expect("btcd accepts the fully signed revoked commitment");
    chain.mine(1).await.expect("mine");

    // The victim's monitor sees a revoked commitment: its justice transaction takes the
    // cheater's output, and its own output is swept once deep enough. A block a second until
    // both reach its wallet.
    let recovered = || {
        victim
            .wallet_balance()
            .confirmed_sat
            .saturating_sub(victim_wallet)
    };
    // The test asks for the sweep rather than wait for the node's 30 s tick.
    mine_until(chain, 20, || {
        let _ = victim.sweeper.regenerate_and_broadcast_spend_if_necessary();
        recovered() > CHANNEL_SAT - MAX_FEES_SAT
    })
    .await;
    assert!(
        victim_signer.test.signed.load(Ordering::SeqCst) >= 1,
        "the victim's signer signed a justice transaction"
    );
    // The whole channel less fees: the cheater's output too, so the cheater gets nothing.
    // (Its wallet, never funded, would show nothing either way within these few blocks.)
    assert!(
        recovered() > CHANNEL_SAT - MAX_FEES_SAT,
        "the victim recovers the whole channel less fees: {} sat",
        recovered()
    );
    pair.stop().await;
}
