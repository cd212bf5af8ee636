//! The customer-side signer: holds the seed, answers the host's requests, refuses what its
//! policy forbids.
//!
//! Keys come from LDK's own `KeysManager` built from the seed, so a seed's node id and channel
//! keys are exactly those of an LDK node with that seed. Every channel request is checked against
//! the signer's own state ([`super::state`]) and rules ([`super::policy`]) before anything is
//! signed; the updated state is saved before the answer leaves (answers are computed at once
//! and wait for the save, [`super::durable`]).

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::bech32::Fe32;
use bitcoin::bip32::{ChildNumber, Xpriv, Xpub};
use bitcoin::hashes::Hash;
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::secp256k1::{All, PublicKey, Scalar, Secp256k1, SecretKey};
use bitcoin::{
    absolute::LockTime, CompressedPublicKey, Network, Psbt, ScriptBuf, Transaction, TxOut,
};
use lightning::ln::chan_utils::{
    get_keyed_anchor_redeemscript, make_funding_redeemscript, shared_anchor_script_pubkey,
    ChannelPublicKeys, ChannelTransactionParameters, ClosingTransaction, CommitmentTransaction,
    HTLCOutputInCommitment,
};
use lightning::ln::msgs::{
    UnsignedChannelAnnouncement, UnsignedChannelUpdate, UnsignedGossipMessage,
    UnsignedNodeAnnouncement,
};
use lightning::routing::gossip::NodeId;
use lightning::sign::ecdsa::EcdsaChannelSigner;
use lightning::sign::{
    ChannelSigner, EntropySource, InMemorySigner, KeysManager, NodeSigner, OutputSpender,
    Recipient, SignerProvider, SpendableOutputDescriptor,
};
use lightning::types::payment::PaymentPreimage;
use lightning::util::ser::{LengthReadable, ReadableArgs, Writeable};
use lightning_invoice::RawBolt11Invoice;

use super::durable::Progress;
use super::policy::{
    ApprovalHook, ChannelParams, CommitmentView, PaymentApproval, Policy, Refusal, WalletOutput,
};
use super::protocol::{
    challenge_digest, Answer, ChannelKeySet, ClosingParts, Handler, Handover, HolderCommitment,
    KeysId, Request, Response, Revocation, SignerError,
};
use super::state::{ChannelOpen, HtlcEntry, SignerState, StateError, StateStore, Txn};
use super::wallet_keys::SeedWalletSigner;
use crate::wallet::{WalletError, WalletSigner};

/// Highest commitment number (they count down from here).
pub const MAX_COMMITMENT_NUMBER: u64 = (1 << 48) - 1;
/// Most key sets or points one request may ask for: bounds the work a host can demand.
pub const MAX_BATCH: u32 = 1000;

/// BOLT 7 message types of the gossip the node signs.
pub const CHANNEL_ANNOUNCEMENT: u16 = 256;
pub const NODE_ANNOUNCEMENT: u16 = 257;
pub const CHANNEL_UPDATE: u16 = 258;

