//! Responses on the wire: the signer encodes them, the hub decodes them.

use bitcoin::consensus::encode;
use bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use bitcoin::Psbt;
use lightning::ln::chan_utils::ChannelPublicKeys;
use lightning::util::ser::Writeable;

use super::fields::{bytes32, consensus, key, ldk, malformed, signature};
use super::proto;
use super::proto::response_envelope::Result as Outcome;
use crate::{ChannelKeySet, Response, SignerError};

/// The signer's answer to request `id`.
pub fn encode_response(id: u64, result: &Result<Response, SignerError>) -> proto::ResponseEnvelope {
    let outcome = match result {
        Ok(response) => encode_ok(response),
        Err(error) => Outcome::Error(encode_error(error)),
    };
    proto::ResponseEnvelope {
        id,
        result: Some(outcome),
        state_version: 0,
    }
}

fn encode_ok(response: &Response) -> Outcome {
    match response {
        Response::ChannelKeys(sets) => Outcome::ChannelKeys(proto::ChannelKeys {
            sets: sets
                .iter()
                .map(|s| proto::ChannelKeySet {
                    keys_id: s.keys_id.to_vec(),
                    pubkeys: s.pubkeys.encode(),
                })
                .collect(),
        }),
        Response::Points(points) => Outcome::Points(proto::Points {
            points: points.iter().map(|p| p.serialize().to_vec()).collect(),
        }),
        Response::Secret(secret) => Outcome::Secret(secret.to_vec()),
        Response::Accepted => Outcome::Accepted(proto::Accepted {}),
        Response::CommitmentSignatures { commitment, htlcs } => {
            Outcome::CommitmentSignatures(proto::CommitmentSignatures {
                commitment: commitment.serialize_compact().to_vec(),
                htlcs: htlcs
                    .iter()
                    .map(|s| s.serialize_compact().to_vec())
                    .collect(),
            })
        }
        Response::Signature(sig) => Outcome::Signature(sig.serialize_compact().to_vec()),
        Response::SharedSecret(secret) => Outcome::SharedSecret(secret.to_vec()),
        Response::RecoverableSignature(sig) => {
            let (recovery_id, compact) = sig.serialize_compact();
            Outcome::RecoverableSignature(proto::RecoverableSignature {
                compact: compact.to_vec(),
                recovery_id: recovery_id.to_i32(),
            })
        }
        Response::Message(text) => Outcome::Message(text.clone()),
        Response::Transaction(tx) => Outcome::Transaction(encode::serialize(tx)),
        Response::Psbt(psbt) => Outcome::Psbt(psbt.serialize()),
    }
}

fn encode_error(error: &SignerError) -> proto::Error {
    let (kind, reason) = match error {
        SignerError::Refused(reason) => (proto::ErrorKind::Refused, reason.clone()),
        SignerError::Malformed(reason) => (proto::ErrorKind::Malformed, reason.clone()),
        SignerError::Unavailable => (proto::ErrorKind::Unavailable, String::new()),
        SignerError::Timeout => (proto::ErrorKind::Timeout, String::new()),
    };
    proto::Error {
        kind: kind as i32,
        reason,
    }
}

/// The answer's request id and its value; an answer that does not decode becomes `Malformed`.
pub fn decode_response(envelope: proto::ResponseEnvelope) -> (u64, Result<Response, SignerError>) {
    let id = envelope.id;
    let result = match envelope.result {
        Some(Outcome::Error(error)) => Err(decode_error(error)),
        Some(outcome) => decode_ok(outcome),
        None => Err(SignerError::Malformed("response has no result".into())),
    };
    (id, result)
}

fn decode_ok(outcome: Outcome) -> Result<Response, SignerError> {
    Ok(match outcome {
        Outcome::ChannelKeys(m) => Response::ChannelKeys(
            m.sets
                .iter()
                .map(|s| {
                    Ok(ChannelKeySet {
                        keys_id: bytes32(&s.keys_id, "keys_id")?,
                        pubkeys: ldk::<ChannelPublicKeys>(&s.pubkeys, "channel public keys")?,
                    })
                })
                .collect::<Result<_, SignerError>>()?,
        ),
        Outcome::Points(m) => Response::Points(
            m.points
                .iter()
                .map(|p| key(p, "point"))
                .collect::<Result<_, _>>()?,
        ),
        Outcome::Secret(s) => Response::Secret(bytes32(&s, "secret")?),
        Outcome::Accepted(_) => Response::Accepted,
        Outcome::CommitmentSignatures(m) => Response::CommitmentSignatures {
            commitment: signature(&m.commitment)?,
            htlcs: m
                .htlcs
                .iter()
                .map(|s| signature(s))
                .collect::<Result<_, _>>()?,
        },
        Outcome::Signature(s) => Response::Signature(signature(&s)?),
        Outcome::SharedSecret(s) => Response::SharedSecret(bytes32(&s, "shared secret")?),
        Outcome::RecoverableSignature(m) => {
            let id =
                RecoveryId::from_i32(m.recovery_id).map_err(|e| malformed("recovery id", e))?;
            Response::RecoverableSignature(
                RecoverableSignature::from_compact(&m.compact, id)
                    .map_err(|e| malformed("recoverable signature", e))?,
            )
        }
        Outcome::Message(text) => Response::Message(text),
        Outcome::Transaction(tx) => Response::Transaction(consensus(&tx, "transaction")?),
        Outcome::Psbt(psbt) => {
            Response::Psbt(Psbt::deserialize(&psbt).map_err(|e| malformed("psbt", e))?)
        }
        Outcome::Error(error) => return Err(decode_error(error)),
    })
}

fn decode_error(error: proto::Error) -> SignerError {
    match proto::ErrorKind::try_from(error.kind) {
        Ok(proto::ErrorKind::Refused) => SignerError::Refused(error.reason),
        Ok(proto::ErrorKind::Malformed) => SignerError::Malformed(error.reason),
        Ok(proto::ErrorKind::Unavailable) => SignerError::Unavailable,
        Ok(proto::ErrorKind::Timeout) => SignerError::Timeout,
        Ok(proto::ErrorKind::Unspecified) | Err(_) => SignerError::Malformed(format!(
            "unknown error kind {}: {}",
            error.kind, error.reason
        )),
    }
}
