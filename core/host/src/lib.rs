//! The Flotilla host: many LDK nodes in one process, sharing one chain observer, one network
//! graph and one database, and holding no private key: every signature is asked of the node's
//! signer ([`signer_client`]), which runs on the customer's side and dials in.

mod accept;
pub mod api;
mod background;
mod broadcast;
mod builder;
pub mod chain;
mod driver;
pub mod error;
mod events;
mod funding;
mod handover;
mod hold;
mod host;
mod keysend;
pub mod logger;
pub mod node;
mod node_chain;
mod onchain_send;
mod ops;
mod parking;
mod peers;
pub mod persist;
mod save;
mod shared;
pub mod signer_client;
mod starting;
pub mod store;
pub mod types;
pub mod wallet;

pub use error::HostError;
pub use hold::DEFAULT_HOLD_CLTV_DELTA;
pub use host::{Host, HostConfig};
pub use node::{Node, PaymentOutcome};
pub use ops::{StartedPayment, WalletBalance};
pub use shared::Background;
