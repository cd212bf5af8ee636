//! The signer protocol's values on the wire: [`Request`], [`Response`], [`SignerError`] and
//! [`Handover`] to and from the protobuf messages of `proto/signer.proto`.
//!
//! LDK structures travel in LDK's own serialization, bitcoin values in consensus encoding, so
//! neither side re-implements their layout. Everything read from the wire is checked here: a
//! value that does not decode becomes [`SignerError::Malformed`], never a panic.

use std::collections::HashMap;

use bitcoin::consensus::encode;
use bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature};
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Psbt, ScriptBuf, Transaction, TxOut};
use lightning::io::Cursor;
use lightning::ln::chan_utils::{
    ChannelPublicKeys, ChannelTransactionParameters, CommitmentTransaction, HTLCOutputInCommitment,
    HolderCommitmentTransaction,
};
use lightning::sign::{HTLCDescriptor, SpendableOutputDescriptor};
use lightning::types::payment::PaymentPreimage;
use lightning::util::ser::{Readable, ReadableArgs, Writeable};

use super::protocol::{
    ChannelKeySet, ClosingParts, Handover, HolderCommitment, Request, Response, Revocation,
    SignerError,
};

/// The generated protobuf messages and the gRPC service.
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("flotilla.signer.v1");
}

use proto::request_envelope::Body;
use proto::response_envelope::Result as Outcome;

/// The digest a signer signs to prove it holds the node key: `sha256(CHALLENGE_TAG || challenge)`.
pub use super::protocol::challenge_digest;

// ---------------------------------------------------------------------------------------------
// Handover

pub fn encode_handover(handover: &Handover) -> proto::Handover {
    proto::Handover {
        node_id: handover.node_id.serialize().to_vec(),
        inbound_payment_key: handover.inbound_payment_key.to_vec(),
        peer_storage_key: handover.peer_storage_key.to_vec(),
        receive_auth_key: handover.receive_auth_key.to_vec(),
        wallet_external_descriptor: handover.wallet_descriptors.0.clone(),
        wallet_internal_descriptor: handover.wallet_descriptors.1.clone(),
        shutdown_script: handover.shutdown_script.to_bytes(),
    }
}

pub fn decode_handover(handover: proto::Handover) -> Result<Handover, SignerError> {
    Ok(Handover {
        node_id: key(&handover.node_id, "handover node_id")?,
        inbound_payment_key: bytes32(&handover.inbound_payment_key, "inbound_payment_key")?,
        peer_storage_key: bytes32(&handover.peer_storage_key, "peer_storage_key")?,
        receive_auth_key: bytes32(&handover.receive_auth_key, "receive_auth_key")?,
        wallet_descriptors: (
            handover.wallet_external_descriptor,
            handover.wallet_internal_descriptor,
        ),
        shutdown_script: ScriptBuf::from_bytes(handover.shutdown_script),
    })
}

// ---------------------------------------------------------------------------------------------
// Requests

