//! Channel-level requests: everything about one channel's key set, checked against the
//! channel's parameters and the signer's memory of it before anything is signed.

use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::secp256k1::{Message, SecretKey};
use bitcoin::sighash::SighashCache;
use bitcoin::{EcdsaSighashType, ScriptBuf, Transaction};
use flotilla_proto::{
    ClosingParts, HolderCommitment, KeysId, Request, Response, Revocation, SignerError,
};
use lightning::ln::chan_utils::{
    build_htlc_transaction, get_htlc_redeemscript, get_keyed_anchor_redeemscript,
    make_funding_redeemscript, shared_anchor_script_pubkey, BuiltCommitmentTransaction,
    ChannelPublicKeys, ChannelTransactionParameters, ClosingTransaction, CommitmentTransaction,
    HTLCOutputInCommitment,
};
use lightning::sign::ecdsa::EcdsaChannelSigner;
use lightning::sign::{ChannelSigner, HTLCDescriptor, InMemorySigner};
use lightning::types::features::ChannelTypeFeatures;
use lightning::types::payment::PaymentPreimage;
use lightning::util::ser::{ReadableArgs, Writeable};

use super::{lock, SeedSigner, MAX_BATCH, MAX_COMMITMENT_NUMBER};
use crate::policy::{ChannelParams, CommitmentView, Refusal};
use crate::state::{ChannelOpen, HtlcEntry, Txn};

