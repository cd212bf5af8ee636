//! Node-level requests: keys, node signatures, gossip, payment approvals.

use super::*;

#[test]
fn keys_are_exactly_ldks() {
    let signer = signer();
    let ldk = ldk_keys(&SEED);
    let secp = Secp256k1::new();
    assert_eq!(
        Some(signer.node_id()),
        ldk.get_node_id(Recipient::Node).ok()
    );
    let sets = match signer.handle(Request::NewChannelKeys { count: 3 }) {
        Ok(Response::ChannelKeys(sets)) => sets,
        other => panic!("{other:?}"),
    };
    let ids: HashSet<_> = sets.iter().map(|s| s.keys_id).collect();
    assert_eq!(ids.len(), 3, "fresh ids");
    for set in &sets {
        assert_eq!(
            set.pubkeys,
            ldk.derive_channel_keys(&set.keys_id).pubkeys(&secp)
        );
    }
    let handover = signer.handover();
    assert_eq!(handover.node_id, signer.node_id());
    assert_eq!(handover.peer_storage_key, ldk.get_peer_storage_key().inner);
    assert_eq!(handover.receive_auth_key, ldk.get_receive_auth_key().0);
    let ours = ExpandedKey::new(handover.inbound_payment_key);
    assert_eq!(ours, ldk.get_expanded_key());
    // Behaviour, not just equality: the same payment secret for the same payment.
    let secret = |key: &ExpandedKey| {
        inbound_payment::create_from_hash(
            key,
            Some(5_000),
            PaymentHash([4; 32]),
            3600,
            1_700_000_000,
            None,
        )
        .expect("secret")
    };
    assert_eq!(secret(&ours), secret(&ldk.get_expanded_key()));
    assert_ne!(
        secret(&ExpandedKey::new([0; 32])),
        secret(&ldk.get_expanded_key())
    );
    assert!(signer.own_scripts.contains(&handover.shutdown_script));
    // The fast derivation agrees with the wallet's descriptors.
    for (text, chain) in [
        (&handover.wallet_descriptors.0, 0),
        (&handover.wallet_descriptors.1, 1),
    ] {
        let descriptor = <bdk_wallet::descriptor::Descriptor<
            bdk_wallet::descriptor::DescriptorPublicKey,
        > as std::str::FromStr>::from_str(text)
        .expect("descriptor");
        for index in [0, 1, DEFAULT_LOOKAHEAD - 1] {
            let script = descriptor
                .at_derivation_index(index)
                .expect("index")
                .script_pubkey();
            assert!(
                signer.own_scripts.contains(&script),
                "chain {chain} index {index}"
            );
        }
        let beyond = descriptor
            .at_derivation_index(DEFAULT_LOOKAHEAD)
            .expect("index")
            .script_pubkey();
        assert!(!signer.own_scripts.contains(&beyond));
    }
    let change0 = <bdk_wallet::descriptor::Descriptor<
        bdk_wallet::descriptor::DescriptorPublicKey,
    > as std::str::FromStr>::from_str(&handover.wallet_descriptors.1)
    .expect("descriptor")
    .at_derivation_index(0)
    .expect("index")
    .script_pubkey();
    assert_eq!(handover.shutdown_script, change0);
}

#[test]
fn challenge_and_node_signatures_verify() {
    let signer = signer();
    let secp = Secp256k1::new();
    let challenge = [9; 32];
    let sig = signer.sign_challenge(&challenge);
    secp.verify_ecdsa(&challenge_digest(&challenge), &sig, &signer.node_id())
        .expect("challenge signature");
    assert!(secp
        .verify_ecdsa(&challenge_digest(&[8; 32]), &sig, &signer.node_id())
        .is_err());

    let ldk = ldk_keys(&SEED);
    let other = PublicKey::from_secret_key(&secp, &SecretKey::from_slice(&[3; 32]).expect("key"));
    match signer.handle(Request::Ecdh {
        other_key: other,
        tweak: None,
    }) {
        Ok(Response::SharedSecret(s)) => assert_eq!(
            s,
            ldk.ecdh(Recipient::Node, &other, None)
                .expect("ecdh")
                .secret_bytes()
        ),
        other => panic!("{other:?}"),
    }
    malformed(signer.handle(Request::Ecdh {
        other_key: other,
        tweak: Some([0xff; 32]),
    }));

    let raw = lightning_invoice::InvoiceBuilder::new(lightning_invoice::Currency::Regtest)
        .description("coffee".into())
        .payment_hash(sha256::Hash::from_byte_array([5; 32]))
        .payment_secret(lightning_invoice::PaymentSecret([6; 32]))
        .duration_since_epoch(std::time::Duration::from_secs(1_700_000_000))
        .min_final_cltv_expiry_delta(18)
        .build_raw()
        .expect("raw invoice");
    let (hrp, data) = raw.to_raw();
    let data: Vec<u8> = data.into_iter().map(u8::from).collect();
    match signer.handle(Request::SignInvoice {
        hrp: hrp.clone(),
        data: data.clone(),
    }) {
        Ok(Response::RecoverableSignature(sig)) => {
            assert_eq!(Ok(sig), ldk.sign_invoice(&raw, Recipient::Node))
        }
        other => panic!("{other:?}"),
    }
    malformed(signer.handle(Request::SignInvoice {
        hrp,
        data: vec![32],
    }));

    match signer.handle(Request::SignMessage {
        msg: b"hi".to_vec(),
    }) {
        Ok(Response::Message(m)) => assert!(lightning::util::message_signing::verify(
            b"hi",
            &m,
            &signer.node_id()
        )),
        other => panic!("{other:?}"),
    }
}

