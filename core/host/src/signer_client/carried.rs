//! What the host carries to a node's signer with later requests, per channel: the peer's
//! latest revocation (sent with the next counterparty commitment to sign) and the newest
//! holder commitment the peer signed (sent with the next commitment secret to release).
//!
//! The signer signs a new counterparty commitment only once the peer revoked the one before
//! the last, and releases a secret only once the next holder commitment was validated; it
//! learns both from the host. Sending each with the request that needs it saves a request and
//! a signer state save per commitment dance. Sending once is not enough: the message is lost
//! if the signer is away, and a host that dies right after saving the channel would never send
//! it. So the host repeats the latest with every such request, and saves it in the same
//! transaction as the channel's monitor update and manager that know it (`crate::save` takes
//! [`Carried::unsaved`] after the updates it writes and the manager it encodes, and LDK hands
//! both over before it changes the channel).

use std::collections::HashMap;
use std::sync::Mutex;

use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::OutPoint;
use flotilla_proto::wire;
use flotilla_proto::{HolderCommitment, KeysId, Revocation};
use lightning::util::persist::KVStoreSync;
use prost::Message;

use crate::store::KvWrite;

const NAMESPACE: &str = "signer";

/// Why the saved notes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CarriedError {
    #[error("reading saved signer notes failed: {0}")]
    Store(String),
    #[error("saved signer note {0} is corrupt")]
    Corrupt(String),
}

/// Every channel's latest revocation and holder commitment (one entry of each per channel,
/// replaced as the channel moves on).
pub struct Carried {
    revocations: PerChannel<Revocation>,
    holders: PerChannel<HolderCommitment>,
}

impl Carried {
    /// The notes saved for a node.
    pub fn load(kv: &dyn KVStoreSync) -> Result<Self, CarriedError> {
        Ok(Carried {
            revocations: PerChannel::load(kv)?,
            holders: PerChannel::load(kv)?,
        })
    }

    /// The peer revealed the secret of its commitment `revocation.idx`.
    pub fn record_revocation(&self, keys_id: KeysId, revocation: Revocation) {
        self.revocations.record(keys_id, revocation);
    }

    pub fn revocation(&self, keys_id: &KeysId) -> Option<Revocation> {
        self.revocations.latest(keys_id)
    }

    /// The peer signed our commitment `holder.tx`.
    pub fn record_holder(&self, keys_id: KeysId, holder: HolderCommitment) {
        self.holders.record(keys_id, holder);
    }

    pub fn holder(&self, keys_id: &KeysId) -> Option<HolderCommitment> {
        self.holders.latest(keys_id)
    }

    /// The channel funded at `funding` (its holder commitment spends it): its key set and
    /// the newest holder commitment the peer signed.
    pub fn holder_of_funding(&self, funding: OutPoint) -> Option<(KeysId, HolderCommitment)> {
        self.holders
            .lock()
            .iter()
            .find(|(_, l)| spends(&l.note, funding))
            .map(|(keys_id, l)| (*keys_id, l.note.clone()))
    }

    /// Forgets the notes of the channel funded by `funding` (found by its holder commitment,
    /// which spends it) and returns its key set with the writes that delete them: for a
    /// channel whose monitor is archived, so notes do not pile up with every channel a node
    /// ever had.
    pub fn forget_funding(&self, funding: OutPoint) -> (Vec<KeysId>, Vec<KvWrite>) {
        let gone: Vec<KeysId> = self
            .holders
            .lock()
            .iter()
            .filter(|(_, l)| spends(&l.note, funding))
            .map(|(keys_id, _)| *keys_id)
            .collect();
        let mut writes = Vec::new();
        for keys_id in &gone {
            writes.extend(self.revocations.forget(keys_id));
            writes.extend(self.holders.forget(keys_id));
        }
        (gone, writes)
    }

    /// Writes for the notes recorded since the last call; they count as saved from now on (a
    /// failed save stops the node, whose restart reloads what was saved).
    pub fn unsaved(&self) -> Vec<KvWrite> {
        let mut writes = self.revocations.unsaved();
        writes.extend(self.holders.unsaved());
        writes
    }
}

/// Whether `holder` spends `funding` (a commitment's one input is its channel's funding).
fn spends(holder: &HolderCommitment, funding: OutPoint) -> bool {
    let tx = &holder.tx.trust().built_transaction().transaction;
    tx.input.first().map(|i| i.previous_output) == Some(funding)
}

/// A note kept per channel, under its own key space.
trait Note: Clone + Sized {
    const SUB: &'static str;
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// The commitment number (8 bytes, big-endian), then the secret.
impl Note for Revocation {
    const SUB: &'static str = "revocations";

    fn encode(&self) -> Vec<u8> {
        let mut bytes = self.idx.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.secret);
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (idx, secret) = bytes.split_first_chunk::<8>()?;
        Some(Revocation {
            idx: u64::from_be_bytes(*idx),
            secret: secret.try_into().ok()?,
        })
    }
}

/// As on the wire. Recorded without parameters (LDK gives none): the host names those it has
/// when it sends the note.
impl Note for HolderCommitment {
    const SUB: &'static str = "holder_commitments";

