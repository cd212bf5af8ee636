//! What the signer refuses to sign, as pure functions over its [`SignerState`].
//!
//! Checks that record what they accepted take the state through a [`Txn`]; the signer keeps a
//! transaction only once the answer is ready and its change saved, so a refusal or a failed
//! signature leaves the remembered state untouched.

use std::collections::{BTreeMap, HashSet};

use bitcoin::hex::DisplayHex;
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey, Signing};
use bitcoin::{Script, ScriptBuf};
use lightning::ln::chan_utils::make_funding_redeemscript;

use super::config::PolicyLimits;
use super::protocol::{KeysId, Revocation};
use super::state::{
    ApprovedPayment, ChannelOpen, ChannelState, HtlcEntry, SignedCommitment, SignerState, Spent,
    Txn,
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
    fn new(rule: &'static str, reason: impl Into<String>) -> Self {
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
    /// balances (the fee, dust HTLCs, anchors).
    pub fee_sat: u64,
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
        prune_spent(state, now);
        let previous = state.channels.get(keys_id);
        let added = new_entries(previous.map_or(&[], |c| &c.outgoing), &view.outgoing);
        // Recorded with every signed counterparty commitment: absent only before the first,
        // which starts a channel we fund from its value less what we push.
        let baseline = previous.and_then(|c| {
            c.to_us_sat.zip(c.fee_sat).or_else(|| {
                c.open
                    .filter(|o| o.outbound)
                    .map(|o| (o.value_sat.saturating_sub(o.push_msat.div_ceil(1000)), 0))
            })
        });
        if let Some((to_us, fee)) = baseline {
            balance_moves_only_by_htlcs_and_fees(to_us, fee, view, &added)?;
        }
        for htlc in added {
            self.count_outgoing_htlc(state, keys_id, view, &htlc, now)?;
        }
        let channel = state.channel_mut(keys_id);
        channel.unrevoked_counterparty = channel.last_counterparty;
        channel.last_counterparty = Some(SignedCommitment {
            number: view.number,
            txid: view.txid,
            point: Some(view.point),
        });
        channel.outgoing = view.outgoing.clone();
        channel.to_us_sat = Some(view.to_us_sat);
        channel.fee_sat = Some(view.fee_sat);
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

    /// A mutual close pays us at least our balance in the last commitment we signed for the
    /// peer, less the closing fee when we pay it; an output of ours below dust may be left out.
    pub fn check_closing_split(
        &self,
        state: &SignerState,
        keys_id: &KeysId,
        to_holder_sat: u64,
        our_fee_sat: u64,
    ) -> Result<(), Refusal> {
        let Some(last) = state.channels.get(keys_id).and_then(|c| c.to_us_sat) else {
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

    /// One new outgoing HTLC: a forward, part of an approved payment, or new spending.
    fn count_outgoing_htlc(
        &self,
        state: &mut Txn,
        keys_id: &KeysId,
        view: &CommitmentView,
        htlc: &HtlcEntry,
        now: u64,
    ) -> Result<(), Refusal> {
        let hash = htlc.payment_hash;
        let sum = |entries: &[HtlcEntry]| -> u64 {
            entries
                .iter()
                .filter(|e| e.payment_hash == hash)
                .map(|e| e.amount_msat)
                .fold(0u64, u64::saturating_add)
        };
        // Outgoing value under this hash across the node, with this commitment's in place of
        // the channel's previous one.
        let outgoing_total = state
            .channels
            .iter()
            .filter(|(id, _)| *id != keys_id)
            .map(|(_, c)| sum(&c.outgoing))
            .fold(sum(&view.outgoing), u64::saturating_add);
        // Only incoming HTLCs in holder commitments count: the peer signed those, so they are
        // real and claimable once the outgoing one reveals the preimage.
        let incoming_total = state
            .channels
            .values()
            .map(|c| sum(&c.incoming_holder))
            .fold(0, u64::saturating_add);
        if incoming_total >= outgoing_total {
            return Ok(());
        }
        let (payment_total, spending) = match state.approval_mut(&hash) {
            Some(approved) => {
                let before = approved.used_msat;
                let after = before.saturating_add(htlc.amount_msat);
                approved.used_msat = after;
                let beyond = |used: u64| used.saturating_sub(approved.amount_msat);
                (after, beyond(after) - beyond(before))
            }
            None => (outgoing_total, htlc.amount_msat),
        };
        if spending == 0 {
            return Ok(());
        }
        self.check_payment_amount(payment_total)?;
        self.check_velocity(state, spending, now)?;
        state.push_spent(Spent {
            at_secs: now,
            amount_msat: spending,
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
                if open.outbound && open.funding_txid != Some(params.funding_txid) {
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
            state.channel_mut(keys_id).parameters = Some(params.encoded.clone());
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

    /// A wallet transaction may pay only the wallet itself, allowed scripts, and the funding
    /// output of a channel we open: the approved value, to a 2-of-2 with that channel's funding
    /// key, in one transaction per open (recorded: the channel must use it).
    pub fn check_wallet_spend(
        &self,
        state: &mut Txn,
        txid: [u8; 32],
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
                    .map(|(id, _)| *id)
                    .find(|id| keys.contains(&funding_key(id)))
            });
            match channel {
                Some(keys_id) => funded.push(keys_id),
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
        for keys_id in funded {
            if let Some(open) = state.channel_mut(&keys_id).open.as_mut() {
                open.funding_txid = Some(txid);
            }
        }
        Ok(())
    }

    /// The peer signed our commitment `view.number`: remember the newest, and the HTLCs
    /// offered to us in it.
    pub fn validate_holder_commitment(
        &self,
        state: &mut Txn,
        keys_id: &KeysId,
        view: &CommitmentView,
    ) {
        let channel = state.channel_mut(keys_id);
        if channel
            .last_validated_holder
            .is_none_or(|last| view.number <= last)
        {
            channel.last_validated_holder = Some(view.number);
            channel.incoming_holder = view.incoming.clone();
        }
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
        match (channel.last_validated_holder, idx.checked_sub(1)) {
            (Some(validated), Some(next)) if validated <= next => {
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

    /// A holder commitment whose secret was released is revoked: broadcasting it loses the
    /// channel's funds to the peer.
    pub fn sign_holder_commitment(
        &self,
        state: &SignerState,
        keys_id: &KeysId,
        number: u64,
    ) -> Result<(), Refusal> {
        match state
            .channels
            .get(keys_id)
            .and_then(|c| c.min_released_secret)
        {
            Some(released) if number >= released => Err(Refusal::new(
                "revoked_holder_commitment",
                format!(
                    "holder commitment {number} is revoked (secrets released down to {released})"
                ),
            )),
            _ => Ok(()),
        }
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

    pub fn check_fee(&self, fee_sat: u64, what: &str) -> Result<(), Refusal> {
        match self.limits.max_fee_sat {
            Some(max) if fee_sat > max => Err(Refusal::new(
                "max_fee",
                format!("{what} pays {fee_sat} sat in fees, above the cap of {max} sat"),
            )),
            _ => Ok(()),
        }
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
        state.remove_approvals(|a| a.approved_at_secs.saturating_add(APPROVAL_TTL_SECS) <= now);
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

/// Between two commitments we signed for the peer, our balance may only drop by what new
/// outgoing HTLCs take (the limits count those) and by a higher fee (ours to pay as funder,
/// or an HTLC below dust, which the fee absorbs). Anything else hands our money to the peer.
fn balance_moves_only_by_htlcs_and_fees(
    prev_to_us_sat: u64,
    prev_fee_sat: u64,
    view: &CommitmentView,
    added: &[HtlcEntry],
) -> Result<(), Refusal> {
    let added_msat = added
        .iter()
        .map(|h| h.amount_msat)
        .fold(0u64, u64::saturating_add);
    let allowed = added_msat
        .div_ceil(1000)
        .saturating_add(view.fee_sat.saturating_sub(prev_fee_sat))
        .saturating_add(ROUNDING_SAT);
    let dropped = prev_to_us_sat.saturating_sub(view.to_us_sat);
    if dropped <= allowed {
        return Ok(());
    }
    Err(Refusal::new(
        "balance_moved_without_htlc",
        format!(
            "commitment {} takes {dropped} sat from our balance; new HTLCs and fees account for {allowed}",
            view.number
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn an_htlc_is_counted_once_while_it_stays() {
        let policy = limited();
        let mut state = SignerState::default();
        let mut state = Txn::new(&mut state);
        let id = [1; 32];
        let a = htlc(1, 8_000);
        policy
            .sign_counterparty_commitment(&mut state, &id, &view(100, vec![a]), 0)
            .expect("first");
        // Still in flight in the next commitment: not new spending.
        policy
            .sign_counterparty_commitment(&mut state, &id, &view(99, vec![a]), 1)
            .expect("same htlc");
        assert_eq!(state.spent.len(), 1);
        revoke(&policy, &mut state, &id, 100).expect("revoked");
        // A second one would make 16_000 in the hour.
        let err = policy
            .sign_counterparty_commitment(&mut state, &id, &view(98, vec![a, htlc(2, 8_000)]), 2)
            .unwrap_err();
        assert_eq!(err.rule, "velocity");
    }

    #[test]
    fn velocity_window_rolls() {
        let policy = limited();
        let mut state = SignerState::default();
        let mut state = Txn::new(&mut state);
        let id = [1; 32];
        policy
            .sign_counterparty_commitment(&mut state, &id, &view(100, vec![htlc(1, 9_000)]), 0)
            .expect("first");
        let next = view(99, vec![htlc(2, 9_000)]);
        let mut early = (*state).clone();
        assert_eq!(
            policy
                .sign_counterparty_commitment(
                    &mut Txn::new(&mut early),
                    &id,
                    &next,
                    WINDOW_SECS - 1
                )
                .unwrap_err()
                .rule,
            "velocity"
        );
        policy
            .sign_counterparty_commitment(&mut state, &id, &next, WINDOW_SECS)
            .expect("an hour later");
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
            .sign_counterparty_commitment(&mut state, &id, &view(100, vec![htlc(3, 9_000)]), 1)
            .expect("approved htlc");
        assert_eq!(state.spent.len(), 1, "counted once, at approval");
        // A second HTLC under the same hash goes beyond the approval: it is spending.
        let err = policy
            .sign_counterparty_commitment(
                &mut state,
                &id,
                &view(99, vec![htlc(3, 9_000), htlc(3, 9_000)]),
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
        policy.validate_holder_commitment(&mut state, &id, &view(top - 1, vec![]));
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
                .sign_holder_commitment(&state, &id, top)
                .unwrap_err()
                .rule,
            "revoked_holder_commitment"
        );
        policy
            .sign_holder_commitment(&state, &id, top - 1)
            .expect("current one");
    }

    #[test]
    fn a_new_counterparty_commitment_waits_for_the_revocation_of_the_one_before_the_last() {
        let policy = Policy::default();
        let mut state = SignerState::default();
        let mut state = Txn::new(&mut state);
        let id = [1; 32];
        let sign = |state: &mut Txn, number| {
            policy.sign_counterparty_commitment(state, &id, &view(number, vec![]), 0)
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
        policy.check_fee(1_000, "x").expect("at cap");
        assert_eq!(policy.check_fee(1_001, "x").unwrap_err().rule, "max_fee");
    }

    #[test]
    fn our_balance_drops_only_by_new_outgoing_htlcs_and_fee_increases() {
        let at = |to_us_sat, fee_sat, outgoing| CommitmentView {
            to_us_sat,
            fee_sat,
            ..view(1, outgoing)
        };
        let ok = |prev: u64, fee: u64, v: &CommitmentView, added: &[HtlcEntry]| {
            balance_moves_only_by_htlcs_and_fees(prev, fee, v, added).is_ok()
        };
        let h = htlc(1, 40_000_500);
        // A new HTLC of 40,000.5 sat and 300 sat more fee: up to 40,302 sat may leave us.
        assert!(ok(100_000, 1_000, &at(59_698, 1_300, vec![h]), &[h]));
        assert!(!ok(100_000, 1_000, &at(59_697, 1_300, vec![h]), &[h]));
        // Nothing new, same fee: only rounding.
        assert!(ok(100_000, 1_000, &at(99_999, 1_000, vec![]), &[]));
        assert!(!ok(100_000, 1_000, &at(99_000, 1_000, vec![]), &[]));
        // A lower fee allows nothing extra; more for us is always fine.
        assert!(!ok(100_000, 1_000, &at(99_000, 500, vec![]), &[]));
        assert!(ok(100_000, 1_000, &at(150_000, 500, vec![]), &[]));
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