/// Why a [`SeedSigner`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("key derivation failed: {0}")]
    Keys(String),
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Seconds since the Unix epoch (the velocity window's clock).
type Clock = Box<dyn Fn() -> u64 + Send + Sync>;

struct Kept {
    state: SignerState,
    store: Box<dyn StateStore>,
}

/// A node's signer: seed-derived keys, its own state, its policy.
pub struct SeedSigner {
    node_id: PublicKey,
    node_secret: SecretKey,
    keys: KeysManager,
    wallet: SeedWalletSigner,
    handover: Handover,
    policy: Policy,
    /// Scripts the signer counts as its own wallet (closes and sweeps may pay them).
    own_scripts: HashSet<ScriptBuf>,
    approval: Option<Arc<dyn ApprovalHook>>,
    /// Derived once per channel: LDK's signer computes its public keys anew on each call.
    channels: Mutex<HashMap<KeysId, ChannelKeys>>,
    kept: Mutex<Kept>,
    /// How far `kept`'s changes are on disk.
    progress: Arc<Progress>,
    secp: Secp256k1<All>,
    clock: Clock,
}

impl SeedSigner {
    /// Derives every key from `seed` (as LDK's `KeysManager` does) and loads the saved state.
    pub fn new(
        seed: &[u8; 32],
        network: Network,
        policy: Policy,
        mut state: Box<dyn StateStore>,
    ) -> Result<Self, SetupError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // The start time only salts fresh channel key ids; derived keys depend on the seed alone.
        let keys = KeysManager::new(seed, now.as_secs(), now.subsec_nanos(), true);
        let node_id = keys
            .get_node_id(Recipient::Node)
            .map_err(|()| SetupError::Keys("no node id".into()))?;
        let secp = Secp256k1::new();
        let wallet = SeedWalletSigner::new(seed, network)?;
        let (external, internal) = wallet.descriptors()?;
        let (receive, change) =
            wallet_scripts(seed, network, policy.wallet_lookahead.max(1), &secp)?;
        // Closed and swept funds land on the wallet's first change address.
        let shutdown_script = change[0].clone();
        let own_wallet: HashSet<ScriptBuf> = receive.into_iter().chain(change).collect();
        let handover = Handover {
            node_id,
            inbound_payment_key: inbound_payment_key(seed, &secp)?,
            peer_storage_key: keys.get_peer_storage_key().inner,
            receive_auth_key: keys.get_receive_auth_key().0,
            wallet_descriptors: (external, internal),
            shutdown_script,
        };
        let mut own_scripts = own_wallet;
        // KeysManager's own destination and shutdown scripts are the seed's too.
        if let Ok(script) = keys.get_destination_script([0; 32]) {
            own_scripts.insert(script);
        }
        if let Ok(script) = keys.get_shutdown_scriptpubkey() {
            own_scripts.insert(script.into_inner());
        }
        let loaded = state.load()?;
        Ok(SeedSigner {
            node_id,
            node_secret: keys.get_node_secret_key(),
            keys,
            wallet,
            handover,
            policy,
            own_scripts,
            approval: None,
            channels: Mutex::new(HashMap::new()),
            kept: Mutex::new(Kept {
                state: loaded,
                store: state,
            }),
            progress: Arc::default(),
            secp,
            clock: Box::new(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            }),
        })
    }

    /// Asks `hook` before each outgoing payment is approved.
    pub fn with_approval(mut self, hook: Arc<dyn ApprovalHook>) -> Self {
        self.approval = Some(hook);
        self
    }

    #[cfg(test)]
    fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// A copy of the remembered state (for inspection and tests).
    pub fn state(&self) -> SignerState {
        lock(&self.kept).state.clone()
    }

    fn channel_keys(&self, keys_id: &KeysId) -> ChannelKeys {
        lock(&self.channels)
            .entry(*keys_id)
            .or_insert_with(|| {
                let signer = self.keys.derive_channel_keys(keys_id);
                ChannelKeys {
                    pubkeys: Arc::new(signer.pubkeys(&self.secp)),
                    signer: Arc::new(signer),
                }
            })
            .clone()
    }

    fn channel(&self, keys_id: &KeysId) -> Arc<InMemorySigner> {
        self.channel_keys(keys_id).signer
    }

    /// Runs `f` in a transaction on the state; its change stays only if `f` succeeds, so
    /// refusals and failures leave no trace. The change is handed to the store to save, and
    /// answers wait for it ([`super::durable`]). Costs what `f` touches, not the size of the
    /// state.
    fn transact<T>(
        &self,
        f: impl FnOnce(&mut Txn) -> Result<T, SignerError>,
    ) -> Result<T, SignerError> {
        let mut guard = lock(&self.kept);
        let Kept { state, store } = &mut *guard;
        let mut txn = Txn::new(state);
        let out = f(&mut txn)?;
        let change = txn.change();
        if !change.is_empty() {
            // Numbered and submitted under the lock: the store saves in this order.
            let (seq, progress, node) =
                (self.progress.submit(), self.progress.clone(), self.node_id);
            let saved = Box::new(move |result: Result<(), StateError>| {
                if let Err(e) = &result {
                    tracing::error!(%node, error = %e, "signer state not saved: this node's signer stops answering");
                }
                progress.saved(seq, result.is_ok());
            });
            store.submit_change(&txn, &change, saved);
        }
        txn.keep();
        Ok(out)
    }

    fn refuse(&self, kind: &str, refusal: Refusal) -> SignerError {
        tracing::warn!(
            node = %self.node_id,
            request = kind,
            rule = refusal.rule,
            reason = %refusal.reason,
            "signer refused"
        );
        SignerError::Refused(format!("{}: {}", refusal.rule, refusal.reason))
    }

    fn malformed(&self, kind: &str, reason: impl Into<String>) -> SignerError {
        let reason = reason.into();
        tracing::warn!(node = %self.node_id, request = kind, reason = %reason, "malformed request");
        SignerError::Malformed(reason)
    }

    /// The parameters must be complete (LDK asserts it), name this channel's own keys, so
    /// the host cannot make the signer sign for a channel it does not know, and be those the
    /// channel was first signed with (or, before that, of its approved open). Returns them as
    /// the policy pins them.
    fn check_params(
        &self,
        kind: &str,
        keys_id: &KeysId,
        params: &ChannelTransactionParameters,
    ) -> Result<ChannelParams, SignerError> {
        if !params.is_populated() {
            return Err(self.malformed(kind, "channel parameters are not populated"));
        }
        let ChannelKeys {
            signer,
            pubkeys: ours,
        } = self.channel_keys(keys_id);
        let funding = match params.splice_parent_funding_txid {
            None => ours.funding_pubkey,
            spliced => signer.funding_key(spliced).public_key(&self.secp),
        };
        let theirs = &params.holder_pubkeys;
        if theirs.funding_pubkey != funding
            || theirs.revocation_basepoint != ours.revocation_basepoint
            || theirs.payment_point != ours.payment_point
            || theirs.delayed_payment_basepoint != ours.delayed_payment_basepoint
            || theirs.htlc_basepoint != ours.htlc_basepoint
        {
            return Err(
                self.malformed(kind, "holder keys in the parameters are not this channel's")
            );
        }
        let checked = ChannelParams {
            encoded: params.encode().to_lower_hex_string(),
            value_sat: params.channel_value_satoshis,
            outbound: params.is_outbound_from_holder,
            funding_txid: params
                .funding_outpoint
                .map(|o| o.txid.to_byte_array())
                .unwrap_or_default(),
        };
        self.policy
            .check_channel_parameters(&lock(&self.kept).state, keys_id, &checked)
            .map_err(|r| self.refuse(kind, r))?;
        Ok(checked)
    }

    /// The parameters pinned for a channel, if any: the signer's own copy, so it can check a
    /// commitment the host sends without them (LDK names none when it validates before it
    /// signed anything since the host started).
    fn pinned_params(
        &self,
        kind: &str,
        keys_id: &KeysId,
    ) -> Result<Option<ChannelTransactionParameters>, SignerError> {
        let kept = lock(&self.kept);
        let Some(hex) = kept
            .state
            .channels
            .get(keys_id)
            .and_then(|c| c.parameters.as_deref())
        else {
            return Ok(None);
        };
        let bytes = Vec::<u8>::from_hex(hex)
            .map_err(|e| self.malformed(kind, format!("pinned parameters: {e}")))?;
        ChannelTransactionParameters::read(&mut &bytes[..], None)
            .map(Some)
            .map_err(|e| self.malformed(kind, format!("pinned parameters: {e:?}")))
    }

    fn check_input(&self, kind: &str, tx: &Transaction, input: u32) -> Result<usize, SignerError> {
        let index = input as usize;
        if index >= tx.input.len() {
            return Err(self.malformed(
                kind,
                format!("input {input} of a {}-input transaction", tx.input.len()),
            ));
        }
        Ok(index)
    }

    fn check_outputs(&self, kind: &str, outputs: &[TxOut]) -> Result<(), SignerError> {
        self.policy
            .check_destinations(
                &self.own_scripts,
                outputs.iter().map(|o| o.script_pubkey.as_script()),
            )
            .map_err(|r| self.refuse(kind, r))
    }

    fn dispatch(&self, request: Request) -> Result<Response, SignerError> {
        let kind = request.kind();
        let ldk = |what: &str| self.malformed(kind, format!("LDK could not {what}"));
        // Retiring again is a no-op the host may repeat (it does not know the first arrived).
        let retire = matches!(request, Request::RetireChannel { .. });
        if let Some(keys_id) = request.keys_id().filter(|_| !retire) {
            self.policy
                .check_not_retired(&lock(&self.kept).state, keys_id)
                .map_err(|r| self.refuse(kind, r))?;
        }
        match request {
            Request::NewChannelKeys { count } => self.new_channel_keys(kind, count),
            Request::PerCommitmentPoints {
                keys_id,
                first,
                count,
            } => {
                if count > MAX_BATCH
                    || first > MAX_COMMITMENT_NUMBER
                    || u64::from(count) > first.saturating_add(1)
                {
                    return Err(self.malformed(kind, format!("points {first} (x{count})")));
                }
                let signer = self.channel(&keys_id);
                (0..u64::from(count))
                    .map(|i| {
                        signer
                            .get_per_commitment_point(first - i, &self.secp)
                            .map_err(|()| ldk("derive a point"))
                    })
                    .collect::<Result<_, _>>()
                    .map(Response::Points)
            }
            Request::ReleaseCommitmentSecret {
                keys_id,
                idx,
                holder,
            } => {
                if idx > MAX_COMMITMENT_NUMBER {
                    return Err(self.malformed(kind, format!("commitment number {idx}")));
                }
                let holder = holder
                    .map(|holder| self.check_holder(kind, &keys_id, holder))
                    .transpose()?;
                let signer = self.channel(&keys_id);
                self.transact(|state| {
                    if let Some(holder) = &holder {
                        self.record_holder(kind, state, &keys_id, holder)?;
                    }
                    self.policy
                        .release_commitment_secret(state, &keys_id, idx)
                        .map_err(|r| self.refuse(kind, r))?;
                    signer
                        .release_commitment_secret(idx)
                        .map(Response::Secret)
                        .map_err(|()| ldk("release the secret"))
                })
            }
            Request::ValidateHolderCommitment { keys_id, holder } => {
                let holder = self.check_holder(kind, &keys_id, holder)?;
                self.transact(|state| {
                    self.record_holder(kind, state, &keys_id, &holder)
                        .map(|()| Response::Accepted)
                })
            }
            Request::ValidateCounterpartyRevocation {
                keys_id,
                revocation,
            } => self.transact(|state| {
                self.revoke(kind, state, &keys_id, &revocation)
                    .map(|()| Response::Accepted)
            }),
            Request::SignCounterpartyCommitment {
                keys_id,
                params,
                tx,
                inbound_preimages,
                outbound_preimages,
                revocation,
            } => self.sign_counterparty(
                kind,
                keys_id,
                params,
                tx,
                (inbound_preimages, outbound_preimages),
                revocation,
            ),
            Request::SignHolderCommitment {
                keys_id,
                params,
                tx,
            } => {
                let signer = self.channel(&keys_id);
                self.check_params(kind, &keys_id, &params)?;
                tx.verify(&params.as_holder_broadcastable(), &self.secp)
                    .map_err(|()| self.malformed(kind, "commitment does not match the channel"))?;
                self.policy
                    .sign_holder_commitment(
                        &lock(&self.kept).state,
                        &keys_id,
                        tx.commitment_number(),
                    )
                    .map_err(|r| self.refuse(kind, r))?;
                signer
                    .sign_holder_commitment(&params, &tx, &self.secp)
                    .map(Response::Signature)
                    .map_err(|()| ldk("sign the holder commitment"))
            }
            Request::SignJusticeRevokedOutput {
                keys_id,
                params,
                tx,
                input,
                amount,
                per_commitment_key,
            } => {
                let (signer, index, key) =
                    self.justice_checks(kind, &keys_id, &params, &tx, input, &per_commitment_key)?;
                signer
                    .sign_justice_revoked_output(&params, &tx, index, amount, &key, &self.secp)
                    .map(Response::Signature)
                    .map_err(|()| ldk("sign the justice transaction"))
            }
            Request::SignJusticeRevokedHtlc {
                keys_id,
                params,
                tx,
                input,
                amount,
                per_commitment_key,
                htlc,
            } => {
                let (signer, index, key) =
                    self.justice_checks(kind, &keys_id, &params, &tx, input, &per_commitment_key)?;
                signer
                    .sign_justice_revoked_htlc(&params, &tx, index, amount, &key, &htlc, &self.secp)
                    .map(Response::Signature)
                    .map_err(|()| ldk("sign the justice transaction"))
            }
            Request::SignHolderHtlcTransaction {
                keys_id,
                tx,
                input,
                descriptor,
            } => {
                let signer = self.channel(&keys_id);
                let derivation = &descriptor.channel_derivation_parameters;
                if derivation.keys_id != keys_id {
                    return Err(self.malformed(kind, "descriptor is for another channel"));
                }
                self.check_params(kind, &keys_id, &derivation.transaction_parameters)?;
                let index = self.check_input(kind, &tx, input)?;
                signer
                    .sign_holder_htlc_transaction(&tx, index, &descriptor, &self.secp)
                    .map(Response::Signature)
                    .map_err(|()| ldk("sign the HTLC transaction"))
            }
            Request::SignCounterpartyHtlcTransaction {
                keys_id,
                params,
                tx,
                input,
                amount,
                per_commitment_point,
                htlc,
            } => {
                let signer = self.channel(&keys_id);
                self.check_params(kind, &keys_id, &params)?;
                let index = self.check_input(kind, &tx, input)?;
                self.check_outputs(kind, &tx.output)?;
                signer
                    .sign_counterparty_htlc_transaction(
                        &params,
                        &tx,
                        index,
                        amount,
                        &per_commitment_point,
                        &htlc,
                        &self.secp,
                    )
                    .map(Response::Signature)
                    .map_err(|()| ldk("sign the HTLC claim"))
            }
            Request::SignClosingTransaction {
                keys_id,
                params,
                closing,
            } => self.sign_closing(kind, keys_id, params, closing),
            Request::SignHolderAnchorInput {
                keys_id,
                params,
                tx,
                input,
            } => {
                let signer = self.channel(&keys_id);
                self.check_params(kind, &keys_id, &params)?;
                let index = self.check_input(kind, &tx, input)?;
                signer
                    .sign_holder_keyed_anchor_input(&params, &tx, index, &self.secp)
                    .map(Response::Signature)
                    .map_err(|()| ldk("sign the anchor input"))
            }
            Request::Ecdh { other_key, tweak } => {
                let tweak = tweak
                    .map(Scalar::from_be_bytes)
                    .transpose()
                    .map_err(|_| self.malformed(kind, "tweak is not a scalar"))?;
                self.keys
                    .ecdh(Recipient::Node, &other_key, tweak.as_ref())
                    .map(|s| Response::SharedSecret(s.secret_bytes()))
                    .map_err(|()| ldk("compute the shared secret"))
            }
            Request::SignInvoice { hrp, data } => {
                let data = data
                    .into_iter()
                    .map(Fe32::try_from)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| self.malformed(kind, "invoice data is not 5-bit values"))?;
                let raw = RawBolt11Invoice::from_raw(&hrp, &data)
                    .map_err(|e| self.malformed(kind, format!("invoice: {e}")))?;
                self.keys
                    .sign_invoice(&raw, Recipient::Node)
                    .map(Response::RecoverableSignature)
                    .map_err(|()| ldk("sign the invoice"))
            }
            Request::SignGossip { msg_type, msg } => self.sign_gossip(kind, msg_type, &msg),
            Request::SignMessage { msg } => self
                .keys
                .sign_message(&msg)
                .map(Response::Message)
                .map_err(|()| ldk("sign the message")),
            Request::SpendOutputs {
                descriptors,
                outputs,
                change_script,
                feerate_sat_per_1000_weight,
                locktime,
            } => self.spend_outputs(
                kind,
                descriptors,
                outputs,
                change_script,
                feerate_sat_per_1000_weight,
                locktime,
            ),
            Request::SignPsbt { psbt } => self.sign_psbt(kind, psbt),
            Request::ApprovePayment {
                payment_hash,
                amount_msat,
                destination,
            } => self.approve_payment(
                kind,
                PaymentApproval {
                    payment_hash,
                    amount_msat,
                    destination,
                },
            ),
            Request::ApproveChannelOpen {
                peer,
                value_sat,
                push_msat,
                keys_id,
                outbound,
            } => {
                let open = ChannelOpen {
                    peer,
                    value_sat,
                    push_msat,
                    outbound,
                    funding_txid: None,
                };
                let now = (self.clock)();
                self.transact(|state| {
                    self.policy
                        .approve_channel_open(state, &keys_id, open, now)
                        .map(|()| Response::Accepted)
                        .map_err(|r| self.refuse(kind, r))
                })
            }
            Request::RetireChannel { keys_id } => {
                tracing::info!(node = %self.node_id, keys_id = %keys_id.to_lower_hex_string(), "channel retired");
                self.transact(|state| {
                    self.policy.retire_channel(state, &keys_id);
                    Ok(Response::Accepted)
                })
            }
        }
    }

    fn new_channel_keys(&self, kind: &str, count: u32) -> Result<Response, SignerError> {
        if count > MAX_BATCH {
            return Err(self.malformed(kind, format!("{count} key sets at once")));
        }
        let mut sets = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let random = self.keys.get_secure_random_bytes();
            let mut user_channel_id = [0u8; 16];
            user_channel_id.copy_from_slice(&random[..16]);
            let keys_id = self
                .keys
                .generate_channel_keys_id(false, u128::from_be_bytes(user_channel_id));
            let signer = self.channel(&keys_id);
            sets.push(ChannelKeySet {
                keys_id,
                pubkeys: signer.pubkeys(&self.secp),
            });
        }
        Ok(Response::ChannelKeys(sets))
    }

    /// Checks a holder commitment against the channel (outside the state lock: the
    /// signature checks are the costly part); [`Self::record_holder`] remembers it.
    fn check_holder(
        &self,
        kind: &str,
        keys_id: &KeysId,
        holder: HolderCommitment,
    ) -> Result<CheckedHolder, SignerError> {
        let HolderCommitment {
            params,
            tx,
            outbound_preimages,
        } = holder;
        let params = match params {
            Some(params) => params,
            // The host carries holder commitments on secret releases, which all come after
            // the channel's first signature pinned its parameters: one that comes before
            // could not be checked, and is not taken.
            None => self.pinned_params(kind, keys_id)?.ok_or_else(|| {
                self.refuse(
                    kind,
                    Refusal {
                        rule: "channel_parameters_missing",
                        reason: format!(
                            "holder commitment {} came before the channel's parameters",
                            tx.commitment_number()
                        ),
                    },
                )
            })?,
        };
        let signer = self.channel(keys_id);
        let checked = self.check_params(kind, keys_id, &params)?;
        let trusted = tx
            .verify(&params.as_holder_broadcastable(), &self.secp)
            .map_err(|()| self.malformed(kind, "commitment does not match the channel"))?;
        if tx.counterparty_htlc_sigs.len() != tx.nondust_htlcs().len() {
            return Err(self.malformed(kind, "HTLC signature count does not match"));
        }
        // The peer's signature is what makes this commitment broadcastable: without it,
        // revoking the previous one would leave the node with nothing to close with.
        let counterparty_funding = params
            .counterparty_pubkeys()
            .map(|k| k.funding_pubkey)
            .ok_or_else(|| self.malformed(kind, "no counterparty keys"))?;
        let redeem =
            make_funding_redeemscript(&params.holder_pubkeys.funding_pubkey, &counterparty_funding);
        let sighash = trusted
            .built_transaction()
            .get_sighash_all(&redeem, params.channel_value_satoshis);
        if self
            .secp
            .verify_ecdsa(&sighash, &tx.counterparty_sig, &counterparty_funding)
            .is_err()
        {
            return Err(self.refuse(
                kind,
                Refusal {
                    rule: "invalid_counterparty_signature",
                    reason: format!(
                        "holder commitment {} is not signed by the peer",
                        tx.commitment_number()
                    ),
                },
            ));
        }
        signer
            .validate_holder_commitment(&tx, outbound_preimages)
            .map_err(|()| self.malformed(kind, "LDK could not validate the commitment"))?;
        // In our own commitment, HTLCs the peer offered are the ones not `offered`.
        let view = view_of(&tx, trusted.txid().to_byte_array(), false);
        Ok(CheckedHolder {
            params: checked,
            view,
        })
    }

    /// Remembers a checked holder commitment (pinning the parameters it was checked against).
    fn record_holder(
        &self,
        kind: &str,
        state: &mut Txn,
        keys_id: &KeysId,
        holder: &CheckedHolder,
    ) -> Result<(), SignerError> {
        self.policy
            .pin_channel_parameters(state, keys_id, &holder.params)
            .map_err(|r| self.refuse(kind, r))?;
        self.policy
            .validate_holder_commitment(state, keys_id, &holder.view);
        Ok(())
    }

    fn sign_counterparty(
        &self,
        kind: &str,
        keys_id: KeysId,
        params: ChannelTransactionParameters,
        tx: CommitmentTransaction,
        (inbound_preimages, outbound_preimages): (Vec<PaymentPreimage>, Vec<PaymentPreimage>),
        revocation: Option<Revocation>,
    ) -> Result<Response, SignerError> {
        let signer = self.channel(&keys_id);
        let checked = self.check_params(kind, &keys_id, &params)?;
        let trusted = tx
            .verify(&params.as_counterparty_broadcastable(), &self.secp)
            .map_err(|()| self.malformed(kind, "commitment does not match the channel"))?;
        let built = trusted.built_transaction();
        // Anchors are the funder's cost like the fee (taken from its balance whether or not
        // they appear): counted with the fee, not as anyone's balance.
        let anchors = anchor_scripts(&params);
        let outputs_sat = built
            .transaction
            .output
            .iter()
            .filter(|o| !anchors.contains(&o.script_pubkey))
            .map(|o| o.value.to_sat())
            .fold(0u64, u64::saturating_add);
        // The peer broadcasts this one: HTLCs it did not offer are the ones we offered.
        let mut view = view_of(&tx, built.txid.to_byte_array(), true);
        view.fee_sat = params.channel_value_satoshis.saturating_sub(outputs_sat);
        let now = (self.clock)();
        self.transact(|state| {
            self.policy
                .pin_channel_parameters(state, &keys_id, &checked)
                .map_err(|r| self.refuse(kind, r))?;
            if let Some(revocation) = &revocation {
                self.revoke(kind, state, &keys_id, revocation)?;
            }
            self.policy
                .sign_counterparty_commitment(state, &keys_id, &view, now)
                .map_err(|r| self.refuse(kind, r))?;
            signer
                .sign_counterparty_commitment(
                    &params,
                    &tx,
                    inbound_preimages,
                    outbound_preimages,
                    &self.secp,
                )
                .map(|(commitment, htlcs)| Response::CommitmentSignatures { commitment, htlcs })
                .map_err(|()| self.malformed(kind, "LDK could not sign the commitment"))
        })
    }

    /// Records the peer's revocation (LDK's own signer checks nothing there).
    fn revoke(
        &self,
        kind: &str,
        state: &mut Txn,
        keys_id: &KeysId,
        revocation: &Revocation,
    ) -> Result<(), SignerError> {
        self.policy
            .record_counterparty_revocation(state, keys_id, revocation, &self.secp)
            .map_err(|r| self.refuse(kind, r))
    }

    fn justice_checks(
        &self,
        kind: &str,
        keys_id: &KeysId,
        params: &ChannelTransactionParameters,
        tx: &Transaction,
        input: u32,
        per_commitment_key: &[u8; 32],
    ) -> Result<(Arc<InMemorySigner>, usize, SecretKey), SignerError> {
        let signer = self.channel(keys_id);
        self.check_params(kind, keys_id, params)?;
        let index = self.check_input(kind, tx, input)?;
        let key = SecretKey::from_slice(per_commitment_key)
            .map_err(|_| self.malformed(kind, "per-commitment key is not a key"))?;
        self.check_outputs(kind, &tx.output)?;
        Ok((signer, index, key))
    }

    fn sign_closing(
        &self,
        kind: &str,
        keys_id: KeysId,
        params: ChannelTransactionParameters,
        closing: ClosingParts,
    ) -> Result<Response, SignerError> {
        let signer = self.channel(&keys_id);
        self.check_params(kind, &keys_id, &params)?;
        let funding_outpoint = params
            .funding_outpoint
            .ok_or_else(|| self.malformed(kind, "no funding outpoint"))?;
        if closing.to_holder_sat > 0 {
            self.policy
                .check_destinations(&self.own_scripts, [closing.to_holder_script.as_script()])
                .map_err(|r| self.refuse(kind, r))?;
        }
        let fee = params
            .channel_value_satoshis
            .checked_sub(closing.to_holder_sat)
            .and_then(|rest| rest.checked_sub(closing.to_counterparty_sat))
            .ok_or_else(|| self.malformed(kind, "outputs exceed the channel value"))?;
        // The funder pays a mutual close's fee (BOLT 2); a fee the peer pays is not ours to cap.
        let our_fee = if params.is_outbound_from_holder {
            self.policy
                .check_fee(fee, "closing transaction")
                .map_err(|r| self.refuse(kind, r))?;
            fee
        } else {
            0
        };
        self.policy
            .check_closing_split(
                &lock(&self.kept).state,
                &keys_id,
                closing.to_holder_sat,
                our_fee,
            )
            .map_err(|r| self.refuse(kind, r))?;
        let tx = ClosingTransaction::new(
            closing.to_holder_sat,
            closing.to_counterparty_sat,
            closing.to_holder_script,
            closing.to_counterparty_script,
            funding_outpoint.into_bitcoin_outpoint(),
        );
        signer
            .sign_closing_transaction(&params, &tx, &self.secp)
            .map(Response::Signature)
            .map_err(|()| self.malformed(kind, "LDK could not sign the closing transaction"))
    }

    fn sign_gossip(&self, kind: &str, msg_type: u16, msg: &[u8]) -> Result<Response, SignerError> {
        let ours = NodeId::from_pubkey(&self.node_id);
        let bad = |what: &str| self.malformed(kind, format!("{what} does not decode"));
        let not_ours = |what: &str| {
            self.refuse(
                kind,
                Refusal {
                    rule: "gossip_not_ours",
                    reason: format!("{what} does not name this node"),
                },
            )
        };
        let mut reader = msg;
        let sign = |gossip: UnsignedGossipMessage| {
            self.keys
                .sign_gossip_message(gossip)
                .map(Response::Signature)
                .map_err(|()| self.malformed(kind, "LDK could not sign the gossip"))
        };
        match msg_type {
            CHANNEL_ANNOUNCEMENT => {
                let m = UnsignedChannelAnnouncement::read_from_fixed_length_buffer(&mut reader)
                    .map_err(|_| bad("channel_announcement"))?;
                if m.node_id_1 != ours && m.node_id_2 != ours {
                    return Err(not_ours("channel_announcement"));
                }
                sign(UnsignedGossipMessage::ChannelAnnouncement(&m))
            }
            NODE_ANNOUNCEMENT => {
                let m = UnsignedNodeAnnouncement::read_from_fixed_length_buffer(&mut reader)
                    .map_err(|_| bad("node_announcement"))?;
                if m.node_id != ours {
                    return Err(not_ours("node_announcement"));
                }
                sign(UnsignedGossipMessage::NodeAnnouncement(&m))
            }
            CHANNEL_UPDATE => {
                let m = UnsignedChannelUpdate::read_from_fixed_length_buffer(&mut reader)
                    .map_err(|_| bad("channel_update"))?;
                sign(UnsignedGossipMessage::ChannelUpdate(&m))
            }
            other => Err(self.malformed(kind, format!("gossip message type {other}"))),
        }
    }

    fn spend_outputs(
        &self,
        kind: &str,
        descriptors: Vec<SpendableOutputDescriptor>,
        outputs: Vec<TxOut>,
        change_script: ScriptBuf,
        feerate: u32,
        locktime: Option<u32>,
    ) -> Result<Response, SignerError> {
        self.check_outputs(kind, &outputs)?;
        self.policy
            .check_destinations(&self.own_scripts, [change_script.as_script()])
            .map_err(|r| self.refuse(kind, r))?;
        let input_sat = descriptors
            .iter()
            .map(|d| match d {
                SpendableOutputDescriptor::StaticOutput { output, .. } => output.value,
                SpendableOutputDescriptor::DelayedPaymentOutput(d) => d.output.value,
                SpendableOutputDescriptor::StaticPaymentOutput(d) => d.output.value,
            })
            .try_fold(bitcoin::Amount::ZERO, |a, b| a.checked_add(b))
            .ok_or_else(|| self.malformed(kind, "input values overflow"))?;
        let refs: Vec<&SpendableOutputDescriptor> = descriptors.iter().collect();
        let tx = self
            .keys
            .spend_spendable_outputs(
                &refs,
                outputs,
                change_script,
                feerate,
                locktime.map(LockTime::from_consensus),
                &self.secp,
            )
            .map_err(|()| self.malformed(kind, "LDK could not spend these outputs"))?;
        self.check_outputs(kind, &tx.output)?;
        let output_sat = tx
            .output
            .iter()
            .map(|o| o.value)
            .try_fold(bitcoin::Amount::ZERO, |a, b| a.checked_add(b))
            .ok_or_else(|| self.malformed(kind, "output values overflow"))?;
        let fee = input_sat
            .checked_sub(output_sat)
            .ok_or_else(|| self.malformed(kind, "outputs exceed inputs"))?;
        self.policy
            .check_fee(fee.to_sat(), "sweep")
            .map_err(|r| self.refuse(kind, r))?;
        Ok(Response::Transaction(tx))
    }

    /// Signs the wallet's inputs once every output is allowed (see
    /// `Policy::check_wallet_spend`) and the fee within the cap.
    fn sign_psbt(&self, kind: &str, mut psbt: Psbt) -> Result<Response, SignerError> {
        if psbt.outputs.len() != psbt.unsigned_tx.output.len() {
            return Err(self.malformed(kind, "PSBT outputs do not match its transaction"));
        }
        if self.policy.limits.max_fee_sat.is_some() {
            let fee = psbt
                .fee()
                .map_err(|e| self.malformed(kind, format!("fee unknown: {e}")))?;
            self.policy
                .check_fee(fee.to_sat(), "wallet transaction")
                .map_err(|r| self.refuse(kind, r))?;
        }
        let txid = psbt.unsigned_tx.compute_txid().to_byte_array();
        self.transact(move |state| {
            let outputs: Vec<WalletOutput> = psbt
                .unsigned_tx
                .output
                .iter()
                .zip(&psbt.outputs)
                .map(|(txout, output)| WalletOutput {
                    script: &txout.script_pubkey,
                    value_sat: txout.value.to_sat(),
                    own: self.own_scripts.contains(&txout.script_pubkey)
                        || self.wallet.owns_output(output, &txout.script_pubkey),
                    witness_script: output.witness_script.as_deref(),
                })
                .collect();
            self.policy
                .check_wallet_spend(state, txid, &outputs, |keys_id| {
                    self.channel_keys(keys_id).pubkeys.funding_pubkey
                })
                .map_err(|r| self.refuse(kind, r))?;
            // Inside the transaction: a funding recorded for a PSBT that was not signed
            // would refuse the retry.
            drop(outputs);
            self.wallet
                .sign_psbt(&mut psbt)
                .map_err(|e| self.malformed(kind, e.to_string()))?;
            Ok(Response::Psbt(psbt))
        })
    }

    fn approve_payment(
        &self,
        kind: &str,
        payment: PaymentApproval,
    ) -> Result<Response, SignerError> {
        let now = (self.clock)();
        // Limits first, so the hook (perhaps a person) is asked without the state locked,
        // then again under the lock in case other payments went out meanwhile.
        self.policy
            .check_payment(&lock(&self.kept).state, &payment, now)
            .map_err(|r| self.refuse(kind, r))?;
        if let Some(hook) = &self.approval {
            if !hook.approve(&payment) {
                return Err(self.refuse(
                    kind,
                    Refusal {
                        rule: "approval_declined",
                        reason: "the approval hook declined the payment".into(),
                    },
                ));
            }
        }
        self.transact(|state| {
            self.policy
                .check_payment(state, &payment, now)
                .map_err(|r| self.refuse(kind, r))?;
            self.policy.record_approved(state, &payment, now);
            Ok(Response::Accepted)
        })
    }
}

