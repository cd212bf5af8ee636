//! What a node's signer answers, and why it may not.

use bitcoin::secp256k1::ecdsa::{RecoverableSignature, Signature};
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Psbt, Transaction};

use crate::ChannelKeySet;

/// A signer's answer to a [`Request`] of the same kind.
#[derive(Clone, Debug)]
pub enum Response {
    ChannelKeys(Vec<ChannelKeySet>),
    Points(Vec<PublicKey>),
    Secret([u8; 32]),
    /// The request was checked and accepted (validations, approvals).
    Accepted,
    CommitmentSignatures {
        commitment: Signature,
        htlcs: Vec<Signature>,
    },
    Signature(Signature),
    SharedSecret([u8; 32]),
    RecoverableSignature(RecoverableSignature),
    Message(String),
    Transaction(Transaction),
    Psbt(Psbt),
}

/// Why a signer did not answer a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignerError {
    /// The signer's policy forbids it; the reason is logged on both sides.
    #[error("refused by the signer's policy: {0}")]
    Refused(String),
    /// The request could not be understood or checked (bad data from the host).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// No signer is attached for this node (parked), or it went away mid-request.
    #[error("the node's signer is not connected")]
    Unavailable,
    /// The signer did not answer within the deadline.
    #[error("the signer did not answer in time")]
    Timeout,
}
