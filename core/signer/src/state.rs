//! The signer's own memory of what it signed, kept apart from anything the host says.
//!
//! A validating signer is only as good as its state: it refuses an old commitment because it
//! remembers the newest one it signed, so that memory must survive restarts. [`SignerState`] is a
//! plain value the policy reads; the policy changes it only through a [`Txn`], which keeps what
//! each change replaced, so a refused request is undone and a save writes only the rows the
//! request touched (a node's state grows with its channels and its payments of the last day,
//! a request's change does not). A [`StateStore`] keeps the state, and the signer saves the
//! change before it returns the answer that depends on it. On disk that is
//! [`SqliteStateStore`] (`crate::state_db`): one database per state directory, group commit.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Deref;
use std::path::PathBuf;

use bitcoin::secp256k1::PublicKey;
use flotilla_proto::KeysId;
use serde::{Deserialize, Serialize};

/// An HTLC as the policy tracks it: enough to tell one payment's HTLC from another's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HtlcEntry {
    #[serde(with = "hex32")]
    pub payment_hash: [u8; 32],
    pub amount_msat: u64,
    pub cltv_expiry: u32,
}

/// A counterparty commitment the signer signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCommitment {
    /// LDK's commitment number: counts down from 2^48 - 1, so newer is smaller.
    pub number: u64,
    #[serde(with = "hex32")]
    pub txid: [u8; 32],
    /// The peer's per-commitment point in it (none in state saved before points were kept).
    #[serde(default)]
    pub point: Option<PublicKey>,
}

/// A holder commitment the signer validated: the peer's signatures checked, its balance too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatedHolder {
    pub number: u64,
    #[serde(with = "hex32")]
    pub txid: [u8; 32],
    /// Our balance output in it (zero when trimmed).
    pub to_us_sat: u64,
    /// The channel's value less every output but the anchors.
    pub fee_sat: u64,
    /// The part of `fee_sat` that is dust (absent in state saved before it was kept).
    #[serde(default)]
    pub dust_sat: u64,
    /// HTLCs we offered in it.
    pub outgoing: Vec<HtlcEntry>,
}

/// A channel open the signer approved for a key set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelOpen {
    pub peer: PublicKey,
    pub value_sat: u64,
    /// What we give the peer at the start (ours to give only when we fund).
    pub push_msat: u64,
    /// Funded by us from the wallet (else by the peer).
    pub outbound: bool,
    /// The wallet transaction the signer signed to fund it (outbound only): the channel's
    /// funding outpoint must be in it.
    #[serde(default, with = "hex32_opt")]
    pub funding_txid: Option<[u8; 32]>,
}

/// What the signer remembers about one channel (by its keys id).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    /// The approved open: the signer signs nothing for a channel without one.
    #[serde(default)]
    pub open: Option<ChannelOpen>,
    /// The channel's parameters (LDK's encoding, hex) when the signer first signed for it: both
    /// sides' keys, funding outpoint and value. Every later request must name the same, and
    /// holder commitments sent without parameters are checked against these.
    #[serde(default)]
    pub parameters: Option<String>,
    /// The newest counterparty commitment signed.
    pub last_counterparty: Option<SignedCommitment>,
    /// The one signed before it, while the peer has not revoked it: no newer one is signed
    /// until it is.
    #[serde(default)]
    pub unrevoked_counterparty: Option<SignedCommitment>,
    /// HTLCs we offered, as they stand in the last signed counterparty commitment: an
    /// outgoing HTLC not in here is new spending.
    pub outgoing: Vec<HtlcEntry>,
    /// Our balance output in the last signed counterparty commitment.
    #[serde(default)]
    pub to_us_sat: Option<u64>,
    /// That commitment's fee (the channel's value less every output).
    #[serde(default)]
    pub fee_sat: Option<u64>,
    /// The part of that fee that is dust (HTLCs and balances too small for an output).
    #[serde(default)]
    pub dust_sat: Option<u64>,
    /// Value of ours the peer's commitments moved into dust and the limits counted, not yet
    /// seen in our own commitment (where it may then appear).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dust_credit_sat: u64,
    /// HTLCs offered to us in the last signed counterparty commitment.
    pub incoming_counterparty: Vec<HtlcEntry>,
    /// Newest (smallest) holder commitment number whose counterparty signature was validated.
    pub last_validated_holder: Option<u64>,
    /// HTLCs offered to us in the last validated holder commitment.
    pub incoming_holder: Vec<HtlcEntry>,
    /// The newest validated holder commitment as the signer keeps it: what it signs for
    /// broadcast, and the baseline its balance rule checks the next one against (absent in
    /// state saved before it was kept).
    #[serde(default)]
    pub validated_holder: Option<ValidatedHolder>,
    /// Smallest holder commitment number whose secret was released: that commitment and every
    /// older one is revoked and must never be signed for broadcast.
    pub min_released_secret: Option<u64>,
    /// Oldest holder commitment signed for broadcast: no secret of it or of a newer one is
    /// released (the host holds it signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_for_broadcast: Option<u64>,
    /// The host archived the channel: everything above was dropped, and nothing is signed for
    /// the key set again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An outgoing payment the signer approved, so its HTLCs are not counted a second time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovedPayment {
    pub amount_msat: u64,
    /// How much of `amount_msat` later HTLCs have used up.
    pub used_msat: u64,
    pub approved_at_secs: u64,
}

