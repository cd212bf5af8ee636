//! Channel requests: parameters, commitments, revocations, closes, opens, retirement.

use super::*;

#[test]
fn a_channel_keeps_the_parameters_it_was_first_signed_with() {
    let signer = signer();
    let ch = Channel::open(&signer, 1);
    ch.sign_counterparty(&signer, ch.counterparty_tx(TOP - 1, 400_000, vec![]))
        .expect("the first signature pins the parameters");
    // The host names another peer for the same channel keys: refused.
    let other_peer = ldk_keys(&PEER_SEED).derive_channel_keys(&[99; 32]);
    let mut params = ch.params.clone();
    params.counterparty_parameters = Some(CounterpartyChannelTransactionParameters {
        pubkeys: other_peer.pubkeys(&ch.secp),
        selected_contest_delay: 144,
    });
    let swapped = Channel {
        keys_id: ch.keys_id,
        params,
        peer: other_peer,
        secp: Secp256k1::new(),
    };
    refused(
        swapped.sign_counterparty(&signer, swapped.counterparty_tx(TOP - 2, 400_000, vec![])),
        "channel_parameters_changed",
    );
    // Or another channel value.
    let mut params = ch.params.clone();
    params.channel_value_satoshis += 1;
    let resized = Channel {
        keys_id: ch.keys_id,
        params,
        peer: ch.peer.clone(),
        secp: Secp256k1::new(),
    };
    refused(
        resized.sign_counterparty(&signer, resized.counterparty_tx(TOP - 2, 400_000, vec![])),
        "channel_parameters_changed",
    );
    // The channel's own parameters still sign.
    ch.sign_counterparty(&signer, ch.counterparty_tx(TOP - 2, 400_000, vec![]))
        .expect("the pinned parameters");
}

#[test]
fn counterparty_commitment_signatures_verify_and_old_ones_are_refused() {
    let signer = signer();
    let ch = Channel::open(&signer, 1);
    approve(&signer, 1, 5_000_000).expect("payment approved");
    let tx = ch.counterparty_tx(TOP - 1, 400_000, vec![htlc(false, 5_000_000, 1)]);
    let (commitment, htlcs) = match ch.sign_counterparty(&signer, tx.clone()) {
        Ok(Response::CommitmentSignatures { commitment, htlcs }) => (commitment, htlcs),
        other => panic!("{other:?}"),
    };
    let redeem = make_funding_redeemscript(
        &ch.params.holder_pubkeys.funding_pubkey,
        &ch.peer_pubkeys().funding_pubkey,
    );
    let sighash = tx
        .trust()
        .built_transaction()
        .get_sighash_all(&redeem, CHANNEL_SAT);
    ch.secp
        .verify_ecdsa(
            &sighash,
            &commitment,
            &ch.params.holder_pubkeys.funding_pubkey,
        )
        .expect("commitment signature verifies");
    assert_eq!(htlcs.len(), 1);

    // LDK may ask again for the same transaction.
    ch.sign_counterparty(&signer, tx).expect("same again");
    // The same number with other contents, or an older number: refused.
    refused(
        ch.sign_counterparty(
            &signer,
            ch.counterparty_tx(TOP - 1, 390_000, vec![htlc(false, 5_000_000, 1)]),
        ),
        "conflicting_counterparty_commitment",
    );
    refused(
        ch.sign_counterparty(&signer, ch.counterparty_tx(TOP, 400_000, vec![])),
        "stale_counterparty_commitment",
    );
    ch.sign_counterparty(&signer, ch.counterparty_tx(TOP - 2, 400_000, vec![]))
        .expect("newer");
}

