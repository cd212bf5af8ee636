//! The handover (what a signer hands the host when it attaches) on the wire.

use bitcoin::ScriptBuf;

use super::fields::{bytes32, key};
use super::proto;
use crate::{Handover, SignerError};

pub fn encode_handover(handover: &Handover) -> proto::Handover {
    proto::Handover {
        node_id: handover.node_id.serialize().to_vec(),
        inbound_payment_key: handover.inbound_payment_key.to_vec(),
        peer_storage_key: handover.peer_storage_key.to_vec(),
        receive_auth_key: handover.receive_auth_key.to_vec(),
        wallet_external_descriptor: handover.wallet_descriptors.0.clone(),
        wallet_internal_descriptor: handover.wallet_descriptors.1.clone(),
        shutdown_script: handover.shutdown_script.to_bytes(),
    }
}

pub fn decode_handover(handover: proto::Handover) -> Result<Handover, SignerError> {
    Ok(Handover {
        node_id: key(&handover.node_id, "handover node_id")?,
        inbound_payment_key: bytes32(&handover.inbound_payment_key, "inbound_payment_key")?,
        peer_storage_key: bytes32(&handover.peer_storage_key, "peer_storage_key")?,
        receive_auth_key: bytes32(&handover.receive_auth_key, "receive_auth_key")?,
        wallet_descriptors: (
            handover.wallet_external_descriptor,
            handover.wallet_internal_descriptor,
        ),
        shutdown_script: ScriptBuf::from_bytes(handover.shutdown_script),
    })
}
