//! The signer's own memory of what it signed, kept apart from anything the host says.
//!
//! A validating signer is only as good as its state: it refuses an old commitment because it
//! remembers the newest one it signed, so that memory must survive restarts. [`SignerState`] is a
//! plain value the policy reads and updates; a [`StateStore`] keeps it, and the signer saves the
//! updated value before it returns the answer that depends on it. On disk that is
//! [`SqliteStateStore`] (`super::state_db`): one database per state directory, group commit.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::protocol::KeysId;
pub use super::state_db::SqliteStateStore;

/// An HTLC as the policy tracks it: enough to tell one payment's HTLC from another's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HtlcEntry {
    #[serde(with = "hex32")]
    pub payment_hash: [u8; 32],
    pub amount_msat: u64,
    pub cltv_expiry: u32,
}

/// The newest counterparty commitment signed for a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCommitment {
    /// LDK's commitment number: counts down from 2^48 - 1, so newer is smaller.
    pub number: u64,
    #[serde(with = "hex32")]
    pub txid: [u8; 32],
}

/// What the signer remembers about one channel (by its keys id).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    /// The channel's parameters (LDK's encoding, hex) when the signer first signed for it: both
    /// sides' keys, funding outpoint and value. Every later request must name the same, and
    /// holder commitments sent without parameters are checked against these.
    #[serde(default)]
    pub parameters: Option<String>,
    pub last_counterparty: Option<SignedCommitment>,
    /// HTLCs we offered, as they stand in the last signed counterparty commitment: an
    /// outgoing HTLC not in here is new spending.
    pub outgoing: Vec<HtlcEntry>,
    /// Our balance output in the last signed counterparty commitment.
    #[serde(default)]
    pub to_us_sat: Option<u64>,
    /// That commitment's fee (the channel's value less every output).
    #[serde(default)]
    pub fee_sat: Option<u64>,
    /// HTLCs offered to us in the last signed counterparty commitment.
    pub incoming_counterparty: Vec<HtlcEntry>,
    /// Newest (smallest) holder commitment number whose counterparty signature was validated.
    pub last_validated_holder: Option<u64>,
    /// HTLCs offered to us in the last validated holder commitment.
    pub incoming_holder: Vec<HtlcEntry>,
    /// Smallest holder commitment number whose secret was released: that commitment and every
    /// older one is revoked and must never be signed for broadcast.
    pub min_released_secret: Option<u64>,
}

/// An outgoing payment the signer approved, so its HTLCs are not counted a second time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovedPayment {
    pub amount_msat: u64,
    /// How much of `amount_msat` later HTLCs have used up.
    pub used_msat: u64,
    pub approved_at_secs: u64,
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
    /// Outgoing value of the last hour (older entries are pruned).
    pub spent: Vec<Spent>,
    #[serde(with = "keyed_by_hex")]
    pub approved: BTreeMap<[u8; 32], ApprovedPayment>,
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
    /// Replaces the saved state `previous` (what the last successful `load` or save of this
    /// store gave or took) with `next`: a store may write only what changed. Same guarantees
    /// as [`StateStore::save`].
    fn save_change(
        &mut self,
        previous: &SignerState,
        next: &SignerState,
    ) -> Result<(), StateError> {
        let _ = previous;
        self.save(next)
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
        state.spent.push(Spent {
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
}
