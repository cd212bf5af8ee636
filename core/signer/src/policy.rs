//! What the signer refuses to sign, as pure functions over its [`SignerState`].
//!
//! Checks that record what they accepted take the state through a [`Txn`]; the signer keeps a
//! transaction only once the answer is ready and its change saved, so a refusal or a failed
//! signature leaves the remembered state untouched.

use std::collections::{BTreeMap, HashSet};

use bitcoin::hex::DisplayHex;
use bitcoin::psbt::PsbtSighashType;
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey, Signing};
use bitcoin::{EcdsaSighashType, Script, ScriptBuf};
use flotilla_proto::{KeysId, Revocation};
use lightning::ln::chan_utils::make_funding_redeemscript;

use crate::config::PolicyLimits;
use crate::fee_cap::{FeeCap, MIN_FEERATE_PER_KW};
use crate::state::{
    ApprovedPayment, ChannelOpen, ChannelState, HtlcEntry, SignedCommitment, SignerState, Spent,
    Txn, ValidatedHolder,
};

/// The velocity window.
pub const WINDOW_SECS: u64 = 3600;
/// How long an approval exempts its payment's HTLCs from being counted again.
pub const APPROVAL_TTL_SECS: u64 = 24 * 3600;
/// Wallet addresses (per chain) the signer recognises as its own beyond the last one it saw used.
pub const DEFAULT_WALLET_LOOKAHEAD: u32 = 1000;

/// The signer's rules. `limits` of `None` do not limit; `allowed_peers` of `None` allows any peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub limits: PolicyLimits,
    /// Output scripts closes and sweeps may pay besides the signer's own wallet.
    pub allowed_scripts: HashSet<ScriptBuf>,
    pub allowed_peers: Option<HashSet<PublicKey>>,
    /// How many addresses of each wallet chain count as the signer's own.
    pub wallet_lookahead: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(PolicyLimits::default())
    }
}

/// What an approval hook is shown before an outgoing payment is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentApproval {
    pub payment_hash: [u8; 32],
    pub amount_msat: u64,
    pub destination: PublicKey,
}

/// Asked (by the app, through the bindings) before an outgoing payment is signed.
pub trait ApprovalHook: Send + Sync {
    fn approve(&self, payment: &PaymentApproval) -> bool;
}

/// A policy refusal: which rule, and why (logged and sent to the host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub reason: String,
}

impl Refusal {
    pub(crate) fn new(rule: &'static str, reason: impl Into<String>) -> Self {
        Refusal {
            rule,
            reason: reason.into(),
        }
    }
}

/// A commitment's HTLCs from the node's side (`offered` already translated from LDK's
/// broadcaster view): outgoing are ours, incoming are the peer's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitmentView {
    pub number: u64,
    pub txid: [u8; 32],
    /// The broadcaster's per-commitment point: its secret revokes this commitment.
    pub point: PublicKey,
    pub outgoing: Vec<HtlcEntry>,
    pub incoming: Vec<HtlcEntry>,
    /// Our own balance output (zero when trimmed).
    pub to_us_sat: u64,
    /// The channel's value less every output but the anchors: what the funder pays besides
    /// balances (the fee, anchors) and dust (HTLCs and balances too small for an output).
    pub fee_sat: u64,
    /// The commitment's feerate (sat per 1,000 weight).
    pub feerate_per_kw: u32,
    /// What the funder pays at that feerate (BOLT 3): the fee for the commitment's weight and
    /// the keyed anchors. `fee_sat` less this is dust.
    pub base_fee_sat: u64,
    /// We fund the channel, so we pay `base_fee_sat`.
    pub outbound: bool,
    /// A zero-fee commitment (a child transaction pays its fee): no feerate floor.
    pub zero_fee: bool,
}

impl CommitmentView {
    /// Value in neither balance nor HTLC outputs nor the funder's fee: HTLCs and balances too
    /// small for an output of their own.
    pub fn dust_sat(&self) -> u64 {
        self.fee_sat.saturating_sub(self.base_fee_sat)
    }
}

/// A commitment's split as the balance rule compares one with the next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Split {
    to_us_sat: u64,
    fee_sat: u64,
    dust_sat: u64,
}

impl Split {
    fn of(view: &CommitmentView) -> Split {
        Split {
            to_us_sat: view.to_us_sat,
            fee_sat: view.fee_sat,
            dust_sat: view.dust_sat(),
        }
    }

    /// What the approved open gives us: the value less the push when we fund, else the push.
    fn opening(open: &ChannelOpen) -> Split {
        let to_us_sat = if open.outbound {
            open.value_sat.saturating_sub(open.push_msat.div_ceil(1000))
        } else {
            open.push_msat / 1000
        };
        Split {
            to_us_sat,
            ..Split::default()
        }
    }

    /// What is ours in it: our balance and, as funder, the fee we pay (a lower fee is ours
    /// again, so a fee lowered and handed to the peer shows as a drop).
    fn stake(&self, outbound: bool) -> u64 {
        let fee = if outbound {
            self.fee_sat.saturating_sub(self.dust_sat)
        } else {
            0
        };
        self.to_us_sat.saturating_add(fee)
    }
}

/// A channel's parameters as the policy checks them: their encoding (pinned by the first
/// signature) and what must match the approved open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelParams {
    pub encoded: String,
    pub value_sat: u64,
    pub outbound: bool,
    pub funding_txid: [u8; 32],
}

/// An output of a wallet transaction the signer is asked to sign.
#[derive(Clone, Copy, Debug)]
pub struct WalletOutput<'a> {
    pub script: &'a Script,
    pub value_sat: u64,
    /// Pays the signer's own wallet.
    pub own: bool,
    /// The script a P2WSH output commits to, as the host describes it (a channel's funding).
    pub witness_script: Option<&'a Script>,
}

/// An input of a wallet transaction the signer is asked to sign, as read from the PSBT.
#[derive(Clone, Debug)]
pub struct WalletInput {
    /// Whether the wallet signs it (a key origin names its master key), or, as `Err`, why a
    /// key origin under the master key is not one of the wallet's.
    pub ours: Result<bool, String>,
    /// The signature hash type the PSBT asks for (`None`: SIGHASH_ALL).
    pub sighash: Option<PsbtSighashType>,
    /// Why the amount the input claims is not proven by its previous transaction, if it is not.
    pub unproven: Option<String>,
    /// The output it spends is a segwit one (as far as the PSBT proves).
    pub segwit: bool,
}

/// Rounding slack between balances in millisatoshis and outputs in satoshis.
const ROUNDING_SAT: u64 = 1;
/// Largest standard dust threshold: an output of ours below it may be left out of a close.
pub const MAX_DUST_SAT: u64 = 546;

impl Policy {
    pub fn new(limits: PolicyLimits) -> Self {
        Policy {
            limits,
            allowed_scripts: HashSet::new(),
            allowed_peers: None,
            wallet_lookahead: DEFAULT_WALLET_LOOKAHEAD,
        }
    }

