//! The on-chain wallet's keys: BIP84 keys from the node's 32-byte seed.
//!
//! The host's wallet sees only the public descriptors these hand over; the private keys never
//! leave this struct.

use std::fmt;
use std::str::FromStr;

use bdk_wallet::descriptor::{Descriptor, DescriptorPublicKey};
use bitcoin::bip32::{ChildNumber, DerivationPath, Fingerprint, Xpriv, Xpub};
use bitcoin::psbt::SigningKeys;
use bitcoin::secp256k1::{All, PublicKey, Secp256k1};
use bitcoin::{psbt, CompressedPublicKey, Network, Psbt, Script, ScriptBuf};

/// Why the wallet's keys could not be derived or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum WalletKeysError {
    #[error("descriptor: {0}")]
    Descriptor(String),
    #[error("signing: {0}")]
    Signing(String),
}

/// Signs for the wallet `wpkh(m/84'/coin'/0'/{0,1}/*)` derived from a seed.
pub struct WalletKeys {
    master: Xpriv,
    fingerprint: Fingerprint,
    account_path: DerivationPath,
    account: Xpriv,
    external: String,
    internal: String,
    secp: Secp256k1<All>,
}

impl WalletKeys {
    /// BIP32 master from `seed`, account `m/84'/{coin}'/0'` (coin 0 on mainnet, 1 elsewhere).
    pub fn new(seed: &[u8; 32], network: Network) -> Result<Self, WalletKeysError> {
        let secp = Secp256k1::new();
        let key_err = |e: bitcoin::bip32::Error| WalletKeysError::Descriptor(e.to_string());
        let master = Xpriv::new_master(network, seed).map_err(key_err)?;
        let fingerprint = master.fingerprint(&secp);
        let coin = if network == Network::Bitcoin { 0 } else { 1 };
        let account_path = DerivationPath::from(vec![
            ChildNumber::from_hardened_idx(84).map_err(key_err)?,
            ChildNumber::from_hardened_idx(coin).map_err(key_err)?,
            ChildNumber::from_hardened_idx(0).map_err(key_err)?,
        ]);
        let account = master.derive_priv(&secp, &account_path).map_err(key_err)?;
        let account_xpub = Xpub::from_priv(&secp, &account);
        let descriptor = |chain: u32| -> Result<String, WalletKeysError> {
            let text = format!("wpkh([{fingerprint}/84'/{coin}'/0']{account_xpub}/{chain}/*)");
            // Parsing and printing again appends the checksum.
            Descriptor::<DescriptorPublicKey>::from_str(&text)
                .map(|d| d.to_string())
                .map_err(|e| WalletKeysError::Descriptor(e.to_string()))
        };
        Ok(WalletKeys {
            external: descriptor(0)?,
            internal: descriptor(1)?,
            master,
            fingerprint,
            account_path,
            account,
            secp,
        })
    }

    /// Whether a PSBT output pays this wallet: its key origin (bdk fills it for change) is a
    /// key of the wallet's receive or change chain, and `script` pays that key. Any address
    /// of the wallet is recognised, however far the host's wallet has gone.
    pub fn owns_output(&self, output: &psbt::Output, script: &Script) -> bool {
        output
            .bip32_derivation
            .iter()
            .any(|(key, (fingerprint, path))| {
                *fingerprint == self.fingerprint
                    && self.is_wallet_key(key, path)
                    && *script == ScriptBuf::new_p2wpkh(&CompressedPublicKey(*key).wpubkey_hash())
            })
    }

    /// Whether the wallet signs `input`: one of its key origins names the wallet's master key.
    /// `Err` says why such an origin is not a key of the wallet's receive or change chain (the
    /// seed's other keys are never signed with here), or is a taproot one (the wallet is p2wpkh).
    pub fn signs_input(&self, input: &psbt::Input) -> Result<bool, String> {
        if let Some((key, (_, (fingerprint, path)))) = input
            .tap_key_origins
            .iter()
            .find(|(_, (_, (fingerprint, _)))| *fingerprint == self.fingerprint)
        {
            return Err(format!(
                "taproot key {key} at {fingerprint}/{path}: the wallet has no taproot keys"
            ));
        }
        let mut ours = false;
        for (key, (fingerprint, path)) in &input.bip32_derivation {
            if *fingerprint != self.fingerprint {
                continue;
            }
            if !self.is_wallet_key(key, path) {
                return Err(format!(
                    "key {key} at {fingerprint}/{path} is not on the wallet's chains"
                ));
            }
            ours = true;
        }
        Ok(ours)
    }

