//! Seed handling and node id derivation.
//!
//! A node's identity is fixed by its 32-byte seed: LDK's `KeysManager` takes the BIP32 master key
//! of the seed and uses the private key at `m/0'` as the node secret. The signer (customer side)
//! and the host must agree on that derivation without the host ever seeing the seed, so it is
//! reproduced here from public BIP32 rules and checked against LDK in the tests.

use std::fs;
use std::path::{Path, PathBuf};

use bitcoin::bip32::{ChildNumber, Xpriv};
use bitcoin::hex::FromHex;
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use bitcoin::NetworkKind;

/// Length of a node seed in bytes, as LDK's `KeysManager` requires.
pub const SEED_LEN: usize = 32;

/// Seed files larger than this are rejected before being read whole (a 64-hex-character seed with
/// a newline and some whitespace fits easily).
const MAX_SEED_FILE_LEN: u64 = 1024;

/// Why a seed, or a file meant to hold one, was refused.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The seed is not exactly [`SEED_LEN`] bytes long.
    #[error("seed must be exactly {SEED_LEN} bytes, got {0}")]
    WrongLength(usize),
    /// BIP32 refused the seed (its master or `m/0'` key is out of the curve's range); the chance
    /// of this for a random seed is about 2^-127.
    #[error("seed yields an invalid BIP32 key: {0}")]
    Derivation(String),
    /// The seed file could not be read.
    #[error("cannot read seed file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The seed file holds neither 32 raw bytes nor 64 hexadecimal characters.
    #[error(
        "seed file {} must hold {SEED_LEN} raw bytes or {} hex characters, found {len} bytes \
         that are neither",
        path.display(),
        SEED_LEN * 2
    )]
    BadFileContents { path: PathBuf, len: u64 },
}

/// Checks that `seed` is exactly [`SEED_LEN`] bytes and returns it as an array.
pub fn seed_from_slice(seed: &[u8]) -> Result<[u8; SEED_LEN], SeedError> {
    <[u8; SEED_LEN]>::try_from(seed).map_err(|_| SeedError::WrongLength(seed.len()))
}

/// The node's public key for `seed`, exactly as LDK's `KeysManager` derives it.
pub fn node_public_key(seed: &[u8; SEED_LEN]) -> Result<PublicKey, SeedError> {
    let secp = Secp256k1::signing_only();
    // The network only affects how an extended key is serialized, never the derived keys.
    let master = Xpriv::new_master(NetworkKind::Test, seed)
        .map_err(|e| SeedError::Derivation(e.to_string()))?;
    let node_key = master
        .derive_priv(&secp, &[ChildNumber::Hardened { index: 0 }])
        .map_err(|e| SeedError::Derivation(e.to_string()))?;
    Ok(PublicKey::from_secret_key(&secp, &node_key.private_key))
}

/// Lowercase hex of the compressed (33-byte) node public key for `seed`.
pub fn node_id_from_seed(seed: &[u8]) -> Result<String, SeedError> {
    let seed = seed_from_slice(seed)?;
    Ok(node_public_key(&seed)?.to_string())
}

/// Reads a seed file: either exactly 32 raw bytes, or 64 hexadecimal characters optionally
/// surrounded by whitespace (so a trailing newline from an editor or `echo` is fine).
pub fn read_seed_file(path: &Path) -> Result<[u8; SEED_LEN], SeedError> {
    let io_err = |source| SeedError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = fs::metadata(path).map_err(io_err)?.len();
    let bad_contents = || SeedError::BadFileContents {
        path: path.to_path_buf(),
        len,
    };
    if len > MAX_SEED_FILE_LEN {
        return Err(bad_contents());
    }
    let bytes = fs::read(path).map_err(io_err)?;
    parse_seed_bytes(&bytes).ok_or_else(bad_contents)
}