    /// Signing the peer's commitment: never an older one, the same number only for the same
    /// transaction, a new one only once the peer revoked the one before the last (so it never
    /// holds two it could broadcast besides the new one), and new outgoing HTLCs within the
    /// payment and velocity limits.
    pub fn sign_counterparty_commitment(
        &self,
        state: &mut Txn,
        keys_id: &KeysId,
        view: &CommitmentView,
        cap: &FeeCap,
        now: u64,
    ) -> Result<(), Refusal> {
        let channel = state.channels.get(keys_id);
        if let Some(last) = channel.and_then(|c| c.last_counterparty) {
            if view.number > last.number {
                return Err(Refusal::new(
                    "stale_counterparty_commitment",
                    format!(
                        "commitment {} is older than {} already signed",
                        view.number, last.number
                    ),
                ));
            }
            if view.number == last.number {
                if view.txid != last.txid {
                    return Err(Refusal::new(
                        "conflicting_counterparty_commitment",
                        format!(
                            "commitment {} was already signed for another transaction",
                            view.number
                        ),
                    ));
                }
                return Ok(());
            }
            if let Some(unrevoked) = channel.and_then(|c| c.unrevoked_counterparty) {
                return Err(Refusal::new(
                    "counterparty_not_revoked",
                    format!(
                        "commitment {} asked for while the peer has not revoked {}",
                        view.number, unrevoked.number
                    ),
                ));
            }
        }
        check_commitment_fee(view, cap)?;
        prune_spent(state, now);
        let previous = state.channels.get(keys_id);
        let added = new_entries(previous.map_or(&[], |c| &c.outgoing), &view.outgoing);
        // Recorded with every signed counterparty commitment: absent only before the first,
        // which starts from what the approved open gives us.
        let baseline = previous.and_then(|c| match (c.to_us_sat, c.fee_sat) {
            (Some(to_us_sat), Some(fee_sat)) => Some(Split {
                to_us_sat,
                fee_sat,
                dust_sat: c.dust_sat.unwrap_or(0),
            }),
            _ => c.open.as_ref().map(Split::opening),
        });
        let into_dust = match baseline {
            Some(previous) => balance_move(previous, view, &added)?,
            None => 0,
        };
        for htlc in added {
            self.count_outgoing_htlc(state, view, &htlc, now)?;
        }
        if into_dust > 0 {
            self.count_dust(state, view, into_dust, now)?;
        }
        let channel = state.channel_mut(keys_id);
        channel.dust_credit_sat = channel.dust_credit_sat.saturating_add(into_dust);
        channel.unrevoked_counterparty = channel.last_counterparty;
        channel.last_counterparty = Some(SignedCommitment {
            number: view.number,
            txid: view.txid,
            point: Some(view.point),
        });
        channel.outgoing = view.outgoing.clone();
        channel.to_us_sat = Some(view.to_us_sat);
        channel.fee_sat = Some(view.fee_sat);
        channel.dust_sat = Some(view.dust_sat());
        Ok(())
    }

    /// The peer revealed the secret of its commitment `revocation.idx`. Only the secret of the
    /// commitment it still holds unrevoked moves anything, and only if it matches that
    /// commitment's point; a commitment already revoked may be revoked again (the host repeats
    /// its latest revocation with each commitment it asks for).
    pub fn record_counterparty_revocation<C: Signing>(
        &self,
        state: &mut Txn,
        keys_id: &KeysId,
        revocation: &Revocation,
        secp: &Secp256k1<C>,
    ) -> Result<(), Refusal> {
        let invalid = |reason: String| Err(Refusal::new("invalid_revocation", reason));
        let Ok(secret) = SecretKey::from_slice(&revocation.secret) else {
            return invalid(format!("the secret of {} is not a key", revocation.idx));
        };
        let channel = state.channels.get(keys_id);
        let Some((last, unrevoked)) =
            channel.and_then(|c| Some((c.last_counterparty?, c.unrevoked_counterparty)))
        else {
            return invalid(format!("no commitment signed to revoke {}", revocation.idx));
        };
        match unrevoked {
            Some(unrevoked) if unrevoked.number == revocation.idx => {
                let point = PublicKey::from_secret_key(secp, &secret);
                // No point recorded: a commitment signed before points were kept.
                if unrevoked.point.is_some_and(|p| p != point) {
                    return invalid(format!(
                        "the secret does not match commitment {}",
                        revocation.idx
                    ));
                }
                state.channel_mut(keys_id).unrevoked_counterparty = None;
                Ok(())
            }
            Some(unrevoked) if revocation.idx > unrevoked.number => Ok(()),
            None if revocation.idx > last.number => Ok(()),
            _ => invalid(format!(
                "commitment {} is the peer's newest or was never signed",
                revocation.idx
            )),
        }
    }

    /// A mutual close only once no HTLC is pending in the last commitments, ours or the
    /// peer's: a close drops them, and an HTLC of ours dropped is value the close does not
    /// pay back.
    pub fn check_no_pending_htlcs(
        &self,
        state: &SignerState,
        keys_id: &KeysId,
    ) -> Result<(), Refusal> {
        let Some(channel) = state.channels.get(keys_id) else {
            return Ok(());
        };
        let holder = channel.validated_holder.as_ref();
        let pending = channel.outgoing.len()
            + channel.incoming_holder.len()
            + holder.map_or(0, |h| h.outgoing.len());
        if pending == 0 {
            return Ok(());
        }
        Err(Refusal::new(
            "closing_with_pending_htlcs",
            format!("{pending} HTLCs are still pending in the channel's last commitments"),
        ))
    }

    /// A mutual close pays us at least our balance in the last commitment we signed for the
    /// peer (before the first, what the approved open gives us), less the closing fee when we
    /// pay it; an output of ours below dust may be left out.
    pub fn check_closing_split(
        &self,
        state: &SignerState,
        keys_id: &KeysId,
        to_holder_sat: u64,
        our_fee_sat: u64,
    ) -> Result<(), Refusal> {
        let channel = state.channels.get(keys_id);
        let opened = || Some(Split::opening(channel?.open.as_ref()?).to_us_sat);
        let Some(last) = channel.and_then(|c| c.to_us_sat).or_else(opened) else {
            return Ok(());
        };
        let trimmed = to_holder_sat == 0 && last < MAX_DUST_SAT;
        if trimmed || to_holder_sat.saturating_add(our_fee_sat) >= last {
            return Ok(());
        }
        Err(Refusal::new(
            "closing_balance_mismatch",
            format!(
                "the close pays us {to_holder_sat} sat (+{our_fee_sat} sat fee) but our balance is {last} sat"
            ),
        ))
    }

    /// One new outgoing HTLC: it must belong to a payment the signer approved (its hash,
    /// within the approval's lifetime), whatever else is pending. A hosted node forwards
    /// nothing (its channels are unannounced), so no incoming HTLC of the same hash excuses
    /// one: that exemption let one incoming HTLC cover any number of outgoing ones, failed back
    /// afterwards. What an approved payment's HTLCs take beyond its approved amount (routing
    /// fees, retries) is new spending, within the payment and velocity limits.
    fn count_outgoing_htlc(
        &self,
        state: &mut Txn,
        view: &CommitmentView,
        htlc: &HtlcEntry,
        now: u64,
    ) -> Result<(), Refusal> {
        let hash = htlc.payment_hash;
        let unapproved = |why: &str| {
            Refusal::new(
                "unapproved_htlc",
                format!(
                    "commitment {} adds an outgoing HTLC of {} msat for {}, {why}",
                    view.number,
                    htlc.amount_msat,
                    hash.to_lower_hex_string()
                ),
            )
        };
        let Some(approved) = state.approval_mut(&hash) else {
            return Err(unapproved("a payment the signer never approved"));
        };
        if !approved.alive(now, APPROVAL_TTL_SECS) {
            return Err(unapproved("whose approval expired"));
        }
        let before = approved.used_msat;
        let after = before.saturating_add(htlc.amount_msat);
        approved.used_msat = after;
        let beyond = |used: u64| used.saturating_sub(approved.amount_msat);
        let spending = beyond(after) - beyond(before);
        if spending == 0 {
            return Ok(());
        }
        self.check_payment_amount(after)?;
        self.check_velocity(state, spending, now)?;
        state.push_spent(Spent {
            at_secs: now,
            amount_msat: spending,
        });
        Ok(())
    }