    fn encode(&self) -> Vec<u8> {
        wire::encode_holder(self).encode_to_vec()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let message = wire::proto::HolderCommitment::decode(bytes).ok()?;
        wire::RequestDecoder::default().holder(&message).ok()
    }
}

struct PerChannel<T> {
    latest: Mutex<HashMap<KeysId, Latest<T>>>,
}

struct Latest<T> {
    note: T,
    saved: bool,
}

impl<T: Note> PerChannel<T> {
    fn load(kv: &dyn KVStoreSync) -> Result<Self, CarriedError> {
        let store = |e: lightning::io::Error| CarriedError::Store(e.to_string());
        let mut latest = HashMap::new();
        for name in kv.list(NAMESPACE, T::SUB).map_err(store)? {
            let bytes = kv.read(NAMESPACE, T::SUB, &name).map_err(store)?;
            let corrupt = || CarriedError::Corrupt(format!("{}/{name}", T::SUB));
            let keys_id = <KeysId>::from_hex(&name).map_err(|_| corrupt())?;
            let note = T::decode(&bytes).ok_or_else(corrupt)?;
            latest.insert(keys_id, Latest { note, saved: true });
        }
        Ok(PerChannel {
            latest: Mutex::new(latest),
        })
    }

    fn record(&self, keys_id: KeysId, note: T) {
        self.lock().insert(keys_id, Latest { note, saved: false });
    }

    /// Drops the channel's note; the write deleting its row if there was one.
    fn forget(&self, keys_id: &KeysId) -> Option<KvWrite> {
        self.lock().remove(keys_id)?;
        let name = keys_id.to_lower_hex_string();
        Some(KvWrite::remove(NAMESPACE, T::SUB, &name))
    }

    fn latest(&self, keys_id: &KeysId) -> Option<T> {
        self.lock().get(keys_id).map(|l| l.note.clone())
    }

    fn unsaved(&self) -> Vec<KvWrite> {
        let mut latest = self.lock();
        latest
            .iter_mut()
            .filter(|(_, l)| !l.saved)
            .map(|(keys_id, l)| {
                l.saved = true;
                let name = keys_id.to_lower_hex_string();
                KvWrite::put(NAMESPACE, T::SUB, &name, l.note.encode())
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeysId, Latest<T>>> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn recorded_notes_are_saved_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("host.db")).expect("store");
        let kv = store.kv("node");
        let carried = Carried::load(&kv).expect("empty");
        assert_eq!(carried.revocation(&[1; 32]), None);
        assert!(carried.holder(&[1; 32]).is_none());
        let first = Revocation {
            idx: 7,
            secret: [3; 32],
        };
        let second = Revocation {
            idx: 6,
            secret: [4; 32],
        };
        carried.record_revocation([1; 32], first);
        carried.record_revocation([1; 32], second);
        carried.record_revocation([2; 32], first);
        let holder = HolderCommitment {
            params: None,
            tx: flotilla_proto::samples::holder_commitment(),
            outbound_preimages: vec![lightning::types::payment::PaymentPreimage([9; 32])],
        };
        carried.record_holder([1; 32], holder.clone());
        let writes = carried.unsaved();
        assert_eq!(writes.len(), 3, "one row per channel and kind, the latest");
        assert!(carried.unsaved().is_empty(), "saved once");
        kv.write_all(writes).expect("write");

        let reloaded = Carried::load(&kv).expect("load");
        assert_eq!(reloaded.revocation(&[1; 32]), Some(second));
        assert_eq!(reloaded.revocation(&[2; 32]), Some(first));
        let held = reloaded
            .holder(&[1; 32])
            .expect("holder commitment reloaded");
        assert_eq!(held.tx, holder.tx);
        assert_eq!(held.outbound_preimages, holder.outbound_preimages);
        assert!(reloaded.unsaved().is_empty(), "loaded ones are saved");
        reloaded.record_revocation([2; 32], second);
        assert_eq!(reloaded.unsaved().len(), 1);

        // Archiving the channel funded where its holder commitment spends takes both of its
        // notes, and only its.
        let funding = holder.tx.trust().built_transaction().transaction.input[0].previous_output;
        let elsewhere = OutPoint {
            vout: funding.vout + 1,
            ..funding
        };
        let (none, no_writes) = reloaded.forget_funding(elsewhere);
        assert!(none.is_empty() && no_writes.is_empty());
        let (gone, writes) = reloaded.forget_funding(funding);
        assert_eq!(gone, vec![[1; 32]]);
        assert_eq!(writes.len(), 2, "its revocation and its holder commitment");
        kv.write_all(writes).expect("write");
        let reloaded = Carried::load(&kv).expect("load");
        assert_eq!(reloaded.revocation(&[1; 32]), None);
        assert!(reloaded.holder(&[1; 32]).is_none());
        assert_eq!(
            reloaded.revocation(&[2; 32]),
            Some(first),
            "another channel's stays"
        );
        let (none, no_writes) = reloaded.forget_funding(funding);
        assert!(none.is_empty() && no_writes.is_empty());

        kv.write(
            NAMESPACE,
            "revocations",
            &[5u8; 32].to_lower_hex_string(),
            vec![1, 2],
        )
        .expect("write");
        assert!(matches!(Carried::load(&kv), Err(CarriedError::Corrupt(_))));
    }
}
