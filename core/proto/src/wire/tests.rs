//! Round trips of every message, and malformed input refused.

use bitcoin::hashes::Hash;
use bitcoin::hashes::{sha256, HashEngine};
use bitcoin::secp256k1::Message;
use lightning::util::ser::Writeable;

use super::proto::request_envelope::Body;
use super::proto::response_envelope::Result as Outcome;
use super::requests::PARAMS_KEPT;
use super::*;
use crate::samples::*;
use crate::{challenge_digest, Request, SignerError};

/// Through protobuf bytes too, so the proto schema itself is exercised.
fn through_bytes<M: prost::Message + Default>(message: &M) -> M {
    M::decode(message.encode_to_vec().as_slice()).unwrap()
}

#[test]
fn every_request_variant_round_trips() {
    let requests = every_request();
    let mut kinds: Vec<_> = requests.iter().map(Request::kind).collect();
    kinds.dedup();
    assert_eq!(kinds.len(), 22, "one case per Request variant");
    for (id, request) in requests.into_iter().enumerate() {
        let id = id as u64 * 1_000_003;
        let envelope = encode_request(id, &request);
        let (back_id, back) = decode_request(through_bytes(&envelope));
        let back = back.unwrap_or_else(|e| panic!("{}: {e}", request.kind()));
        assert_eq!(back_id, id);
        assert_eq!(format!("{back:?}"), format!("{request:?}"));
        assert_eq!(encode_request(id, &back), envelope, "{}", request.kind());
    }
}

#[test]
fn a_decoder_keeping_parameters_decodes_as_a_fresh_one() {
    let mut decoder = RequestDecoder::default();
    // Twice over, the second time from what the decoder kept.
    for _ in 0..2 {
        for request in every_request() {
            let envelope = encode_request(1, &request);
            let (_, back) = decoder.decode(envelope.clone());
            let fresh = decode_request(envelope).1.expect("decodes");
            assert_eq!(
                format!("{:?}", back.expect("decodes")),
                format!("{fresh:?}")
            );
        }
    }
    // Parameters that differ in one value are told apart, past what the decoder keeps.
    for value in 0..(PARAMS_KEPT as u64 * 2) {
        let mut p = params();
        p.channel_value_satoshis = 1_000_000 + value % (PARAMS_KEPT as u64 + 3);
        let request = Request::SignHolderAnchorInput {
            keys_id: [5; 32],
            params: p.clone(),
            tx: tx(),
            input: 0,
        };
        match decoder.decode(encode_request(2, &request)).1 {
            Ok(Request::SignHolderAnchorInput { params, .. }) => assert_eq!(params, p),
            other => panic!("{other:?}"),
        }
    }
    assert!(decoder.params.len() <= PARAMS_KEPT);
}

#[test]
fn ldk_structures_survive_exactly() {
    let request = Request::SignCounterpartyCommitment {
        keys_id: [5; 32],
        params: params(),
        tx: commitment(),
        inbound_preimages: vec![],
        outbound_preimages: vec![],
        revocation: None,
    };
    let (_, back) = decode_request(encode_request(1, &request));
    match back.unwrap() {
        Request::SignCounterpartyCommitment { params: p, tx, .. } => {
            assert_eq!(p, params());
            assert_eq!(tx, commitment());
            assert_eq!(tx.nondust_htlcs().len(), 1);
        }
        other => panic!("decoded as {}", other.kind()),
    }
}

#[test]
fn every_response_variant_round_trips() {
    for (id, result) in every_result().into_iter().enumerate() {
        let envelope = encode_response(id as u64, &result);
        let (back_id, back) = decode_response(through_bytes(&envelope));
        assert_eq!(back_id, id as u64);
        assert_eq!(format!("{back:?}"), format!("{result:?}"));
        assert_eq!(encode_response(id as u64, &back), envelope);
    }
}

#[test]
fn handover_round_trips() {
    let handover = handover();
    let back = decode_handover(through_bytes(&encode_handover(&handover))).unwrap();
    assert_eq!(back, handover);
}

fn assert_malformed<T: std::fmt::Debug>(result: Result<T, SignerError>, needle: &str) {
    match result {
        Err(SignerError::Malformed(reason)) => {
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
        }
        other => panic!("expected Malformed({needle}), got {other:?}"),
    }
}