impl Handler for SeedSigner {
    fn node_id(&self) -> PublicKey {
        self.node_id
    }

    fn handover(&self) -> Handover {
        self.handover.clone()
    }

    fn sign_challenge(&self, challenge: &[u8; 32]) -> Signature {
        self.secp
            .sign_ecdsa(&challenge_digest(challenge), &self.node_secret)
    }

    fn handle(&self, request: Request) -> Result<Response, SignerError> {
        self.answer(request).settled_blocking()
    }

    fn broken(&self) -> bool {
        self.progress.failed()
    }

    fn answer(&self, request: Request) -> Answer {
        // The one way in (`handle` comes here too): a broken signer answers nothing.
        if self.progress.failed() {
            return Answer::ready(Err(SignerError::Unavailable));
        }
        let kind = request.kind();
        // LDK asserts on data it expects to be well-formed; from a host that data is input, so
        // a panic is one more way of saying "malformed".
        let result = catch_unwind(AssertUnwindSafe(|| self.dispatch(request)))
            .unwrap_or_else(|_| Err(self.malformed(kind, "LDK rejected the request's data")));
        // Even an answer that changed nothing may rest on a change still being saved.
        Answer::after(result, self.progress.barrier())
    }
}

/// A channel's signer and its public keys, derived together once.
#[derive(Clone)]
struct ChannelKeys {
    signer: Arc<InMemorySigner>,
    pubkeys: Arc<ChannelPublicKeys>,
}

