//! On-chain requests: sweeps and the wallet's PSBTs.

use super::*;
use crate::fee_cap::{MARKET_TTL_SECS, MAX_MARKET_FEERATE_PER_KW};
use crate::seed_signer::MarketError;

/// A sweep of one output of `value_sat` paid to the seed's destination script, at `feerate`.
fn sweep_request(value_sat: u64, change: ScriptBuf, feerate: u32) -> Request {
    Request::SpendOutputs {
        descriptors: vec![SpendableOutputDescriptor::StaticOutput {
            outpoint: OutPoint {
                txid: Txid::from_byte_array([9; 32]),
                index: 1,
            },
            output: TxOut {
                value: Amount::from_sat(value_sat),
                script_pubkey: ldk_keys(&SEED)
                    .get_destination_script([0; 32])
                    .expect("script"),
            },
            channel_keys_id: None,
        }],
        outputs: vec![],
        change_script: change,
        feerate_sat_per_1000_weight: feerate,
        locktime: None,
    }
}

#[test]
fn sweeps_pay_only_the_wallet_within_the_fee_cap() {
    let signer = signer();
    let sweep =
        |change: ScriptBuf, feerate: u32| signer.handle(sweep_request(100_000, change, feerate));
    let own = signer.handover().shutdown_script;
    let foreign = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([1; 20]));
    refused(sweep(foreign, 253), "destination_not_allowed");
    refused(sweep(own.clone(), 200_000), "max_fee");
    match sweep(own.clone(), 253) {
        Ok(Response::Transaction(tx)) => {
            assert_eq!(tx.output.len(), 1);
            assert_eq!(tx.output[0].script_pubkey, own);
            assert!(!tx.input[0].witness.is_empty(), "signed");
        }
        other => panic!("{other:?}"),
    }
}

/// A fee spike the app reports raises the cap for an hour; the host has no say in it.
#[test]
fn a_market_the_app_reports_raises_the_fee_cap_for_an_hour() {
    let clock = Arc::new(AtomicU64::new(1_000));
    let time = clock.clone();
    let signer = signer().with_clock(Box::new(move || time.load(Ordering::SeqCst)));
    let own = signer.handover().shutdown_script;
    let sweep = || signer.handle(sweep_request(1_000_000, own.clone(), 200_000));
    refused(sweep(), "max_fee");
    assert_eq!(
        signer.report_market_feerate(MAX_MARKET_FEERATE_PER_KW + 1),
        Err(MarketError::OutOfRange(MAX_MARKET_FEERATE_PER_KW + 1))
    );
    refused(sweep(), "max_fee");
    // 1,000 sat/vB: a hundred times the reference market, a hundred times the cap.
    signer.report_market_feerate(250_000).expect("in range");
    assert!(matches!(sweep(), Ok(Response::Transaction(_))));
    clock.fetch_add(MARKET_TTL_SECS, Ordering::SeqCst);
    refused(sweep(), "max_fee");
}

#[test]
fn psbt_fee_is_capped() {
    let signer = signer();
    let own = signer.handover().shutdown_script;
    let psbt = |fee: u64| {
        wallet_psbt(
            1,
            100_000,
            vec![TxOut {
                value: Amount::from_sat(100_000 - fee),
                script_pubkey: own.clone(),
            }],
        )
    };
    refused(
        signer.handle(Request::SignPsbt { psbt: psbt(20_001) }),
        "max_fee",
    );
    assert!(matches!(
        signer.handle(Request::SignPsbt { psbt: psbt(20_000) }),
        Ok(Response::Psbt(_))
    ));
    // An amount nothing proves: the fee is unknown, so nothing is signed.
    let mut unknown = psbt(1);
    unknown.inputs[0].witness_utxo = None;
    unknown.inputs[0].non_witness_utxo = None;
    refused(
        signer.handle(Request::SignPsbt { psbt: unknown }),
        "input_amount_unproven",
    );
}

/// A key of the signer's wallet far beyond the addresses it recognises by script, with
/// the key origin bdk writes into a PSBT for change.
fn wallet_key(chain: u32, index: u32) -> (PublicKey, Fingerprint, DerivationPath) {
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(Network::Regtest, &SEED).expect("master");
    let path: DerivationPath = format!("m/84'/1'/0'/{chain}/{index}")
        .parse()
        .expect("path");
    let key = master.derive_priv(&secp, &path).expect("key");
    (
        key.private_key.public_key(&secp),
        master.fingerprint(&secp),
        path,
    )
}