#[test]
fn a_retired_channel_keeps_only_a_tombstone_and_signs_nothing_again() {
    let signer = signer();
    let ch = Channel::open(&signer, 1);
    let other = Channel::open(&signer, 2);
    ch.sign_counterparty(&signer, ch.counterparty_tx(TOP - 1, 400_000, vec![]))
        .expect("signed while open");
    assert!(signer.state().channels[&ch.keys_id].parameters.is_some());

    let retire = Request::RetireChannel {
        keys_id: ch.keys_id,
    };
    assert!(matches!(
        signer.handle(retire.clone()),
        Ok(Response::Accepted)
    ));
    let tombstone = ChannelState {
        retired: true,
        ..ChannelState::default()
    };
    assert_eq!(signer.state().channels[&ch.keys_id], tombstone);
    // Kept as such, and a channel saved before tombstones existed is not one.
    let json = serde_json::to_string(&tombstone).expect("encode");
    assert_eq!(
        serde_json::from_str::<ChannelState>(&json).expect("decode"),
        tombstone
    );
    let old = serde_json::to_string(&ChannelState::default()).expect("encode");
    assert!(!old.contains("retired"));

    refused(
        ch.sign_counterparty(&signer, ch.counterparty_tx(TOP - 2, 400_000, vec![])),
        "channel_retired",
    );
    refused(signer.handle(ch.approval(0)), "channel_retired");
    refused(
        signer.handle(Request::PerCommitmentPoints {
            keys_id: ch.keys_id,
            first: TOP,
            count: 1,
        }),
        "channel_retired",
    );
    assert!(matches!(signer.handle(retire), Ok(Response::Accepted)));
    other
        .sign_counterparty(&signer, other.counterparty_tx(TOP - 1, 400_000, vec![]))
        .expect("another channel is untouched");
}

#[test]
fn an_outgoing_htlc_needs_an_approved_payment_within_the_limits() {
    let signer = signer();
    let ch = Channel::open(&signer, 2);
    // In the peer's commitment, our outgoing HTLCs are the ones the peer did not offer. One of
    // a payment the signer never approved is refused, however small.
    refused(
        ch.sign_counterparty(
            &signer,
            ch.counterparty_tx(TOP - 1, 100_000, vec![htlc(false, 1_000, 1)]),
        ),
        "unapproved_htlc",
    );
    // The limits apply when the payment is approved.
    refused(approve(&signer, 1, 60_000_000), "max_payment");
    // An incoming HTLC of that size is not spending.
    ch.sign_counterparty(
        &signer,
        ch.counterparty_tx(TOP - 1, 100_000, vec![htlc(true, 60_000_000, 1)]),
    )
    .expect("incoming");
    approve(&signer, 2, 45_000_000).expect("within limits");
    ch.sign_counterparty(
        &signer,
        ch.counterparty_tx(TOP - 2, 100_000, vec![htlc(false, 45_000_000, 2)]),
    )
    .expect("approved");
    ch.revoke(&signer, TOP - 1).expect("revoked");
    refused(approve(&signer, 3, 45_000_000), "velocity");
    // HTLCs beyond what their payment was approved for are new spending, within the limits.
    refused(
        ch.sign_counterparty(
            &signer,
            ch.counterparty_tx(
                TOP - 3,
                100_000,
                vec![htlc(false, 45_000_000, 2), htlc(false, 45_000_000, 2)],
            ),
        ),
        "max_payment",
    );
    // The refusals left no trace: the same commitment number is still free.
    approve(&signer, 3, 30_000_000).expect("within velocity");
    ch.sign_counterparty(
        &signer,
        ch.counterparty_tx(
            TOP - 3,
            100_000,
            vec![htlc(false, 45_000_000, 2), htlc(false, 30_000_000, 3)],
        ),
    )
    .expect("both approved");
}

#[test]
fn a_revocation_lost_on_the_way_comes_with_the_next_commitment() {
    let signer = signer();
    let ch = Channel::open(&signer, 4);
    let tx = |number| ch.counterparty_tx(number, 100_000, vec![]);
    ch.sign_counterparty(&signer, tx(TOP)).expect("first");
    ch.sign_counterparty(&signer, tx(TOP - 1)).expect("second");
    refused(
        ch.sign_counterparty(&signer, tx(TOP - 2)),
        "counterparty_not_revoked",
    );
    // Another commitment's secret does not revoke TOP, and refuses the whole request.
    let wrong = Revocation {
        idx: TOP,
        ..ch.revocation(TOP - 1)
    };
    refused(
        ch.sign_counterparty_revoking(&signer, tx(TOP - 2), Some(wrong)),
        "invalid_revocation",
    );
    ch.sign_counterparty_revoking(&signer, tx(TOP - 2), Some(ch.revocation(TOP)))
        .expect("revoked on the way");
    // The standalone validation arriving late, and the same revocation repeated, are fine.
    ch.revoke(&signer, TOP).expect("late");
    ch.revoke(&signer, TOP - 1).expect("TOP - 1 revoked");
    ch.sign_counterparty_revoking(&signer, tx(TOP - 3), Some(ch.revocation(TOP - 1)))
        .expect("third");
    let channel = &signer.state().channels[&ch.keys_id];
    assert_eq!(
        channel.unrevoked_counterparty.map(|c| c.number),
        Some(TOP - 2)
    );
}

