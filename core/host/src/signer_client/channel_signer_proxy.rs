//! LDK's channel signer on the host: public keys it was handed, and every signature asked of the
//! node's signer. Signatures LDK can wait for are asynchronous ([`Pending`]); per-commitment
//! points, which LDK needs at once, are prefetched and kept per channel.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bitcoin::secp256k1::{self, ecdsa::Signature, PublicKey, Secp256k1, SecretKey};
use bitcoin::{Transaction, Txid};
use flotilla_proto::{ClosingParts, HolderCommitment, KeysId, Request, Response, Revocation};
use lightning::ln::chan_utils::{
    ChannelPublicKeys, ChannelTransactionParameters, ClosingTransaction, CommitmentTransaction,
    HTLCOutputInCommitment, HolderCommitmentTransaction,
};
use lightning::ln::msgs::UnsignedChannelAnnouncement;
use lightning::sign::ecdsa::EcdsaChannelSigner;
use lightning::sign::{ChannelSigner, HTLCDescriptor};
use lightning::types::payment::PaymentPreimage;

use super::carried::Carried;
use super::link::SYNC_DEADLINE;
use super::pending::{Key, Pending, Retry};

/// How many per-commitment points are fetched ahead of the one LDK asks for. Points are
/// public (their secrets are released one by one, as each commitment is revoked); a channel
/// uses two per payment, so a larger batch saves requests and costs ~33 bytes a point.
const POINTS_AHEAD: u32 = 16;

/// Per-commitment points of every channel of a node, by keys id then commitment number.
#[derive(Default)]
pub struct PointCache(Mutex<HashMap<KeysId, BTreeMap<u64, PublicKey>>>);

impl PointCache {
    fn get(&self, keys_id: &KeysId, idx: u64) -> Option<PublicKey> {
        self.lock().get(keys_id)?.get(&idx).copied()
    }

    /// Forgets a retired channel's points.
    pub fn forget(&self, keys_id: &KeysId) {
        self.lock().remove(keys_id);
    }