/// A holder commitment as checked: the channel's parameters and what the policy keeps of it.
struct CheckedHolder {
    params: ChannelParams,
    view: CommitmentView,
}

/// A mutex whose holder panicked is still consistent here: state is replaced only whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The commitment's HTLCs from the node's side; `counterparty` says who broadcasts it.
fn view_of(tx: &CommitmentTransaction, txid: [u8; 32], counterparty: bool) -> CommitmentView {
    let to_us_sat = if counterparty {
        tx.to_countersignatory_value_sat()
    } else {
        tx.to_broadcaster_value_sat()
    };
    let entry = |h: &HTLCOutputInCommitment| HtlcEntry {
        payment_hash: h.payment_hash.0,
        amount_msat: h.amount_msat,
        cltv_expiry: h.cltv_expiry,
    };
    // `offered` is from the broadcaster's view.
    let ours = |h: &&HTLCOutputInCommitment| h.offered != counterparty;
    CommitmentView {
        number: tx.commitment_number(),
        txid,
        point: tx.per_commitment_point(),
        outgoing: tx.nondust_htlcs().iter().filter(ours).map(entry).collect(),
        incoming: tx
            .nondust_htlcs()
            .iter()
            .filter(|h| !ours(h))
            .map(entry)
            .collect(),
        to_us_sat,
        // Known only with the channel's value: see `sign_counterparty`.
        fee_sat: 0,
    }
}

/// LDK's inbound-payment key material: the private key at `m/5'`, as `KeysManager` derives it.
fn inbound_payment_key(seed: &[u8; 32], secp: &Secp256k1<All>) -> Result<[u8; 32], SetupError> {
    let err = |e: bitcoin::bip32::Error| SetupError::Keys(e.to_string());
    let master = Xpriv::new_master(Network::Testnet, seed).map_err(err)?;
    let key = master
        .derive_priv(secp, &[ChildNumber::Hardened { index: 5 }])
        .map_err(err)?;
    Ok(key.private_key.secret_bytes())
}

/// The scripts of a commitment's anchor outputs (none for a channel without anchors).
fn anchor_scripts(params: &ChannelTransactionParameters) -> Vec<ScriptBuf> {
    let features = &params.channel_type_features;
    if !features.supports_anchors_zero_fee_htlc_tx()
        && !features.supports_anchor_zero_fee_commitments()
    {
        return Vec::new();
    }
    [Some(&params.holder_pubkeys), params.counterparty_pubkeys()]
        .into_iter()
        .flatten()
        .map(|keys| get_keyed_anchor_redeemscript(&keys.funding_pubkey).to_p2wsh())
        .chain([shared_anchor_script_pubkey()])
        .collect()
}