#[test]
fn an_incoming_htlc_of_the_same_hash_excuses_no_outgoing_one() {
    let signer = signer();
    let incoming = Channel::open(&signer, 4);
    let outgoing = Channel::open(&signer, 5);
    // Our commitment on the incoming channel holds the peer's HTLC (not offered by us).
    incoming
        .validate_holder(
            &signer,
            incoming.holder_tx(&signer, TOP - 1, vec![htlc(false, 70_000_000, 7)]),
        )
        .expect("validated");
    // A hosted node forwards nothing: an outgoing HTLC of that hash is still a payment the
    // signer must have approved (the exemption let one incoming HTLC cover any number of
    // outgoing ones, the incoming failed back afterwards).
    refused(
        outgoing.sign_counterparty(
            &signer,
            outgoing.counterparty_tx(TOP - 1, 100_000, vec![htlc(false, 69_000_000, 7)]),
        ),
        "unapproved_htlc",
    );
}

#[test]
fn secrets_are_released_only_after_the_next_commitment_is_validated() {
    let signer = signer();
    let ch = Channel::open(&signer, 7);
    let release_with = |idx, tx: Option<HolderCommitmentTransaction>| {
        signer.handle(Request::ReleaseCommitmentSecret {
            keys_id: ch.keys_id,
            idx,
            holder: tx.map(|tx| HolderCommitment {
                params: None,
                tx,
                outbound_preimages: vec![],
            }),
        })
    };
    let release = |idx| release_with(idx, None);
    refused(release(TOP), "secret_before_next_commitment");
    ch.validate_holder(&signer, ch.holder_tx(&signer, TOP, vec![]))
        .expect("first");
    refused(release(TOP), "secret_before_next_commitment");
    ch.validate_holder(&signer, ch.holder_tx(&signer, TOP - 1, vec![]))
        .expect("second");
    let ldk = ldk_keys(&SEED).derive_channel_keys(&ch.keys_id);
    match release(TOP) {
        Ok(Response::Secret(s)) => {
            assert_eq!(s, build_commitment_secret(&ldk.commitment_seed, TOP))
        }
        other => panic!("{other:?}"),
    }
    refused(release(TOP - 1), "secret_before_next_commitment");
    malformed(release(TOP + 1));

    // A commitment the peer did not sign is not validated, alone or carried by a release,
    // and the release it came with releases nothing.
    let mut forged = ch.holder_tx(&signer, TOP - 2, vec![]);
    forged.counterparty_sig = ch.holder_tx(&signer, TOP - 3, vec![]).counterparty_sig;
    refused(
        ch.validate_holder(&signer, forged.clone()),
        "invalid_counterparty_signature",
    );
    refused(
        release_with(TOP - 1, Some(forged)),
        "invalid_counterparty_signature",
    );
    refused(release(TOP - 1), "secret_before_next_commitment");
    // The next commitment carried by the release (as the host sends it, without the
    // parameters: the signer checks it against those it pinned) lets the secret go.
    let next = ch.holder_tx(&signer, TOP - 2, vec![]);
    let secret = build_commitment_secret(&ldk.commitment_seed, TOP - 1);
    for attempt in ["first", "again, as after a host restart"] {
        match release_with(TOP - 1, Some(next.clone())) {
            Ok(Response::Secret(s)) => assert_eq!(s, secret, "{attempt}"),
            other => panic!("{attempt}: {other:?}"),
        }
    }

    // The revoked commitment is never signed for broadcast; the current one is.
    let sign_holder = |number| {
        signer.handle(Request::SignHolderCommitment {
            keys_id: ch.keys_id,
            params: ch.params.clone(),
            tx: ch.holder_tx(&signer, number, vec![]),
        })
    };
    refused(sign_holder(TOP - 1), "revoked_holder_commitment");
    assert!(matches!(sign_holder(TOP - 2), Ok(Response::Signature(_))));
}