    /// Value of ours a commitment for the peer moved into dust. An HTLC too small for an
    /// output shows no hash, so the drop draws on what approved payments have left unused;
    /// beyond that, once it drew on one, it is new spending within the limits (as an approved
    /// payment's excess is). Without any approved payment left it is refused: dust HTLCs
    /// offered and failed back in turn would otherwise hand our balance to the peer.
    fn count_dust(
        &self,
        state: &mut Txn,
        view: &CommitmentView,
        sat: u64,
        now: u64,
    ) -> Result<(), Refusal> {
        let alive: Vec<[u8; 32]> = state
            .approved
            .iter()
            .filter(|(_, a)| a.alive(now, APPROVAL_TTL_SECS) && a.used_msat < a.amount_msat)
            .map(|(hash, _)| *hash)
            .collect();
        if alive.is_empty() {
            return Err(Refusal::new(
                "unapproved_htlc",
                format!(
                    "commitment {} moves {sat} sat of ours into dust (HTLCs too small for an \
                     output) with no approved payment left to account for it",
                    view.number
                ),
            ));
        }
        let mut left_msat = sat.saturating_mul(1000);
        for hash in alive {
            let Some(approval) = state.approval_mut(&hash) else {
                continue;
            };
            let take = left_msat.min(approval.amount_msat - approval.used_msat);
            approval.used_msat += take;
            left_msat -= take;
        }
        if left_msat == 0 {
            return Ok(());
        }
        self.check_payment_amount(left_msat)?;
        self.check_velocity(state, left_msat, now)?;
        state.push_spent(Spent {
            at_secs: now,
            amount_msat: left_msat,
        });
        Ok(())
    }

    fn check_payment_amount(&self, amount_msat: u64) -> Result<(), Refusal> {
        match self.limits.max_payment_msat {
            Some(max) if amount_msat > max => Err(Refusal::new(
                "max_payment",
                format!("payment of {amount_msat} msat exceeds the limit of {max} msat"),
            )),
            _ => Ok(()),
        }
    }

    fn check_velocity(
        &self,
        state: &SignerState,
        amount_msat: u64,
        now: u64,
    ) -> Result<(), Refusal> {
        let Some(max) = self.limits.max_outgoing_msat_per_hour else {
            return Ok(());
        };
        let spent = state
            .spent
            .iter()
            .filter(|s| !spent_expired(s, now))
            .map(|s| s.amount_msat)
            .fold(0u64, u64::saturating_add);
        let total = spent.saturating_add(amount_msat);
        if total > max {
            return Err(Refusal::new(
                "velocity",
                format!(
                    "{amount_msat} msat more would make {total} msat in the last hour, above the limit of {max} msat"
                ),
            ));
        }
        Ok(())
    }

    /// Records the open of a channel with `keys_id` (asked before the channel exists): the
    /// peer must be allowed, what we push is an outgoing payment (limits), and a key set
    /// serves one channel. Asking again for the same open is answered the same.
    pub fn approve_channel_open(
        &self,
        state: &mut Txn,
        keys_id: &KeysId,
        open: ChannelOpen,
        now: u64,
    ) -> Result<(), Refusal> {
        self.check_peer(&open.peer)?;
        if open.push_msat > open.value_sat.saturating_mul(1000) {
            return Err(Refusal::new(
                "invalid_channel_open",
                format!(
                    "pushing {} msat in a channel of {} sat",
                    open.push_msat, open.value_sat
                ),
            ));
        }
        let open = ChannelOpen {
            funding_txid: None,
            ..open
        };
        if let Some(channel) = state.channels.get(keys_id) {
            let unfunded = |o: ChannelOpen| ChannelOpen {
                funding_txid: None,
                ..o
            };
            if channel.open.is_some_and(|o| unfunded(o) == open) {
                return Ok(());
            }
            return Err(Refusal::new(
                "channel_keys_in_use",
                format!(
                    "key set {} already serves a channel",
                    keys_id.to_lower_hex_string()
                ),
            ));
        }
        if open.outbound && open.push_msat > 0 {
            self.check_payment_amount(open.push_msat)?;
            prune_spent(state, now);
            self.check_velocity(state, open.push_msat, now)?;
            state.push_spent(Spent {
                at_secs: now,
                amount_msat: open.push_msat,
            });
        }
        state.channel_mut(keys_id).open = Some(open);
        Ok(())
    }

    /// A channel's parameters are those of the first signature for it: a host that later
    /// names other counterparty keys, funding outpoint or value for it is refused. Before
    /// that, they must be those of the approved open, and a channel we fund must be funded by
    /// the wallet transaction the signer signed for it.
    pub fn check_channel_parameters(
        &self,
        state: &SignerState,
        keys_id: &KeysId,
        params: &ChannelParams,
    ) -> Result<(), Refusal> {
        let channel = state.channels.get(keys_id);
        match channel.and_then(|c| c.parameters.as_deref()) {
            Some(pinned) if pinned != params.encoded => Err(Refusal::new(
                "channel_parameters_changed",
                format!(
                    "channel {} was signed for with other parameters",
                    keys_id.to_lower_hex_string()
                ),
            )),
            Some(_) => Ok(()),
            None => {
                let open = approved_open(channel, keys_id)?;
                if open.value_sat != params.value_sat || open.outbound != params.outbound {
                    return Err(Refusal::new(
                        "channel_not_approved",
                        format!(
                            "a channel of {} sat ({}) was approved, not one of {} sat ({})",
                            open.value_sat,
                            direction(open.outbound),
                            params.value_sat,
                            direction(params.outbound)
                        ),
                    ));
                }
                // A channel we fund is bound to the funding these parameters name (pinned
                // below); the signer signs that transaction only once the peer signed our
                // first commitment, and no other for this channel.
                if open.outbound && open.funding_txid.is_some_and(|t| t != params.funding_txid) {
                    return Err(Refusal::new(
                        "funding_not_approved",
                        format!(
                            "channel {} is not funded by the wallet transaction signed for it",
                            keys_id.to_lower_hex_string()
                        ),
                    ));
                }
                Ok(())
            }
        }
    }

    /// [`Policy::check_channel_parameters`], then records the parameters if none are yet
    /// (signing and validating commitments pin them; other requests only check).
    pub fn pin_channel_parameters(
        &self,
        state: &mut Txn,
        keys_id: &KeysId,
        params: &ChannelParams,
    ) -> Result<(), Refusal> {
        self.check_channel_parameters(state, keys_id, params)?;
        if state
            .channels
            .get(keys_id)
            .is_none_or(|c| c.parameters.is_none())
        {
            let channel = state.channel_mut(keys_id);
            channel.parameters = Some(params.encoded.clone());
            if let Some(open) = channel.open.as_mut().filter(|o| o.outbound) {
                open.funding_txid = Some(params.funding_txid);
            }
        }
        Ok(())
    }

    /// Forgets a channel the host archived, but for a tombstone: its key set signs nothing
    /// again, nor can it be approved for another channel. The host could retire a live
    /// channel only to its own harm (the signer would stop signing for it, as a host that
    /// stopped running the node would); it can never make the signer sign an old state.
    pub fn retire_channel(&self, state: &mut Txn, keys_id: &KeysId) {
        *state.channel_mut(keys_id) = ChannelState {
            retired: true,
            ..ChannelState::default()
        };
    }

    /// Refuses any request about a retired channel.
    pub fn check_not_retired(&self, state: &SignerState, keys_id: &KeysId) -> Result<(), Refusal> {
        if state.channels.get(keys_id).is_some_and(|c| c.retired) {
            return Err(Refusal::new(
                "channel_retired",
                format!(
                    "key set {} belongs to a retired channel",
                    keys_id.to_lower_hex_string()
                ),
            ));
        }
        Ok(())
    }