impl ApprovedPayment {
    /// Within its lifetime of `ttl_secs` at `now`.
    pub fn alive(&self, now: u64, ttl_secs: u64) -> bool {
        self.approved_at_secs.saturating_add(ttl_secs) > now
    }
}

/// One amount counted against the velocity limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    pub at_secs: u64,
    pub amount_msat: u64,
}

/// Everything the signer remembers for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerState {
    #[serde(with = "keyed_by_hex")]
    pub channels: BTreeMap<KeysId, ChannelState>,
    /// Outgoing value of the last hour, oldest first (older entries are pruned).
    pub spent: VecDeque<Spent>,
    #[serde(with = "keyed_by_hex")]
    pub approved: BTreeMap<[u8; 32], ApprovedPayment>,
    /// Grows by one with every saved change. The host remembers the highest it has seen and
    /// refuses a signer below it: an older copy of this state (a restored backup, a second
    /// device with the same seed) would sign what the newest state has revoked.
    #[serde(default)]
    pub version: u64,
}

/// Why the state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("signer state {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signer state {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// Two signers answering from one state would each approve against half the history.
    #[error("signer state {} is in use by another signer", path.display())]
    Locked { path: PathBuf },
}

/// Keeps a node's [`SignerState`].
pub trait StateStore: Send {
    /// The saved state, or the default (empty) state if none was ever saved.
    fn load(&mut self) -> Result<SignerState, StateError>;
    /// Replaces the saved state; when this returns `Ok`, the state survives a crash, and a
    /// crash during the save leaves the old state or the new one, never a mix.
    fn save(&mut self, state: &SignerState) -> Result<(), StateError>;
    /// Saves `next`, which is the state of the last successful `load` or save of this store
    /// with `change` applied: a store may write only the change. Same guarantees as
    /// [`StateStore::save`].
    fn save_change(&mut self, next: &SignerState, change: &StateChange) -> Result<(), StateError> {
        let _ = change;
        self.save(next)
    }
    /// [`StateStore::save_change`] without waiting: `saved` is told the outcome once the
    /// change is durable or is not. Changes become durable in the order they are submitted.
    fn submit_change(&mut self, next: &SignerState, change: &StateChange, saved: SaveDone) {
        saved(self.save_change(next, change));
    }
}

/// Told whether a submitted change was saved; called on whatever thread saved it.
pub type SaveDone = Box<dyn FnOnce(Result<(), StateError>) + Send>;

/// What one [`Txn`] changed: the rows a store writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateChange {
    /// Channels whose state changed, with the new state (`None`: removed).
    pub channels: Vec<(KeysId, Option<ChannelState>)>,
    /// Approvals that changed, with the new value (`None`: removed).
    pub approved: Vec<([u8; 32], Option<ApprovedPayment>)>,
    /// Velocity entries dropped from the front of [`SignerState::spent`].
    pub spent_dropped: usize,
    /// Velocity entries added at its back, in order.
    pub spent_added: Vec<Spent>,
    /// The state's version after the change ([`SignerState::version`]).
    pub version: u64,
}

impl StateChange {
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
            && self.approved.is_empty()
            && self.spent_dropped == 0
            && self.spent_added.is_empty()
    }

    /// Applies the change to `state` (a copy kept elsewhere, as a store's).
    pub fn apply_to(&self, state: &mut SignerState) {
        for (id, channel) in &self.channels {
            set(&mut state.channels, *id, channel.clone());
        }
        for (hash, approval) in &self.approved {
            set(&mut state.approved, *hash, *approval);
        }
        let dropped = self.spent_dropped.min(state.spent.len());
        state.spent.drain(..dropped);
        state.spent.extend(self.spent_added.iter().copied());
        state.version = state.version.max(self.version);
    }
}