#[test]
fn closes_pay_only_allowed_scripts_within_the_fee_cap() {
    let signer = signer();
    // Some pushed to the peer at the open: before any commitment, a close pays us the rest
    // (less the fee, ours as funder), nothing less.
    let ch = Channel::open_funded(&signer, 8, 40_000_000);
    let ours = CHANNEL_SAT - 40_000 - 1_000;
    let own = signer.handover().shutdown_script;
    let foreign = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([1; 20]));
    refused(
        ch.close(&signer, 500_000, foreign.clone(), 1_000),
        "destination_not_allowed",
    );
    refused(
        ch.close(&signer, ours - 29_000, own.clone(), 30_000),
        "max_fee",
    );
    refused(
        ch.close(&signer, 500_000, own.clone(), 1_000),
        "closing_balance_mismatch",
    );
    let sig = match ch.close(&signer, ours, own.clone(), 1_000) {
        Ok(Response::Signature(sig)) => sig,
        other => panic!("{other:?}"),
    };
    let tx = ClosingTransaction::new(
        ours,
        CHANNEL_SAT - ours - 1_000,
        own,
        ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([3; 20])),
        ch.params
            .funding_outpoint
            .expect("set")
            .into_bitcoin_outpoint(),
    );
    let redeem = make_funding_redeemscript(
        &ch.params.holder_pubkeys.funding_pubkey,
        &ch.peer_pubkeys().funding_pubkey,
    );
    ch.secp
        .verify_ecdsa(
            &tx.trust().get_sighash_all(&redeem, CHANNEL_SAT),
            &sig,
            &ch.params.holder_pubkeys.funding_pubkey,
        )
        .expect("closing signature verifies");

    // An explicitly allowed script passes.
    let mut policy = Policy::new(limits());
    policy.allowed_scripts.insert(foreign.clone());
    let lenient = signer_with(policy, Box::new(MemoryStateStore::new()));
    let ch = Channel::open_funded(&lenient, 9, 0);
    assert!(matches!(
        ch.close(&lenient, CHANNEL_SAT - 1_000, foreign, 1_000),
        Ok(Response::Signature(_))
    ));
}

#[test]
fn the_signer_signs_only_for_channels_whose_open_it_approved() {
    let signer = signer();
    let ch = Channel::unapproved(&signer, 1, false);
    let tx = || ch.counterparty_tx(TOP, 100_000, vec![]);
    refused(ch.sign_counterparty(&signer, tx()), "channel_not_approved");
    let holder = ch.holder_tx(&signer, TOP, vec![]);
    // Without parameters (none pinned yet) it could not even be checked.
    refused(
        signer.handle(Request::ValidateHolderCommitment {
            keys_id: ch.keys_id,
            holder: HolderCommitment {
                params: None,
                tx: holder.clone(),
                outbound_preimages: vec![],
            },
        }),
        "channel_parameters_missing",
    );
    refused(ch.validate_holder(&signer, holder), "channel_not_approved");
    // Approved for another value or direction: not this channel.
    let approve = |value_sat, outbound| {
        signer.handle(Request::ApproveChannelOpen {
            peer: ldk_keys(&PEER_SEED)
                .get_node_id(Recipient::Node)
                .expect("peer"),
            value_sat,
            push_msat: 0,
            keys_id: ch.keys_id,
            outbound,
        })
    };
    assert!(matches!(
        approve(CHANNEL_SAT + 1, false),
        Ok(Response::Accepted)
    ));
    refused(ch.sign_counterparty(&signer, tx()), "channel_not_approved");
    // A key set serves one channel; the same approval again is answered the same.
    refused(approve(CHANNEL_SAT, false), "channel_keys_in_use");
    let ch = Channel::unapproved(&signer, 2, false);
    let tx = || ch.counterparty_tx(TOP, 100_000, vec![]);
    assert!(matches!(
        signer.handle(ch.approval(0)),
        Ok(Response::Accepted)
    ));
    assert!(matches!(
        signer.handle(ch.approval(0)),
        Ok(Response::Accepted)
    ));
    ch.sign_counterparty(&signer, tx()).expect("approved");
}