#[test]
fn wallet_spends_pay_only_the_wallet_allowed_scripts_and_approved_fundings() {
    let signer = signer();
    let sign = |psbt: Psbt| signer.handle(Request::SignPsbt { psbt });
    let pay = |script: ScriptBuf| {
        wallet_psbt(
            2,
            100_000,
            vec![TxOut {
                value: Amount::from_sat(99_000),
                script_pubkey: script,
            }],
        )
    };
    let foreign = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([1; 20]));
    refused(sign(pay(foreign.clone())), "destination_not_allowed");

    // Change far beyond the lookahead is the wallet's when its key origin proves it.
    let (key, fingerprint, path) = wallet_key(1, 5_000);
    let change = ScriptBuf::new_p2wpkh(&CompressedPublicKey(key).wpubkey_hash());
    refused(sign(pay(change.clone())), "destination_not_allowed");
    let mut proven = pay(change.clone());
    proven.outputs[0]
        .bip32_derivation
        .insert(key, (fingerprint, path.clone()));
    assert!(matches!(sign(proven), Ok(Response::Psbt(_))));
    // A key origin of the wallet does not vouch for another script.
    let mut lying = pay(foreign.clone());
    lying.outputs[0]
        .bip32_derivation
        .insert(key, (fingerprint, path));
    refused(sign(lying), "destination_not_allowed");

    // A channel's funding: only of an approved open we fund, its value, to a 2-of-2 with
    // its funding key, in one transaction.
    let ch = Channel::approved(&signer, 3, true, 0);
    let unapproved = Channel::unapproved(&signer, 4, true);
    let inbound = Channel::open(&signer, 5);
    for other in [&unapproved, &inbound] {
        refused(
            sign(funding_psbt(6, CHANNEL_SAT, other.funding_redeemscript())),
            "destination_not_allowed",
        );
    }
    refused(
        sign(funding_psbt(6, CHANNEL_SAT - 1, ch.funding_redeemscript())),
        "destination_not_allowed",
    );
    let peers_only = make_funding_redeemscript(
        &ch.peer_pubkeys().funding_pubkey,
        &inbound.peer_pubkeys().funding_pubkey,
    );
    refused(
        sign(funding_psbt(6, CHANNEL_SAT, peers_only)),
        "destination_not_allowed",
    );
    let mut hidden = funding_psbt(6, CHANNEL_SAT, ch.funding_redeemscript());
    hidden.outputs[0].witness_script = None;
    refused(sign(hidden), "destination_not_allowed");
    // The channel's first signature binds it to the funding its parameters name; the funding
    // is signed only once the peer signed our first commitment and the signer validated it.
    let funding = funding_psbt(6, CHANNEL_SAT, ch.funding_redeemscript());
    let txid = funding.unsigned_tx.compute_txid();
    let unfunded = Channel {
        params: ChannelTransactionParameters {
            funding_outpoint: Some(OutPoint { txid, index: 0 }),
            ..ch.params.clone()
        },
        peer: ch.peer.clone(),
        secp: Secp256k1::new(),
        ..ch
    };
    refused(sign(funding.clone()), "funding_before_countersigned");
    let first = || unfunded.counterparty_tx(TOP, CHANNEL_SAT - 10_000, vec![]);
    unfunded
        .sign_counterparty(&signer, first())
        .expect("the first commitment binds the funding");
    refused(sign(funding.clone()), "funding_before_countersigned");
    unfunded
        .validate_holder(
            &signer,
            unfunded.holder_tx_with(&signer, TOP, CHANNEL_SAT - 10_000, vec![]),
        )
        .expect("the peer signed our first commitment");
    assert!(matches!(sign(funding.clone()), Ok(Response::Psbt(_))));
    // The same transaction again (a retry) signs; another one for the same open does not.
    assert!(matches!(sign(funding), Ok(Response::Psbt(_))));
    refused(
        sign(funding_psbt(
            7,
            CHANNEL_SAT,
            unfunded.funding_redeemscript(),
        )),
        "destination_not_allowed",
    );
    // A funding must spend segwit outputs only (a non-segwit input lets the id change, and
    // the commitments signed for the channel spend that id).
    let legacy_ch = Channel::approved(&signer, 9, true, 0);
    let mut legacy = funding_psbt(9, CHANNEL_SAT, legacy_ch.funding_redeemscript());
    let mut previous = legacy.inputs[0]
        .non_witness_utxo
        .take()
        .expect("previous tx");
    previous.output[0].script_pubkey =
        ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::from_byte_array([2; 20]));
    legacy.unsigned_tx.input[0].previous_output.txid = previous.compute_txid();
    legacy.inputs[0].witness_utxo = None;
    legacy.inputs[0].non_witness_utxo = Some(previous);
    let legacy_ch = Channel {
        params: ChannelTransactionParameters {
            funding_outpoint: Some(OutPoint {
                txid: legacy.unsigned_tx.compute_txid(),
                index: 0,
            }),
            ..legacy_ch.params.clone()
        },
        peer: legacy_ch.peer.clone(),
        secp: Secp256k1::new(),
        ..legacy_ch
    };
    legacy_ch
        .sign_counterparty(
            &signer,
            legacy_ch.counterparty_tx(TOP, CHANNEL_SAT - 10_000, vec![]),
        )
        .expect("first commitment");
    legacy_ch
        .validate_holder(
            &signer,
            legacy_ch.holder_tx_with(&signer, TOP, CHANNEL_SAT - 10_000, vec![]),
        )
        .expect("validated");
    refused(sign(legacy), "funding_input_not_segwit");

    // The channel must be funded by that transaction.
    let elsewhere = Channel {
        params: ChannelTransactionParameters {
            funding_outpoint: Some(OutPoint {
                txid: Txid::from_byte_array([8; 32]),
                index: 0,
            }),
            ..unfunded.params.clone()
        },
        peer: unfunded.peer.clone(),
        secp: Secp256k1::new(),
        ..unfunded
    };
    refused(
        elsewhere.sign_counterparty(
            &signer,
            elsewhere.counterparty_tx(TOP, CHANNEL_SAT - 10_000, vec![]),
        ),
        // Its parameters, with that funding, were pinned by its first signature.
        "channel_parameters_changed",
    );
    unfunded
        .sign_counterparty(&signer, first())
        .expect("the funded channel signs");
}