    /// Whether `path` (from the master key) is `m/84'/coin'/0'/{0,1}/i` and derives `key`.
    fn is_wallet_key(&self, key: &PublicKey, path: &DerivationPath) -> bool {
        let Some((account, [chain, index])) = path.as_ref().split_last_chunk::<2>() else {
            return false;
        };
        account == self.account_path.as_ref()
            && matches!(chain, ChildNumber::Normal { index: 0 | 1 })
            && index.is_normal()
            && self
                .account
                .derive_priv(&self.secp, &[*chain, *index])
                .is_ok_and(|child| child.private_key.public_key(&self.secp) == *key)
    }

    /// Public (xpub) descriptors with checksum: (external, internal).
    pub fn descriptors(&self) -> (String, String) {
        (self.external.clone(), self.internal.clone())
    }

    /// Signs every input of `psbt` whose key origin names this wallet's master key.
    pub fn sign_psbt(&self, psbt: &mut Psbt) -> Result<(), WalletKeysError> {
        // An input is ours when its key origin names our master key; others (a channel peer's
        // inputs in a future dual funding) are left alone, as are errors about them.
        let ours: Vec<usize> = psbt
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, input)| {
                input
                    .bip32_derivation
                    .values()
                    .any(|(fingerprint, _)| *fingerprint == self.fingerprint)
            })
            .map(|(index, _)| index)
            .collect();
        let signed = match psbt.sign(&self.master, &self.secp) {
            Ok(signed) => signed,
            Err((signed, errors)) => {
                if let Some((index, e)) = errors.iter().find(|(i, _)| ours.contains(i)) {
                    return Err(WalletKeysError::Signing(format!("input {index}: {e}")));
                }
                signed
            }
        };
        for index in ours {
            match signed.get(&index) {
                Some(SigningKeys::Ecdsa(keys)) if !keys.is_empty() => {}
                _ => {
                    return Err(WalletKeysError::Signing(format!(
                        "input {index} is ours but was not signed"
                    )))
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for WalletKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalletKeys")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_public_bip84_with_checksum() {
        let signer = WalletKeys::new(&[7; 32], Network::Regtest).unwrap();
        let (external, internal) = signer.descriptors();
        let fingerprint = signer.fingerprint.to_string();
        for (descriptor, chain) in [(&external, "/0/*)"), (&internal, "/1/*)")] {
            assert!(!descriptor.contains("tprv") && !descriptor.contains("xprv"));
            assert!(descriptor.starts_with(&format!("wpkh([{fingerprint}/84'/1'/0']tpub")));
            assert!(descriptor.contains(chain), "{descriptor}");
            let (body, checksum) = descriptor.split_once('#').unwrap();
            assert_eq!(checksum.len(), 8);
            assert_eq!(
                bdk_wallet::descriptor::calc_checksum(body).unwrap(),
                checksum
            );
        }

        let mainnet = WalletKeys::new(&[7; 32], Network::Bitcoin).unwrap();
        let (external, _) = mainnet.descriptors();
        assert!(external.contains("/84'/0'/0']xpub"), "{external}");
        assert!(!external.contains("xprv"));
    }

    #[test]
    fn different_seeds_give_different_wallets() {
        let a = WalletKeys::new(&[1; 32], Network::Regtest).unwrap();
        let b = WalletKeys::new(&[2; 32], Network::Regtest).unwrap();
        assert_ne!(a.descriptors(), b.descriptors());
        let again = WalletKeys::new(&[1; 32], Network::Regtest).unwrap();
        assert_eq!(a.descriptors(), again.descriptors());
    }

    #[test]
    fn debug_output_holds_no_key_material() {
        let signer = WalletKeys::new(&[3; 32], Network::Regtest).unwrap();
        let shown = format!("{signer:?}");
        assert!(shown.contains(&signer.fingerprint.to_string()));
        assert!(!shown.contains("tprv") && !shown.contains("tpub"));
        assert!(!shown.contains(&signer.master.to_string()));
    }
}