#[test]
fn a_channel_we_fund_starts_with_its_value_less_what_we_push() {
    let signer = signer();
    // 10,000 sat pushed; the peer's first commitment leaves us the rest less its fee
    // (10,000 sat with the anchors).
    let ch = Channel::open_funded(&signer, 1, 10_000_000);
    let full = CHANNEL_SAT - 10_000 - 10_000;
    let peer_side = |to_us: u64| CHANNEL_SAT - to_us - 10_000;
    assert_eq!(peer_side(full), 10_000);
    refused(
        ch.sign_counterparty(&signer, ch.counterparty_tx(TOP, full - 2, vec![])),
        "balance_moved_without_htlc",
    );
    ch.sign_counterparty(&signer, ch.counterparty_tx(TOP, full, vec![]))
        .expect("the approved push");
    // The push is an outgoing payment: the per-payment limit applies.
    let big = Channel::unapproved(&signer, 2, true);
    refused(signer.handle(big.approval(50_000_001)), "max_payment");
    refused(
        signer.handle(big.approval(CHANNEL_SAT * 1000 + 1)),
        "invalid_channel_open",
    );
}

#[test]
fn channel_opens_only_with_allowed_peers() {
    let peer = PublicKey::from_secret_key(
        &Secp256k1::new(),
        &SecretKey::from_slice(&[4; 32]).expect("key"),
    );
    let open = |signer: &SeedSigner, peer, keys_id| {
        signer.handle(Request::ApproveChannelOpen {
            peer,
            value_sat: 100_000,
            push_msat: 0,
            keys_id,
            outbound: true,
        })
    };
    assert!(matches!(
        open(&signer(), peer, [1; 32]),
        Ok(Response::Accepted)
    ));
    let mut policy = Policy::new(limits());
    policy.allowed_peers = Some([peer].into_iter().collect());
    let strict = signer_with(policy, Box::new(MemoryStateStore::new()));
    assert!(matches!(
        open(&strict, peer, [1; 32]),
        Ok(Response::Accepted)
    ));
    refused(open(&strict, strict.node_id(), [2; 32]), "peer_not_allowed");
}

#[test]
fn a_restarted_signer_still_refuses_old_commitments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node_id = ldk_keys(&SEED)
        .get_node_id(Recipient::Node)
        .expect("node id");
    let store = || Box::new(SqliteStateStore::in_dir(dir.path(), &node_id).expect("store"));
    let (keys_id, params);
    {
        let first = signer_with(Policy::new(limits()), store());
        let ch = Channel::open(&first, 11);
        ch.sign_counterparty(&first, ch.counterparty_tx(TOP - 1, 100_000, vec![]))
            .expect("first");
        ch.sign_counterparty(&first, ch.counterparty_tx(TOP - 2, 100_000, vec![]))
            .expect("second");
        keys_id = ch.keys_id;
        params = ch.params.clone();
    }
    let restarted = signer_with(Policy::new(limits()), store());
    let ch = Channel {
        keys_id,
        params,
        peer: ldk_keys(&PEER_SEED).derive_channel_keys(&[11; 32]),
        secp: Secp256k1::new(),
    };
    refused(
        ch.sign_counterparty(&restarted, ch.counterparty_tx(TOP - 1, 100_000, vec![])),
        "stale_counterparty_commitment",
    );
    ch.sign_counterparty(&restarted, ch.counterparty_tx(TOP - 2, 100_000, vec![]))
        .expect("the same newest one again");
}

#[test]
fn with_an_approval_hook_a_push_is_refused() {
    struct Yes;
    impl ApprovalHook for Yes {
        fn approve(&self, _: &PaymentApproval) -> bool {
            true
        }
    }
    let peer = signer().node_id();
    let open = |signer: &SeedSigner, push_msat, keys_id| {
        signer.handle(Request::ApproveChannelOpen {
            peer,
            value_sat: 100_000,
            push_msat,
            keys_id,
            outbound: true,
        })
    };
    let hooked = signer().with_approval(Arc::new(Yes));
    refused(open(&hooked, 1_000, [1; 32]), "push_not_approved");
    assert!(matches!(open(&hooked, 0, [1; 32]), Ok(Response::Accepted)));
    // Without a hook, a push is an outgoing payment within the limits.
    assert!(matches!(
        open(&signer(), 1_000, [1; 32]),
        Ok(Response::Accepted)
    ));
}
