//! The peer's latest revocation of each channel, as the host took it.
//!
//! The signer signs a new counterparty commitment only once the peer revoked the one before
//! the last, and learns revocations from the host. Telling it once is not enough: the message
//! is lost if the signer is away, and a host that dies right after saving the revocation
//! would never send it. So the host repeats the latest revocation with every counterparty
//! commitment it asks for, and saves it in the same transaction as the channel's monitor
//! update that records it (`host::persist::save` takes [`Revocations::unsaved`] after the
//! updates it writes, and LDK hands the revocation over before it makes that update).

use std::collections::HashMap;
use std::sync::Mutex;

use bitcoin::hex::{DisplayHex, FromHex};
use lightning::util::persist::KVStoreSync;

use super::protocol::{KeysId, Revocation};
use crate::store::KvWrite;

const NAMESPACE: &str = "signer";
const SUB: &str = "revocations";

/// Every channel's latest revocation (one entry per channel, replaced as the peer revokes).
#[derive(Default)]
pub struct Revocations {
    latest: Mutex<HashMap<KeysId, Latest>>,
}

struct Latest {
    revocation: Revocation,
    saved: bool,
}

/// Why the saved revocations could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RevocationsError {
    #[error("reading saved revocations failed: {0}")]
    Store(String),
    #[error("saved revocation {0} is corrupt")]
    Corrupt(String),
}

impl Revocations {
    /// The revocations saved for a node.
    pub fn load(kv: &dyn KVStoreSync) -> Result<Self, RevocationsError> {
        let store = |e: lightning::io::Error| RevocationsError::Store(e.to_string());
        let mut latest = HashMap::new();
        for name in kv.list(NAMESPACE, SUB).map_err(store)? {
            let bytes = kv.read(NAMESPACE, SUB, &name).map_err(store)?;
            let keys_id =
                <KeysId>::from_hex(&name).map_err(|_| RevocationsError::Corrupt(name.clone()))?;
            let revocation = decode(&bytes).ok_or(RevocationsError::Corrupt(name))?;
            let saved = true;
            latest.insert(keys_id, Latest { revocation, saved });
        }
        Ok(Revocations {
            latest: Mutex::new(latest),
        })
    }

    /// The peer revealed the secret of its commitment `revocation.idx`.
    pub fn record(&self, keys_id: KeysId, revocation: Revocation) {
        let saved = false;
        self.lock().insert(keys_id, Latest { revocation, saved });
    }

    pub fn latest(&self, keys_id: &KeysId) -> Option<Revocation> {
        self.lock().get(keys_id).map(|l| l.revocation)
    }

    /// Writes for the revocations recorded since the last call; they count as saved from now
    /// on (a failed save stops the node, whose restart reloads what was saved).
    pub fn unsaved(&self) -> Vec<KvWrite> {
        let mut latest = self.lock();
        latest
            .iter_mut()
            .filter(|(_, l)| !l.saved)
            .map(|(keys_id, l)| {
                l.saved = true;
                let name = keys_id.to_lower_hex_string();
                KvWrite::put(NAMESPACE, SUB, &name, encode(&l.revocation))
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeysId, Latest>> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The commitment number (8 bytes, big-endian), then the secret.
fn encode(revocation: &Revocation) -> Vec<u8> {
    let mut bytes = revocation.idx.to_be_bytes().to_vec();
    bytes.extend_from_slice(&revocation.secret);
    bytes
}

fn decode(bytes: &[u8]) -> Option<Revocation> {
    let (idx, secret) = bytes.split_first_chunk::<8>()?;
    Some(Revocation {
        idx: u64::from_be_bytes(*idx),
        secret: secret.try_into().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn recorded_revocations_are_saved_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("host.db")).expect("store");
        let kv = store.kv("node");
        let revocations = Revocations::load(&kv).expect("empty");
        assert_eq!(revocations.latest(&[1; 32]), None);
        let first = Revocation {
            idx: 7,
            secret: [3; 32],
        };
        let second = Revocation {
            idx: 6,
            secret: [4; 32],
        };
        revocations.record([1; 32], first);
        revocations.record([1; 32], second);
        revocations.record([2; 32], first);
        let writes = revocations.unsaved();
        assert_eq!(writes.len(), 2, "one row per channel, the latest");
        assert!(revocations.unsaved().is_empty(), "saved once");
        kv.write_all(writes).expect("write");

        let reloaded = Revocations::load(&kv).expect("load");
        assert_eq!(reloaded.latest(&[1; 32]), Some(second));
        assert_eq!(reloaded.latest(&[2; 32]), Some(first));
        assert!(reloaded.unsaved().is_empty(), "loaded ones are saved");
        reloaded.record([2; 32], second);
        assert_eq!(reloaded.unsaved().len(), 1);

        kv.write(NAMESPACE, SUB, &[5u8; 32].to_lower_hex_string(), vec![1, 2])
            .expect("write");
        assert!(matches!(
            Revocations::load(&kv),
            Err(RevocationsError::Corrupt(_))
        ));
    }
}