    /// The wallet signs its inputs only as a wallet spends: with keys of its own chains (not
    /// any path under the seed), with SIGHASH_ALL (a signature that commits to every output, so
    /// the destination and fee rules check what is signed), and only when every input's amount
    /// is proven by its previous transaction (a segwit signature commits to its own input's
    /// amount alone: two signatures, each got by lying about the other input, would combine
    /// into a transaction whose fee the signer never saw).
    pub fn check_wallet_inputs(&self, inputs: &[WalletInput]) -> Result<(), Refusal> {
        for (index, input) in inputs.iter().enumerate() {
            let ours = input.ours.as_ref().map_err(|reason| {
                Refusal::new("key_path_not_wallet", format!("input {index}: {reason}"))
            })?;
            let all = input
                .sighash
                .is_none_or(|s| s.ecdsa_hash_ty() == Ok(EcdsaSighashType::All));
            if *ours && !all {
                return Err(Refusal::new(
                    "sighash_not_all",
                    format!(
                        "input {index} asks for sighash {}: the wallet signs only SIGHASH_ALL",
                        input.sighash.map_or("?".into(), |s| s.to_string())
                    ),
                ));
            }
            if let Some(reason) = &input.unproven {
                return Err(Refusal::new(
                    "input_amount_unproven",
                    format!("input {index}: {reason}"),
                ));
            }
        }
        Ok(())
    }

    /// A wallet transaction may pay only the wallet itself, allowed scripts, and the funding
    /// output of a channel we open: the approved value, to a 2-of-2 with that channel's funding
    /// key, in the transaction the channel's parameters name. The funding is signed only once
    /// the peer signed our first commitment of that channel and the signer validated it
    /// (signed before, the coins could sit in the 2-of-2 with nothing we could close with:
    /// the peer would hold them hostage), and only with segwit inputs (a non-segwit input
    /// lets the transaction's id change, and the signed commitments spend that id).
    pub fn check_wallet_spend(
        &self,
        state: &SignerState,
        txid: [u8; 32],
        inputs: &[WalletInput],
        outputs: &[WalletOutput],
        funding_key: impl Fn(&KeysId) -> PublicKey,
    ) -> Result<(), Refusal> {
        let mut funded: Vec<KeysId> = Vec::new();
        for output in outputs {
            if output.own || self.allowed_scripts.contains(output.script) {
                continue;
            }
            let keys = output
                .witness_script
                .filter(|w| output.script == ScriptBuf::new_p2wsh(&w.wscript_hash()).as_script())
                .and_then(funding_keys);
            let channel = keys.and_then(|keys| {
                state
                    .channels
                    .iter()
                    .filter(|(id, c)| {
                        !funded.contains(id)
                            && c.open.is_some_and(|o| {
                                o.outbound
                                    && o.value_sat == output.value_sat
                                    && o.funding_txid.is_none_or(|t| t == txid)
                            })
                    })
                    // Countersigned: bound to this funding by its first signature, and the
                    // peer's signature of our first commitment validated since.
                    .map(|(id, c)| {
                        let bound = c.open.is_some_and(|o| o.funding_txid == Some(txid));
                        (*id, bound && c.last_validated_holder.is_some())
                    })
                    .find(|(id, _)| keys.contains(&funding_key(id)))
            });
            match channel {
                Some((keys_id, true)) => funded.push(keys_id),
                Some((keys_id, false)) => {
                    return Err(Refusal::new(
                        "funding_before_countersigned",
                        format!(
                            "channel {} has no first commitment signed by the peer yet",
                            keys_id.to_lower_hex_string()
                        ),
                    ))
                }
                None => {
                    return Err(Refusal::new(
                        "destination_not_allowed",
                        format!(
                            "output of {} sat to {} is neither the signer's wallet, allowed, nor an approved channel's funding",
                            output.value_sat,
                            output.script.as_bytes().to_lower_hex_string()
                        ),
                    ))
                }
            }
        }
        if !funded.is_empty() {
            if let Some(index) = inputs.iter().position(|i| !i.segwit) {
                return Err(Refusal::new(
                    "funding_input_not_segwit",
                    format!("input {index} of a channel's funding spends no segwit output"),
                ));
            }
        }
        Ok(())
    }

    /// The peer signed our commitment `view.number` (its signatures checked). A newer one than
    /// the newest validated is remembered once its balance passes the rule the peer's
    /// commitments pass: our balance drops only by new outgoing HTLCs, each of a payment the
    /// signer approved, and by a higher fee. The same number must be the same transaction; an
    /// older one changes nothing. Without this a peer could co-sign a commitment that gives us
    /// nothing, and the signer would sign it for broadcast.
    pub fn validate_holder_commitment(
        &self,
        state: &mut Txn,
        keys_id: &KeysId,
        view: &CommitmentView,
        cap: &FeeCap,
        now: u64,
    ) -> Result<(), Refusal> {
        let channel = state.channels.get(keys_id);
        let last = channel.and_then(|c| c.last_validated_holder);
        if last.is_some_and(|last| view.number > last) {
            return Ok(());
        }
        let previous = channel.and_then(|c| c.validated_holder.clone());
        if let Some(previous) = previous.as_ref().filter(|p| p.number == view.number) {
            if previous.txid == view.txid {
                return Ok(());
            }
            return Err(Refusal::new(
                "conflicting_holder_commitment",
                format!(
                    "holder commitment {} was validated as another transaction",
                    view.number
                ),
            ));
        }
        check_commitment_fee(view, cap)?;
        let baseline = match (&previous, last) {
            (Some(previous), _) => Some(Split {
                to_us_sat: previous.to_us_sat,
                fee_sat: previous.fee_sat,
                dust_sat: previous.dust_sat,
            }),
            // Validated before balances were kept: no baseline to hold it to.
            (None, Some(_)) => None,
            // The first: what the approved open gives us.
            (None, None) => channel.and_then(|c| c.open.as_ref()).map(Split::opening),
        };
        let added = new_entries(
            previous.as_ref().map_or(&[], |p| &p.outgoing),
            &view.outgoing,
        );
        for htlc in &added {
            let approved = state
                .approved
                .get(&htlc.payment_hash)
                .is_some_and(|a| a.alive(now, APPROVAL_TTL_SECS));
            if !approved {
                return Err(Refusal::new(
                    "unapproved_htlc",
                    format!(
                        "holder commitment {} holds an outgoing HTLC of {} msat for {}, a payment \
                         the signer did not approve",
                        view.number,
                        htlc.amount_msat,
                        htlc.payment_hash.to_lower_hex_string()
                    ),
                ));
            }
        }
        let into_dust = match baseline {
            Some(previous) => balance_move(previous, view, &added)?,
            None => 0,
        };
        // Dust of ours appears in the peer's commitment first, where it was counted.
        let credit = channel.map_or(0, |c| c.dust_credit_sat);
        if into_dust > credit {
            return Err(Refusal::new(
                "unapproved_htlc",
                format!(
                    "holder commitment {} moves {into_dust} sat of ours into dust; only \
                     {credit} sat of dust was counted in the peer's commitments",
                    view.number
                ),
            ));
        }
        let channel = state.channel_mut(keys_id);
        channel.dust_credit_sat -= into_dust;
        channel.last_validated_holder = Some(view.number);
        channel.incoming_holder = view.incoming.clone();
        channel.validated_holder = Some(ValidatedHolder {
            number: view.number,
            txid: view.txid,
            to_us_sat: view.to_us_sat,
            fee_sat: view.fee_sat,
            dust_sat: view.dust_sat(),
            outgoing: view.outgoing.clone(),
        });
        Ok(())
    }