/// Interprets file contents as a seed: hex first (64 hex characters are never mistaken for raw
/// bytes, which are only accepted at exactly 32 bytes).
fn parse_seed_bytes(bytes: &[u8]) -> Option<[u8; SEED_LEN]> {
    if let Ok(raw) = <[u8; SEED_LEN]>::try_from(bytes) {
        return Some(raw);
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.len() != SEED_LEN * 2 {
        return None;
    }
    let decoded = Vec::<u8>::from_hex(text).ok()?;
    <[u8; SEED_LEN]>::try_from(decoded.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use lightning::sign::{KeysManager, NodeSigner, Recipient};

    use super::*;

    fn ldk_node_id(seed: &[u8; SEED_LEN]) -> String {
        let keys = KeysManager::new(seed, 1, 2, true);
        match keys.get_node_id(Recipient::Node) {
            Ok(pk) => pk.to_string(),
            Err(()) => panic!("KeysManager has no node id"),
        }
    }

    fn seeds() -> Vec<[u8; SEED_LEN]> {
        let mut counting = [0u8; SEED_LEN];
        for (i, b) in counting.iter_mut().enumerate() {
            *b = i as u8;
        }
        vec![[0u8; SEED_LEN], [1u8; SEED_LEN], [0xff; SEED_LEN], counting]
    }

    #[test]
    fn matches_ldk_keys_manager() {
        for seed in seeds() {
            let ours = node_id_from_seed(&seed).expect("valid seed");
            assert_eq!(ours, ldk_node_id(&seed), "seed {seed:?}");
            assert_eq!(ours.len(), 66);
            assert!(ours.starts_with("02") || ours.starts_with("03"));
        }
    }

    #[test]
    fn different_seeds_give_different_ids() {
        let ids: std::collections::HashSet<_> = seeds()
            .iter()
            .map(|s| node_id_from_seed(s).expect("valid seed"))
            .collect();
        assert_eq!(ids.len(), seeds().len());
    }

    #[test]
    fn wrong_lengths_are_refused() {
        for len in [0usize, 1, 31, 33, 64, 1 << 20] {
            let seed = vec![7u8; len];
            match node_id_from_seed(&seed) {
                Err(SeedError::WrongLength(got)) => assert_eq!(got, len),
                other => panic!("length {len}: unexpected {other:?}"),
            }
        }
    }

    fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flotilla-seed-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        fs::write(&path, contents).expect("write temp file");
        path
    }

    #[test]
    fn seed_file_raw_and_hex_agree() {
        let seed = seeds()[3];
        let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        let raw = temp_file("raw", &seed);
        let hex_nl = temp_file("hex_nl", format!("{hex}\n").as_bytes());
        let hex_upper = temp_file(
            "hex_upper",
            format!("  {}\r\n", hex.to_uppercase()).as_bytes(),
        );
        assert_eq!(read_seed_file(&raw).expect("raw"), seed);
        assert_eq!(read_seed_file(&hex_nl).expect("hex"), seed);
        assert_eq!(read_seed_file(&hex_upper).expect("upper hex"), seed);
    }

    #[test]
    fn raw_seed_that_looks_like_whitespace_is_still_raw() {
        // 32 bytes of spaces and newlines are a (terrible but) valid raw seed, not empty hex.
        let seed = [b'\n'; SEED_LEN];
        let path = temp_file("raw_newlines", &seed);
        assert_eq!(read_seed_file(&path).expect("raw"), seed);
    }

    #[test]
    fn bad_seed_files_are_refused() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("short_raw", vec![1u8; 31]),
            ("long_raw", vec![1u8; 33]),
            ("short_hex", b"00".repeat(31)),
            ("bad_hex", b"zz".repeat(32)),
            ("huge", vec![b'a'; 1 << 16]),
        ];
        for (name, contents) in cases {
            let path = temp_file(name, &contents);
            match read_seed_file(&path) {
                Err(SeedError::BadFileContents { len, .. }) => {
                    assert_eq!(len, contents.len() as u64, "{name}")
                }
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
        let missing = std::env::temp_dir().join("flotilla-no-such-seed-file");
        assert!(matches!(
            read_seed_file(&missing),
            Err(SeedError::Io { .. })
        ));
    }
}