/// The first `count` scripts of the wallet's external and internal chains, as
/// [`SeedWalletSigner`] derives them (`wpkh(m/84'/coin'/0'/chain/i)`). Derived with plain BIP32
/// rather than through the descriptor: a thousand addresses per chain must be cheap.
fn wallet_scripts(
    seed: &[u8; 32],
    network: Network,
    count: u32,
    secp: &Secp256k1<All>,
) -> Result<(Vec<ScriptBuf>, Vec<ScriptBuf>), SetupError> {
    let err = |e: bitcoin::bip32::Error| SetupError::Keys(e.to_string());
    let coin = if network == Network::Bitcoin { 0 } else { 1 };
    let master = Xpriv::new_master(network, seed).map_err(err)?;
    let path = [
        ChildNumber::from_hardened_idx(84).map_err(err)?,
        ChildNumber::from_hardened_idx(coin).map_err(err)?,
        ChildNumber::from_hardened_idx(0).map_err(err)?,
    ];
    let account = Xpub::from_priv(secp, &master.derive_priv(secp, &path).map_err(err)?);
    let chain = |index: u32| -> Result<Vec<ScriptBuf>, SetupError> {
        let chain = account
            .ckd_pub(secp, ChildNumber::from_normal_idx(index).map_err(err)?)
            .map_err(err)?;
        (0..count)
            .map(|i| {
                let child = chain
                    .ckd_pub(secp, ChildNumber::from_normal_idx(i).map_err(err)?)
                    .map_err(err)?;
                Ok(ScriptBuf::new_p2wpkh(
                    &CompressedPublicKey(child.public_key).wpubkey_hash(),
                ))
            })
            .collect()
    };
    Ok((chain(0)?, chain(1)?))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use bitcoin::hashes::Hash;
    use bitcoin::psbt::Input as PsbtInput;
    use bitcoin::{Amount, OutPoint as BtcOutPoint, Sequence, TxIn, Txid, Witness};
    use lightning::chain::transaction::OutPoint;
    use lightning::ln::chan_utils::HolderCommitmentTransaction;
    use lightning::ln::chan_utils::{
        build_commitment_secret, ChannelPublicKeys, CounterpartyChannelTransactionParameters,
    };
    use lightning::ln::inbound_payment::{self, ExpandedKey};
    use lightning::types::features::ChannelTypeFeatures;
    use lightning::types::payment::PaymentHash;

    use super::*;
    use crate::signer::config::PolicyLimits;
    use crate::signer::policy::DEFAULT_WALLET_LOOKAHEAD as DEFAULT_LOOKAHEAD;
    use crate::signer::state::{ChannelState, MemoryStateStore, SqliteStateStore};
    use bitcoin::bip32::{DerivationPath, Fingerprint};
    use bitcoin::hashes::sha256;
    use bitcoin::secp256k1::Message;

    const SEED: [u8; 32] = [11; 32];
    const PEER_SEED: [u8; 32] = [22; 32];
    const TOP: u64 = MAX_COMMITMENT_NUMBER;
    const CHANNEL_SAT: u64 = 1_000_000;

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

        /// A channel we open, pushing `push_msat`, funded by a wallet transaction the signer
        /// signed for it.
        fn open_funded(signer: &SeedSigner, tag: u8, push_msat: u64) -> Channel {
            let mut ch = Channel::approved(signer, tag, true, push_msat);
            let psbt = funding_psbt(tag, CHANNEL_SAT, ch.funding_redeemscript());
            let txid = psbt.unsigned_tx.compute_txid();
            match signer.handle(Request::SignPsbt { psbt }) {
                Ok(Response::Psbt(_)) => {}
                other => panic!("funding: {other:?}"),
            }
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
                channel_type_features: ChannelTypeFeatures::anchors_zero_htlc_fee_and_dependencies(
                ),
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
                253,
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

        /// Our commitment `number`, signed by the peer.
        fn holder_tx(
            &self,
            signer: &SeedSigner,
            number: u64,
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
                CHANNEL_SAT - 500_000 - in_htlcs - 10_000,
                500_000,
                253,
                htlcs,
                &self.params.as_holder_broadcastable(),
                &self.secp,
            );
            let holder_funding = self.params.holder_pubkeys.funding_pubkey;
            let peer_funding = self.peer_pubkeys().funding_pubkey;
            let redeem = make_funding_redeemscript(&holder_funding, &peer_funding);
            let sighash = tx
                .trust()
                .built_transaction()
                .get_sighash_all(&redeem, CHANNEL_SAT);
            let sig = self.secp.sign_ecdsa(&sighash, &self.peer.funding_key(None));
            let htlc_sigs = vec![sig; tx.nondust_htlcs().len()];
            HolderCommitmentTransaction::new(tx, sig, htlc_sigs, &holder_funding, &peer_funding)
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
    /// signs for, but the policy sees the whole transaction) to `outputs`.
    fn wallet_psbt(tag: u8, input_sat: u64, outputs: Vec<TxOut>) -> Psbt {
        let tx = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: BtcOutPoint {
                    txid: Txid::from_byte_array([tag; 32]),
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
            witness_utxo: Some(TxOut {
                value: Amount::from_sat(input_sat),
                script_pubkey: ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array(
                    [2; 20],
                )),
            }),
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

    #[test]
    fn keys_are_exactly_ldks() {
        let signer = signer();
        let ldk = ldk_keys(&SEED);
        let secp = Secp256k1::new();
        assert_eq!(
            Some(signer.node_id()),
            ldk.get_node_id(Recipient::Node).ok()
        );
        let sets = match signer.handle(Request::NewChannelKeys { count: 3 }) {
            Ok(Response::ChannelKeys(sets)) => sets,
            other => panic!("{other:?}"),
        };
        let ids: HashSet<_> = sets.iter().map(|s| s.keys_id).collect();
        assert_eq!(ids.len(), 3, "fresh ids");
        for set in &sets {
            assert_eq!(
                set.pubkeys,
                ldk.derive_channel_keys(&set.keys_id).pubkeys(&secp)
            );
        }
        let handover = signer.handover();
        assert_eq!(handover.node_id, signer.node_id());
        assert_eq!(handover.peer_storage_key, ldk.get_peer_storage_key().inner);
        assert_eq!(handover.receive_auth_key, ldk.get_receive_auth_key().0);
        let ours = ExpandedKey::new(handover.inbound_payment_key);
        assert_eq!(ours, ldk.get_expanded_key());
        // Behaviour, not just equality: the same payment secret for the same payment.
        let secret = |key: &ExpandedKey| {
            inbound_payment::create_from_hash(
                key,
                Some(5_000),
                PaymentHash([4; 32]),
                3600,
                1_700_000_000,
                None,
            )
            .expect("secret")
        };
        assert_eq!(secret(&ours), secret(&ldk.get_expanded_key()));
        assert_ne!(
            secret(&ExpandedKey::new([0; 32])),
            secret(&ldk.get_expanded_key())
        );
        assert!(signer.own_scripts.contains(&handover.shutdown_script));
        // The fast derivation agrees with the wallet's descriptors.
        for (text, chain) in [
            (&handover.wallet_descriptors.0, 0),
            (&handover.wallet_descriptors.1, 1),
        ] {
            let descriptor = <bdk_wallet::descriptor::Descriptor<
                bdk_wallet::descriptor::DescriptorPublicKey,
            > as std::str::FromStr>::from_str(text)
            .expect("descriptor");
            for index in [0, 1, DEFAULT_LOOKAHEAD - 1] {
                let script = descriptor
                    .at_derivation_index(index)
                    .expect("index")
                    .script_pubkey();
                assert!(
                    signer.own_scripts.contains(&script),
                    "chain {chain} index {index}"
                );
            }
            let beyond = descriptor
                .at_derivation_index(DEFAULT_LOOKAHEAD)
                .expect("index")
                .script_pubkey();
            assert!(!signer.own_scripts.contains(&beyond));
        }
        let change0 = <bdk_wallet::descriptor::Descriptor<
            bdk_wallet::descriptor::DescriptorPublicKey,
        > as std::str::FromStr>::from_str(&handover.wallet_descriptors.1)
        .expect("descriptor")
        .at_derivation_index(0)
        .expect("index")
        .script_pubkey();
        assert_eq!(handover.shutdown_script, change0);
    }

    #[test]
    fn challenge_and_node_signatures_verify() {
        let signer = signer();
        let secp = Secp256k1::new();
        let challenge = [9; 32];
        let sig = signer.sign_challenge(&challenge);
        secp.verify_ecdsa(&challenge_digest(&challenge), &sig, &signer.node_id())
            .expect("challenge signature");
        assert!(secp
            .verify_ecdsa(&challenge_digest(&[8; 32]), &sig, &signer.node_id())
            .is_err());

        let ldk = ldk_keys(&SEED);
        let other =
            PublicKey::from_secret_key(&secp, &SecretKey::from_slice(&[3; 32]).expect("key"));
        match signer.handle(Request::Ecdh {
            other_key: other,
            tweak: None,
        }) {
            Ok(Response::SharedSecret(s)) => assert_eq!(
                s,
                ldk.ecdh(Recipient::Node, &other, None)
                    .expect("ecdh")
                    .secret_bytes()
            ),
            other => panic!("{other:?}"),
        }
        malformed(signer.handle(Request::Ecdh {
            other_key: other,
            tweak: Some([0xff; 32]),
        }));

        let raw = lightning_invoice::InvoiceBuilder::new(lightning_invoice::Currency::Regtest)
            .description("coffee".into())
            .payment_hash(sha256::Hash::from_byte_array([5; 32]))
            .payment_secret(lightning_invoice::PaymentSecret([6; 32]))
            .duration_since_epoch(std::time::Duration::from_secs(1_700_000_000))
            .min_final_cltv_expiry_delta(18)
            .build_raw()
            .expect("raw invoice");
        let (hrp, data) = raw.to_raw();
        let data: Vec<u8> = data.into_iter().map(u8::from).collect();
        match signer.handle(Request::SignInvoice {
            hrp: hrp.clone(),
            data: data.clone(),
        }) {
            Ok(Response::RecoverableSignature(sig)) => {
                assert_eq!(Ok(sig), ldk.sign_invoice(&raw, Recipient::Node))
            }
            other => panic!("{other:?}"),
        }
        malformed(signer.handle(Request::SignInvoice {
            hrp,
            data: vec![32],
        }));

        match signer.handle(Request::SignMessage {
            msg: b"hi".to_vec(),
        }) {
            Ok(Response::Message(m)) => assert!(lightning::util::message_signing::verify(
                b"hi",
                &m,
                &signer.node_id()
            )),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gossip_is_signed_only_for_this_node() {
        use lightning::util::ser::Writeable;
        let signer = signer();
        let announcement = |node: PublicKey| UnsignedNodeAnnouncement {
            features: lightning::types::features::NodeFeatures::empty(),
            timestamp: 1_700_000_000,
            node_id: NodeId::from_pubkey(&node),
            rgb: [1, 2, 3],
            alias: lightning::routing::gossip::NodeAlias([b'f'; 32]),
            addresses: vec![],
            excess_address_data: vec![],
            excess_data: vec![],
        };
        let ours = announcement(signer.node_id());
        let sig = match signer.handle(Request::SignGossip {
            msg_type: NODE_ANNOUNCEMENT,
            msg: ours.encode(),
        }) {
            Ok(Response::Signature(sig)) => sig,
            other => panic!("{other:?}"),
        };
        let digest = bitcoin::hashes::sha256d::Hash::hash(&ours.encode());
        Secp256k1::new()
            .verify_ecdsa(
                &Message::from_digest(digest.to_byte_array()),
                &sig,
                &signer.node_id(),
            )
            .expect("gossip signature verifies");
        let stranger = PublicKey::from_secret_key(
            &Secp256k1::new(),
            &SecretKey::from_slice(&[6; 32]).expect("key"),
        );
        refused(
            signer.handle(Request::SignGossip {
                msg_type: NODE_ANNOUNCEMENT,
                msg: announcement(stranger).encode(),
            }),
            "gossip_not_ours",
        );
        malformed(signer.handle(Request::SignGossip {
            msg_type: 999,
            msg: ours.encode(),
        }));
    }

    #[test]
    fn a_channel_keeps_the_parameters_it_was_first_signed_with() {
        let signer = signer();
        let ch = Channel::open(&signer, 1);
        ch.sign_counterparty(&signer, ch.counterparty_tx(TOP - 1, 400_000, vec![]))
            .expect("the first signature pins the parameters");
        // The host names another peer for the same channel keys: refused.
        let other_peer = ldk_keys(&PEER_SEED).derive_channel_keys(&[99; 32]);
        let mut params = ch.params.clone();
        params.counterparty_parameters = Some(CounterpartyChannelTransactionParameters {
            pubkeys: other_peer.pubkeys(&ch.secp),
            selected_contest_delay: 144,
        });
        let swapped = Channel {
            keys_id: ch.keys_id,
            params,
            peer: other_peer,
            secp: Secp256k1::new(),
        };
        refused(
            swapped.sign_counterparty(&signer, swapped.counterparty_tx(TOP - 2, 400_000, vec![])),
            "channel_parameters_changed",
        );
        // Or another channel value.
        let mut params = ch.params.clone();
        params.channel_value_satoshis += 1;
        let resized = Channel {
            keys_id: ch.keys_id,
            params,
            peer: ch.peer.clone(),
            secp: Secp256k1::new(),
        };
        refused(
            resized.sign_counterparty(&signer, resized.counterparty_tx(TOP - 2, 400_000, vec![])),
            "channel_parameters_changed",
        );
        // The channel's own parameters still sign.
        ch.sign_counterparty(&signer, ch.counterparty_tx(TOP - 2, 400_000, vec![]))
            .expect("the pinned parameters");
    }

    #[test]
    fn counterparty_commitment_signatures_verify_and_old_ones_are_refused() {
        let signer = signer();
        let ch = Channel::open(&signer, 1);
        let tx = ch.counterparty_tx(TOP - 1, 400_000, vec![htlc(false, 5_000_000, 1)]);
        let (commitment, htlcs) = match ch.sign_counterparty(&signer, tx.clone()) {
            Ok(Response::CommitmentSignatures { commitment, htlcs }) => (commitment, htlcs),
            other => panic!("{other:?}"),
        };
        let redeem = make_funding_redeemscript(
            &ch.params.holder_pubkeys.funding_pubkey,
            &ch.peer_pubkeys().funding_pubkey,
        );
        let sighash = tx
            .trust()
            .built_transaction()
            .get_sighash_all(&redeem, CHANNEL_SAT);
        ch.secp
            .verify_ecdsa(
                &sighash,
                &commitment,
                &ch.params.holder_pubkeys.funding_pubkey,
            )
            .expect("commitment signature verifies");
        assert_eq!(htlcs.len(), 1);

        // LDK may ask again for the same transaction.
        ch.sign_counterparty(&signer, tx).expect("same again");
        // The same number with other contents, or an older number: refused.
        refused(
            ch.sign_counterparty(
                &signer,
                ch.counterparty_tx(TOP - 1, 390_000, vec![htlc(false, 5_000_000, 1)]),
            ),
            "conflicting_counterparty_commitment",
        );
        refused(
            ch.sign_counterparty(&signer, ch.counterparty_tx(TOP, 400_000, vec![])),
            "stale_counterparty_commitment",
        );
        ch.sign_counterparty(&signer, ch.counterparty_tx(TOP - 2, 400_000, vec![]))
            .expect("newer");
    }

    #[test]
    fn a_retired_channel_keeps_only_a_tombstone_and_signs_nothing_again() {
        let signer = signer();
        let ch = Channel::open(&signer, 1);
        let other = Channel::open(&signer, 2);
        ch.sign_counterparty(&signer, ch.counterparty_tx(TOP - 1, 400_000, vec![]))
            .expect("signed while open");
        assert!(signer.state().channels[&ch.keys_id].parameters.is_some());

        let retire = Request::RetireChannel {
            keys_id: ch.keys_id,
        };
        assert!(matches!(
            signer.handle(retire.clone()),
            Ok(Response::Accepted)
        ));
        let tombstone = ChannelState {
            retired: true,
            ..ChannelState::default()
        };
        assert_eq!(signer.state().channels[&ch.keys_id], tombstone);
        // Kept as such, and a channel saved before tombstones existed is not one.
        let json = serde_json::to_string(&tombstone).expect("encode");
        assert_eq!(
            serde_json::from_str::<ChannelState>(&json).expect("decode"),
            tombstone
        );
        let old = serde_json::to_string(&ChannelState::default()).expect("encode");
        assert!(!old.contains("retired"));

        refused(
            ch.sign_counterparty(&signer, ch.counterparty_tx(TOP - 2, 400_000, vec![])),
            "channel_retired",
        );
        refused(signer.handle(ch.approval(0)), "channel_retired");
        refused(
            signer.handle(Request::PerCommitmentPoints {
                keys_id: ch.keys_id,
                first: TOP,
                count: 1,
            }),
            "channel_retired",
        );
        assert!(matches!(signer.handle(retire), Ok(Response::Accepted)));
        other
            .sign_counterparty(&signer, other.counterparty_tx(TOP - 1, 400_000, vec![]))
            .expect("another channel is untouched");
    }

    #[test]
    fn payment_and_velocity_limits_apply_to_new_outgoing_htlcs() {
        let signer = signer();
        let ch = Channel::open(&signer, 2);
        // In the peer's commitment, our outgoing HTLCs are the ones the peer did not offer.
        refused(
            ch.sign_counterparty(
                &signer,
                ch.counterparty_tx(TOP - 1, 100_000, vec![htlc(false, 60_000_000, 1)]),
            ),
            "max_payment",
        );
        // An incoming HTLC of that size is not spending.
        ch.sign_counterparty(
            &signer,
            ch.counterparty_tx(TOP - 1, 100_000, vec![htlc(true, 60_000_000, 1)]),
        )
        .expect("incoming");
        ch.sign_counterparty(
            &signer,
            ch.counterparty_tx(TOP - 2, 100_000, vec![htlc(false, 45_000_000, 2)]),
        )
        .expect("within limits");
        ch.revoke(&signer, TOP - 1).expect("revoked");
        refused(
            ch.sign_counterparty(
                &signer,
                ch.counterparty_tx(
                    TOP - 3,
                    100_000,
                    vec![htlc(false, 45_000_000, 2), htlc(false, 45_000_000, 3)],
                ),
            ),
            "velocity",
        );
        // The refusal left no trace: the same commitment number is still free.
        ch.sign_counterparty(
            &signer,
            ch.counterparty_tx(
                TOP - 3,
                100_000,
                vec![htlc(false, 45_000_000, 2), htlc(false, 30_000_000, 3)],
            ),
        )
        .expect("within velocity");
    }

    #[test]
    fn a_revocation_lost_on_the_way_comes_with_the_next_commitment() {
        let signer = signer();
        let ch = Channel::open(&signer, 4);
        let tx = |number| ch.counterparty_tx(number, 100_000, vec![]);
        ch.sign_counterparty(&signer, tx(TOP)).expect("first");
        ch.sign_counterparty(&signer, tx(TOP - 1)).expect("second");
        refused(
            ch.sign_counterparty(&signer, tx(TOP - 2)),
            "counterparty_not_revoked",
        );
        // Another commitment's secret does not revoke TOP, and refuses the whole request.
        let wrong = Revocation {
            idx: TOP,
            ..ch.revocation(TOP - 1)
        };
        refused(
            ch.sign_counterparty_revoking(&signer, tx(TOP - 2), Some(wrong)),
            "invalid_revocation",
        );
        ch.sign_counterparty_revoking(&signer, tx(TOP - 2), Some(ch.revocation(TOP)))
            .expect("revoked on the way");
        // The standalone validation arriving late, and the same revocation repeated, are fine.
        ch.revoke(&signer, TOP).expect("late");
        ch.revoke(&signer, TOP - 1).expect("TOP - 1 revoked");
        ch.sign_counterparty_revoking(&signer, tx(TOP - 3), Some(ch.revocation(TOP - 1)))
            .expect("third");
        let channel = &signer.state().channels[&ch.keys_id];
        assert_eq!(
            channel.unrevoked_counterparty.map(|c| c.number),
            Some(TOP - 2)
        );
    }

    #[test]
    fn velocity_window_rolls_with_the_clock() {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let clock = now.clone();
        let signer = signer().with_clock(Box::new(move || clock.load(Ordering::SeqCst)));
        let ch = Channel::open(&signer, 3);
        ch.sign_counterparty(
            &signer,
            ch.counterparty_tx(TOP - 1, 100_000, vec![htlc(false, 45_000_000, 1)]),
        )
        .expect("first");
        let second = || ch.counterparty_tx(TOP - 2, 100_000, vec![htlc(false, 45_000_000, 2)]);
        refused(ch.sign_counterparty(&signer, second()), "velocity");
        now.fetch_add(3600, Ordering::SeqCst);
        ch.sign_counterparty(&signer, second())
            .expect("an hour later");
    }

    #[test]
    fn forwards_are_not_spending() {
        let signer = signer();
        let incoming = Channel::open(&signer, 4);
        let outgoing = Channel::open(&signer, 5);
        // Our commitment on the incoming channel holds the peer's HTLC (not offered by us).
        incoming
            .validate_holder(
                &signer,
                incoming.holder_tx(&signer, TOP - 1, vec![htlc(false, 70_000_000, 7)]),
            )
            .expect("validated");
        outgoing
            .sign_counterparty(
                &signer,
                outgoing.counterparty_tx(TOP - 1, 100_000, vec![htlc(false, 69_000_000, 7)]),
            )
            .expect("forward above the payment limit");
        // A second outgoing HTLC under the same hash is not covered by the one incoming.
        refused(
            outgoing.sign_counterparty(
                &signer,
                outgoing.counterparty_tx(
                    TOP - 2,
                    100_000,
                    vec![htlc(false, 69_000_000, 7), htlc(false, 69_000_000, 7)],
                ),
            ),
            "max_payment",
        );
    }

    #[test]
    fn approved_payments_count_once_and_the_hook_decides() {
        let yes = Arc::new(AtomicBool::new(false));
        struct Hook(Arc<AtomicBool>);
        impl ApprovalHook for Hook {
            fn approve(&self, _: &PaymentApproval) -> bool {
                self.0.load(Ordering::SeqCst)
            }
        }
        let signer = signer().with_approval(Arc::new(Hook(yes.clone())));
        let dest = signer.node_id();
        let approve = |amount_msat: u64| {
            signer.handle(Request::ApprovePayment {
                payment_hash: [8; 32],
                amount_msat,
                destination: dest,
            })
        };
        refused(approve(60_000_000), "max_payment");
        refused(approve(45_000_000), "approval_declined");
        yes.store(true, Ordering::SeqCst);
        assert!(matches!(approve(45_000_000), Ok(Response::Accepted)));
        // Its HTLC is not counted again (45 + 45 would break the hourly 80).
        let ch = Channel::open(&signer, 6);
        ch.sign_counterparty(
            &signer,
            ch.counterparty_tx(TOP - 1, 100_000, vec![htlc(false, 45_000_000, 8)]),
        )
        .expect("approved HTLC");
        refused(approve(40_000_000), "velocity");
    }

    /// Keeps its saves waiting until the test says how they went.
    #[derive(Clone, Default)]
    struct HeldSaves(Arc<Mutex<Vec<crate::signer::state::SaveDone>>>);

    impl HeldSaves {
        fn finish(&self, ok: bool) -> usize {
            let held: Vec<_> = lock(&self.0).drain(..).collect();
            let n = held.len();
            for saved in held {
                saved(if ok {
                    Ok(())
                } else {
                    Err(StateError::Corrupt {
                        path: "held".into(),
                        reason: "the disk is full".into(),
                    })
                });
            }
            n
        }
    }

    impl StateStore for HeldSaves {
        fn load(&mut self) -> Result<SignerState, StateError> {
            Ok(SignerState::default())
        }
        fn save(&mut self, _: &SignerState) -> Result<(), StateError> {
            unreachable!("the signer submits its changes")
        }
        fn submit_change(
            &mut self,
            _: &SignerState,
            _: &crate::signer::state::StateChange,
            saved: crate::signer::state::SaveDone,
        ) {
            lock(&self.0).push(saved);
        }
    }

    /// Whether `answer` may be sent now (without waiting), and what it says.
    fn settled_now(answer: Answer) -> Option<Result<Response, SignerError>> {
        use std::future::Future;
        let mut settled = std::pin::pin!(answer.settled());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match settled.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(result) => Some(result),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn answers_wait_for_the_state_they_rest_on_and_a_lost_save_stops_the_signer() {
        let saves = HeldSaves::default();
        let signer = signer_with(Policy::new(limits()), Box::new(saves.clone()));
        let keys = signer.answer(Request::NewChannelKeys { count: 1 });
        let Some(Ok(Response::ChannelKeys(sets))) = settled_now(keys) else {
            panic!("fresh keys change no state");
        };
        let points = || Request::PerCommitmentPoints {
            keys_id: sets[0].keys_id,
            first: TOP,
            count: 1,
        };
        let ch = Channel::unapproved(&signer, 1, false);
        let approval = signer.answer(ch.approval(0));
        // Computed at once, but held until the approval is on disk; so is an answer that
        // changed nothing itself, since it was computed from the unsaved state.
        let after = signer.answer(points());
        assert!(settled_now(signer.answer(points())).is_none());
        assert_eq!(saves.finish(true), 1, "one save per change");
        assert!(matches!(
            settled_now(approval),
            Some(Ok(Response::Accepted))
        ));
        assert!(matches!(settled_now(after), Some(Ok(Response::Points(_)))));

        // A save that fails withholds its answer, and the signer answers nothing more.
        let tx = ch.counterparty_tx(TOP, 400_000, vec![]);
        let signed = signer.answer(Request::SignCounterpartyCommitment {
            keys_id: ch.keys_id,
            params: ch.params.clone(),
            tx,
            inbound_preimages: vec![],
            outbound_preimages: vec![],
            revocation: None,
        });
        assert!(settled_now(signer.answer(points())).is_none());
        assert!(!signer.broken());
        saves.finish(false);
        assert!(signer.broken());
        assert!(matches!(
            settled_now(signed),
            Some(Err(SignerError::Unavailable))
        ));
        assert!(matches!(
            signer.handle(points()),
            Err(SignerError::Unavailable)
        ));
        assert_eq!(saves.finish(true), 0, "nothing more was submitted");
    }

    #[test]
    fn secrets_are_released_only_after_the_next_commitment_is_validated() {
        let signer = signer();
        let ch = Channel::open(&signer, 7);
        let release_with = |idx, tx: Option<HolderCommitmentTransaction>| {
            signer.handle(Request::ReleaseCommitmentSecret {
                keys_id: ch.keys_id,
                idx,
                holder: tx.map(|tx| HolderCommitment {
                    params: None,
                    tx,
                    outbound_preimages: vec![],
                }),
            })
        };
        let release = |idx| release_with(idx, None);
        refused(release(TOP), "secret_before_next_commitment");
        ch.validate_holder(&signer, ch.holder_tx(&signer, TOP, vec![]))
            .expect("first");
        refused(release(TOP), "secret_before_next_commitment");
        ch.validate_holder(&signer, ch.holder_tx(&signer, TOP - 1, vec![]))
            .expect("second");
        let ldk = ldk_keys(&SEED).derive_channel_keys(&ch.keys_id);
        match release(TOP) {
            Ok(Response::Secret(s)) => {
                assert_eq!(s, build_commitment_secret(&ldk.commitment_seed, TOP))
            }
            other => panic!("{other:?}"),
        }
        refused(release(TOP - 1), "secret_before_next_commitment");
        malformed(release(TOP + 1));

        // A commitment the peer did not sign is not validated, alone or carried by a release,
        // and the release it came with releases nothing.
        let mut forged = ch.holder_tx(&signer, TOP - 2, vec![]);
        forged.counterparty_sig = ch.holder_tx(&signer, TOP - 3, vec![]).counterparty_sig;
        refused(
            ch.validate_holder(&signer, forged.clone()),
            "invalid_counterparty_signature",
        );
        refused(
            release_with(TOP - 1, Some(forged)),
            "invalid_counterparty_signature",
        );
        refused(release(TOP - 1), "secret_before_next_commitment");
        // The next commitment carried by the release (as the host sends it, without the
        // parameters: the signer checks it against those it pinned) lets the secret go.
        let next = ch.holder_tx(&signer, TOP - 2, vec![]);
        let secret = build_commitment_secret(&ldk.commitment_seed, TOP - 1);
        for attempt in ["first", "again, as after a host restart"] {
            match release_with(TOP - 1, Some(next.clone())) {
                Ok(Response::Secret(s)) => assert_eq!(s, secret, "{attempt}"),
                other => panic!("{attempt}: {other:?}"),
            }
        }

        // The revoked commitment is never signed for broadcast; the current one is.
        let sign_holder = |number| {
            signer.handle(Request::SignHolderCommitment {
                keys_id: ch.keys_id,
                params: ch.params.clone(),
                tx: ch.holder_tx(&signer, number, vec![]),
            })
        };
        refused(sign_holder(TOP - 1), "revoked_holder_commitment");
        assert!(matches!(sign_holder(TOP - 2), Ok(Response::Signature(_))));
    }

    #[test]
    fn closes_pay_only_allowed_scripts_within_the_fee_cap() {
        let signer = signer();
        let ch = Channel::open_funded(&signer, 8, 0);
        let own = signer.handover().shutdown_script;
        let foreign = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([1; 20]));
        refused(
            ch.close(&signer, 500_000, foreign.clone(), 1_000),
            "destination_not_allowed",
        );
        refused(ch.close(&signer, 500_000, own.clone(), 30_000), "max_fee");
        let sig = match ch.close(&signer, 500_000, own.clone(), 1_000) {
            Ok(Response::Signature(sig)) => sig,
            other => panic!("{other:?}"),
        };
        let tx = ClosingTransaction::new(
            500_000,
            CHANNEL_SAT - 501_000,
            own,
            ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([3; 20])),
            ch.params
                .funding_outpoint
                .expect("set")
                .into_bitcoin_outpoint(),
        );
        let redeem = make_funding_redeemscript(
            &ch.params.holder_pubkeys.funding_pubkey,
            &ch.peer_pubkeys().funding_pubkey,
        );
        ch.secp
            .verify_ecdsa(
                &tx.trust().get_sighash_all(&redeem, CHANNEL_SAT),
                &sig,
                &ch.params.holder_pubkeys.funding_pubkey,
            )
            .expect("closing signature verifies");

        // An explicitly allowed script passes.
        let mut policy = Policy::new(limits());
        policy.allowed_scripts.insert(foreign.clone());
        let lenient = signer_with(policy, Box::new(MemoryStateStore::new()));
        let ch = Channel::open_funded(&lenient, 9, 0);
        assert!(matches!(
            ch.close(&lenient, 500_000, foreign, 1_000),
            Ok(Response::Signature(_))
        ));
    }

    #[test]
    fn sweeps_pay_only_the_wallet_within_the_fee_cap() {
        let signer = signer();
        let ldk = ldk_keys(&SEED);
        let descriptor = SpendableOutputDescriptor::StaticOutput {
            outpoint: OutPoint {
                txid: Txid::from_byte_array([9; 32]),
                index: 1,
            },
            output: TxOut {
                value: Amount::from_sat(100_000),
                script_pubkey: ldk.get_destination_script([0; 32]).expect("script"),
            },
            channel_keys_id: None,
        };
        let sweep = |change: ScriptBuf, feerate: u32| {
            signer.handle(Request::SpendOutputs {
                descriptors: vec![descriptor.clone()],
                outputs: vec![],
                change_script: change,
                feerate_sat_per_1000_weight: feerate,
                locktime: None,
            })
        };
        let own = signer.handover().shutdown_script;
        let foreign = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([1; 20]));
        refused(sweep(foreign, 253), "destination_not_allowed");
        refused(sweep(own.clone(), 200_000), "max_fee");
        match sweep(own.clone(), 253) {
            Ok(Response::Transaction(tx)) => {
                assert_eq!(tx.output.len(), 1);
                assert_eq!(tx.output[0].script_pubkey, own);
                assert!(!tx.input[0].witness.is_empty(), "signed");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn psbt_fee_is_capped() {
        let signer = signer();
        let own = signer.handover().shutdown_script;
        let psbt = |fee: u64| {
            wallet_psbt(
                1,
                100_000,
                vec![TxOut {
                    value: Amount::from_sat(100_000 - fee),
                    script_pubkey: own.clone(),
                }],
            )
        };
        refused(
            signer.handle(Request::SignPsbt { psbt: psbt(20_001) }),
            "max_fee",
        );
        assert!(matches!(
            signer.handle(Request::SignPsbt { psbt: psbt(20_000) }),
            Ok(Response::Psbt(_))
        ));
        let mut unknown = psbt(1);
        unknown.inputs[0].witness_utxo = None;
        malformed(signer.handle(Request::SignPsbt { psbt: unknown }));
    }

    /// A key of the signer's wallet far beyond the addresses it recognises by script, with
    /// the key origin bdk writes into a PSBT for change.
    fn wallet_key(chain: u32, index: u32) -> (PublicKey, Fingerprint, DerivationPath) {
        let secp = Secp256k1::new();
        let master = Xpriv::new_master(Network::Regtest, &SEED).expect("master");
        let path: DerivationPath = format!("m/84'/1'/0'/{chain}/{index}")
            .parse()
            .expect("path");
        let key = master.derive_priv(&secp, &path).expect("key");
        (
            key.private_key.public_key(&secp),
            master.fingerprint(&secp),
            path,
        )
    }

    #[test]
    fn wallet_spends_pay_only_the_wallet_allowed_scripts_and_approved_fundings() {
        let signer = signer();
        let sign = |psbt: Psbt| signer.handle(Request::SignPsbt { psbt });
        let pay = |script: ScriptBuf| {
            wallet_psbt(
                2,
                100_000,
                vec![TxOut {
                    value: Amount::from_sat(99_000),
                    script_pubkey: script,
                }],
            )
        };
        let foreign = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([1; 20]));
        refused(sign(pay(foreign.clone())), "destination_not_allowed");

        // Change far beyond the lookahead is the wallet's when its key origin proves it.
        let (key, fingerprint, path) = wallet_key(1, 5_000);
        let change = ScriptBuf::new_p2wpkh(&CompressedPublicKey(key).wpubkey_hash());
        refused(sign(pay(change.clone())), "destination_not_allowed");
        let mut proven = pay(change.clone());
        proven.outputs[0]
            .bip32_derivation
            .insert(key, (fingerprint, path.clone()));
        assert!(matches!(sign(proven), Ok(Response::Psbt(_))));
        // A key origin of the wallet does not vouch for another script.
        let mut lying = pay(foreign.clone());
        lying.outputs[0]
            .bip32_derivation
            .insert(key, (fingerprint, path));
        refused(sign(lying), "destination_not_allowed");

        // A channel's funding: only of an approved open we fund, its value, to a 2-of-2 with
        // its funding key, in one transaction.
        let ch = Channel::approved(&signer, 3, true, 0);
        let unapproved = Channel::unapproved(&signer, 4, true);
        let inbound = Channel::open(&signer, 5);
        for other in [&unapproved, &inbound] {
            refused(
                sign(funding_psbt(6, CHANNEL_SAT, other.funding_redeemscript())),
                "destination_not_allowed",
            );
        }
        refused(
            sign(funding_psbt(6, CHANNEL_SAT - 1, ch.funding_redeemscript())),
            "destination_not_allowed",
        );
        let peers_only = make_funding_redeemscript(
            &ch.peer_pubkeys().funding_pubkey,
            &inbound.peer_pubkeys().funding_pubkey,
        );
        refused(
            sign(funding_psbt(6, CHANNEL_SAT, peers_only)),
            "destination_not_allowed",
        );
        let mut hidden = funding_psbt(6, CHANNEL_SAT, ch.funding_redeemscript());
        hidden.outputs[0].witness_script = None;
        refused(sign(hidden), "destination_not_allowed");
        // A refused request recorded nothing: the channel is not funded yet.
        let funding = funding_psbt(6, CHANNEL_SAT, ch.funding_redeemscript());
        let txid = funding.unsigned_tx.compute_txid();
        let unfunded = Channel {
            params: ChannelTransactionParameters {
                funding_outpoint: Some(OutPoint { txid, index: 0 }),
                ..ch.params.clone()
            },
            peer: ch.peer.clone(),
            secp: Secp256k1::new(),
            ..ch
        };
        let first = || unfunded.counterparty_tx(TOP, CHANNEL_SAT - 10_000, vec![]);
        refused(
            unfunded.sign_counterparty(&signer, first()),
            "funding_not_approved",
        );
        assert!(matches!(sign(funding.clone()), Ok(Response::Psbt(_))));
        // The same transaction again (a retry) signs; another one for the same open does not.
        assert!(matches!(sign(funding), Ok(Response::Psbt(_))));
        refused(
            sign(funding_psbt(
                7,
                CHANNEL_SAT,
                unfunded.funding_redeemscript(),
            )),
            "destination_not_allowed",
        );
        // The channel must be funded by that transaction.
        let elsewhere = Channel {
            params: ChannelTransactionParameters {
                funding_outpoint: Some(OutPoint {
                    txid: Txid::from_byte_array([8; 32]),
                    index: 0,
                }),
                ..unfunded.params.clone()
            },
            peer: unfunded.peer.clone(),
            secp: Secp256k1::new(),
            ..unfunded
        };
        refused(
            elsewhere.sign_counterparty(
                &signer,
                elsewhere.counterparty_tx(TOP, CHANNEL_SAT - 10_000, vec![]),
            ),
            "funding_not_approved",
        );
        unfunded
            .sign_counterparty(&signer, first())
            .expect("the funded channel signs");
    }

    #[test]
    fn the_signer_signs_only_for_channels_whose_open_it_approved() {
        let signer = signer();
        let ch = Channel::unapproved(&signer, 1, false);
        let tx = || ch.counterparty_tx(TOP, 100_000, vec![]);
        refused(ch.sign_counterparty(&signer, tx()), "channel_not_approved");
        let holder = ch.holder_tx(&signer, TOP, vec![]);
        // Without parameters (none pinned yet) it could not even be checked.
        refused(
            signer.handle(Request::ValidateHolderCommitment {
                keys_id: ch.keys_id,
                holder: HolderCommitment {
                    params: None,
                    tx: holder.clone(),
                    outbound_preimages: vec![],
                },
            }),
            "channel_parameters_missing",
        );
        refused(ch.validate_holder(&signer, holder), "channel_not_approved");
        // Approved for another value or direction: not this channel.
        let approve = |value_sat, outbound| {
            signer.handle(Request::ApproveChannelOpen {
                peer: ldk_keys(&PEER_SEED)
                    .get_node_id(Recipient::Node)
                    .expect("peer"),
                value_sat,
                push_msat: 0,
                keys_id: ch.keys_id,
                outbound,
            })
        };
        assert!(matches!(
            approve(CHANNEL_SAT + 1, false),
            Ok(Response::Accepted)
        ));
        refused(ch.sign_counterparty(&signer, tx()), "channel_not_approved");
        // A key set serves one channel; the same approval again is answered the same.
        refused(approve(CHANNEL_SAT, false), "channel_keys_in_use");
        let ch = Channel::unapproved(&signer, 2, false);
        let tx = || ch.counterparty_tx(TOP, 100_000, vec![]);
        assert!(matches!(
            signer.handle(ch.approval(0)),
            Ok(Response::Accepted)
        ));
        assert!(matches!(
            signer.handle(ch.approval(0)),
            Ok(Response::Accepted)
        ));
        ch.sign_counterparty(&signer, tx()).expect("approved");
    }

    #[test]
    fn a_channel_we_fund_starts_with_its_value_less_what_we_push() {
        let signer = signer();
        // 10,000 sat pushed; the peer's first commitment leaves us the rest less its fee
        // (10,000 sat with the anchors).
        let ch = Channel::open_funded(&signer, 1, 10_000_000);
        let full = CHANNEL_SAT - 10_000 - 10_000;
        let peer_side = |to_us: u64| CHANNEL_SAT - to_us - 10_000;
        assert_eq!(peer_side(full), 10_000);
        refused(
            ch.sign_counterparty(&signer, ch.counterparty_tx(TOP, full - 2, vec![])),
            "balance_moved_without_htlc",
        );
        ch.sign_counterparty(&signer, ch.counterparty_tx(TOP, full, vec![]))
            .expect("the approved push");
        // The push is an outgoing payment: the per-payment limit applies.
        let big = Channel::unapproved(&signer, 2, true);
        refused(signer.handle(big.approval(50_000_001)), "max_payment");
        refused(
            signer.handle(big.approval(CHANNEL_SAT * 1000 + 1)),
            "invalid_channel_open",
        );
    }

    #[test]
    fn channel_opens_only_with_allowed_peers() {
        let peer = PublicKey::from_secret_key(
            &Secp256k1::new(),
            &SecretKey::from_slice(&[4; 32]).expect("key"),
        );
        let open = |signer: &SeedSigner, peer, keys_id| {
            signer.handle(Request::ApproveChannelOpen {
                peer,
                value_sat: 100_000,
                push_msat: 0,
                keys_id,
                outbound: true,
            })
        };
        assert!(matches!(
            open(&signer(), peer, [1; 32]),
            Ok(Response::Accepted)
        ));
        let mut policy = Policy::new(limits());
        policy.allowed_peers = Some([peer].into_iter().collect());
        let strict = signer_with(policy, Box::new(MemoryStateStore::new()));
        assert!(matches!(
            open(&strict, peer, [1; 32]),
            Ok(Response::Accepted)
        ));
        refused(open(&strict, strict.node_id(), [2; 32]), "peer_not_allowed");
    }

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

    #[test]
    fn a_restarted_signer_still_refuses_old_commitments() {
        let dir = tempfile::tempdir().expect("temp dir");
        let node_id = ldk_keys(&SEED)
            .get_node_id(Recipient::Node)
            .expect("node id");
        let store = || Box::new(SqliteStateStore::in_dir(dir.path(), &node_id).expect("store"));
        let (keys_id, params);
        {
            let first = signer_with(Policy::new(limits()), store());
            let ch = Channel::open(&first, 11);
            ch.sign_counterparty(&first, ch.counterparty_tx(TOP - 1, 100_000, vec![]))
                .expect("first");
            ch.sign_counterparty(&first, ch.counterparty_tx(TOP - 2, 100_000, vec![]))
                .expect("second");
            keys_id = ch.keys_id;
            params = ch.params.clone();
        }
        let restarted = signer_with(Policy::new(limits()), store());
        let ch = Channel {
            keys_id,
            params,
            peer: ldk_keys(&PEER_SEED).derive_channel_keys(&[11; 32]),
            secp: Secp256k1::new(),
        };
        refused(
            ch.sign_counterparty(&restarted, ch.counterparty_tx(TOP - 1, 100_000, vec![])),
            "stale_counterparty_commitment",
        );
        ch.sign_counterparty(&restarted, ch.counterparty_tx(TOP - 2, 100_000, vec![]))
            .expect("the same newest one again");
    }
}