    /// Releasing the secret of holder commitment `idx` revokes it; LDK does so once commitment
    /// `idx - 1` is signed by the peer, and the signer lets it only then, so the node always
    /// holds a commitment it can broadcast.
    pub fn release_commitment_secret(
        &self,
        state: &mut Txn,
        keys_id: &KeysId,
        idx: u64,
    ) -> Result<(), Refusal> {
        let channel = state.channel_mut(keys_id);
        let signed = channel.signed_for_broadcast.filter(|signed| idx <= *signed);
        match (channel.last_validated_holder, idx.checked_sub(1)) {
            (Some(validated), Some(next)) if validated <= next => {
                if let Some(signed) = signed {
                    return Err(Refusal::new(
                        "secret_after_broadcast_signature",
                        format!(
                            "secret {idx} asked for, but holder commitment {signed} was signed \
                             for broadcast: revoking it would hand the channel to the peer"
                        ),
                    ));
                }
                channel.min_released_secret =
                    Some(channel.min_released_secret.map_or(idx, |m| m.min(idx)));
                Ok(())
            }
            (validated, _) => Err(Refusal::new(
                "secret_before_next_commitment",
                format!(
                    "secret {idx} asked for, but the newest validated holder commitment is {}",
                    validated.map_or("none".to_string(), |v| v.to_string())
                ),
            )),
        }
    }

    /// Signing our commitment for broadcast: only the newest one the signer validated (so its
    /// signatures and balance were checked), and never a revoked one (its secret released:
    /// broadcasting it loses the channel's funds to the peer). Once one is signed, the channel
    /// is closing: no secret of it or of a newer one is released.
    pub fn sign_holder_commitment(
        &self,
        state: &mut Txn,
        keys_id: &KeysId,
        view: &CommitmentView,
    ) -> Result<(), Refusal> {
        let channel = state.channels.get(keys_id);
        if let Some(released) = channel
            .and_then(|c| c.min_released_secret)
            .filter(|released| view.number >= *released)
        {
            return Err(Refusal::new(
                "revoked_holder_commitment",
                format!(
                    "holder commitment {} is revoked (secrets released down to {released})",
                    view.number
                ),
            ));
        }
        let newest = match channel.and_then(|c| c.validated_holder.as_ref()) {
            Some(newest) => newest.number == view.number && newest.txid == view.txid,
            // Validated before transactions were kept: its number must do.
            None => channel.and_then(|c| c.last_validated_holder) == Some(view.number),
        };
        if newest {
            let channel = state.channel_mut(keys_id);
            channel.signed_for_broadcast = Some(
                channel
                    .signed_for_broadcast
                    .map_or(view.number, |n| n.max(view.number)),
            );
            return Ok(());
        }
        Err(Refusal::new(
            "holder_commitment_not_validated",
            format!(
                "holder commitment {} is not the newest the signer validated",
                view.number
            ),
        ))
    }

