//! The signer's handover, kept in the node's store scope so the node can be rebuilt (parked)
//! after a restart before its signer is back. It holds the symmetric keys LDK needs on the host
//! (see ARCHITECTURE.md, "What the host holds") and public data; never a private key.

use std::time::Duration;

use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::secp256k1::PublicKey;
use bitcoin::ScriptBuf;
use lightning::util::persist::KVStoreSync;
use serde::{Deserialize, Serialize};

use super::error::HostError;
use super::node::read_optional;
use crate::signer::link::SignerLink;
use crate::signer::protocol::Handover;

const NAMESPACE: &str = "signer";
const KEY: &str = "handover";

#[derive(Serialize, Deserialize)]
struct Stored {
    node_id: String,
    inbound_payment_key: String,
    peer_storage_key: String,
    receive_auth_key: String,
    wallet_external: String,
    wallet_internal: String,
    shutdown_script: String,
}

fn encode(h: &Handover) -> Vec<u8> {
    let stored = Stored {
        node_id: h.node_id.to_string(),
        inbound_payment_key: h.inbound_payment_key.to_lower_hex_string(),
        peer_storage_key: h.peer_storage_key.to_lower_hex_string(),
        receive_auth_key: h.receive_auth_key.to_lower_hex_string(),
        wallet_external: h.wallet_descriptors.0.clone(),
        wallet_internal: h.wallet_descriptors.1.clone(),
        shutdown_script: h.shutdown_script.as_bytes().to_lower_hex_string(),
    };
    serde_json::to_vec(&stored).unwrap_or_default()
}

fn decode(bytes: &[u8]) -> Result<Handover, HostError> {
    let bad = |what: &str| HostError::Corrupt(format!("stored signer handover: {what}"));
    let s: Stored = serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
    let key = |v: &str| <[u8; 32]>::from_hex(v).map_err(|_| bad("key"));
    Ok(Handover {
        node_id: s.node_id.parse::<PublicKey>().map_err(|_| bad("node id"))?,
        inbound_payment_key: key(&s.inbound_payment_key)?,
        peer_storage_key: key(&s.peer_storage_key)?,
        receive_auth_key: key(&s.receive_auth_key)?,
        wallet_descriptors: (s.wallet_external, s.wallet_internal),
        shutdown_script: ScriptBuf::from_bytes(
            Vec::<u8>::from_hex(&s.shutdown_script).map_err(|_| bad("script"))?,
        ),
    })
}

/// The stored handover, or the signer's (waiting up to `wait` for it to attach), stored on
/// first sight. A signer whose handover names another node is refused.
pub(crate) async fn obtain(
    kv: &(dyn KVStoreSync + Sync),
    link: &SignerLink,
    wait: Duration,
) -> Result<Handover, HostError> {
    let expected = link.node_id();
    let check = |h: Handover| {
        if h.node_id == expected {
            Ok(h)
        } else {
            Err(HostError::SignerMismatch {
                expected: expected.to_string(),
                got: h.node_id.to_string(),
            })
        }
    };
    if let Some(bytes) = read_optional(kv, NAMESPACE, "", KEY)? {
        return check(decode(&bytes)?);
    }
    let mut attached = link.attached();
    let arrived = tokio::time::timeout(wait, attached.wait_for(|a| *a)).await;
    let handover = match (arrived, link.handover()) {
        (Ok(Ok(_)), Some(h)) => check(h)?,
        _ => return Err(HostError::SignerNeverAttached(expected.to_string())),
    };
    kv.write(NAMESPACE, "", KEY, encode(&handover))?;
    Ok(handover)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handover_round_trips() {
        let secp = bitcoin::secp256k1::Secp256k1::new();
        let sk = bitcoin::secp256k1::SecretKey::from_slice(&[7u8; 32]).expect("key");
        let h = Handover {
            node_id: PublicKey::from_secret_key(&secp, &sk),
            inbound_payment_key: [1u8; 32],
            peer_storage_key: [2u8; 32],
            receive_auth_key: [3u8; 32],
            wallet_descriptors: ("wpkh(a)".into(), "wpkh(b)".into()),
            shutdown_script: ScriptBuf::from_bytes(vec![0, 20, 9, 9]),
        };
        let back = decode(&encode(&h)).expect("decodes");
        assert_eq!(back, h);
        assert!(matches!(decode(b"{}"), Err(HostError::Corrupt(_))));
    }
}