/// The request as sent by the hub under `id`.
pub fn encode_request(id: u64, request: &Request) -> proto::RequestEnvelope {
    let body = match request {
        Request::NewChannelKeys { count } => {
            Body::NewChannelKeys(proto::NewChannelKeys { count: *count })
        }
        Request::PerCommitmentPoints {
            keys_id,
            first,
            count,
        } => Body::PerCommitmentPoints(proto::PerCommitmentPoints {
            keys_id: keys_id.to_vec(),
            first: *first,
            count: *count,
        }),
        Request::ReleaseCommitmentSecret {
            keys_id,
            idx,
            holder,
        } => Body::ReleaseCommitmentSecret(proto::ReleaseCommitmentSecret {
            keys_id: keys_id.to_vec(),
            idx: *idx,
            holder: holder.as_ref().map(encode_holder),
        }),
        Request::ValidateHolderCommitment { keys_id, holder } => {
            Body::ValidateHolderCommitment(proto::ValidateHolderCommitment {
                keys_id: keys_id.to_vec(),
                holder: Some(encode_holder(holder)),
            })
        }
        Request::ValidateCounterpartyRevocation {
            keys_id,
            revocation,
        } => Body::ValidateCounterpartyRevocation(proto::ValidateCounterpartyRevocation {
            keys_id: keys_id.to_vec(),
            idx: revocation.idx,
            secret: revocation.secret.to_vec(),
        }),
        Request::SignCounterpartyCommitment {
            keys_id,
            params,
            tx,
            inbound_preimages,
            outbound_preimages,
            revocation,
        } => Body::SignCounterpartyCommitment(proto::SignCounterpartyCommitment {
            keys_id: keys_id.to_vec(),
            params: params.encode(),
            tx: tx.encode(),
            inbound_preimages: preimages(inbound_preimages),
            outbound_preimages: preimages(outbound_preimages),
            revocation: revocation.map(|r| proto::Revocation {
                idx: r.idx,
                secret: r.secret.to_vec(),
            }),
        }),
        Request::SignHolderCommitment {
            keys_id,
            params,
            tx,
        } => Body::SignHolderCommitment(proto::SignHolderCommitment {
            keys_id: keys_id.to_vec(),
            params: params.encode(),
            tx: tx.encode(),
        }),
        Request::SignJusticeRevokedOutput {
            keys_id,
            params,
            tx,
            input,
            amount,
            per_commitment_key,
        } => Body::SignJusticeRevokedOutput(proto::SignJusticeRevokedOutput {
            keys_id: keys_id.to_vec(),
            params: params.encode(),
            tx: encode::serialize(tx),
            input: *input,
            amount: *amount,
            per_commitment_key: per_commitment_key.to_vec(),
        }),
        Request::SignJusticeRevokedHtlc {
            keys_id,
            params,
            tx,
            input,
            amount,
            per_commitment_key,
            htlc,
        } => Body::SignJusticeRevokedHtlc(proto::SignJusticeRevokedHtlc {
            keys_id: keys_id.to_vec(),
            params: params.encode(),
            tx: encode::serialize(tx),
            input: *input,
            amount: *amount,
            per_commitment_key: per_commitment_key.to_vec(),
            htlc: htlc.encode(),
        }),
        Request::SignHolderHtlcTransaction {
            keys_id,
            tx,
            input,
            descriptor,
        } => Body::SignHolderHtlcTransaction(proto::SignHolderHtlcTransaction {
            keys_id: keys_id.to_vec(),
            tx: encode::serialize(tx),
            input: *input,
            descriptor: descriptor.encode(),
        }),
        Request::SignCounterpartyHtlcTransaction {
            keys_id,
            params,
            tx,
            input,
            amount,
            per_commitment_point,
            htlc,
        } => Body::SignCounterpartyHtlcTransaction(proto::SignCounterpartyHtlcTransaction {
            keys_id: keys_id.to_vec(),
            params: params.encode(),
            tx: encode::serialize(tx),
            input: *input,
            amount: *amount,
            per_commitment_point: per_commitment_point.serialize().to_vec(),
            htlc: htlc.encode(),
        }),
        Request::SignClosingTransaction {
            keys_id,
            params,
            closing,
        } => Body::SignClosingTransaction(proto::SignClosingTransaction {
            keys_id: keys_id.to_vec(),
            params: params.encode(),
            closing: Some(proto::ClosingParts {
                to_holder_sat: closing.to_holder_sat,
                to_counterparty_sat: closing.to_counterparty_sat,
                to_holder_script: closing.to_holder_script.to_bytes(),
                to_counterparty_script: closing.to_counterparty_script.to_bytes(),
            }),
        }),
        Request::SignHolderAnchorInput {
            keys_id,
            params,
            tx,
            input,
        } => Body::SignHolderAnchorInput(proto::SignHolderAnchorInput {
            keys_id: keys_id.to_vec(),
            params: params.encode(),
            tx: encode::serialize(tx),
            input: *input,
        }),
        Request::Ecdh { other_key, tweak } => Body::Ecdh(proto::Ecdh {
            other_key: other_key.serialize().to_vec(),
            tweak: tweak.map(|t| t.to_vec()),
        }),
        Request::SignInvoice { hrp, data } => Body::SignInvoice(proto::SignInvoice {
            hrp: hrp.clone(),
            data: data.clone(),
        }),
        Request::SignGossip { msg_type, msg } => Body::SignGossip(proto::SignGossip {
            msg_type: u32::from(*msg_type),
            msg: msg.clone(),
        }),
        Request::SignMessage { msg } => Body::SignMessage(proto::SignMessage { msg: msg.clone() }),
        Request::SpendOutputs {
            descriptors,
            outputs,
            change_script,
            feerate_sat_per_1000_weight,
            locktime,
        } => Body::SpendOutputs(proto::SpendOutputs {
            descriptors: descriptors.iter().map(Writeable::encode).collect(),
            outputs: outputs.iter().map(encode::serialize).collect(),
            change_script: change_script.to_bytes(),
            feerate_sat_per_1000_weight: *feerate_sat_per_1000_weight,
            locktime: *locktime,
        }),
        Request::SignPsbt { psbt } => Body::SignPsbt(proto::SignPsbt {
            psbt: psbt.serialize(),
        }),
        Request::ApprovePayment {
            payment_hash,
            amount_msat,
            destination,
        } => Body::ApprovePayment(proto::ApprovePayment {
            payment_hash: payment_hash.to_vec(),
            amount_msat: *amount_msat,
            destination: destination.serialize().to_vec(),
        }),
        Request::ApproveChannelOpen {
            peer,
            value_sat,
            push_msat,
            keys_id,
            outbound,
        } => Body::ApproveChannelOpen(proto::ApproveChannelOpen {
            peer: peer.serialize().to_vec(),
            value_sat: *value_sat,
            push_msat: *push_msat,
            keys_id: keys_id.to_vec(),
            outbound: *outbound,
        }),
        Request::RetireChannel { keys_id } => Body::RetireChannel(proto::RetireChannel {
            keys_id: keys_id.to_vec(),
        }),
    };
    proto::RequestEnvelope {
        id,
        body: Some(body),
    }
}

