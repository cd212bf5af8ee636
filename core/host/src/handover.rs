//! The signer's handover, kept in the node's store scope so the node can be rebuilt (parked)
//! after a restart before its signer is back. It holds the symmetric keys LDK needs on the host
//! (see ARCHITECTURE.md, "What the host holds") and public data; never a private key.

use std::time::Duration;

use flotilla_proto::wire::{decode_handover, encode_handover, proto};
use flotilla_proto::Handover;
use lightning::util::persist::KVStoreSync;
use prost::Message;

use crate::error::HostError;
use crate::signer_client::link::SignerLink;
use crate::store::read_optional;

const NAMESPACE: &str = "signer";
const KEY: &str = "handover";

/// Stored in the encoding the signer sent it in (`flotilla_proto::wire`), so there is one codec for it.
fn encode(h: &Handover) -> Vec<u8> {
    encode_handover(h).encode_to_vec()
}

fn decode(bytes: &[u8]) -> Result<Handover, HostError> {
    let bad = |what: String| HostError::Corrupt(format!("stored signer handover: {what}"));
    let message = proto::Handover::decode(bytes).map_err(|e| bad(e.to_string()))?;
    decode_handover(message).map_err(|e| bad(e.to_string()))
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
    use bitcoin::secp256k1::PublicKey;
    use bitcoin::ScriptBuf;

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
        assert!(matches!(decode(&[]), Err(HostError::Corrupt(_))));
    }
}