    /// Keeps points `first`, `first-1`, …; drops those older than what LDK can still ask for
    /// (numbers count down: older means larger).
    fn insert(&self, keys_id: KeysId, first: u64, points: &[PublicKey]) {
        let mut all = self.lock();
        let channel = all.entry(keys_id).or_default();
        for (i, point) in points.iter().enumerate() {
            channel.insert(first.saturating_sub(i as u64), *point);
        }
        let keep_from = first.saturating_add(3);
        channel.retain(|idx, _| *idx <= keep_from);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeysId, BTreeMap<u64, PublicKey>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One channel's signer, as LDK sees it on the host.
#[derive(Clone)]
pub struct ChannelSignerProxy {
    keys_id: KeysId,
    pubkeys: ChannelPublicKeys,
    pending: Arc<Pending>,
    points: Arc<PointCache>,
    /// The channel parameters of the last signing request, for validations (LDK gives none).
    params: Arc<Mutex<Option<ChannelTransactionParameters>>>,
    /// The peer's latest revocation and holder commitment, repeated with the requests that
    /// need them.
    carried: Arc<Carried>,
}

impl ChannelSignerProxy {
    pub fn new(
        keys_id: KeysId,
        pubkeys: ChannelPublicKeys,
        pending: Arc<Pending>,
        points: Arc<PointCache>,
        carried: Arc<Carried>,
    ) -> Self {
        ChannelSignerProxy {
            keys_id,
            pubkeys,
            pending,
            points,
            params: Arc::new(Mutex::new(None)),
            carried,
        }
    }

    /// Remembers `params` for later validations and returns a copy for the request.
    fn seen(&self, params: &ChannelTransactionParameters) -> ChannelTransactionParameters {
        let mut last = self.params.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() != Some(params) {
            *last = Some(params.clone());
        }
        params.clone()
    }

    fn last_params(&self) -> Option<ChannelTransactionParameters> {
        self.params
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn key(&self, kind: &str, parts: &[&[u8]]) -> Key {
        Key::of(self.keys_id, kind, parts)
    }

    /// The request key of a signature for input `input` of `tx`, and that index on the wire.
    fn input_key(&self, kind: &str, tx: &Transaction, input: usize) -> Result<(Key, u32), ()> {
        let input = u32::try_from(input).map_err(|_| ())?;
        let txid = txid_bytes(tx.compute_txid());
        Ok((self.key(kind, &[&txid, &input.to_be_bytes()]), input))
    }

    fn signature(
        &self,
        key: Key,
        retry: Retry,
        request: impl FnOnce() -> Request,
    ) -> Result<Signature, ()> {
        match self.pending.sign(key, retry, request)? {
            Response::Signature(sig) => Ok(sig),
            other => unexpected(other),
        }
    }

    /// Fetches points `first`, `first-1`, … in the background.
    fn prefetch(&self, first: u64) {
        let points = self.points.clone();
        let keys_id = self.keys_id;
        self.pending.link().send(
            Request::PerCommitmentPoints {
                keys_id,
                first,
                count: POINTS_AHEAD,
            },
            Box::new(move |answer| {
                if let Ok(Response::Points(found)) = answer {
                    points.insert(keys_id, first, &found);
                }
            }),
        );
    }
}

/// A well-formed signature that verifies against nothing (r = s = 0x0101…01, both below the
/// curve order), for the few places LDK takes a signature but cannot be told "no".
pub(crate) fn placeholder_signature() -> Signature {
    Signature::from_compact(&[1u8; 64]).expect("constant compact signature is valid")
}

fn unexpected<T>(response: Response) -> Result<T, ()> {
    tracing::error!(?response, "signer answered with the wrong kind of response");
    Err(())
}

fn txid_bytes(txid: Txid) -> [u8; 32] {
    use bitcoin::hashes::Hash;
    txid.to_byte_array()
}

impl ChannelSigner for ChannelSignerProxy {
    fn get_per_commitment_point(
        &self,
        idx: u64,
        _secp: &Secp256k1<secp256k1::All>,
    ) -> Result<PublicKey, ()> {
        if let Some(point) = self.points.get(&self.keys_id, idx) {
            if idx > 0 && self.points.get(&self.keys_id, idx - 1).is_none() {
                self.prefetch(idx - 1);
            }
            return Ok(point);
        }
        // LDK needs this one now (e.g. at channel_reestablish): ask and wait.
        let request = Request::PerCommitmentPoints {
            keys_id: self.keys_id,
            first: idx,
            count: POINTS_AHEAD,
        };
        match self.pending.link().call_blocking(request, SYNC_DEADLINE) {
            Ok(Response::Points(found)) if !found.is_empty() => {
                self.points.insert(self.keys_id, idx, &found);
                Ok(found[0])
            }
            Ok(other) => unexpected(other),
            Err(e) => {
                tracing::warn!(error = %e, idx, "per-commitment point unavailable");
                Err(())
            }
        }
    }

    /// Carries the newest holder commitment: the signer releases only once the next one is
    /// validated.
    fn release_commitment_secret(&self, idx: u64) -> Result<[u8; 32], ()> {
        let key = self.key("release", &[&idx.to_be_bytes()]);
        let request = || Request::ReleaseCommitmentSecret {
            keys_id: self.keys_id,
            idx,
            holder: self
                .carried
                .holder(&self.keys_id)
                .map(|holder| HolderCommitment {
                    params: self.last_params(),
                    ..holder
                }),
        };
        match self.pending.sign(key, Retry::Channels, request)? {
            Response::Secret(secret) => Ok(secret),
            other => unexpected(other),
        }
    }

    /// Kept, not sent: LDK asks for the previous commitment's secret right after, and that
    /// request carries it (saved with the monitor update that records it, `carried.rs`).
    fn validate_holder_commitment(
        &self,
        holder_tx: &HolderCommitmentTransaction,
        outbound_htlc_preimages: Vec<PaymentPreimage>,
    ) -> Result<(), ()> {
        let holder = HolderCommitment {
            params: None,
            tx: holder_tx.clone(),
            outbound_preimages: outbound_htlc_preimages,
        };
        self.carried.record_holder(self.keys_id, holder);
        Ok(())
    }

    /// Kept, not sent: the signer needs the peer's revocation only before the next
    /// counterparty commitment it signs, and that request carries it (`carried.rs`).
    fn validate_counterparty_revocation(&self, idx: u64, secret: &SecretKey) -> Result<(), ()> {
        let revocation = Revocation {
            idx,
            secret: secret.secret_bytes(),
        };
        self.carried.record_revocation(self.keys_id, revocation);
        Ok(())
    }

    fn pubkeys(&self, _secp: &Secp256k1<secp256k1::All>) -> ChannelPublicKeys {
        self.pubkeys.clone()
    }

    /// Splicing is not enabled on hosted nodes, so LDK never asks for this.
    fn new_funding_pubkey(
        &self,
        _splice_parent_funding_txid: Txid,
        _secp: &Secp256k1<secp256k1::All>,
    ) -> PublicKey {
        tracing::error!("splicing is not supported by hosted nodes");
        self.pubkeys.funding_pubkey
    }

    fn channel_keys_id(&self) -> [u8; 32] {
        self.keys_id
    }
}

impl EcdsaChannelSigner for ChannelSignerProxy {
    fn sign_counterparty_commitment(
        &self,
        params: &ChannelTransactionParameters,
        commitment_tx: &CommitmentTransaction,
        inbound_htlc_preimages: Vec<PaymentPreimage>,
        outbound_htlc_preimages: Vec<PaymentPreimage>,
        _secp: &Secp256k1<secp256k1::All>,
    ) -> Result<(Signature, Vec<Signature>), ()> {
        let txid = txid_bytes(commitment_tx.trust().txid());
        let key = self.key("counterparty_commitment", &[&txid]);
        let request = || Request::SignCounterpartyCommitment {
            keys_id: self.keys_id,
            params: self.seen(params),
            tx: commitment_tx.clone(),
            inbound_preimages: inbound_htlc_preimages,
            outbound_preimages: outbound_htlc_preimages,
            revocation: self.carried.revocation(&self.keys_id),
        };
        match self.pending.sign(key, Retry::Channels, request)? {
            Response::CommitmentSignatures { commitment, htlcs } => Ok((commitment, htlcs)),
            other => unexpected(other),
        }
    }

    fn sign_holder_commitment(
        &self,
        params: &ChannelTransactionParameters,
        commitment_tx: &HolderCommitmentTransaction,
        _secp: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        let txid = txid_bytes(commitment_tx.trust().txid());
        let key = self.key("holder_commitment", &[&txid]);
        let request = || Request::SignHolderCommitment {
            keys_id: self.keys_id,
            params: self.seen(params),
            tx: commitment_tx.clone(),
        };
        self.signature(key, Retry::Monitors, request)
    }

    fn sign_justice_revoked_output(
        &self,
        params: &ChannelTransactionParameters,
        justice_tx: &Transaction,
        input: usize,
        amount: u64,
        per_commitment_key: &SecretKey,
        _secp: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        let (key, input) = self.input_key("justice_output", justice_tx, input)?;
        let request = || Request::SignJusticeRevokedOutput {
            keys_id: self.keys_id,
            params: self.seen(params),
            tx: justice_tx.clone(),
            input,
            amount,
            per_commitment_key: per_commitment_key.secret_bytes(),
        };
        self.signature(key, Retry::Monitors, request)
    }

    fn sign_justice_revoked_htlc(
        &self,
        params: &ChannelTransactionParameters,
        justice_tx: &Transaction,
        input: usize,
        amount: u64,
        per_commitment_key: &SecretKey,
        htlc: &HTLCOutputInCommitment,
        _secp: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        let (key, input) = self.input_key("justice_htlc", justice_tx, input)?;
        let request = || Request::SignJusticeRevokedHtlc {
            keys_id: self.keys_id,
            params: self.seen(params),
            tx: justice_tx.clone(),
            input,
            amount,
            per_commitment_key: per_commitment_key.secret_bytes(),
            htlc: htlc.clone(),
        };
        self.signature(key, Retry::Monitors, request)
    }

    fn sign_holder_htlc_transaction(
        &self,
        htlc_tx: &Transaction,
        input: usize,
        htlc_descriptor: &HTLCDescriptor,
        _secp: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        let (key, input) = self.input_key("holder_htlc", htlc_tx, input)?;
        let request = || Request::SignHolderHtlcTransaction {
            keys_id: self.keys_id,
            tx: htlc_tx.clone(),
            input,
            descriptor: htlc_descriptor.clone(),
        };
        self.signature(key, Retry::Monitors, request)
    }

    fn sign_counterparty_htlc_transaction(
        &self,
        params: &ChannelTransactionParameters,
        htlc_tx: &Transaction,
        input: usize,
        amount: u64,
        per_commitment_point: &PublicKey,
        htlc: &HTLCOutputInCommitment,
        _secp: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        let (key, input) = self.input_key("counterparty_htlc", htlc_tx, input)?;
        let request = || Request::SignCounterpartyHtlcTransaction {
            keys_id: self.keys_id,
            params: self.seen(params),
            tx: htlc_tx.clone(),
            input,
            amount,
            per_commitment_point: *per_commitment_point,
            htlc: htlc.clone(),
        };
        self.signature(key, Retry::Monitors, request)
    }

    fn sign_closing_transaction(
        &self,
        params: &ChannelTransactionParameters,
        closing_tx: &ClosingTransaction,
        _secp: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        let closing = ClosingParts {
            to_holder_sat: closing_tx.to_holder_value_sat(),
            to_counterparty_sat: closing_tx.to_counterparty_value_sat(),
            to_holder_script: closing_tx.to_holder_script().to_owned(),
            to_counterparty_script: closing_tx.to_counterparty_script().to_owned(),
        };
        let key = self.key(
            "closing",
            &[
                &closing.to_holder_sat.to_be_bytes(),
                &closing.to_counterparty_sat.to_be_bytes(),
                closing.to_holder_script.as_bytes(),
                closing.to_counterparty_script.as_bytes(),
            ],
        );
        let request = || Request::SignClosingTransaction {
            keys_id: self.keys_id,
            params: self.seen(params),
            closing,
        };
        self.signature(key, Retry::Channels, request)
    }

    fn sign_holder_keyed_anchor_input(
        &self,
        params: &ChannelTransactionParameters,
        anchor_tx: &Transaction,
        input: usize,
        _secp: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        let (key, input) = self.input_key("anchor", anchor_tx, input)?;
        let request = || Request::SignHolderAnchorInput {
            keys_id: self.keys_id,
            params: self.seen(params),
            tx: anchor_tx.clone(),
            input,
        };
        self.signature(key, Retry::Monitors, request)
    }

    /// Hosted channels are unannounced, so LDK never asks for this.
    fn sign_channel_announcement_with_funding_key(
        &self,
        _params: &ChannelTransactionParameters,
        _msg: &UnsignedChannelAnnouncement,
        _secp: &Secp256k1<secp256k1::All>,
    ) -> Result<Signature, ()> {
        tracing::error!("channel announcements are not supported by hosted nodes");
        Err(())
    }

    /// Splicing is not enabled on hosted nodes, so LDK never asks for this. The signature
    /// returned is invalid on purpose: a transaction carrying it cannot confirm.
    fn sign_splice_shared_input(
        &self,
        _params: &ChannelTransactionParameters,
        _tx: &Transaction,
        _input_index: usize,
        _secp: &Secp256k1<secp256k1::All>,
    ) -> Signature {
        tracing::error!("splicing is not supported by hosted nodes");
        placeholder_signature()
    }
}
