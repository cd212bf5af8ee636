//! What the host asks of a node's signer, as Rust values.
//!
//! One vocabulary for both transports: the in-process signer (tests and benchmark baseline)
//! answers these values directly; the gRPC transport (`wire`) carries them, LDK structures in
//! LDK's own serialization. The host never sees a secret it did not ask for by name (the
//! handover's symmetric keys); everything else it receives is a signature or a public value.

use bitcoin::secp256k1::PublicKey;
use bitcoin::{Psbt, ScriptBuf, Transaction, TxOut};
use lightning::ln::chan_utils::{
    ChannelTransactionParameters, CommitmentTransaction, HTLCOutputInCommitment,
    HolderCommitmentTransaction,
};
use lightning::sign::{HTLCDescriptor, SpendableOutputDescriptor};
use lightning::types::payment::PaymentPreimage;

/// Identifies one channel's keys (LDK's `channel_keys_id`): the signer re-derives the keys
/// from its seed and this id exactly as LDK's `KeysManager` does.
pub type KeysId = [u8; 32];

/// The closing transaction's parts (LDK's `ClosingTransaction` is rebuilt from them and the
/// funding outpoint in the channel parameters, so the signer checks what it signs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosingParts {
    pub to_holder_sat: u64,
    pub to_counterparty_sat: u64,
    pub to_holder_script: ScriptBuf,
    pub to_counterparty_script: ScriptBuf,
}

/// The peer's secret for its commitment `idx`: it revokes that commitment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub idx: u64,
    pub secret: [u8; 32],
}

/// Our commitment `tx`, signed by the peer, for the signer to check and remember.
///
/// LDK gives no channel parameters with it: the host sends the last it saw for the channel
/// (none before the first signing request); the signer prefers those it saw itself.
#[derive(Clone, Debug)]
pub struct HolderCommitment {
    pub params: Option<ChannelTransactionParameters>,
    pub tx: HolderCommitmentTransaction,
    pub outbound_preimages: Vec<PaymentPreimage>,
}

/// One request from the host to a node's signer.
#[derive(Clone, Debug)]
pub enum Request {
    /// Fresh channel key sets for the host's pool.
    NewChannelKeys {
        count: u32,
    },
    /// Per-commitment points `first`, `first - 1`, …, `count` of them (public values).
    PerCommitmentPoints {
        keys_id: KeysId,
        first: u64,
        count: u32,
    },
    /// `holder` repeats the newest holder commitment the host took from the peer: the signer
    /// validates it first and releases the secret only if it is the next one. LDK asks for the
    /// secret right after that commitment, so one request and one state save serve both.
    ReleaseCommitmentSecret {
        keys_id: KeysId,
        idx: u64,
        holder: Option<HolderCommitment>,
    },
    /// The same check on its own. This project's host does not send it (the commitment rides
    /// on the next release); the signer answers it for a host that tells it at once.
    ValidateHolderCommitment {
        keys_id: KeysId,
        holder: HolderCommitment,
    },
    /// The peer's revocation on its own. This project's host does not send it (it rides on the
    /// next counterparty commitment); the signer answers it for a host that tells it at once.
    ValidateCounterpartyRevocation {
        keys_id: KeysId,
        revocation: Revocation,
    },
    /// `revocation` repeats the latest one the host took for this channel, so a revocation
    /// lost on the way (signer away or restarted) still reaches the signer before the next
    /// commitment, which it refuses while the peer holds an older one unrevoked.
    SignCounterpartyCommitment {
        keys_id: KeysId,
        params: ChannelTransactionParameters,
        tx: CommitmentTransaction,
        inbound_preimages: Vec<PaymentPreimage>,
        outbound_preimages: Vec<PaymentPreimage>,
        revocation: Option<Revocation>,
    },
    SignHolderCommitment {
        keys_id: KeysId,
        params: ChannelTransactionParameters,
        tx: HolderCommitmentTransaction,
    },
    SignJusticeRevokedOutput {
        keys_id: KeysId,
        params: ChannelTransactionParameters,
        tx: Transaction,
        input: u32,
        amount: u64,
        per_commitment_key: [u8; 32],
    },
    SignJusticeRevokedHtlc {
        keys_id: KeysId,
        params: ChannelTransactionParameters,
        tx: Transaction,
        input: u32,
        amount: u64,
        per_commitment_key: [u8; 32],
        htlc: HTLCOutputInCommitment,
    },
    SignHolderHtlcTransaction {
        keys_id: KeysId,
        tx: Transaction,
        input: u32,
        descriptor: HTLCDescriptor,
    },
    SignCounterpartyHtlcTransaction {
        keys_id: KeysId,
        params: ChannelTransactionParameters,
        tx: Transaction,
        input: u32,
        amount: u64,
        per_commitment_point: PublicKey,
        htlc: HTLCOutputInCommitment,
    },
    SignClosingTransaction {
        keys_id: KeysId,
        params: ChannelTransactionParameters,
        closing: ClosingParts,
    },
    SignHolderAnchorInput {
        keys_id: KeysId,
        params: ChannelTransactionParameters,
        tx: Transaction,
        input: u32,
    },
    /// ECDH with the node key, optionally tweaked (handshakes, onions).
    Ecdh {
        other_key: PublicKey,
        tweak: Option<[u8; 32]>,
    },
    /// A BOLT11 invoice as `RawBolt11Invoice::to_raw` gives it (data as 5-bit values): the
    /// signer rebuilds it, can check it, and signs the hash it computes itself.
    SignInvoice {
        hrp: String,
        data: Vec<u8>,
    },
    /// An unsigned gossip message in LDK's serialization, with its message type.
    SignGossip {
        msg_type: u16,
        msg: Vec<u8>,
    },
    SignMessage {
        msg: Vec<u8>,
    },
    /// Spend outputs LDK handed to the node (sweeps).
    SpendOutputs {
        descriptors: Vec<SpendableOutputDescriptor>,
        outputs: Vec<TxOut>,
        change_script: ScriptBuf,
        feerate_sat_per_1000_weight: u32,
        locktime: Option<u32>,
    },
    /// Sign the on-chain wallet's inputs of a PSBT (funding and wallet sends).
    SignPsbt {
        psbt: Psbt,
    },
    /// Asked before an outgoing payment is sent; the signer may refuse (limits, approval hook).
    ApprovePayment {
        payment_hash: [u8; 32],
        amount_msat: u64,
        destination: PublicKey,
    },
    /// Asked before a channel is opened with `peer` (by us when `outbound`, funding
    /// `value_sat` and giving the peer `push_msat`; else by the peer). `keys_id` is the key
    /// set the channel will use: the signer signs for a channel only once its open is approved.
    ApproveChannelOpen {
        peer: PublicKey,
        value_sat: u64,
        push_msat: u64,
        keys_id: KeysId,
        outbound: bool,
    },
    /// The host archived the channel (closed, and resolved for thousands of blocks): the
    /// signer drops what it kept for it but a tombstone, and signs nothing for the key set
    /// again (a key set it forgot could otherwise be approved anew and sign from scratch).
    RetireChannel {
        keys_id: KeysId,
    },
}