    /// Every script must be the signer's own (`own`) or explicitly allowed.
    pub fn check_destinations<'a>(
        &self,
        own: &HashSet<ScriptBuf>,
        scripts: impl IntoIterator<Item = &'a Script>,
    ) -> Result<(), Refusal> {
        for script in scripts {
            if !own.contains(script) && !self.allowed_scripts.contains(script) {
                return Err(Refusal::new(
                    "destination_not_allowed",
                    format!(
                        "output script {} is neither the signer's wallet nor allowed",
                        script.as_bytes().to_lower_hex_string()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Limits of an outgoing payment about to be sent (the approval hook is asked after this).
    pub fn check_payment(
        &self,
        state: &SignerState,
        payment: &PaymentApproval,
        now: u64,
    ) -> Result<(), Refusal> {
        self.check_payment_amount(payment.amount_msat)?;
        self.check_velocity(state, payment.amount_msat, now)
    }

    /// Counts an approved payment once, here, so its HTLCs are not counted again; forgets
    /// approvals past their lifetime.
    pub fn record_approved(&self, state: &mut Txn, payment: &PaymentApproval, now: u64) {
        prune_spent(state, now);
        state.remove_approvals(|a| !a.alive(now, APPROVAL_TTL_SECS));
        state.push_spent(Spent {
            at_secs: now,
            amount_msat: payment.amount_msat,
        });
        let entry = state.approval_or_insert(
            payment.payment_hash,
            ApprovedPayment {
                amount_msat: 0,
                used_msat: 0,
                approved_at_secs: now,
            },
        );
        // A retry after failed HTLCs needs budget for its own HTLCs.
        entry.amount_msat = entry.amount_msat.saturating_add(payment.amount_msat);
        entry.approved_at_secs = now;
    }

    pub fn check_peer(&self, peer: &PublicKey) -> Result<(), Refusal> {
        match &self.allowed_peers {
            Some(allowed) if !allowed.contains(peer) => Err(Refusal::new(
                "peer_not_allowed",
                format!("channel opens with {peer} are not allowed"),
            )),
            _ => Ok(()),
        }
    }
}

/// The open approved for a channel, or the refusal of a channel nobody approved.
fn approved_open(channel: Option<&ChannelState>, keys_id: &KeysId) -> Result<ChannelOpen, Refusal> {
    channel.and_then(|c| c.open).ok_or_else(|| {
        Refusal::new(
            "channel_not_approved",
            format!(
                "no channel open was approved for key set {}",
                keys_id.to_lower_hex_string()
            ),
        )
    })
}

fn direction(outbound: bool) -> &'static str {
    if outbound {
        "ours"
    } else {
        "the peer's"
    }
}

/// The two keys of a funding output's witness script, if it is the 2-of-2 LDK makes.
fn funding_keys(script: &Script) -> Option<[PublicKey; 2]> {
    let bytes = script.as_bytes();
    if bytes.len() != 71 {
        return None;
    }
    let a = PublicKey::from_slice(&bytes[2..35]).ok()?;
    let b = PublicKey::from_slice(&bytes[36..69]).ok()?;
    (make_funding_redeemscript(&a, &b).as_script() == script).then_some([a, b])
}

fn spent_expired(spent: &Spent, now: u64) -> bool {
    spent.at_secs.saturating_add(WINDOW_SECS) <= now
}

/// Forgets spending older than the window (entries are in time order: only the front goes).
fn prune_spent(state: &mut Txn, now: u64) {
    state.drop_spent_while(|s| spent_expired(s, now));
}

/// Entries of `current` not in `previous`, counting duplicates (two equal HTLCs are two).
fn new_entries(previous: &[HtlcEntry], current: &[HtlcEntry]) -> Vec<HtlcEntry> {
    let mut left: BTreeMap<HtlcEntry, usize> = BTreeMap::new();
    for entry in previous {
        *left.entry(*entry).or_default() += 1;
    }
    current
        .iter()
        .filter(|entry| match left.get_mut(entry) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .copied()
        .collect()
}

/// A commitment's fee: at least the floor every node relays, and as funder within the cap.
fn check_commitment_fee(view: &CommitmentView, cap: &FeeCap) -> Result<(), Refusal> {
    if !view.zero_fee && view.feerate_per_kw < MIN_FEERATE_PER_KW {
        return Err(Refusal::new(
            "commitment_feerate_below_floor",
            format!(
                "commitment {} pays {} sat per 1,000 weight, below the {MIN_FEERATE_PER_KW} \
                 nodes relay: it could not confirm",
                view.number, view.feerate_per_kw
            ),
        ));
    }
    if view.outbound {
        cap.check(view.base_fee_sat, &format!("commitment {}", view.number))?;
    }
    Ok(())
}

/// Between two commitments of one side, what is ours (our balance and, as funder, the fee we
/// pay) may drop only by what new outgoing HTLCs take (the limits count those) and by value
/// moved into dust, returned for the caller to count; a balance of ours trimmed to nothing
/// may leave less than dust behind. Anything else hands our money to the peer: a fee raised
/// and then lowered with the difference handed to the peer, for one.
fn balance_move(
    previous: Split,
    view: &CommitmentView,
    added: &[HtlcEntry],
) -> Result<u64, Refusal> {
    let added_msat = added
        .iter()
        .map(|h| h.amount_msat)
        .fold(0u64, u64::saturating_add);
    let current = Split::of(view);
    let dropped = previous
        .stake(view.outbound)
        .saturating_sub(current.stake(view.outbound));
    let accounted = added_msat.div_ceil(1000).saturating_add(ROUNDING_SAT);
    let excess = dropped.saturating_sub(accounted);
    if excess == 0 || (view.to_us_sat == 0 && excess < MAX_DUST_SAT) {
        return Ok(0);
    }
    if excess <= current.dust_sat.saturating_sub(previous.dust_sat) {
        return Ok(excess);
    }
    Err(Refusal::new(
        "balance_moved_without_htlc",
        format!(
            "commitment {} takes {dropped} sat of ours; new HTLCs account for {accounted}",
            view.number
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_CAP: FeeCap = FeeCap { max_fee_sat: None };

    fn htlc(hash: u8, amount_msat: u64) -> HtlcEntry {
        HtlcEntry {
            payment_hash: [hash; 32],
            amount_msat,
            cltv_expiry: 500,
        }
    }

    /// The peer's per-commitment secret of commitment `number` (any key will do here).
    fn secret(number: u64) -> [u8; 32] {
        let mut secret = [1; 32];
        secret[..8].copy_from_slice(&number.to_be_bytes());
        secret
    }

    fn view(number: u64, outgoing: Vec<HtlcEntry>) -> CommitmentView {
        let secret = SecretKey::from_slice(&secret(number)).expect("a key");
        CommitmentView {
            to_us_sat: 0,
            fee_sat: 0,
            feerate_per_kw: MIN_FEERATE_PER_KW,
            base_fee_sat: 0,
            outbound: false,
            zero_fee: false,
            number,
            txid: [number as u8; 32],
            point: PublicKey::from_secret_key(&Secp256k1::signing_only(), &secret),
            outgoing,
            incoming: vec![],
        }
    }

    fn revoke(policy: &Policy, state: &mut Txn, id: &KeysId, idx: u64) -> Result<(), Refusal> {
        let revocation = Revocation {
            idx,
            secret: secret(idx),
        };
        policy.record_counterparty_revocation(state, id, &revocation, &Secp256k1::signing_only())
    }

    fn limited() -> Policy {
        Policy::new(PolicyLimits {
            max_payment_msat: Some(10_000),
            max_outgoing_msat_per_hour: Some(15_000),
            max_fee_sat: Some(1_000),
        })
    }

    #[test]
    fn new_entries_counts_duplicates() {
        let a = htlc(1, 5);
        assert_eq!(new_entries(&[a], &[a, a]), vec![a]);
        assert_eq!(new_entries(&[a, a], &[a]), vec![]);
        assert_eq!(new_entries(&[], &[a]), vec![a]);
    }

    /// Approves a payment of `amount_msat` under hash `[hash; 32]` at `now`, as the signer
    /// does for `ApprovePayment` (limits, then recorded).
    fn approve(
        policy: &Policy,
        state: &mut Txn,
        hash: u8,
        amount_msat: u64,
        now: u64,
    ) -> Result<(), Refusal> {
        let payment = PaymentApproval {
            payment_hash: [hash; 32],
            amount_msat,
            destination: PublicKey::from_slice(&[2; 33]).expect("point"),
        };
        policy.check_payment(state, &payment, now)?;
        policy.record_approved(state, &payment, now);
        Ok(())
    }

    #[test]
    fn an_htlc_is_counted_once_while_it_stays() {
        let policy = limited();
        let mut state = SignerState::default();
        let mut state = Txn::new(&mut state);
        let id = [1; 32];
        let a = htlc(1, 8_000);
        approve(&policy, &mut state, 1, 8_000, 0).expect("approved");
        policy
            .sign_counterparty_commitment(&mut state, &id, &view(100, vec![a]), &NO_CAP, 0)
            .expect("first");
        // Still in flight in the next commitment: not new spending.
        policy
            .sign_counterparty_commitment(&mut state, &id, &view(99, vec![a]), &NO_CAP, 1)
            .expect("same htlc");
        assert_eq!(state.spent.len(), 1);
        revoke(&policy, &mut state, &id, 100).expect("revoked");
        // A second payment would make 16_000 in the hour.
        let err = approve(&policy, &mut state, 2, 8_000, 2).unwrap_err();
        assert_eq!(err.rule, "velocity");
    }

    #[test]
    fn velocity_window_rolls() {
        let policy = limited();
        let mut state = SignerState::default();
        let mut state = Txn::new(&mut state);
        let id = [1; 32];
        approve(&policy, &mut state, 1, 9_000, 0).expect("first");
        policy
            .sign_counterparty_commitment(
                &mut state,
                &id,
                &view(100, vec![htlc(1, 9_000)]),
                &NO_CAP,
                0,
            )
            .expect("first");
        let mut early = (*state).clone();
        assert_eq!(
            approve(
                &policy,
                &mut Txn::new(&mut early),
                2,
                9_000,
                WINDOW_SECS - 1
            )
            .unwrap_err()
            .rule,
            "velocity"
        );
        approve(&policy, &mut state, 2, 9_000, WINDOW_SECS).expect("an hour later");
        policy
            .sign_counterparty_commitment(
                &mut state,
                &id,
                &view(99, vec![htlc(2, 9_000)]),
                &NO_CAP,
                WINDOW_SECS,
            )
            .expect("approved an hour later");
    }

    #[test]
    fn an_htlc_needs_an_approval_still_alive() {
        let policy = Policy::default();
        let mut state = SignerState::default();
        let mut state = Txn::new(&mut state);
        let id = [1; 32];
        let err = policy
            .sign_counterparty_commitment(&mut state, &id, &view(100, vec![htlc(1, 1)]), &NO_CAP, 0)
            .unwrap_err();
        assert_eq!(err.rule, "unapproved_htlc", "no limits set, still refused");
        approve(&policy, &mut state, 1, 1, 0).expect("approved");
        let err = policy
            .sign_counterparty_commitment(
                &mut state,
                &id,
                &view(100, vec![htlc(1, 1)]),
                &NO_CAP,
                APPROVAL_TTL_SECS,
            )
            .unwrap_err();
        assert_eq!(err.rule, "unapproved_htlc", "the approval expired");
        policy
            .sign_counterparty_commitment(
                &mut state,
                &id,
                &view(100, vec![htlc(1, 1)]),
                &NO_CAP,
                APPROVAL_TTL_SECS - 1,
            )
            .expect("within the approval's lifetime");
    }

    #[test]
    fn approved_payment_is_not_counted_twice_but_its_excess_is() {
        let policy = limited();
        let mut state = SignerState::default();
        let mut state = Txn::new(&mut state);
        let dest = PublicKey::from_slice(&[2; 33]).expect("point");
        let payment = PaymentApproval {
            payment_hash: [3; 32],
            amount_msat: 9_000,
            destination: dest,
        };
        policy.check_payment(&state, &payment, 0).expect("ok");
        policy.record_approved(&mut state, &payment, 0);
        let id = [1; 32];
        policy
            .sign_counterparty_commitment(
                &mut state,
                &id,
                &view(100, vec![htlc(3, 9_000)]),
                &NO_CAP,
                1,
            )
            .expect("approved htlc");
        assert_eq!(state.spent.len(), 1, "counted once, at approval");
        // A second HTLC under the same hash goes beyond the approval: it is spending.
        let err = policy
            .sign_counterparty_commitment(
                &mut state,
                &id,
                &view(99, vec![htlc(3, 9_000), htlc(3, 9_000)]),
                &NO_CAP,
                2,
            )
            .unwrap_err();
        assert_eq!(err.rule, "max_payment");
    }

    #[test]
    fn approvals_and_velocity_entries_expire() {
        let policy = limited();
        let mut state = SignerState::default();
        let mut state = Txn::new(&mut state);
        let payment = |hash: u8| PaymentApproval {
            payment_hash: [hash; 32],
            amount_msat: 1,
            destination: PublicKey::from_slice(&[2; 33]).expect("point"),
        };
        policy.record_approved(&mut state, &payment(1), 0);
        policy.record_approved(&mut state, &payment(2), APPROVAL_TTL_SECS - 1);
        assert_eq!(state.approved.len(), 2);
        policy.record_approved(&mut state, &payment(3), APPROVAL_TTL_SECS);
        assert!(!state.approved.contains_key(&[1; 32]), "a day old: gone");
        assert!(state.approved.contains_key(&[2; 32]));
        // Velocity entries are kept for the last hour only: the first one is long gone.
        let times: Vec<u64> = state.spent.iter().map(|s| s.at_secs).collect();
        assert_eq!(times, [APPROVAL_TTL_SECS - 1, APPROVAL_TTL_SECS]);
    }

    #[test]
    fn release_needs_the_next_holder_commitment() {
        let policy = limited();
        let mut state = SignerState::default();
        let mut state = Txn::new(&mut state);
        let id = [1; 32];
        let top = (1u64 << 48) - 1;
        assert!(policy
            .release_commitment_secret(&mut state, &id, top)
            .is_err());
        policy
            .validate_holder_commitment(&mut state, &id, &view(top - 1, vec![]), &NO_CAP, 0)
            .expect("no open, no baseline");
        policy
            .release_commitment_secret(&mut state, &id, top)
            .expect("next validated");
        assert!(policy
            .release_commitment_secret(&mut state, &id, top - 1)
            .is_err());
        assert!(policy
            .release_commitment_secret(&mut state, &id, 0)
            .is_err());
        assert_eq!(
            policy
                .sign_holder_commitment(&mut state, &id, &view(top, vec![]))
                .unwrap_err()
                .rule,
            "revoked_holder_commitment"
        );
        policy
            .sign_holder_commitment(&mut state, &id, &view(top - 1, vec![]))
            .expect("current one");
        // Signed for broadcast, it is never revoked, even once a newer one is validated.
        policy
            .validate_holder_commitment(&mut state, &id, &view(top - 2, vec![]), &NO_CAP, 0)
            .expect("newer");
        assert_eq!(
            policy
                .release_commitment_secret(&mut state, &id, top - 1)
                .unwrap_err()
                .rule,
            "secret_after_broadcast_signature"
        );
    }

    #[test]
    fn only_the_newest_validated_holder_commitment_is_signed_and_its_balance_held() {
        let policy = limited();
        let mut state = SignerState::default();
        let mut state = Txn::new(&mut state);
        let id = [1; 32];
        let top = (1u64 << 48) - 1;
        // A channel we fund: the first holder commitment starts from its whole value.
        state.channel_mut(&id).open = Some(ChannelOpen {
            peer: PublicKey::from_slice(&[2; 33]).expect("point"),
            value_sat: 100_000,
            push_msat: 0,
            outbound: true,
            funding_txid: None,
        });
        let holder = |number, to_us_sat, fee_sat, outgoing| CommitmentView {
            to_us_sat,
            fee_sat,
            base_fee_sat: fee_sat,
            outbound: true,
            ..view(number, outgoing)
        };
        // Nothing validated: nothing to sign.
        assert_eq!(
            policy
                .sign_holder_commitment(&mut state, &id, &holder(top, 99_000, 1_000, vec![]))
                .unwrap_err()
                .rule,
            "holder_commitment_not_validated"
        );
        // A commitment that gives the peer most of the channel: refused, nothing recorded.
        let drained = holder(top, 10_000, 1_000, vec![]);
        assert_eq!(
            policy
                .validate_holder_commitment(&mut state, &id, &drained, &NO_CAP, 0)
                .unwrap_err()
                .rule,
            "balance_moved_without_htlc"
        );
        assert!(state.channels[&id].validated_holder.is_none());
        let first = holder(top, 99_000, 1_000, vec![]);
        policy
            .validate_holder_commitment(&mut state, &id, &first, &NO_CAP, 0)
            .expect("value less the fee");
        policy
            .sign_holder_commitment(&mut state, &id, &first)
            .expect("the newest validated");
        // The same number as another transaction: refused.
        let other = CommitmentView {
            txid: [9; 32],
            ..first.clone()
        };
        assert_eq!(
            policy
                .validate_holder_commitment(&mut state, &id, &other, &NO_CAP, 0)
                .unwrap_err()
                .rule,
            "conflicting_holder_commitment"
        );
        // An outgoing HTLC in it must be of an approved payment.
        let paying = holder(top - 1, 98_995, 1_000, vec![htlc(3, 5_000)]);
        assert_eq!(
            policy
                .validate_holder_commitment(&mut state, &id, &paying, &NO_CAP, 0)
                .unwrap_err()
                .rule,
            "unapproved_htlc"
        );
        approve(&policy, &mut state, 3, 5_000, 0).expect("approved");
        policy
            .validate_holder_commitment(&mut state, &id, &paying, &NO_CAP, 0)
            .expect("approved HTLC");
        // Once a newer one is validated, the older one is no longer signed.
        assert_eq!(
            policy
                .sign_holder_commitment(&mut state, &id, &first)
                .unwrap_err()
                .rule,
            "holder_commitment_not_validated"
        );
    }

    #[test]
    fn a_new_counterparty_commitment_waits_for_the_revocation_of_the_one_before_the_last() {
        let policy = Policy::default();
        let mut state = SignerState::default();
        let mut state = Txn::new(&mut state);
        let id = [1; 32];
        let sign = |state: &mut Txn, number| {
            policy.sign_counterparty_commitment(state, &id, &view(number, vec![]), &NO_CAP, 0)
        };
        assert_eq!(
            revoke(&policy, &mut state, &id, 100).unwrap_err().rule,
            "invalid_revocation"
        );
        sign(&mut state, 100).expect("first");
        sign(&mut state, 99).expect("the peer may hold two");
        assert_eq!(
            sign(&mut state, 98).unwrap_err().rule,
            "counterparty_not_revoked"
        );
        // Signing the same one again is still fine.
        sign(&mut state, 99).expect("same again");
        // Only the secret of commitment 100 revokes it; not the newest one's, nor a stranger's.
        let wrong = Revocation {
            idx: 100,
            secret: secret(7),
        };
        let secp = Secp256k1::signing_only();
        let refused = policy.record_counterparty_revocation(&mut state, &id, &wrong, &secp);
        assert_eq!(refused.unwrap_err().rule, "invalid_revocation");
        let not_a_key = Revocation {
            idx: 101,
            secret: [0xff; 32],
        };
        let refused = policy.record_counterparty_revocation(&mut state, &id, &not_a_key, &secp);
        assert_eq!(refused.unwrap_err().rule, "invalid_revocation");
        assert_eq!(
            revoke(&policy, &mut state, &id, 99).unwrap_err().rule,
            "invalid_revocation"
        );
        assert_eq!(
            revoke(&policy, &mut state, &id, 98).unwrap_err().rule,
            "invalid_revocation"
        );
        revoke(&policy, &mut state, &id, 100).expect("revoked");
        revoke(&policy, &mut state, &id, 100).expect("repeated");
        sign(&mut state, 98).expect("after the revocation");
        assert_eq!(
            sign(&mut state, 97).unwrap_err().rule,
            "counterparty_not_revoked"
        );
        assert_eq!(
            state.channels[&id].unrevoked_counterparty.map(|c| c.number),
            Some(99)
        );
    }

    #[test]
    fn peers_and_fees() {
        let mut policy = limited();
        let peer = PublicKey::from_slice(&[2; 33]).expect("point");
        policy.check_peer(&peer).expect("any peer by default");
        policy.allowed_peers = Some(HashSet::new());
        assert_eq!(
            policy.check_peer(&peer).unwrap_err().rule,
            "peer_not_allowed"
        );
        policy.allowed_peers = Some([peer].into_iter().collect());
        policy.check_peer(&peer).expect("listed");
    }

    #[test]
    fn what_is_ours_drops_only_by_new_outgoing_htlcs_and_dust() {
        let at = |to_us_sat, base_fee_sat, dust_sat, outbound, outgoing| CommitmentView {
            to_us_sat,
            fee_sat: base_fee_sat + dust_sat,
            base_fee_sat,
            outbound,
            ..view(1, outgoing)
        };
        let before = |to_us_sat, fee: u64, dust_sat: u64| Split {
            to_us_sat,
            fee_sat: fee + dust_sat,
            dust_sat,
        };
        let moved = |previous, v: &CommitmentView, added: &[HtlcEntry]| {
            balance_move(previous, v, added).map_err(|r| r.rule)
        };
        let h = htlc(1, 40_000_500);
        let funder = before(100_000, 1_000, 0);
        // As funder: a new HTLC of 40,000.5 sat and 300 sat more fee leave our balance.
        assert_eq!(
            moved(funder, &at(59_698, 1_300, 0, true, vec![h]), &[h]),
            Ok(0)
        );
        assert!(moved(funder, &at(59_697, 1_300, 0, true, vec![h]), &[h]).is_err());
        // A lower fee is ours again: handed to the peer, it is refused (the ratchet).
        assert_eq!(
            moved(funder, &at(100_500, 500, 0, true, vec![]), &[]),
            Ok(0)
        );
        assert_eq!(
            moved(funder, &at(100_000, 500, 0, true, vec![]), &[]),
            Err("balance_moved_without_htlc")
        );
        // The peer pays its own fee: a higher one takes nothing from us.
        let fundee = before(100_000, 1_000, 0);
        assert!(moved(fundee, &at(99_000, 2_000, 0, false, vec![]), &[]).is_err());
        assert_eq!(
            moved(fundee, &at(100_000, 2_000, 0, false, vec![]), &[]),
            Ok(0)
        );
        // Value moved into dust comes back to be counted (less rounding); beyond what the
        // dust grew by, refused.
        assert_eq!(
            moved(fundee, &at(99_700, 1_000, 300, false, vec![]), &[]),
            Ok(299)
        );
        assert!(moved(fundee, &at(99_600, 1_000, 300, false, vec![]), &[]).is_err());
        // Our balance trimmed to nothing may leave less than dust behind, no more.
        assert_eq!(
            moved(before(500, 1_000, 0), &at(0, 1_000, 0, false, vec![]), &[]),
            Ok(0)
        );
        assert!(moved(before(600, 1_000, 0), &at(0, 1_000, 0, false, vec![]), &[]).is_err());
    }

    #[test]
    fn a_commitment_pays_at_least_the_floor_and_as_funder_at_most_the_cap() {
        let policy = Policy::default();
        let mut state = SignerState::default();
        let mut state = Txn::new(&mut state);
        let cap = FeeCap {
            max_fee_sat: Some(5_000),
        };
        let sign = |state: &mut Txn, number, feerate_per_kw, base_fee_sat, outbound| {
            let v = CommitmentView {
                feerate_per_kw,
                fee_sat: base_fee_sat,
                base_fee_sat,
                outbound,
                ..view(number, vec![])
            };
            policy
                .sign_counterparty_commitment(state, &[1; 32], &v, &cap, 0)
                .map_err(|r| r.rule)
        };
        let top = 1000;
        assert_eq!(
            sign(&mut state, top, 252, 300, true),
            Err("commitment_feerate_below_floor")
        );
        assert_eq!(sign(&mut state, top, 20_000, 5_001, true), Err("max_fee"));
        // The peer's fee is the peer's to pay: above our cap is not ours to refuse.
        assert_eq!(sign(&mut state, top, 20_000, 5_001, false), Ok(()));
        assert_eq!(
            sign(&mut state, top - 1, 252, 300, false),
            Err("commitment_feerate_below_floor")
        );
        let zero_fee = CommitmentView {
            feerate_per_kw: 0,
            zero_fee: true,
            ..view(top - 1, vec![])
        };
        policy
            .sign_counterparty_commitment(&mut state, &[1; 32], &zero_fee, &cap, 0)
            .expect("a zero-fee commitment has no floor");
    }

    #[test]
    fn dust_of_ours_draws_on_approved_payments_and_then_our_own_commitment_may_show_it() {
        let policy = limited();
        let mut state = SignerState::default();
        let mut state = Txn::new(&mut state);
        let id = [1; 32];
        let top = 1000;
        let dusty = |number, to_us_sat, dust_sat| CommitmentView {
            to_us_sat,
            fee_sat: dust_sat,
            ..view(number, vec![])
        };
        policy
            .sign_counterparty_commitment(&mut state, &id, &dusty(top, 10, 0), &NO_CAP, 0)
            .expect("first");
        // Nothing approved: 5 sat of ours into dust is refused.
        let paid = dusty(top - 1, 5, 5);
        assert_eq!(
            policy
                .sign_counterparty_commitment(&mut state, &id, &paid, &NO_CAP, 0)
                .unwrap_err()
                .rule,
            "unapproved_htlc"
        );
        // A payment of 3 sat approved: the dust (4 sat after rounding) takes its budget and
        // 1 sat more of new spending (limits: 10 sat a payment, 15 sat an hour).
        approve(&policy, &mut state, 7, 3_000, 0).expect("approved");
        policy
            .sign_counterparty_commitment(&mut state, &id, &paid, &NO_CAP, 0)
            .expect("counted");
        assert_eq!(state.approved[&[7; 32]].used_msat, 3_000);
        assert_eq!(
            state.spent.iter().map(|s| s.amount_msat).sum::<u64>(),
            4_000
        );
        assert_eq!(state.channels[&id].dust_credit_sat, 4);
        // Our own commitment shows the same dust: it draws on the credit, once.
        state.channel_mut(&id).open = None;
        policy
            .validate_holder_commitment(&mut state, &id, &dusty(top, 10, 0), &NO_CAP, 0)
            .expect("first holder");
        policy
            .validate_holder_commitment(&mut state, &id, &dusty(top - 1, 5, 5), &NO_CAP, 0)
            .expect("the counted dust");
        assert_eq!(state.channels[&id].dust_credit_sat, 0);
        policy
            .validate_holder_commitment(&mut state, &id, &dusty(top - 2, 10, 0), &NO_CAP, 0)
            .expect("the dust failed back");
        assert_eq!(
            policy
                .validate_holder_commitment(&mut state, &id, &dusty(top - 3, 5, 5), &NO_CAP, 0)
                .unwrap_err()
                .rule,
            "unapproved_htlc"
        );
    }

    #[test]
    fn a_close_pays_our_balance_less_our_fee_or_leaves_out_only_dust() {
        let policy = Policy::default();
        let mut state = SignerState::default();
        let id = [4; 32];
        // Nothing signed yet: nothing to compare with.
        assert!(policy.check_closing_split(&state, &id, 0, 0).is_ok());
        state.channels.entry(id).or_default().to_us_sat = Some(50_000);
        assert!(policy
            .check_closing_split(&state, &id, 49_000, 1_000)
            .is_ok());
        let short = policy.check_closing_split(&state, &id, 48_999, 1_000);
        assert_eq!(short.unwrap_err().rule, "closing_balance_mismatch");
        assert!(policy.check_closing_split(&state, &id, 0, 0).is_err());
        state.channels.entry(id).or_default().to_us_sat = Some(MAX_DUST_SAT - 1);
        assert!(policy.check_closing_split(&state, &id, 0, 0).is_ok());
    }
}