/// One request's changes to a node's state, made in place. Reading goes through `Deref`;
/// every change goes through a method that first keeps the value it replaces, so dropping the
/// transaction (a refusal, an error, a panic) restores the state, and [`Txn::change`] names
/// exactly what changed. [`Txn::keep`] makes the changes stay.
pub struct Txn<'a> {
    state: &'a mut SignerState,
    channels: Before<ChannelState>,
    approved: Before<ApprovedPayment>,
    /// Velocity entries pruned from the front, oldest first.
    spent_dropped: Vec<Spent>,
    /// Velocity entries pushed at the back.
    spent_pushed: usize,
    /// The version before [`Txn::change`] raised it.
    version_before: Option<u64>,
    kept: bool,
}

impl Deref for Txn<'_> {
    type Target = SignerState;

    fn deref(&self) -> &SignerState {
        self.state
    }
}

impl<'a> Txn<'a> {
    pub fn new(state: &'a mut SignerState) -> Self {
        Txn {
            state,
            channels: Before::default(),
            approved: Before::default(),
            spent_dropped: Vec::new(),
            spent_pushed: 0,
            version_before: None,
            kept: false,
        }
    }

    /// A channel's state to change, created empty if the signer knew nothing of it.
    pub fn channel_mut(&mut self, keys_id: &KeysId) -> &mut ChannelState {
        self.channels.note(&self.state.channels, keys_id);
        self.state.channels.entry(*keys_id).or_default()
    }

    /// An approval to change, if there is one.
    pub fn approval_mut(&mut self, hash: &[u8; 32]) -> Option<&mut ApprovedPayment> {
        self.approved.note(&self.state.approved, hash);
        self.state.approved.get_mut(hash)
    }

    /// An approval to change, inserted as `new` if there is none.
    pub fn approval_or_insert(
        &mut self,
        hash: [u8; 32],
        new: ApprovedPayment,
    ) -> &mut ApprovedPayment {
        self.approved.note(&self.state.approved, &hash);
        self.state.approved.entry(hash).or_insert(new)
    }

    /// Removes the approvals `expired` says are.
    pub fn remove_approvals(&mut self, expired: impl Fn(&ApprovedPayment) -> bool) {
        let gone: Vec<[u8; 32]> = self
            .state
            .approved
            .iter()
            .filter(|(_, a)| expired(a))
            .map(|(hash, _)| *hash)
            .collect();
        for hash in gone {
            self.approved.note(&self.state.approved, &hash);
            self.state.approved.remove(&hash);
        }
    }

    pub fn push_spent(&mut self, spent: Spent) {
        self.state.spent.push_back(spent);
        self.spent_pushed += 1;
    }

    /// Drops the oldest velocity entries while `expired` says they are.
    pub fn drop_spent_while(&mut self, expired: impl Fn(&Spent) -> bool) {
        while let Some(first) = self.state.spent.front() {
            if !expired(first) {
                break;
            }
            let pushed_here = self.state.spent.len() == self.spent_pushed;
            let Some(first) = self.state.spent.pop_front() else {
                break;
            };
            if pushed_here {
                // Pushed by this transaction: never saved, nothing to undo.
                self.spent_pushed -= 1;
            } else {
                self.spent_dropped.push(first);
            }
        }
    }

    /// What the transaction changed (values equal to what they replaced are left out), under
    /// the state's next version if anything did.
    pub fn change(&mut self) -> StateChange {
        let mut change = StateChange {
            channels: self.channels.changes(&self.state.channels),
            approved: self.approved.changes(&self.state.approved),
            spent_dropped: self.spent_dropped.len(),
            spent_added: self
                .state
                .spent
                .iter()
                .skip(self.state.spent.len() - self.spent_pushed)
                .copied()
                .collect(),
            version: self.state.version,
        };
        if !change.is_empty() {
            if self.version_before.is_none() {
                self.version_before = Some(self.state.version);
                self.state.version += 1;
            }
            change.version = self.state.version;
        }
        change
    }

    /// Keeps the changes.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Txn<'_> {
    /// Undoes every change unless kept.
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Some(version) = self.version_before {
            self.state.version = version;
        }
        std::mem::take(&mut self.channels).restore(&mut self.state.channels);
        std::mem::take(&mut self.approved).restore(&mut self.state.approved);
        let kept_len = self.state.spent.len() - self.spent_pushed;
        self.state.spent.truncate(kept_len);
        for spent in std::mem::take(&mut self.spent_dropped).into_iter().rev() {
            self.state.spent.push_front(spent);
        }
    }
}