impl Request {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::NewChannelKeys { .. } => "new_channel_keys",
            Request::PerCommitmentPoints { .. } => "per_commitment_points",
            Request::ReleaseCommitmentSecret { .. } => "release_commitment_secret",
            Request::ValidateHolderCommitment { .. } => "validate_holder_commitment",
            Request::ValidateCounterpartyRevocation { .. } => "validate_counterparty_revocation",
            Request::SignCounterpartyCommitment { .. } => "sign_counterparty_commitment",
            Request::SignHolderCommitment { .. } => "sign_holder_commitment",
            Request::SignJusticeRevokedOutput { .. } => "sign_justice_revoked_output",
            Request::SignJusticeRevokedHtlc { .. } => "sign_justice_revoked_htlc",
            Request::SignHolderHtlcTransaction { .. } => "sign_holder_htlc_transaction",
            Request::SignCounterpartyHtlcTransaction { .. } => "sign_counterparty_htlc_transaction",
            Request::SignClosingTransaction { .. } => "sign_closing_transaction",
            Request::SignHolderAnchorInput { .. } => "sign_holder_anchor_input",
            Request::Ecdh { .. } => "ecdh",
            Request::SignInvoice { .. } => "sign_invoice",
            Request::SignGossip { .. } => "sign_gossip",
            Request::SignMessage { .. } => "sign_message",
            Request::SpendOutputs { .. } => "spend_outputs",
            Request::SignPsbt { .. } => "sign_psbt",
            Request::ApprovePayment { .. } => "approve_payment",
            Request::ApproveChannelOpen { .. } => "approve_channel_open",
            Request::RetireChannel { .. } => "retire_channel",
        }
    }

    /// The channel parameters the request carries, if any (they name the funding outpoint).
    pub fn params(&self) -> Option<&ChannelTransactionParameters> {
        match self {
            Request::SignCounterpartyCommitment { params, .. }
            | Request::SignHolderCommitment { params, .. }
            | Request::SignJusticeRevokedOutput { params, .. }
            | Request::SignJusticeRevokedHtlc { params, .. }
            | Request::SignCounterpartyHtlcTransaction { params, .. }
            | Request::SignClosingTransaction { params, .. }
            | Request::SignHolderAnchorInput { params, .. } => Some(params),
            Request::SignHolderHtlcTransaction { descriptor, .. } => Some(
                &descriptor
                    .channel_derivation_parameters
                    .transaction_parameters,
            ),
            Request::ValidateHolderCommitment { holder, .. }
            | Request::ReleaseCommitmentSecret {
                holder: Some(holder),
                ..
            } => holder.params.as_ref(),
            _ => None,
        }
    }

    /// The channel key set the request is about, if it is about one channel.
    pub fn keys_id(&self) -> Option<&KeysId> {
        match self {
            Request::PerCommitmentPoints { keys_id, .. }
            | Request::ReleaseCommitmentSecret { keys_id, .. }
            | Request::ValidateHolderCommitment { keys_id, .. }
            | Request::ValidateCounterpartyRevocation { keys_id, .. }
            | Request::SignCounterpartyCommitment { keys_id, .. }
            | Request::SignHolderCommitment { keys_id, .. }
            | Request::SignJusticeRevokedOutput { keys_id, .. }
            | Request::SignJusticeRevokedHtlc { keys_id, .. }
            | Request::SignHolderHtlcTransaction { keys_id, .. }
            | Request::SignCounterpartyHtlcTransaction { keys_id, .. }
            | Request::SignClosingTransaction { keys_id, .. }
            | Request::SignHolderAnchorInput { keys_id, .. }
            | Request::ApproveChannelOpen { keys_id, .. }
            | Request::RetireChannel { keys_id } => Some(keys_id),
            Request::NewChannelKeys { .. }
            | Request::Ecdh { .. }
            | Request::SignInvoice { .. }
            | Request::SignGossip { .. }
            | Request::SignMessage { .. }
            | Request::SpendOutputs { .. }
            | Request::SignPsbt { .. }
            | Request::ApprovePayment { .. } => None,
        }
    }
}