/// The request's id and its value, or why it does not decode (answered under the same id).
pub fn decode_request(envelope: proto::RequestEnvelope) -> (u64, Result<Request, SignerError>) {
    RequestDecoder::default().decode(envelope)
}

/// How many encodings of channel parameters a [`RequestDecoder`] keeps decoded.
const PARAMS_KEPT: usize = 16;

/// Decodes one node's requests, keeping the channel parameters it decoded: every request of a
/// channel repeats the same bytes, and decoding them (ten public keys to decompress) was ~5%
/// of a signer's CPU. Keyed by the bytes themselves, so a cached value is always the one those
/// bytes decode to.
#[derive(Default)]
pub struct RequestDecoder {
    params: HashMap<Vec<u8>, ChannelTransactionParameters>,
}

impl RequestDecoder {
    /// The request's id and its value, or why it does not decode.
    pub fn decode(
        &mut self,
        envelope: proto::RequestEnvelope,
    ) -> (u64, Result<Request, SignerError>) {
        let id = envelope.id;
        let request = match envelope.body {
            Some(body) => self.body(body),
            None => Err(SignerError::Malformed("request has no body".into())),
        };
        (id, request)
    }

    fn params(&mut self, bytes: &[u8]) -> Result<ChannelTransactionParameters, SignerError> {
        if let Some(known) = self.params.get(bytes) {
            return Ok(known.clone());
        }
        let decoded = params(bytes)?;
        if self.params.len() >= PARAMS_KEPT {
            // Channels come and go rarely: starting over is simpler than tracking age.
            self.params.clear();
        }
        self.params.insert(bytes.to_vec(), decoded.clone());
        Ok(decoded)
    }

    pub(crate) fn holder(
        &mut self,
        m: &proto::HolderCommitment,
    ) -> Result<HolderCommitment, SignerError> {
        Ok(HolderCommitment {
            params: m.params.as_deref().map(|p| self.params(p)).transpose()?,
            tx: ldk::<HolderCommitmentTransaction>(&m.tx, "holder commitment")?,
            outbound_preimages: decode_preimages(&m.outbound_preimages)?,
        })
    }

