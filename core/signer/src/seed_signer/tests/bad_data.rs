//! Bad data from the host is a malformed request, never a panic.

use super::*;

#[test]
fn bad_data_from_the_host_is_malformed_not_a_panic() {
    let signer = signer();
    let ch = Channel::open(&signer, 10);
    let before = signer.state();
    let tx = ch.counterparty_tx(TOP - 1, 100_000, vec![]);
    let mut unpopulated = ch.params.clone();
    unpopulated.counterparty_parameters = None;
    let requests = vec![
        Request::SignCounterpartyCommitment {
            keys_id: ch.keys_id,
            params: unpopulated.clone(),
            tx: tx.clone(),
            inbound_preimages: vec![],
            outbound_preimages: vec![],
            revocation: None,
        },
        Request::SignClosingTransaction {
            keys_id: ch.keys_id,
            params: unpopulated.clone(),
            closing: ClosingParts {
                to_holder_sat: 1,
                to_counterparty_sat: 1,
                to_holder_script: ScriptBuf::new(),
                to_counterparty_script: ScriptBuf::new(),
            },
        },
        Request::SignHolderAnchorInput {
            keys_id: ch.keys_id,
            params: unpopulated,
            tx: Transaction {
                version: bitcoin::transaction::Version::TWO,
                lock_time: LockTime::ZERO,
                input: vec![],
                output: vec![],
            },
            input: 0,
        },
        // Parameters of another channel.
        Request::SignCounterpartyCommitment {
            keys_id: [0xaa; 32],
            params: ch.params.clone(),
            tx: tx.clone(),
            inbound_preimages: vec![],
            outbound_preimages: vec![],
            revocation: None,
        },
        // A commitment built for other parameters.
        Request::SignCounterpartyCommitment {
            keys_id: ch.keys_id,
            params: ChannelTransactionParameters {
                channel_type_features: ChannelTypeFeatures::only_static_remote_key(),
                ..ch.params.clone()
            },
            tx,
            inbound_preimages: vec![],
            outbound_preimages: vec![],
            revocation: None,
        },
        Request::PerCommitmentPoints {
            keys_id: ch.keys_id,
            first: 2,
            count: 4,
        },
        Request::NewChannelKeys {
            count: MAX_BATCH + 1,
        },
        Request::SignGossip {
            msg_type: NODE_ANNOUNCEMENT,
            msg: vec![1, 2, 3],
        },
    ];
    for request in requests {
        let kind = request.kind();
        let result = signer.handle(request);
        assert!(
            matches!(result, Err(SignerError::Malformed(_))),
            "{kind}: {result:?}"
        );
    }
    // Nothing was recorded by the failed requests.
    assert_eq!(signer.state(), before);
}
