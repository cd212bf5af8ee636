//! Well-formed protocol values for tests, here and in the crates that speak the protocol:
//! keys, channel parameters, a commitment built by LDK. Always compiled (a feature for it
//! would build every crate above this one twice in a workspace test run); hidden from docs.

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::{absolute, transaction, Amount, OutPoint, Sequence, TxIn, Txid, Witness};
use bitcoin::{Psbt, ScriptBuf, Transaction, TxOut};
use lightning::chain::transaction::OutPoint as LdkOutPoint;
use lightning::ln::chan_utils::{
    ChannelPublicKeys, ChannelTransactionParameters, CommitmentTransaction,
    CounterpartyChannelTransactionParameters, HTLCOutputInCommitment, HolderCommitmentTransaction,
};
use lightning::sign::ChannelDerivationParameters;
use lightning::sign::{HTLCDescriptor, SpendableOutputDescriptor};
use lightning::types::features::ChannelTypeFeatures;
use lightning::types::payment::PaymentHash;
use lightning::types::payment::PaymentPreimage;

use crate::{
    ChannelKeySet, ClosingParts, Handover, HolderCommitment, Request, Response, Revocation,
    SignerError,
};

pub fn secret(byte: u8) -> SecretKey {
    SecretKey::from_slice(&[byte; 32]).unwrap()
}

pub fn point(byte: u8) -> PublicKey {
    PublicKey::from_secret_key(&Secp256k1::new(), &secret(byte))
}

pub fn sig(byte: u8) -> Signature {
    let digest = Message::from_digest([byte; 32]);
    Secp256k1::new().sign_ecdsa(&digest, &secret(byte))
}

pub fn channel_keys(base: u8) -> ChannelPublicKeys {
    ChannelPublicKeys {
        funding_pubkey: point(base),
        revocation_basepoint: point(base + 1).into(),
        payment_point: point(base + 2),
        delayed_payment_basepoint: point(base + 3).into(),
        htlc_basepoint: point(base + 4).into(),
    }
}

pub fn params() -> ChannelTransactionParameters {
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

pub fn htlc(index: Option<u32>) -> HTLCOutputInCommitment {
    HTLCOutputInCommitment {
        offered: true,
        amount_msat: 5_000_000,
        cltv_expiry: 500_123,
        payment_hash: PaymentHash([9; 32]),
        transaction_output_index: index,
    }
}

/// A real commitment transaction with one non-dust HTLC, built by LDK.
pub fn commitment() -> CommitmentTransaction {
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
pub fn holder_commitment() -> HolderCommitmentTransaction {
    let htlc_sigs = vec![sig(41); commitment().nondust_htlcs().len()];
    HolderCommitmentTransaction::new(commitment(), sig(40), htlc_sigs, &point(1), &point(10))
}

/// A handover as a signer sends it in its proof.
pub fn handover() -> Handover {
    Handover {
        node_id: point(60),
        inbound_payment_key: [1; 32],
        peer_storage_key: [2; 32],
        receive_auth_key: [3; 32],
        wallet_descriptors: ("wpkh(xpub/0/*)".into(), "wpkh(xpub/1/*)".into()),
        shutdown_script: ScriptBuf::from_bytes(vec![0x00, 0x14, 9, 9]),
    }
}

/// A small transaction: one input, one output.
pub fn tx() -> Transaction {
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

/// An output of `sat` to a fixed script.
pub fn output(sat: u64) -> TxOut {
    TxOut {
        value: Amount::from_sat(sat),
        script_pubkey: ScriptBuf::from_bytes(vec![0x00, 0x14, 0xab, 0xcd]),
    }
}

/// One request of every kind (and variants of some), each well-formed.
pub fn every_request() -> Vec<Request> {
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
            psbt: Psbt::from_unsigned_tx(tx()).expect("an unsigned transaction"),
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

/// One answer of every kind, and every error.
pub fn every_result() -> Vec<Result<Response, SignerError>> {
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
        Ok(Response::Psbt(
            Psbt::from_unsigned_tx(tx()).expect("an unsigned transaction"),
        )),
        Err(SignerError::Refused("over the daily limit".into())),
        Err(SignerError::Malformed("bad point".into())),
        Err(SignerError::Unavailable),
        Err(SignerError::Timeout),
    ]
}