    fn body(&mut self, body: Body) -> Result<Request, SignerError> {
        Ok(match body {
            Body::NewChannelKeys(m) => Request::NewChannelKeys { count: m.count },
            Body::PerCommitmentPoints(m) => Request::PerCommitmentPoints {
                keys_id: bytes32(&m.keys_id, "keys_id")?,
                first: m.first,
                count: m.count,
            },
            Body::ReleaseCommitmentSecret(m) => Request::ReleaseCommitmentSecret {
                keys_id: bytes32(&m.keys_id, "keys_id")?,
                idx: m.idx,
                holder: m.holder.as_ref().map(|h| self.holder(h)).transpose()?,
            },
            Body::ValidateHolderCommitment(m) => Request::ValidateHolderCommitment {
                keys_id: bytes32(&m.keys_id, "keys_id")?,
                holder: self.holder(
                    m.holder
                        .as_ref()
                        .ok_or_else(|| SignerError::Malformed("no holder commitment".into()))?,
                )?,
            },
            Body::ValidateCounterpartyRevocation(m) => Request::ValidateCounterpartyRevocation {
                keys_id: bytes32(&m.keys_id, "keys_id")?,
                revocation: Revocation {
                    idx: m.idx,
                    secret: bytes32(&m.secret, "secret")?,
                },
            },
            Body::SignCounterpartyCommitment(m) => Request::SignCounterpartyCommitment {
                keys_id: bytes32(&m.keys_id, "keys_id")?,
                params: self.params(&m.params)?,
                tx: ldk::<CommitmentTransaction>(&m.tx, "commitment")?,
                inbound_preimages: decode_preimages(&m.inbound_preimages)?,
                outbound_preimages: decode_preimages(&m.outbound_preimages)?,
                revocation: match &m.revocation {
                    Some(r) => Some(Revocation {
                        idx: r.idx,
                        secret: bytes32(&r.secret, "revocation secret")?,
                    }),
                    None => None,
                },
            },
            Body::SignHolderCommitment(m) => Request::SignHolderCommitment {
                keys_id: bytes32(&m.keys_id, "keys_id")?,
                params: self.params(&m.params)?,
                tx: ldk::<HolderCommitmentTransaction>(&m.tx, "holder commitment")?,
            },
            Body::SignJusticeRevokedOutput(m) => Request::SignJusticeRevokedOutput {
                keys_id: bytes32(&m.keys_id, "keys_id")?,
                params: self.params(&m.params)?,
                tx: consensus::<Transaction>(&m.tx, "transaction")?,
                input: m.input,
                amount: m.amount,
                per_commitment_key: bytes32(&m.per_commitment_key, "per_commitment_key")?,
            },
            Body::SignJusticeRevokedHtlc(m) => Request::SignJusticeRevokedHtlc {
                keys_id: bytes32(&m.keys_id, "keys_id")?,
                params: self.params(&m.params)?,
                tx: consensus::<Transaction>(&m.tx, "transaction")?,
                input: m.input,
                amount: m.amount,
                per_commitment_key: bytes32(&m.per_commitment_key, "per_commitment_key")?,
                htlc: ldk::<HTLCOutputInCommitment>(&m.htlc, "htlc")?,
            },
            Body::SignHolderHtlcTransaction(m) => Request::SignHolderHtlcTransaction {
                keys_id: bytes32(&m.keys_id, "keys_id")?,
                tx: consensus::<Transaction>(&m.tx, "transaction")?,
                input: m.input,
                descriptor: ldk::<HTLCDescriptor>(&m.descriptor, "htlc descriptor")?,
            },
            Body::SignCounterpartyHtlcTransaction(m) => Request::SignCounterpartyHtlcTransaction {
                keys_id: bytes32(&m.keys_id, "keys_id")?,
                params: self.params(&m.params)?,
                tx: consensus::<Transaction>(&m.tx, "transaction")?,
                input: m.input,
                amount: m.amount,
                per_commitment_point: key(&m.per_commitment_point, "per_commitment_point")?,
                htlc: ldk::<HTLCOutputInCommitment>(&m.htlc, "htlc")?,
            },
            Body::SignClosingTransaction(m) => {
                let closing = m
                    .closing
                    .ok_or_else(|| SignerError::Malformed("closing parts missing".into()))?;
                Request::SignClosingTransaction {
                    keys_id: bytes32(&m.keys_id, "keys_id")?,
                    params: self.params(&m.params)?,
                    closing: ClosingParts {
                        to_holder_sat: closing.to_holder_sat,
                        to_counterparty_sat: closing.to_counterparty_sat,
                        to_holder_script: ScriptBuf::from_bytes(closing.to_holder_script),
                        to_counterparty_script: ScriptBuf::from_bytes(
                            closing.to_counterparty_script,
                        ),
                    },
                }
            }
            Body::SignHolderAnchorInput(m) => Request::SignHolderAnchorInput {
                keys_id: bytes32(&m.keys_id, "keys_id")?,
                params: self.params(&m.params)?,
                tx: consensus::<Transaction>(&m.tx, "transaction")?,
                input: m.input,
            },
            Body::Ecdh(m) => Request::Ecdh {
                other_key: key(&m.other_key, "ecdh key")?,
                tweak: m
                    .tweak
                    .as_deref()
                    .map(|t| bytes32(t, "tweak"))
                    .transpose()?,
            },
            Body::SignInvoice(m) => Request::SignInvoice {
                hrp: m.hrp,
                data: m.data,
            },
            Body::SignGossip(m) => Request::SignGossip {
                msg_type: u16::try_from(m.msg_type)
                    .map_err(|_| SignerError::Malformed(format!("gossip type {}", m.msg_type)))?,
                msg: m.msg,
            },
            Body::SignMessage(m) => Request::SignMessage { msg: m.msg },
            Body::SpendOutputs(m) => Request::SpendOutputs {
                descriptors: m
                    .descriptors
                    .iter()
                    .map(|d| ldk::<SpendableOutputDescriptor>(d, "spendable output descriptor"))
                    .collect::<Result<_, _>>()?,
                outputs: m
                    .outputs
                    .iter()
                    .map(|o| consensus::<TxOut>(o, "output"))
                    .collect::<Result<_, _>>()?,
                change_script: ScriptBuf::from_bytes(m.change_script),
                feerate_sat_per_1000_weight: m.feerate_sat_per_1000_weight,
                locktime: m.locktime,
            },
            Body::SignPsbt(m) => Request::SignPsbt {
                psbt: Psbt::deserialize(&m.psbt).map_err(|e| malformed("psbt", e))?,
            },
            Body::ApprovePayment(m) => Request::ApprovePayment {
                payment_hash: bytes32(&m.payment_hash, "payment_hash")?,
                amount_msat: m.amount_msat,
                destination: key(&m.destination, "destination")?,
            },
            Body::ApproveChannelOpen(m) => Request::ApproveChannelOpen {
                peer: key(&m.peer, "peer")?,
                value_sat: m.value_sat,
                push_msat: m.push_msat,
                keys_id: bytes32(&m.keys_id, "keys_id")?,
                outbound: m.outbound,
            },
            Body::RetireChannel(m) => Request::RetireChannel {
                keys_id: bytes32(&m.keys_id, "keys_id")?,
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

/// The signer's answer to request `id`.
pub fn encode_response(id: u64, result: &Result<Response, SignerError>) -> proto::ResponseEnvelope {
    let outcome = match result {
        Ok(response) => encode_ok(response),
        Err(error) => Outcome::Error(encode_error(error)),
    };
    proto::ResponseEnvelope {
        id,
        result: Some(outcome),
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

// ---------------------------------------------------------------------------------------------
// Field codecs

fn malformed(what: &str, error: impl std::fmt::Display) -> SignerError {
    SignerError::Malformed(format!("{what}: {error}"))
}

fn bytes32(bytes: &[u8], what: &str) -> Result<[u8; 32], SignerError> {
    bytes
        .try_into()
        .map_err(|_| SignerError::Malformed(format!("{what}: {} bytes, not 32", bytes.len())))
}

/// A public key, compressed form only (33 bytes).
fn key(bytes: &[u8], what: &str) -> Result<PublicKey, SignerError> {
    if bytes.len() != 33 {
        return Err(SignerError::Malformed(format!(
            "{what}: {} bytes, not a 33-byte compressed key",
            bytes.len()
        )));
    }
    PublicKey::from_slice(bytes).map_err(|e| malformed(what, e))
}

fn signature(bytes: &[u8]) -> Result<Signature, SignerError> {
    Signature::from_compact(bytes).map_err(|e| malformed("signature", e))
}

fn preimages(preimages: &[PaymentPreimage]) -> Vec<Vec<u8>> {
    preimages.iter().map(|p| p.0.to_vec()).collect()
}

fn decode_preimages(preimages: &[Vec<u8>]) -> Result<Vec<PaymentPreimage>, SignerError> {
    preimages
        .iter()
        .map(|p| bytes32(p, "preimage").map(PaymentPreimage))
        .collect()
}

/// An LDK value that must fill `bytes` exactly (trailing bytes mean a different value was meant).
fn ldk<T: Readable>(bytes: &[u8], what: &str) -> Result<T, SignerError> {
    let mut cursor = Cursor::new(bytes);
    let value = T::read(&mut cursor).map_err(|e| malformed(what, e))?;
    whole(&cursor, bytes.len(), what)?;
    Ok(value)
}

fn params(bytes: &[u8]) -> Result<ChannelTransactionParameters, SignerError> {
    const WHAT: &str = "channel parameters";
    let mut cursor = Cursor::new(bytes);
    // `None`: the channel value must be in the encoding itself (LDK always writes it).
    let value =
        ChannelTransactionParameters::read(&mut cursor, None).map_err(|e| malformed(WHAT, e))?;
    whole(&cursor, bytes.len(), WHAT)?;
    Ok(value)
}

pub(crate) fn encode_holder(holder: &HolderCommitment) -> proto::HolderCommitment {
    proto::HolderCommitment {
        params: holder.params.as_ref().map(|p| p.encode()),
        tx: holder.tx.encode(),
        outbound_preimages: preimages(&holder.outbound_preimages),
    }
}

fn whole(cursor: &Cursor<&[u8]>, len: usize, what: &str) -> Result<(), SignerError> {
    if cursor.position() == len as u64 {
        Ok(())
    } else {
        Err(SignerError::Malformed(format!(
            "{what}: {} trailing bytes",
            (len as u64).saturating_sub(cursor.position())
        )))
    }
}

fn consensus<T: encode::Decodable>(bytes: &[u8], what: &str) -> Result<T, SignerError> {
    encode::deserialize(bytes).map_err(|e| malformed(what, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use bitcoin::hashes::Hash;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use bitcoin::{absolute, transaction, Amount, OutPoint, Sequence, TxIn, Txid, Witness};
    use lightning::chain::transaction::OutPoint as LdkOutPoint;
    use lightning::ln::chan_utils::CounterpartyChannelTransactionParameters;
    use lightning::sign::ChannelDerivationParameters;
    use lightning::types::features::ChannelTypeFeatures;
    use lightning::types::payment::PaymentHash;

    use super::*;
    use bitcoin::hashes::{sha256, HashEngine};
    use bitcoin::secp256k1::Message;

    fn secret(byte: u8) -> SecretKey {
        SecretKey::from_slice(&[byte; 32]).unwrap()
    }

    fn point(byte: u8) -> PublicKey {
        PublicKey::from_secret_key(&Secp256k1::new(), &secret(byte))
    }

    fn sig(byte: u8) -> Signature {
        let digest = Message::from_digest([byte; 32]);
        Secp256k1::new().sign_ecdsa(&digest, &secret(byte))
    }

    fn channel_keys(base: u8) -> ChannelPublicKeys {
        ChannelPublicKeys {
            funding_pubkey: point(base),
            revocation_basepoint: point(base + 1).into(),
            payment_point: point(base + 2),
            delayed_payment_basepoint: point(base + 3).into(),
            htlc_basepoint: point(base + 4).into(),
        }
    }

    fn params() -> ChannelTransactionParameters {
        ChannelTransactionParameters {
            holder_pubkeys: channel_keys(1),
            holder_selected_contest_delay: 144,
            is_outbound_from_holder: true,
            counterparty_parameters: Some(CounterpartyChannelTransactionParameters {
                pubkeys: channel_keys(10),
                selected_contest_delay: 144,
            }),
            funding_outpoint: Some(LdkOutPoint {
                txid: Txid::from_byte_array([7; 32]),
                index: 1,
            }),
            splice_parent_funding_txid: None,
            channel_type_features: ChannelTypeFeatures::anchors_zero_htlc_fee_and_dependencies(),
            channel_value_satoshis: 1_000_000,
        }
    }

    fn htlc(index: Option<u32>) -> HTLCOutputInCommitment {
        HTLCOutputInCommitment {
            offered: true,
            amount_msat: 5_000_000,
            cltv_expiry: 500_123,
            payment_hash: PaymentHash([9; 32]),
            transaction_output_index: index,
        }
    }

    /// A real commitment transaction with one non-dust HTLC, built by LDK.
    fn commitment() -> CommitmentTransaction {
        let secp = Secp256k1::new();
        let params = params();
        CommitmentTransaction::new(
            42,
            &point(30),
            600_000,
            390_000,
            253,
            vec![htlc(None)],
            &params.as_holder_broadcastable(),
            &secp,
        )
    }

    /// A well-formed holder commitment with an HTLC (signatures do not verify).
    pub(crate) fn holder_commitment() -> HolderCommitmentTransaction {
        let htlc_sigs = vec![sig(41); commitment().nondust_htlcs().len()];
        HolderCommitmentTransaction::new(commitment(), sig(40), htlc_sigs, &point(1), &point(10))
    }

    fn tx() -> Transaction {
        Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::from_consensus(500_000),
            input: vec![TxIn {
                previous_output: OutPoint::new(Txid::from_byte_array([3; 32]), 2),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: vec![output(70_000)],
        }
    }

    fn output(sat: u64) -> TxOut {
        TxOut {
            value: Amount::from_sat(sat),
            script_pubkey: ScriptBuf::from_bytes(vec![0x00, 0x14, 0xab, 0xcd]),
        }
    }

    fn every_request() -> Vec<Request> {
        let keys_id = [5; 32];
        vec![
            Request::NewChannelKeys { count: 3 },
            Request::PerCommitmentPoints {
                keys_id,
                first: (1 << 48) - 1,
                count: 2,
            },
            Request::ReleaseCommitmentSecret {
                keys_id,
                idx: 77,
                holder: None,
            },
            Request::ReleaseCommitmentSecret {
                keys_id,
                idx: 76,
                holder: Some(HolderCommitment {
                    params: None,
                    tx: holder_commitment(),
                    outbound_preimages: vec![],
                }),
            },
            Request::ValidateHolderCommitment {
                keys_id,
                holder: HolderCommitment {
                    params: Some(params()),
                    tx: holder_commitment(),
                    outbound_preimages: vec![PaymentPreimage([1; 32]), PaymentPreimage([2; 32])],
                },
            },
            Request::ValidateCounterpartyRevocation {
                keys_id,
                revocation: Revocation {
                    idx: 12,
                    secret: [8; 32],
                },
            },
            Request::SignCounterpartyCommitment {
                keys_id,
                params: params(),
                tx: commitment(),
                inbound_preimages: vec![PaymentPreimage([3; 32])],
                outbound_preimages: vec![],
                revocation: Some(Revocation {
                    idx: 13,
                    secret: [9; 32],
                }),
            },
            Request::SignHolderCommitment {
                keys_id,
                params: params(),
                tx: holder_commitment(),
            },
            Request::SignJusticeRevokedOutput {
                keys_id,
                params: params(),
                tx: tx(),
                input: 0,
                amount: 12_345,
                per_commitment_key: [4; 32],
            },
            Request::SignJusticeRevokedHtlc {
                keys_id,
                params: params(),
                tx: tx(),
                input: 0,
                amount: 5_000,
                per_commitment_key: [4; 32],
                htlc: htlc(Some(2)),
            },
            Request::SignHolderHtlcTransaction {
                keys_id,
                tx: tx(),
                input: 0,
                descriptor: HTLCDescriptor {
                    channel_derivation_parameters: ChannelDerivationParameters {
                        value_satoshis: 1_000_000,
                        keys_id,
                        transaction_parameters: params(),
                    },
                    commitment_txid: Txid::from_byte_array([6; 32]),
                    per_commitment_number: 42,
                    per_commitment_point: point(30),
                    feerate_per_kw: 0,
                    htlc: htlc(Some(2)),
                    preimage: Some(PaymentPreimage([11; 32])),
                    counterparty_sig: sig(12),
                },
            },
            Request::SignCounterpartyHtlcTransaction {
                keys_id,
                params: params(),
                tx: tx(),
                input: 0,
                amount: 5_000,
                per_commitment_point: point(31),
                htlc: htlc(Some(3)),
            },
            Request::SignClosingTransaction {
                keys_id,
                params: params(),
                closing: ClosingParts {
                    to_holder_sat: 600_000,
                    to_counterparty_sat: 399_000,
                    to_holder_script: ScriptBuf::from_bytes(vec![0x00, 0x14, 1, 2]),
                    to_counterparty_script: ScriptBuf::from_bytes(vec![0x51]),
                },
            },
            Request::SignHolderAnchorInput {
                keys_id,
                params: params(),
                tx: tx(),
                input: 0,
            },
            Request::Ecdh {
                other_key: point(50),
                tweak: Some([13; 32]),
            },
            Request::Ecdh {
                other_key: point(51),
                tweak: None,
            },
            Request::SignInvoice {
                hrp: "lnbcrt10u".into(),
                data: vec![0, 31, 7, 12],
            },
            Request::SignGossip {
                msg_type: 258,
                msg: vec![1, 2, 3],
            },
            Request::SignMessage {
                msg: b"hello".to_vec(),
            },
            Request::SpendOutputs {
                descriptors: vec![SpendableOutputDescriptor::StaticOutput {
                    outpoint: LdkOutPoint {
                        txid: Txid::from_byte_array([14; 32]),
                        index: 0,
                    },
                    output: output(40_000),
                    channel_keys_id: Some(keys_id),
                }],
                outputs: vec![output(30_000), output(1_000)],
                change_script: ScriptBuf::from_bytes(vec![0x51]),
                feerate_sat_per_1000_weight: 2_500,
                locktime: Some(800_000),
            },
            Request::SignPsbt {
                psbt: Psbt::from_unsigned_tx(tx()).unwrap(),
            },
            Request::ApprovePayment {
                payment_hash: [15; 32],
                amount_msat: 123_456,
                destination: point(52),
            },
            Request::ApproveChannelOpen {
                peer: point(53),
                value_sat: 2_000_000,
                push_msat: 5_000,
                keys_id: [54; 32],
                outbound: true,
            },
            Request::RetireChannel { keys_id: [55; 32] },
        ]
    }

    fn every_result() -> Vec<Result<Response, SignerError>> {
        let secp = Secp256k1::new();
        let recoverable = secp.sign_ecdsa_recoverable(&Message::from_digest([16; 32]), &secret(17));
        vec![
            Ok(Response::ChannelKeys(vec![
                ChannelKeySet {
                    keys_id: [1; 32],
                    pubkeys: channel_keys(1),
                },
                ChannelKeySet {
                    keys_id: [2; 32],
                    pubkeys: channel_keys(10),
                },
            ])),
            Ok(Response::Points(vec![point(1), point(2)])),
            Ok(Response::Secret([18; 32])),
            Ok(Response::Accepted),
            Ok(Response::CommitmentSignatures {
                commitment: sig(19),
                htlcs: vec![sig(20), sig(21)],
            }),
            Ok(Response::Signature(sig(22))),
            Ok(Response::SharedSecret([23; 32])),
            Ok(Response::RecoverableSignature(recoverable)),
            Ok(Response::Message("d9abc".into())),
            Ok(Response::Transaction(tx())),
            Ok(Response::Psbt(Psbt::from_unsigned_tx(tx()).unwrap())),
            Err(SignerError::Refused("over the daily limit".into())),
            Err(SignerError::Malformed("bad point".into())),
            Err(SignerError::Unavailable),
            Err(SignerError::Timeout),
        ]
    }

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
        let handover = Handover {
            node_id: point(60),
            inbound_payment_key: [1; 32],
            peer_storage_key: [2; 32],
            receive_auth_key: [3; 32],
            wallet_descriptors: ("wpkh(xpub/0/*)".into(), "wpkh(xpub/1/*)".into()),
            shutdown_script: ScriptBuf::from_bytes(vec![0x00, 0x14, 9, 9]),
        };
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
}