#[test]
fn gossip_is_signed_only_for_this_node() {
    use lightning::util::ser::Writeable;
    let signer = signer();
    let announcement = |node: PublicKey| UnsignedNodeAnnouncement {
        features: lightning::types::features::NodeFeatures::empty(),
        timestamp: 1_700_000_000,
        node_id: NodeId::from_pubkey(&node),
        rgb: [1, 2, 3],
        alias: lightning::routing::gossip::NodeAlias([b'f'; 32]),
        addresses: vec![],
        excess_address_data: vec![],
        excess_data: vec![],
    };
    let ours = announcement(signer.node_id());
    let sig = match signer.handle(Request::SignGossip {
        msg_type: NODE_ANNOUNCEMENT,
        msg: ours.encode(),
    }) {
        Ok(Response::Signature(sig)) => sig,
        other => panic!("{other:?}"),
    };
    let digest = bitcoin::hashes::sha256d::Hash::hash(&ours.encode());
    Secp256k1::new()
        .verify_ecdsa(
            &Message::from_digest(digest.to_byte_array()),
            &sig,
            &signer.node_id(),
        )
        .expect("gossip signature verifies");
    let stranger = PublicKey::from_secret_key(
        &Secp256k1::new(),
        &SecretKey::from_slice(&[6; 32]).expect("key"),
    );
    refused(
        signer.handle(Request::SignGossip {
            msg_type: NODE_ANNOUNCEMENT,
            msg: announcement(stranger).encode(),
        }),
        "gossip_not_ours",
    );
    malformed(signer.handle(Request::SignGossip {
        msg_type: 999,
        msg: ours.encode(),
    }));
}

#[test]
fn velocity_window_rolls_with_the_clock() {
    let now = Arc::new(AtomicU64::new(1_000_000));
    let clock = now.clone();
    let signer = signer().with_clock(Box::new(move || clock.load(Ordering::SeqCst)));
    approve(&signer, 1, 45_000_000).expect("first");
    refused(approve(&signer, 2, 45_000_000), "velocity");
    now.fetch_add(3600, Ordering::SeqCst);
    approve(&signer, 2, 45_000_000).expect("an hour later");
}

#[test]
fn approved_payments_count_once_and_the_hook_decides() {
    let yes = Arc::new(AtomicBool::new(false));
    struct Hook(Arc<AtomicBool>);
    impl ApprovalHook for Hook {
        fn approve(&self, _: &PaymentApproval) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }
    let signer = signer().with_approval(Arc::new(Hook(yes.clone())));
    let dest = signer.node_id();
    let approve = |amount_msat: u64| {
        signer.handle(Request::ApprovePayment {
            payment_hash: [8; 32],
            amount_msat,
            destination: dest,
        })
    };
    refused(approve(60_000_000), "max_payment");
    refused(approve(45_000_000), "approval_declined");
    yes.store(true, Ordering::SeqCst);
    assert!(matches!(approve(45_000_000), Ok(Response::Accepted)));
    // Its HTLC is not counted again (45 + 45 would break the hourly 80).
    let ch = Channel::open(&signer, 6);
    ch.sign_counterparty(
        &signer,
        ch.counterparty_tx(TOP - 1, 100_000, vec![htlc(false, 45_000_000, 8)]),
    )
    .expect("approved HTLC");
    refused(approve(40_000_000), "velocity");
}
