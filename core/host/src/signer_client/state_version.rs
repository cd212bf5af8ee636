//! The highest version of a node's signer state the host has seen, saved with the node.
//!
//! The hub refuses a signer whose state is older than one it has seen (`hub.rs`); it learns
//! versions in memory. Saved here, the floor survives a host restart: loading it raises the
//! version the hub requires before the node runs. It is saved with the node's next save (and
//! when the signer detaches), so a host that crashes may forget the versions of its last
//! moments, never those of a state it saved channel data for after that.

use std::sync::atomic::{AtomicU64, Ordering};

use lightning::util::persist::KVStoreSync;

use super::link::SignerLink;
use crate::store::{read_optional, KvStore, KvWrite};

const NAMESPACE: &str = "signer";
const KEY: &str = "state_version";

#[derive(Debug, thiserror::Error)]
pub enum StateVersionError {
    #[error("reading the saved signer state version failed: {0}")]
    Store(String),
    #[error("the saved signer state version is corrupt")]
    Corrupt,
}

/// One node's signer state version: what its link has seen, and what was saved of it.
pub struct SeenStateVersion {
    link: SignerLink,
    saved: AtomicU64,
}

impl SeenStateVersion {
    /// Reads the saved version and makes the link require it of any signer.
    pub fn load(kv: &dyn KVStoreSync, link: SignerLink) -> Result<Self, StateVersionError> {
        let saved = match read_optional(kv, NAMESPACE, "", KEY)
            .map_err(|e| StateVersionError::Store(e.to_string()))?
        {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StateVersionError::Corrupt)?,
            ),
            None => 0,
        };
        link.require_state_version(saved);
        Ok(SeenStateVersion {
            link,
            saved: AtomicU64::new(saved),
        })
    }

    /// The write that saves a version seen since the last call, if any, for a save of the
    /// node's channels; it counts as saved from now on (a failed save halts the node, whose
    /// restart reads what was saved).
    pub fn unsaved(&self) -> Option<KvWrite> {
        let seen = self.link.state_version();
        let before = self.saved.fetch_max(seen, Ordering::SeqCst);
        (seen > before).then(|| write(seen))
    }

    /// Saves a version seen since the last save on its own (the signer left, and no channel
    /// save may follow); counted as saved only once written, so a failure is tried again.
    pub fn save_now(&self, kv: &KvStore) -> Result<(), std::io::Error> {
        let seen = self.link.state_version();
        if seen <= self.saved.load(Ordering::SeqCst) {
            return Ok(());
        }
        kv.write_all(vec![write(seen)])?;
        self.saved.fetch_max(seen, Ordering::SeqCst);
        Ok(())
    }
}

fn write(version: u64) -> KvWrite {
    KvWrite::put(NAMESPACE, "", KEY, version.to_be_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
    use flotilla_proto::{Handover, Request, SignerError};
    use tokio::sync::watch;

    use super::*;
    use crate::signer_client::link::{Reply, Transport};
    use crate::store::Store;

    /// A transport that only keeps the version floor, as the hub's slot does.
    #[derive(Default)]
    struct Floor(AtomicU64);

    impl Transport for Floor {
        fn send(&self, _: Request, reply: Reply) {
            reply(Err(SignerError::Unavailable))
        }
        fn attached(&self) -> watch::Receiver<bool> {
            watch::channel(false).1
        }
        fn handover(&self) -> Option<Handover> {
            None
        }
        fn state_version(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
        fn require_state_version(&self, version: u64) {
            self.0.fetch_max(version, Ordering::SeqCst);
        }
    }

    fn link(floor: &Arc<Floor>) -> SignerLink {
        let secret = SecretKey::from_slice(&[3; 32]).expect("key");
        let node = PublicKey::from_secret_key(&Secp256k1::new(), &secret);
        SignerLink::new(node, floor.clone())
    }

    #[test]
    fn a_seen_version_is_saved_once_and_required_after_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("host.db")).expect("store");
        let kv = store.kv("node");
        let floor = Arc::new(Floor::default());
        let seen = SeenStateVersion::load(&kv, link(&floor)).expect("nothing saved");
        assert_eq!(floor.state_version(), 0);
        assert!(seen.unsaved().is_none(), "nothing seen, nothing to save");
        floor.0.store(7, Ordering::SeqCst);
        let write = seen.unsaved().expect("version 7 to save");
        assert!(seen.unsaved().is_none(), "saved once");
        kv.write_all(vec![write]).expect("write");

        let restarted = Arc::new(Floor::default());
        let again = SeenStateVersion::load(&kv, link(&restarted)).expect("load");
        assert_eq!(
            restarted.state_version(),
            7,
            "the saved version is required again"
        );
        // Saved on its own (the signer left): written at once, then nothing left to save.
        restarted.0.store(9, Ordering::SeqCst);
        again.save_now(&kv).expect("save now");
        assert!(again.unsaved().is_none());
        let floor = Arc::new(Floor::default());
        SeenStateVersion::load(&kv, link(&floor)).expect("load");
        assert_eq!(floor.state_version(), 9);

        kv.write_all(vec![KvWrite::put(NAMESPACE, "", KEY, vec![1, 2])])
            .expect("write");
        assert!(matches!(
            SeenStateVersion::load(&kv, link(&restarted)),
            Err(StateVersionError::Corrupt)
        ));
    }
}