/// State that lives as long as the process (tests, throwaway signers).
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    saved: Option<SignerState>,
}

impl MemoryStateStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StateStore for MemoryStateStore {
    fn load(&mut self) -> Result<SignerState, StateError> {
        Ok(self.saved.clone().unwrap_or_default())
    }

    fn save(&mut self, state: &SignerState) -> Result<(), StateError> {
        self.saved = Some(state.clone());
        Ok(())
    }

    fn save_change(&mut self, next: &SignerState, change: &StateChange) -> Result<(), StateError> {
        match &mut self.saved {
            Some(saved) => change.apply_to(saved),
            None => self.saved = Some(next.clone()),
        }
        Ok(())
    }
}

/// Sets `key` to `value`, or removes it for `None`.
fn set<V>(map: &mut BTreeMap<[u8; 32], V>, key: [u8; 32], value: Option<V>) {
    match value {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    };
}

/// The entries of one map a [`Txn`] touched, as they were before its first change of each.
struct Before<V>(BTreeMap<[u8; 32], Option<V>>);

impl<V> Default for Before<V> {
    fn default() -> Self {
        Before(BTreeMap::new())
    }
}

impl<V: Clone + PartialEq> Before<V> {
    /// Keeps `key`'s value in `map` unless kept already: call before changing it.
    fn note(&mut self, map: &BTreeMap<[u8; 32], V>, key: &[u8; 32]) {
        if !self.0.contains_key(key) {
            self.0.insert(*key, map.get(key).cloned());
        }
    }

    /// The touched entries whose value in `map` now differs, with that value.
    fn changes(&self, map: &BTreeMap<[u8; 32], V>) -> Vec<([u8; 32], Option<V>)> {
        self.0
            .iter()
            .filter(|(key, before)| map.get(*key) != before.as_ref())
            .map(|(key, _)| (*key, map.get(key).cloned()))
            .collect()
    }

    /// Puts every touched entry of `map` back.
    fn restore(self, map: &mut BTreeMap<[u8; 32], V>) {
        for (key, before) in self.0 {
            set(map, key, before);
        }
    }
}

/// 32-byte values as hex strings, so the file stays readable.
mod hex32 {
    use bitcoin::hex::{DisplayHex, FromHex};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_lower_hex_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        <[u8; 32]>::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

mod hex32_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::hex32::serialize(value, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        #[derive(Deserialize)]
        struct Hex(#[serde(with = "super::hex32")] [u8; 32]);
        Ok(Option::<Hex>::deserialize(d)?.map(|Hex(value)| value))
    }
}

/// Maps keyed by 32-byte values, as JSON objects keyed by hex (JSON keys must be strings).
mod keyed_by_hex {
    use std::collections::BTreeMap;

