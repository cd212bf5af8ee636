//! The seed signer against LDK's own keys and a misbehaving host: every rule, every refusal,
//! by family of request; the helpers here build a channel both sides of which LDK derives.

mod bad_data;
mod channel;
mod durability;
mod node;
mod onchain;
mod property;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bitcoin::bip32::Xpriv;
use bitcoin::bip32::{DerivationPath, Fingerprint};
use bitcoin::hashes::sha256;
use bitcoin::hashes::Hash;
use bitcoin::psbt::Input as PsbtInput;
use bitcoin::secp256k1::Message;
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use bitcoin::{
    absolute::LockTime, CompressedPublicKey, Network, Psbt, ScriptBuf, Transaction, TxOut,
};
use bitcoin::{Amount, OutPoint as BtcOutPoint, Sequence, TxIn, Txid, Witness};
use flotilla_proto::{
    challenge_digest, ClosingParts, Handler, HolderCommitment, KeysId, Request, Response,
    Revocation, SignerError,
};
use lightning::chain::transaction::OutPoint;
use lightning::ln::chan_utils::HolderCommitmentTransaction;
use lightning::ln::chan_utils::{
    build_commitment_secret, CounterpartyChannelTransactionParameters,
};
use lightning::ln::chan_utils::{
    make_funding_redeemscript, ChannelPublicKeys, ChannelTransactionParameters, ClosingTransaction,
    CommitmentTransaction, HTLCOutputInCommitment,
};
use lightning::ln::inbound_payment::{self, ExpandedKey};
use lightning::ln::msgs::UnsignedNodeAnnouncement;
use lightning::routing::gossip::NodeId;
use lightning::sign::{
    ChannelSigner, InMemorySigner, KeysManager, NodeSigner, Recipient, SignerProvider,
    SpendableOutputDescriptor,
};
use lightning::types::features::ChannelTypeFeatures;
use lightning::types::payment::PaymentHash;

use lightning::sign::ecdsa::EcdsaChannelSigner;

use super::*;
use crate::config::PolicyLimits;
use crate::durable::{Answer, DurableHandler};
use crate::policy::DEFAULT_WALLET_LOOKAHEAD as DEFAULT_LOOKAHEAD;
use crate::policy::{ApprovalHook, PaymentApproval, Policy};
use crate::state::{ChannelState, MemoryStateStore};
use crate::state::{SignerState, StateError, StateStore};
use crate::state_db::SqliteStateStore;

const SEED: [u8; 32] = [11; 32];
const PEER_SEED: [u8; 32] = [22; 32];
const TOP: u64 = MAX_COMMITMENT_NUMBER;
const CHANNEL_SAT: u64 = 1_000_000;
/// The feerate of the tests' commitments: a commitment without HTLCs pays 10,000 sat at it
/// (9,340 sat of fee for 1,124 weight, and the two anchors).
const FEERATE: u32 = 8_310;

fn limits() -> PolicyLimits {
    PolicyLimits {
        max_payment_msat: Some(50_000_000),
        max_outgoing_msat_per_hour: Some(80_000_000),
        max_fee_sat: Some(20_000),
    }
}

fn signer_with(policy: Policy, store: Box<dyn StateStore>) -> SeedSigner {
    SeedSigner::new(&SEED, Network::Regtest, policy, store).expect("signer")
}

fn signer() -> SeedSigner {
    signer_with(Policy::new(limits()), Box::new(MemoryStateStore::new()))
}

fn ldk_keys(seed: &[u8; 32]) -> KeysManager {
    KeysManager::new(seed, 1, 2, true)
}

/// A channel between the signer's node and a peer whose keys LDK derives from PEER_SEED.
struct Channel {
    keys_id: KeysId,
    params: ChannelTransactionParameters,
    peer: InMemorySigner,
    secp: Secp256k1<All>,
}