#[test]
fn bad_fields_are_malformed() {
    let body = |body| {
        decode_request(proto::RequestEnvelope {
            id: 1,
            body: Some(body),
        })
        .1
    };
    assert_malformed(
        decode_request(proto::RequestEnvelope::default()).1,
        "no body",
    );
    // An uncompressed key is refused, as is a 32-byte one.
    let uncompressed = point(1).serialize_uncompressed().to_vec();
    assert_malformed(
        body(Body::Ecdh(proto::Ecdh {
            other_key: uncompressed,
            tweak: None,
        })),
        "33-byte",
    );
    assert_malformed(
        body(Body::Ecdh(proto::Ecdh {
            other_key: point(1).serialize()[1..].to_vec(),
            tweak: None,
        })),
        "33-byte",
    );
    assert_malformed(
        body(Body::Ecdh(proto::Ecdh {
            other_key: vec![2; 33],
            tweak: Some(vec![1; 31]),
        })),
        "tweak",
    );
    assert_malformed(
        body(Body::SignGossip(proto::SignGossip {
            msg_type: 70_000,
            msg: vec![],
        })),
        "gossip type",
    );
    assert_malformed(
        body(Body::ReleaseCommitmentSecret(
            proto::ReleaseCommitmentSecret {
                keys_id: vec![0; 33],
                idx: 0,
                holder: None,
            },
        )),
        "keys_id",
    );
    assert_malformed(
        body(Body::SignPsbt(proto::SignPsbt {
            psbt: vec![1, 2, 3],
        })),
        "psbt",
    );
    assert_malformed(
        body(Body::SignClosingTransaction(
            proto::SignClosingTransaction {
                keys_id: vec![0; 32],
                params: params().encode(),
                closing: None,
            },
        )),
        "closing",
    );
}

#[test]
fn truncated_or_padded_ldk_bytes_are_malformed() {
    let good = every_request()
        .iter()
        .find_map(|r| match encode_request(1, r).body {
            Some(Body::SignCounterpartyCommitment(m)) => Some(m),
            _ => None,
        })
        .expect("a counterparty commitment among the fixtures");
    // Every truncation of the parameters and the commitment fails cleanly, never panics.
    for cut in 0..good.params.len() {
        let mut m = good.clone();
        m.params.truncate(cut);
        let r = decode_request(proto::RequestEnvelope {
            id: 1,
            body: Some(Body::SignCounterpartyCommitment(m)),
        });
        assert_malformed(r.1, "channel parameters");
    }
    for cut in 0..good.tx.len() {
        let mut m = good.clone();
        m.tx.truncate(cut);
        let r = decode_request(proto::RequestEnvelope {
            id: 1,
            body: Some(Body::SignCounterpartyCommitment(m)),
        });
        assert_malformed(r.1, "commitment");
    }
    let mut padded = good.clone();
    padded.tx.push(0);
    let r = decode_request(proto::RequestEnvelope {
        id: 1,
        body: Some(Body::SignCounterpartyCommitment(padded)),
    });
    assert_malformed(r.1, "trailing");
}

#[test]
fn bad_responses_are_malformed() {
    let outcome = |o| {
        decode_response(proto::ResponseEnvelope {
            id: 9,
            result: Some(o),
            state_version: 0,
        })
        .1
    };
    assert_malformed(
        decode_response(proto::ResponseEnvelope::default()).1,
        "no result",
    );
    assert_malformed(outcome(Outcome::Signature(vec![0; 63])), "signature");
    assert_malformed(outcome(Outcome::Secret(vec![0; 31])), "secret");
    assert_malformed(
        outcome(Outcome::RecoverableSignature(proto::RecoverableSignature {
            compact: vec![1; 64],
            recovery_id: 7,
        })),
        "recovery id",
    );
    assert_malformed(
        outcome(Outcome::Error(proto::Error {
            kind: 99,
            reason: "x".into(),
        })),
        "unknown error kind 99",
    );
    assert_malformed(
        outcome(Outcome::Points(proto::Points {
            points: vec![vec![4; 33]],
        })),
        "point",
    );
}

#[test]
fn challenge_digest_is_domain_separated() {
    let challenge = [21; 32];
    let mut plain = sha256::Hash::engine();
    plain.input(&challenge);
    let untagged = Message::from_digest(sha256::Hash::from_engine(plain).to_byte_array());
    assert_ne!(challenge_digest(&challenge), untagged);
    assert_ne!(challenge_digest(&challenge), challenge_digest(&[22; 32]));
}