    use bitcoin::hex::{DisplayHex, FromHex};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, V: Serialize>(
        map: &BTreeMap<[u8; 32], V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k.to_lower_hex_string(), v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        d: D,
    ) -> Result<BTreeMap<[u8; 32], V>, D::Error> {
        let raw = BTreeMap::<String, V>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                <[u8; 32]>::from_hex(&k)
                    .map(|k| (k, v))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> SignerState {
        let mut state = SignerState::default();
        state.channels.insert(
            [7; 32],
            ChannelState {
                last_counterparty: Some(SignedCommitment {
                    number: (1 << 48) - 3,
                    txid: [9; 32],
                    point: None,
                }),
                outgoing: vec![HtlcEntry {
                    payment_hash: [1; 32],
                    amount_msat: 5_000,
                    cltv_expiry: 800,
                }],
                last_validated_holder: Some((1 << 48) - 2),
                ..Default::default()
            },
        );
        state.spent.push_back(Spent {
            at_secs: 10,
            amount_msat: 5_000,
        });
        state.approved.insert(
            [2; 32],
            ApprovedPayment {
                amount_msat: 1,
                used_msat: 0,
                approved_at_secs: 3,
            },
        );
        state
    }

    #[test]
    fn memory_store_keeps_the_last_save() {
        let mut store = MemoryStateStore::new();
        assert_eq!(store.load().expect("empty"), SignerState::default());
        store.save(&sample()).expect("save");
        assert_eq!(store.load().expect("load"), sample());
    }

    /// Touches every kind of entry: a channel changed and one created, an approval changed,
    /// one removed and one added, the velocity entry dropped and two added.
    fn touch_everything(txn: &mut Txn) {
        txn.channel_mut(&[7; 32]).last_validated_holder = Some(5);
        txn.channel_mut(&[8; 32]).min_released_secret = Some(9);
        txn.channel_mut(&[7; 32]).outgoing.clear();
        txn.remove_approvals(|a| a.approved_at_secs == 3);
        txn.approval_or_insert(
            [4; 32],
            ApprovedPayment {
                amount_msat: 7,
                used_msat: 0,
                approved_at_secs: 20,
            },
        );
        txn.drop_spent_while(|s| s.at_secs < 15);
        // One pushed here and dropped again is no change.
        txn.push_spent(Spent {
            at_secs: 1,
            amount_msat: 1,
        });
        txn.drop_spent_while(|s| s.at_secs < 2);
        for at_secs in [20, 21] {
            txn.push_spent(Spent {
                at_secs,
                amount_msat: 1,
            });
        }
    }

    /// Does a request cost the same however much the node remembers? CPU per change of one
    /// channel with `n` approvals and velocity entries kept: through a [`Txn`], against
    /// copying, changing and comparing the whole state (how requests ran before). Run alone:
    /// `cargo test --release -p flotilla-signer --lib -- --ignored --exact
    /// state::tests::txn_against_whole_copy --nocapture`.
    #[test]
    #[ignore = "measurement, prints CPU per change"]
    fn txn_against_whole_copy() {
        use cpu_time::ProcessTime;
        const CHANGES: u32 = 2_000;
        for n in [10u64, 3_000, 30_000] {
            let mut state = sample();
            for i in 0..n {
                let mut hash = [0xee; 32];
                hash[..8].copy_from_slice(&i.to_be_bytes());
                let approval = ApprovedPayment {
                    amount_msat: i,
                    used_msat: i,
                    approved_at_secs: i,
                };
                state.approved.insert(hash, approval);
                state.spent.push_back(Spent {
                    at_secs: i,
                    amount_msat: i,
                });
            }
            let start = ProcessTime::now();
            for g in 0..CHANGES {
                let mut txn = Txn::new(&mut state);
                txn.channel_mut(&[7; 32]).last_validated_holder = Some(g.into());
                assert_eq!(txn.change().channels.len(), 1);
                txn.keep();
            }
            let txn = start.elapsed() / CHANGES;
            let start = ProcessTime::now();
            for g in CHANGES..2 * CHANGES {
                let mut next = state.clone();
                if let Some(c) = next.channels.get_mut(&[7; 32]) {
                    c.last_validated_holder = Some(g.into());
                }
                assert!(next != state);
                state = next;
            }
            let copy = start.elapsed() / CHANGES;
            println!("n={n}: txn {txn:?} per change, whole copy {copy:?} per change");
        }
    }

    #[test]
    fn a_dropped_transaction_leaves_the_state_as_it_was() {
        let mut state = sample();
        touch_everything(&mut Txn::new(&mut state));
        assert_eq!(state, sample());
        // Its version too, once its change was taken.
        let mut txn = Txn::new(&mut state);
        touch_everything(&mut txn);
        assert_eq!(txn.change().version, sample().version + 1);
        drop(txn);
        assert_eq!(state, sample());
    }

    #[test]
    fn a_kept_transaction_names_exactly_what_changed() {
        let mut state = sample();
        let mut txn = Txn::new(&mut state);
        touch_everything(&mut txn);
        let change = txn.change();
        txn.keep();
        assert_eq!(change.channels.len(), 2);
        assert_eq!(change.approved.len(), 2);
        assert_eq!(change.spent_dropped, 1);
        assert_eq!(change.spent_added.len(), 2);
        assert_eq!(state.spent.len(), 2);
        assert_eq!(
            (change.version, state.version),
            (1, 1),
            "one change, one version"
        );
        let mut copy = sample();
        change.apply_to(&mut copy);
        assert_eq!(copy, state);
        // Touched, or changed and changed back: no change.
        let mut txn = Txn::new(&mut state);
        txn.channel_mut(&[8; 32]);
        txn.approval_mut(&[4; 32]);
        txn.approval_mut(&[5; 32]);
        let before = txn.channel_mut(&[7; 32]).last_validated_holder;
        txn.channel_mut(&[7; 32]).last_validated_holder = Some(1);
        txn.channel_mut(&[7; 32]).last_validated_holder = before;
        assert!(txn.change().is_empty(), "{:?}", txn.change());
        drop(txn);
        assert_eq!(state.version, 1, "no change, no new version");
    }
}