impl Channel {
    /// A channel the peer opened to us (approved first, as the host does).
    fn open(signer: &SeedSigner, tag: u8) -> Channel {
        Channel::approved(signer, tag, false, 0)
    }

    /// A channel we open, pushing `push_msat`, whose parameters name a wallet transaction
    /// funding it (bound to it by the channel's first signature; the signer signs that
    /// transaction only after the peer signed our first commitment).
    fn open_funded(signer: &SeedSigner, tag: u8, push_msat: u64) -> Channel {
        let mut ch = Channel::approved(signer, tag, true, push_msat);
        let psbt = funding_psbt(tag, CHANNEL_SAT, ch.funding_redeemscript());
        let txid = psbt.unsigned_tx.compute_txid();
        ch.params.funding_outpoint = Some(OutPoint { txid, index: 0 });
        ch
    }

    fn approved(signer: &SeedSigner, tag: u8, outbound: bool, push_msat: u64) -> Channel {
        let ch = Channel::unapproved(signer, tag, outbound);
        match signer.handle(ch.approval(push_msat)) {
            Ok(Response::Accepted) => ch,
            other => panic!("approval: {other:?}"),
        }
    }

    fn unapproved(signer: &SeedSigner, tag: u8, outbound: bool) -> Channel {
        let set = match signer.handle(Request::NewChannelKeys { count: 1 }) {
            Ok(Response::ChannelKeys(mut sets)) => sets.remove(0),
            other => panic!("keys: {other:?}"),
        };
        let peer = ldk_keys(&PEER_SEED).derive_channel_keys(&[tag; 32]);
        let secp = Secp256k1::new();
        let params = ChannelTransactionParameters {
            holder_pubkeys: set.pubkeys,
            holder_selected_contest_delay: 144,
            is_outbound_from_holder: outbound,
            counterparty_parameters: Some(CounterpartyChannelTransactionParameters {
                pubkeys: peer.pubkeys(&secp),
                selected_contest_delay: 144,
            }),
            funding_outpoint: Some(OutPoint {
                txid: Txid::from_byte_array([tag; 32]),
                index: 0,
            }),
            splice_parent_funding_txid: None,
            channel_type_features: ChannelTypeFeatures::anchors_zero_htlc_fee_and_dependencies(),
            channel_value_satoshis: CHANNEL_SAT,
        };
        Channel {
            keys_id: set.keys_id,
            params,
            peer,
            secp,
        }
    }

    fn approval(&self, push_msat: u64) -> Request {
        Request::ApproveChannelOpen {
            peer: ldk_keys(&PEER_SEED)
                .get_node_id(Recipient::Node)
                .expect("peer"),
            value_sat: self.params.channel_value_satoshis,
            push_msat,
            keys_id: self.keys_id,
            outbound: self.params.is_outbound_from_holder,
        }
    }

    fn funding_redeemscript(&self) -> ScriptBuf {
        make_funding_redeemscript(
            &self.params.holder_pubkeys.funding_pubkey,
            &self.peer_pubkeys().funding_pubkey,
        )
    }

    fn peer_pubkeys(&self) -> &ChannelPublicKeys {
        self.params.counterparty_pubkeys().expect("populated")
    }

    fn counterparty_tx(
        &self,
        number: u64,
        to_us: u64,
        htlcs: Vec<HTLCOutputInCommitment>,
    ) -> CommitmentTransaction {
        let point = self
            .peer
            .get_per_commitment_point(number, &self.secp)
            .expect("point");
        let in_htlcs: u64 = htlcs.iter().map(|h| h.amount_msat / 1000).sum();
        CommitmentTransaction::new(
            number,
            &point,
            CHANNEL_SAT - to_us - in_htlcs - 10_000,
            to_us,
            FEERATE,
            htlcs,
            &self.params.as_counterparty_broadcastable(),
            &self.secp,
        )
    }

