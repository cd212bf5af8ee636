//! Requests on the wire: the hub encodes them, the signer decodes them.

use std::collections::HashMap;

use bitcoin::consensus::encode;
use bitcoin::{Psbt, ScriptBuf, Transaction, TxOut};
use lightning::ln::chan_utils::{
    ChannelTransactionParameters, CommitmentTransaction, HTLCOutputInCommitment,
    HolderCommitmentTransaction,
};
use lightning::sign::{HTLCDescriptor, SpendableOutputDescriptor};
use lightning::util::ser::Writeable;

use super::fields::{bytes32, consensus, decode_preimages, key, ldk, malformed, params, preimages};
use super::proto;
use super::proto::request_envelope::Body;
use crate::{ClosingParts, HolderCommitment, Request, Revocation, SignerError};

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

/// A holder commitment as it rides on a request (the host also stores its notes so).
pub fn encode_holder(holder: &HolderCommitment) -> proto::HolderCommitment {
    proto::HolderCommitment {
        params: holder.params.as_ref().map(|p| p.encode()),
        tx: holder.tx.encode(),
        outbound_preimages: preimages(&holder.outbound_preimages),
    }
}

/// How many encodings of channel parameters a [`RequestDecoder`] keeps decoded.
pub(super) const PARAMS_KEPT: usize = 16;

/// Decodes one node's requests, keeping the channel parameters it decoded: every request of a
/// channel repeats the same bytes, and decoding them (ten public keys to decompress) was ~5%
/// of a signer's CPU. Keyed by the bytes themselves, so a cached value is always the one those
/// bytes decode to.
#[derive(Default)]
pub struct RequestDecoder {
    pub(super) params: HashMap<Vec<u8>, ChannelTransactionParameters>,
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

    /// A holder commitment as it rides on a request (the host also stores its notes so).
    pub fn holder(&mut self, m: &proto::HolderCommitment) -> Result<HolderCommitment, SignerError> {
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
