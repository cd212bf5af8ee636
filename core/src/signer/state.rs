//! The signer's own memory of what it signed, kept apart from anything the host says.
//!
//! A validating signer is only as good as its state: it refuses an old commitment because it
//! remembers the newest one it signed, so that memory must survive restarts. [`SignerState`] is a
//! plain value the policy reads and updates; a [`StateStore`] keeps it, and the signer saves the
//! updated value before it returns the answer that depends on it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bitcoin::secp256k1::PublicKey;
use serde::{Deserialize, Serialize};

use super::protocol::KeysId;

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
    #[error("signer state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signer state file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// Two signers answering from one state would each approve against half the history.
    #[error("signer state file {path} is in use by another signer")]
    Locked { path: PathBuf },
}

/// Keeps a node's [`SignerState`].
pub trait StateStore: Send {
    /// The saved state, or the default (empty) state if none was ever saved.
    fn load(&mut self) -> Result<SignerState, StateError>;
    /// Replaces the saved state; when this returns `Ok`, the state survives a crash.
    fn save(&mut self, state: &SignerState) -> Result<(), StateError>;
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

/// State in one JSON file per node, replaced atomically (temp file, fsync, rename, fsync of
/// the directory), so a crash leaves either the old or the new state, never a mix. An OS lock
/// on `<node_id>.signer-state.lock` keeps a second signer (process or in-process instance) off
/// the same state; the kernel releases it when the holder dies.
#[derive(Debug)]
pub struct FileStateStore {
    path: PathBuf,
    _lock: File,
}

impl FileStateStore {
    /// The store for `node_id` in `dir` (created if missing): `dir/<node_id>.signer-state.json`.
    /// Refused with [`StateError::Locked`] while another store holds it.
    pub fn in_dir(dir: &Path, node_id: &PublicKey) -> Result<Self, StateError> {
        let io = |path: PathBuf| move |source| StateError::Io { path, source };
        fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        let path = dir.join(format!("{node_id}.signer-state.json"));
        let lock_path = path.with_extension("lock");
        let lock = crate::lock_file::try_exclusive(&lock_path)
            .map_err(io(lock_path))?
            .ok_or_else(|| StateError::Locked { path: path.clone() })?;
        Ok(FileStateStore { path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl StateStore for FileStateStore {
    fn load(&mut self) -> Result<SignerState, StateError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SignerState::default()),
            Err(e) => return Err(self.io(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    fn save(&mut self, state: &SignerState) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(state).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            // The rename is durable only once the directory entry is.
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| self.io(e))
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
mod tests {
    use super::*;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};

    fn sample() -> SignerState {
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

    fn node() -> PublicKey {
        let secret = SecretKey::from_slice(&[5; 32]).expect("valid key");
        PublicKey::from_secret_key(&Secp256k1::new(), &secret)
    }

    #[test]
    fn file_store_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = FileStateStore::in_dir(&dir.path().join("sub"), &node()).expect("store");
        assert_eq!(store.load().expect("empty"), SignerState::default());
        store.save(&sample()).expect("save");
        let path = store.path().to_path_buf();
        drop(store);
        let mut reopened = FileStateStore::in_dir(&dir.path().join("sub"), &node()).expect("open");
        assert_eq!(reopened.load().expect("load"), sample());
        assert!(!path.with_extension("json.tmp").exists());
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.contains(&"07".repeat(32)), "{text}");
    }

    #[test]
    fn a_second_store_on_the_same_state_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = FileStateStore::in_dir(dir.path(), &node()).expect("first");
        let second = FileStateStore::in_dir(dir.path(), &node());
        assert!(
            matches!(second, Err(StateError::Locked { .. })),
            "{second:?}"
        );
        drop(first);
        FileStateStore::in_dir(dir.path(), &node()).expect("free again");
    }

    #[test]
    fn corrupt_file_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = FileStateStore::in_dir(dir.path(), &node()).expect("store");
        fs::write(store.path(), b"{not json").expect("write");
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn memory_store_keeps_the_last_save() {
        let mut store = MemoryStateStore::new();
        assert_eq!(store.load().expect("empty"), SignerState::default());
        store.save(&sample()).expect("save");
        assert_eq!(store.load().expect("load"), sample());
    }
}
