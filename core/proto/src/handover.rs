//! What a signer hands the host when it attaches: public data and the few symmetric keys LDK
//! needs on the node's side at any moment.

use bitcoin::secp256k1::PublicKey;
use bitcoin::ScriptBuf;
use lightning::ln::chan_utils::ChannelPublicKeys;

use crate::KeysId;

/// A channel's public keys, handed over before the channel needs them (LDK asks for them
/// synchronously).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelKeySet {
    pub keys_id: KeysId,
    pub pubkeys: ChannelPublicKeys,
}

/// What a signer hands the host once, when it first attaches for a node. The host persists
/// it, so the node can be rebuilt (parked) before its signer is back.
#[derive(Clone, PartialEq, Eq)]
pub struct Handover {
    pub node_id: PublicKey,
    /// LDK's inbound-payment key material (`ExpandedKey` is built from it).
    pub inbound_payment_key: [u8; 32],
    pub peer_storage_key: [u8; 32],
    pub receive_auth_key: [u8; 32],
    /// Public (xpub) descriptors of the on-chain wallet: external, internal.
    pub wallet_descriptors: (String, String),
    /// Where the signer wants swept and closed funds to go: a script of its own wallet.
    pub shutdown_script: ScriptBuf,
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handover")
            .field("node_id", &self.node_id)
            .field("wallet_descriptors", &self.wallet_descriptors)
            .finish_non_exhaustive()
    }
}