impl SeedSigner {
    /// Answers a request about one channel (it names the channel's key set).
    pub(super) fn channel_request(
        &self,
        kind: &str,
        request: Request,
    ) -> Result<Response, SignerError> {
        let ldk = |what: &str| self.malformed(kind, format!("LDK could not {what}"));
        match request {
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
                // Checked as a validation is (the peer's signatures, our balance), and
                // remembered if newer: LDK asks to sign its newest holder commitment, which
                // the host may not have told the signer of yet.
                let holder = HolderCommitment {
                    params: Some(params.clone()),
                    tx: tx.clone(),
                    outbound_preimages: vec![],
                };
                let checked = self.check_holder(kind, &keys_id, holder)?;
                let signer = self.channel(&keys_id);
                self.transact(|state| {
                    self.record_holder(kind, state, &keys_id, &checked)?;
                    self.policy
                        .sign_holder_commitment(state, &keys_id, &checked.view)
                        .map_err(|r| self.refuse(kind, r))?;
                    signer
                        .sign_holder_commitment(&params, &tx, &self.secp)
                        .map(Response::Signature)
                        .map_err(|()| ldk("sign the holder commitment"))
                })
            }
            Request::SignJusticeRevokedOutput {
                keys_id,
                params,
                tx,
                input,
                amount,
                per_commitment_key,
            } => {
                let (signer, index, key) = self.justice_checks(
                    kind,
                    &keys_id,
                    &params,
                    &tx,
                    (input, amount),
                    &per_commitment_key,
                )?;
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
                let (signer, index, key) = self.justice_checks(
                    kind,
                    &keys_id,
                    &params,
                    &tx,
                    (input, amount),
                    &per_commitment_key,
                )?;
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
                self.check_htlc_transaction(kind, &signer, &tx, index, &descriptor)?;
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
                self.check_claim_fee(kind, &tx, amount, "HTLC claim")?;
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
            Request::ApproveChannelOpen {
                peer,
                value_sat,
                push_msat,
                keys_id,
                outbound,
            } => {
                // A push gives the peer value at the open, and it is no payment the approval
                // hook could be shown: with a hook, value leaves only through payments it
                // approved.
                if outbound && push_msat > 0 && self.approval.is_some() {
                    return Err(self.refuse(
                        kind,
                        Refusal {
                            rule: "push_not_approved",
                            reason: format!(
                                "the open pushes {push_msat} msat to the peer; with an approval \
                                 hook, value leaves only through payments it approves"
                            ),
                        },
                    ));
                }
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
            other => {
                Err(self.malformed(kind, format!("{} is not a channel request", other.kind())))
            }
        }
    }

    pub(super) fn channel_keys(&self, keys_id: &KeysId) -> ChannelKeys {
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

    pub(super) fn channel(&self, keys_id: &KeysId) -> Arc<InMemorySigner> {
        self.channel_keys(keys_id).signer
    }

    /// The parameters must be complete (LDK asserts it), name this channel's own keys, so
    /// the host cannot make the signer sign for a channel it does not know, and be those the
    /// channel was first signed with (or, before that, of its approved open). Returns them as
    /// the policy pins them.
    pub(super) fn check_params(
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

    pub(super) fn check_input(
        &self,
        kind: &str,
        tx: &Transaction,
        input: u32,
    ) -> Result<usize, SignerError> {
        let index = input as usize;
        if index >= tx.input.len() {
            return Err(self.malformed(
                kind,
                format!("input {input} of a {}-input transaction", tx.input.len()),
            ));
        }
        Ok(index)
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
        // Each HTLC's second-stage transaction needs the peer's signature too: an HTLC without
        // a valid one could not be claimed or timed out on chain, yet would count as ours.
        let keys = trusted.keys();
        let features = &params.channel_type_features;
        let htlc_sighash_type = if features.supports_anchors_zero_fee_htlc_tx()
            || features.supports_anchor_zero_fee_commitments()
        {
            EcdsaSighashType::SinglePlusAnyoneCanPay
        } else {
            EcdsaSighashType::All
        };
        let contest_delay = params.as_holder_broadcastable().contest_delay();
        let txid = trusted.txid();
        for (index, (htlc, sig)) in tx
            .nondust_htlcs()
            .iter()
            .zip(&tx.counterparty_htlc_sigs)
            .enumerate()
        {
            let htlc_tx = build_htlc_transaction(
                &txid,
                tx.negotiated_feerate_per_kw(),
                contest_delay,
                htlc,
                features,
                &keys.broadcaster_delayed_payment_key,
                &keys.revocation_key,
            );
            let redeem = get_htlc_redeemscript(htlc, features, keys);
            let sighash = SighashCache::new(&htlc_tx)
                .p2wsh_signature_hash(0, &redeem, htlc.to_bitcoin_amount(), htlc_sighash_type)
                .map_err(|e| self.malformed(kind, format!("HTLC {index}: {e}")))?;
            let message = Message::from_digest(sighash.to_byte_array());
            let key = keys.countersignatory_htlc_key.to_public_key();
            if self.secp.verify_ecdsa(&message, sig, &key).is_err() {
                return Err(self.refuse(
                    kind,
                    Refusal {
                        rule: "invalid_counterparty_signature",
                        reason: format!(
                            "HTLC {index} of holder commitment {} is not signed by the peer",
                            tx.commitment_number()
                        ),
                    },
                ));
            }
        }
        signer
            .validate_holder_commitment(&tx, outbound_preimages)
            .map_err(|()| self.malformed(kind, "LDK could not validate the commitment"))?;
        // In our own commitment, HTLCs the peer offered are the ones not `offered`.
        let view = view_of(&params, &tx, trusted.built_transaction(), false);
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
            .validate_holder_commitment(
                state,
                keys_id,
                &holder.view,
                &self.fee_cap(),
                (self.clock)(),
            )
            .map_err(|r| self.refuse(kind, r))
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
        // The peer broadcasts this one: HTLCs it did not offer are the ones we offered.
        let view = view_of(&params, &tx, trusted.built_transaction(), true);
        let (now, cap) = ((self.clock)(), self.fee_cap());
        self.transact(|state| {
            self.policy
                .pin_channel_parameters(state, &keys_id, &checked)
                .map_err(|r| self.refuse(kind, r))?;
            if let Some(revocation) = &revocation {
                self.revoke(kind, state, &keys_id, revocation)?;
            }
            self.policy
                .sign_counterparty_commitment(state, &keys_id, &view, &cap, now)
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

    /// A justice transaction: it spends input `input` (of `amount` sat) to the signer's own
    /// scripts, within the fee cap.
    fn justice_checks(
        &self,
        kind: &str,
        keys_id: &KeysId,
        params: &ChannelTransactionParameters,
        tx: &Transaction,
        (input, amount): (u32, u64),
        per_commitment_key: &[u8; 32],
    ) -> Result<(Arc<InMemorySigner>, usize, SecretKey), SignerError> {
        let signer = self.channel(keys_id);
        self.check_params(kind, keys_id, params)?;
        let index = self.check_input(kind, tx, input)?;
        let key = SecretKey::from_slice(per_commitment_key)
            .map_err(|_| self.malformed(kind, "per-commitment key is not a key"))?;
        self.check_outputs(kind, &tx.output)?;
        self.check_claim_fee(kind, tx, amount, "justice transaction")?;
        Ok((signer, index, key))
    }

    /// The fee of a claim spending one output of `amount` sat, within the cap. A claim that
    /// batches several inputs is held to the cap only through its outputs' destinations: the
    /// other inputs' amounts are not in the request.
    fn check_claim_fee(
        &self,
        kind: &str,
        tx: &Transaction,
        amount: u64,
        what: &str,
    ) -> Result<(), SignerError> {
        if tx.input.len() != 1 {
            return Ok(());
        }
        let out_sat = tx
            .output
            .iter()
            .map(|o| o.value.to_sat())
            .fold(0u64, u64::saturating_add);
        let fee = amount
            .checked_sub(out_sat)
            .ok_or_else(|| self.malformed(kind, format!("{what} pays out more than it spends")))?;
        self.fee_cap()
            .check(fee, what)
            .map_err(|r| self.refuse(kind, r))
    }

    /// Our HTLC-success or HTLC-timeout transaction pays what the channel says it must: the
    /// HTLC's value, less its fee (within the cap), to our delayed output under the peer's
    /// revocation key, for the commitment the descriptor names (the point the signer derives
    /// itself). The host chose none of it: before, it could pay the HTLC anywhere.
    fn check_htlc_transaction(
        &self,
        kind: &str,
        signer: &InMemorySigner,
        tx: &Transaction,
        index: usize,
        descriptor: &HTLCDescriptor,
    ) -> Result<(), SignerError> {
        let number = descriptor.per_commitment_number;
        if number > MAX_COMMITMENT_NUMBER {
            return Err(self.malformed(kind, format!("commitment number {number}")));
        }
        let point = signer
            .get_per_commitment_point(number, &self.secp)
            .map_err(|()| self.malformed(kind, "LDK could not derive the point"))?;
        if descriptor.htlc.transaction_output_index.is_none() {
            return Err(self.malformed(kind, "the HTLC has no output in its commitment"));
        }
        if point != descriptor.per_commitment_point
            || tx.input[index].previous_output != descriptor.outpoint()
        {
            return Err(self.malformed(
                kind,
                "the HTLC transaction does not spend the descriptor's commitment",
            ));
        }
        let expected = descriptor.tx_output(&self.secp);
        let features = &descriptor
            .channel_derivation_parameters
            .transaction_parameters
            .channel_type_features;
        let zero_fee_htlcs = features.supports_anchors_zero_fee_htlc_tx()
            || features.supports_anchor_zero_fee_commitments();
        // Without anchors the transaction is exactly the HTLC's; with them, others may add
        // inputs and outputs to pay its fee, and our output is the one beside our input.
        let ours = if zero_fee_htlcs {
            tx.output.get(index) == Some(&expected)
        } else {
            tx.output.as_slice() == [expected.clone()]
        };
        if !ours {
            return Err(self.refuse(
                kind,
                Refusal {
                    rule: "htlc_output_not_ours",
                    reason: format!(
                        "the HTLC transaction of commitment {number} does not pay the HTLC to \
                         our delayed output"
                    ),
                },
            ));
        }
        let fee = descriptor
            .htlc
            .to_bitcoin_amount()
            .to_sat()
            .saturating_sub(expected.value.to_sat());
        self.fee_cap()
            .check(fee, "HTLC transaction")
            .map_err(|r| self.refuse(kind, r))
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
        self.policy
            .check_no_pending_htlcs(&lock(&self.kept).state, &keys_id)
            .map_err(|r| self.refuse(kind, r))?;
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
            self.fee_cap()
                .check(fee, "closing transaction")
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
}

/// A channel's signer and its public keys, derived together once.
#[derive(Clone)]
pub(super) struct ChannelKeys {
    pub(super) signer: Arc<InMemorySigner>,
    pub(super) pubkeys: Arc<ChannelPublicKeys>,
}

/// A holder commitment as checked: the channel's parameters and what the policy keeps of it.
struct CheckedHolder {
    params: ChannelParams,
    view: CommitmentView,
}

/// The commitment from the node's side; `counterparty` says who broadcasts it.
fn view_of(
    params: &ChannelTransactionParameters,
    tx: &CommitmentTransaction,
    built: &BuiltCommitmentTransaction,
    counterparty: bool,
) -> CommitmentView {
    let to_us_sat = if counterparty {
        tx.to_countersignatory_value_sat()
    } else {
        tx.to_broadcaster_value_sat()
    };
    // Anchors are the funder's cost like the fee (taken from its balance whether or not they
    // appear): counted with the fee, not as anyone's balance.
    let anchors = anchor_scripts(params);
    let outputs_sat = built
        .transaction
        .output
        .iter()
        .filter(|o| !anchors.contains(&o.script_pubkey))
        .map(|o| o.value.to_sat())
        .fold(0u64, u64::saturating_add);
    let entry = |h: &HTLCOutputInCommitment| HtlcEntry {
        payment_hash: h.payment_hash.0,
        amount_msat: h.amount_msat,
        cltv_expiry: h.cltv_expiry,
    };
    // `offered` is from the broadcaster's view.
    let ours = |h: &&HTLCOutputInCommitment| h.offered != counterparty;
    CommitmentView {
        number: tx.commitment_number(),
        txid: built.txid.to_byte_array(),
        point: tx.per_commitment_point(),
        outgoing: tx.nondust_htlcs().iter().filter(ours).map(entry).collect(),
        incoming: tx
            .nondust_htlcs()
            .iter()
            .filter(|h| !ours(h))
            .map(entry)
            .collect(),
        to_us_sat,
        fee_sat: params.channel_value_satoshis.saturating_sub(outputs_sat),
        feerate_per_kw: tx.negotiated_feerate_per_kw(),
        base_fee_sat: funder_fee_sat(
            tx.negotiated_feerate_per_kw(),
            tx.nondust_htlcs().len(),
            &params.channel_type_features,
        ),
        outbound: params.is_outbound_from_holder,
        zero_fee: params
            .channel_type_features
            .supports_anchor_zero_fee_commitments(),
    }
}

/// What the funder of a commitment pays besides its balance (BOLT 3): the feerate times the
/// commitment's weight (a base and one HTLC output's worth per HTLC that is not dust) and,
/// with keyed anchors, their two outputs. A zero-fee commitment pays none of it.
fn funder_fee_sat(
    feerate_per_kw: u32,
    nondust_htlcs: usize,
    features: &ChannelTypeFeatures,
) -> u64 {
    /// BOLT 3's commitment weights: without anchors, with them, and per HTLC output.
    const BASE_WEIGHT: u64 = 724;
    const BASE_ANCHOR_WEIGHT: u64 = 1124;
    const HTLC_WEIGHT: u64 = 172;
    const ANCHOR_SAT: u64 = 330;
    if features.supports_anchor_zero_fee_commitments() {
        return 0;
    }
    let (base, anchors) = if features.supports_anchors_zero_fee_htlc_tx() {
        (BASE_ANCHOR_WEIGHT, 2 * ANCHOR_SAT)
    } else {
        (BASE_WEIGHT, 0)
    };
    let weight = base.saturating_add(HTLC_WEIGHT.saturating_mul(nondust_htlcs as u64));
    u64::from(feerate_per_kw).saturating_mul(weight) / 1000 + anchors
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