    fn sign_counterparty(
        &self,
        signer: &SeedSigner,
        tx: CommitmentTransaction,
    ) -> Result<Response, SignerError> {
        self.sign_counterparty_revoking(signer, tx, None)
    }

    fn sign_counterparty_revoking(
        &self,
        signer: &SeedSigner,
        tx: CommitmentTransaction,
        revocation: Option<Revocation>,
    ) -> Result<Response, SignerError> {
        signer.handle(Request::SignCounterpartyCommitment {
            keys_id: self.keys_id,
            params: self.params.clone(),
            tx,
            inbound_preimages: vec![],
            outbound_preimages: vec![],
            revocation,
        })
    }

    /// The peer's revocation of its commitment `idx`.
    fn revocation(&self, idx: u64) -> Revocation {
        Revocation {
            idx,
            secret: self.peer.release_commitment_secret(idx).expect("secret"),
        }
    }

    fn revoke(&self, signer: &SeedSigner, idx: u64) -> Result<Response, SignerError> {
        signer.handle(Request::ValidateCounterpartyRevocation {
            keys_id: self.keys_id,
            revocation: self.revocation(idx),
        })
    }

    /// Our commitment `number`, signed by the peer, leaving the peer 500,000 sat besides
    /// `htlcs` and a 10,000 sat fee.
    fn holder_tx(
        &self,
        signer: &SeedSigner,
        number: u64,
        htlcs: Vec<HTLCOutputInCommitment>,
    ) -> HolderCommitmentTransaction {
        let in_htlcs: u64 = htlcs.iter().map(|h| h.amount_msat / 1000).sum();
        self.holder_tx_with(
            signer,
            number,
            CHANNEL_SAT - 500_000 - in_htlcs - 10_000,
            htlcs,
        )
    }

    /// Our commitment `number`, signed by the peer, giving us `to_us` sat besides `htlcs`.
    fn holder_tx_with(
        &self,
        signer: &SeedSigner,
        number: u64,
        to_us: u64,
        htlcs: Vec<HTLCOutputInCommitment>,
    ) -> HolderCommitmentTransaction {
        let point = match signer.handle(Request::PerCommitmentPoints {
            keys_id: self.keys_id,
            first: number,
            count: 1,
        }) {
            Ok(Response::Points(points)) => points[0],
            other => panic!("points: {other:?}"),
        };
        let in_htlcs: u64 = htlcs.iter().map(|h| h.amount_msat / 1000).sum();
        let tx = CommitmentTransaction::new(
            number,
            &point,
            to_us,
            CHANNEL_SAT - to_us - in_htlcs - 10_000,
            FEERATE,
            htlcs,
            &self.params.as_holder_broadcastable(),
            &self.secp,
        );
        // To the peer, our commitment is its counterparty's: it signs it (and each HTLC's
        // second-stage transaction) as LDK's signer does.
        let (sig, htlc_sigs) = self
            .peer
            .sign_counterparty_commitment(&self.peer_params(), &tx, vec![], vec![], &self.secp)
            .expect("the peer signs our commitment");
        let holder_funding = self.params.holder_pubkeys.funding_pubkey;
        let peer_funding = self.peer_pubkeys().funding_pubkey;
        HolderCommitmentTransaction::new(tx, sig, htlc_sigs, &holder_funding, &peer_funding)
    }

    /// The channel's parameters as the peer holds them.
    fn peer_params(&self) -> ChannelTransactionParameters {
        let ours = &self.params;
        let theirs = ours.counterparty_parameters.as_ref().expect("populated");
        ChannelTransactionParameters {
            holder_pubkeys: theirs.pubkeys.clone(),
            holder_selected_contest_delay: theirs.selected_contest_delay,
            is_outbound_from_holder: !ours.is_outbound_from_holder,
            counterparty_parameters: Some(CounterpartyChannelTransactionParameters {
                pubkeys: ours.holder_pubkeys.clone(),
                selected_contest_delay: ours.holder_selected_contest_delay,
            }),
            ..ours.clone()
        }
    }

