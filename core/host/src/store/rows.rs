//! Rows of the plain tables. Implementation-agnostic on purpose: ids are hex strings and
//! amounts plain integers, never LDK encodings, so the tables outlive any LDK version.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

/// One node run by this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRow {
    /// Node public key, 66 lowercase hex characters.
    pub node_id: String,
    pub alias: String,
    pub listen_addr: Option<String>,
    /// "running", "stopped" (removed by its operator) or "halted" (its state could not be
    /// saved; see `Node::halt`).
    pub status: String,
    /// Unix seconds; kept from the first insert.
    pub created_at: i64,
}

/// One access token of the node API (its secret is not here: only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    /// 16 lowercase hex characters, the public part of the token.
    pub id: String,
    /// The node it acts on; `None` for an operator token.
    pub node_id: Option<String>,
    /// Comma-separated scope names.
    pub scopes: String,
    pub label: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// One channel of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRow {
    pub node_id: String,
    /// 64 lowercase hex characters.
    pub channel_id: String,
    /// Decimal u128.
    pub user_channel_id: String,
    pub counterparty_node_id: String,
    pub funding_txid: Option<String>,
    pub funding_vout: Option<u32>,
    pub capacity_sat: u64,
    pub local_balance_msat: u64,
    pub short_channel_id: Option<u64>,
    pub status: ChannelStatus,
    pub close_reason: Option<String>,
    pub is_outbound: bool,
    /// Unix seconds.
    pub updated_at: i64,
}

/// One payment of one node, keyed by (node, hash, direction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRow {
    pub node_id: String,
    /// 64 lowercase hex characters.
    pub payment_hash: String,
    pub direction: Direction,
    pub status: PaymentStatus,
    pub amount_msat: Option<u64>,
    pub fee_msat: Option<u64>,
    /// 64 lowercase hex characters once known.
    pub preimage: Option<String>,
    pub bolt11: Option<String>,
    pub failure_reason: Option<String>,
    /// Unix seconds; kept from the first insert.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

impl PaymentRow {
    /// A row carrying only what one update knows (every optional field empty), stamped `at`.
    /// [`super::Store::upsert_payment`] keeps what the stored row already has, so callers fill
    /// in just the fields their event brings.
    pub fn update(
        node_id: &str,
        payment_hash: &str,
        direction: Direction,
        status: PaymentStatus,
        at: i64,
    ) -> PaymentRow {
        PaymentRow {
            node_id: node_id.to_string(),
            payment_hash: payment_hash.to_string(),
            direction,
            status,
            amount_msat: None,
            fee_msat: None,
            preimage: None,
            bolt11: None,
            failure_reason: None,
            created_at: at,
            updated_at: at,
        }
    }
}

/// One entry of a node's event log; `id` increases and is never reused, so a reader resumes
/// with `events(node, last_seen_id, ..)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub id: i64,
    pub node_id: String,
    pub kind: String,
    pub data: serde_json::Value,
    /// Unix seconds.
    pub created_at: i64,
}

/// Defines a fieldless enum stored as lowercase text, with its string conversions.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// The lowercase text stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(concat!("unknown ", stringify!($name), " {:?}"), other)),
                }
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value.as_str()?.parse().map_err(|e: String| FromSqlError::Other(e.into()))
            }
        }
    };
}

text_enum!(
    /// Life cycle of a channel; `Closed` is final.
    ChannelStatus {
        Pending => "pending",
        Open => "open",
        Closing => "closing",
        Closed => "closed",
    }
);

text_enum!(
    /// Which way the money flows, from the node's point of view.
    Direction {
        Inbound => "inbound",
        Outbound => "outbound",
    }
);

text_enum!(
    /// Outcome of a payment; it only moves forward (see [`PaymentStatus::rank`]).
    PaymentStatus {
        Pending => "pending",
        /// Received to a hold invoice, waiting to be settled or cancelled by the node's user.
        Held => "held",
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

impl PaymentStatus {
    /// Order in which a payment may progress: pending, held, then failed, then succeeded. A
    /// failed payment can still succeed (a retry with the same hash), a succeeded one never
    /// changes.
    pub fn rank(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Held => 1,
            Self::Failed => 2,
            Self::Succeeded => 3,
        }
    }
}
