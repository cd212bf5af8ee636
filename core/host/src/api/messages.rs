//! The node API's messages made from the host's values, and the host's values read from
//! requests: every field read here names itself in the INVALID_ARGUMENT it may give.

use bitcoin::hex::FromHex;
use bitcoin::secp256k1::PublicKey;
use flotilla_proto::node as pb;
use lightning::ln::channel_state::ChannelDetails;
use lightning::ln::types::ChannelId;
use tonic::Status;

use crate::store::{Direction, EventRow, PaymentRow, PaymentStatus};

/// Most items one page or list call answers.
pub(super) const MAX_PAGE: u32 = 1_000;
/// Items a page holds when the request names no size.
pub(super) const DEFAULT_PAGE: u32 = 100;

/// `size` bounded to 1..=MAX_PAGE, with 0 meaning the default.
pub(super) fn page_size(size: u32) -> u32 {
    match size {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

/// A node id (33-byte compressed key in hex).
pub(super) fn node_id(field: &str, s: &str) -> Result<PublicKey, Status> {
    s.trim()
        .parse()
        .map_err(|_| invalid(field, "not a node id (66 hex characters)"))
}

/// 32 bytes in hex: a channel id, payment hash or preimage.
pub(super) fn bytes32(field: &str, s: &str) -> Result<[u8; 32], Status> {
    <[u8; 32]>::from_hex(s.trim()).map_err(|_| invalid(field, "not 32 bytes in hex"))
}

pub(super) fn channel_id(field: &str, s: &str) -> Result<ChannelId, Status> {
    Ok(ChannelId(bytes32(field, s)?))
}

/// A direction a request must name.
pub(super) fn direction(field: &str, d: pb::Direction) -> Result<Direction, Status> {
    optional_direction(d).ok_or_else(|| invalid(field, "must be INBOUND or OUTBOUND"))
}

pub(super) fn optional_direction(d: pb::Direction) -> Option<Direction> {
    match d {
        pb::Direction::Unspecified => None,
        pb::Direction::Inbound => Some(Direction::Inbound),
        pb::Direction::Outbound => Some(Direction::Outbound),
    }
}

pub(super) fn optional_status(s: pb::PaymentStatus) -> Option<PaymentStatus> {
    match s {
        pb::PaymentStatus::Unspecified => None,
        pb::PaymentStatus::Pending => Some(PaymentStatus::Pending),
        pb::PaymentStatus::Held => Some(PaymentStatus::Held),
        pb::PaymentStatus::Succeeded => Some(PaymentStatus::Succeeded),
        pb::PaymentStatus::Failed => Some(PaymentStatus::Failed),
    }
}

pub(super) fn payment(row: PaymentRow) -> pb::Payment {
    let direction = match row.direction {
        Direction::Inbound => pb::Direction::Inbound,
        Direction::Outbound => pb::Direction::Outbound,
    };
    let status = match row.status {
        PaymentStatus::Pending => pb::PaymentStatus::Pending,
        PaymentStatus::Held => pb::PaymentStatus::Held,
        PaymentStatus::Succeeded => pb::PaymentStatus::Succeeded,
        PaymentStatus::Failed => pb::PaymentStatus::Failed,
    };
    pb::Payment {
        payment_hash: row.payment_hash,
        direction: direction.into(),
        status: status.into(),
        amount_msat: row.amount_msat,
        fee_msat: row.fee_msat,
        preimage: row.preimage,
        bolt11: row.bolt11,
        failure_reason: row.failure_reason,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

pub(super) fn channel(c: &ChannelDetails) -> pb::Channel {
    pb::Channel {
        channel_id: c.channel_id.to_string(),
        peer_node_id: c.counterparty.node_id.to_string(),
        capacity_sat: c.channel_value_satoshis,
        outbound_msat: c.outbound_capacity_msat,
        inbound_msat: c.inbound_capacity_msat,
        ready: c.is_channel_ready,
        usable: c.is_usable,
        outbound: c.is_outbound,
        funding_outpoint: c
            .funding_txo
            .map(|o| format!("{}:{}", o.txid, o.index))
            .unwrap_or_default(),
        short_channel_id: c.short_channel_id,
        pending_htlcs: (c.pending_inbound_htlcs.len() + c.pending_outbound_htlcs.len()) as u32,
    }
}

pub(super) fn event(row: EventRow) -> pb::Event {
    pb::Event {
        id: row.id.max(0) as u64,
        kind: row.kind,
        created_at: row.created_at,
        data_json: row.data.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_fields_are_named_in_the_refusal() {
        let err = node_id("node_id", "02ab").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("node_id:"), "{}", err.message());
        let err = bytes32("payment_hash", &"zz".repeat(32)).unwrap_err();
        assert!(
            err.message().starts_with("payment_hash:"),
            "{}",
            err.message()
        );
        assert_eq!(bytes32("preimage", &"ab".repeat(32)).unwrap(), [0xab; 32]);
        let err = direction("direction", pb::Direction::Unspecified).unwrap_err();
        assert!(err.message().starts_with("direction:"));
        assert_eq!(
            (page_size(0), page_size(5), page_size(50_000)),
            (100, 5, 1_000)
        );
    }
}