    fn validate_holder(
        &self,
        signer: &SeedSigner,
        tx: HolderCommitmentTransaction,
    ) -> Result<Response, SignerError> {
        signer.handle(Request::ValidateHolderCommitment {
            keys_id: self.keys_id,
            holder: HolderCommitment {
                params: Some(self.params.clone()),
                tx,
                outbound_preimages: vec![],
            },
        })
    }

    fn close(
        &self,
        signer: &SeedSigner,
        to_us: u64,
        script: ScriptBuf,
        fee: u64,
    ) -> Result<Response, SignerError> {
        signer.handle(Request::SignClosingTransaction {
            keys_id: self.keys_id,
            params: self.params.clone(),
            closing: ClosingParts {
                to_holder_sat: to_us,
                to_counterparty_sat: CHANNEL_SAT - to_us - fee,
                to_holder_script: script,
                to_counterparty_script: ScriptBuf::new_p2wpkh(
                    &bitcoin::WPubkeyHash::from_byte_array([3; 20]),
                ),
            },
        })
    }
}

/// An HTLC as LDK lists it in a commitment; `offered` is from the broadcaster's view.
fn htlc(offered: bool, amount_msat: u64, hash: u8) -> HTLCOutputInCommitment {
    HTLCOutputInCommitment {
        offered,
        amount_msat,
        cltv_expiry: 700_000,
        payment_hash: PaymentHash([hash; 32]),
        transaction_output_index: None,
    }
}

/// A wallet transaction spending one coin of `input_sat` (tagged `tag`; not one the wallet
/// signs for, but the policy sees the whole transaction) to `outputs`. The coin's previous
/// transaction is in the PSBT, which proves its amount.
fn wallet_psbt(tag: u8, input_sat: u64, outputs: Vec<TxOut>) -> Psbt {
    let coin = TxOut {
        value: Amount::from_sat(input_sat),
        script_pubkey: ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([2; 20])),
    };
    // Tagged through its locktime, so each tag spends a coin of its own.
    let previous = Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: LockTime::from_consensus(u32::from(tag)),
        input: vec![TxIn::default()],
        output: vec![coin.clone()],
    };
    let tx = Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: BtcOutPoint {
                txid: previous.compute_txid(),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: outputs,
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).expect("psbt");
    psbt.inputs[0] = PsbtInput {
        witness_utxo: Some(coin),
        non_witness_utxo: Some(previous),
        ..Default::default()
    };
    psbt
}

/// A wallet transaction funding `value_sat` to the 2-of-2 `redeem` (its only output,
/// 1,000 sat fee), the witness script named as the host names it.
fn funding_psbt(tag: u8, value_sat: u64, redeem: ScriptBuf) -> Psbt {
    let mut psbt = wallet_psbt(
        tag,
        value_sat + 1_000,
        vec![TxOut {
            value: Amount::from_sat(value_sat),
            script_pubkey: redeem.to_p2wsh(),
        }],
    );
    psbt.outputs[0].witness_script = Some(redeem);
    psbt
}

/// Asks the signer to approve a payment of `amount_msat` under hash `[hash; 32]`, as the host
/// does before it sends one.
fn approve(signer: &SeedSigner, hash: u8, amount_msat: u64) -> Result<Response, SignerError> {
    signer.handle(Request::ApprovePayment {
        payment_hash: [hash; 32],
        amount_msat,
        destination: signer.node_id(),
    })
}

fn refused(result: Result<Response, SignerError>, rule: &str) {
    match result {
        Err(SignerError::Refused(reason)) => {
            assert!(reason.starts_with(rule), "{reason} is not {rule}")
        }
        other => panic!("expected refusal {rule}, got {other:?}"),
    }
}

fn malformed(result: Result<Response, SignerError>) {
    assert!(
        matches!(result, Err(SignerError::Malformed(_))),
        "expected Malformed, got {result:?}"
    );
}
