//! The host: many LDK nodes in one process, and what each of them is made of.

mod accept;
mod background;
mod broadcast;
mod driver;
pub mod error;
mod events;
mod handover;
mod hold;
#[allow(clippy::module_inception)]
mod host;
pub mod logger;
pub mod node;
mod ops;
mod parking;
mod peers;
pub mod persist;
mod starting;
pub mod types;

pub use background::Background;
pub use error::HostError;
pub use hold::DEFAULT_HOLD_CLTV_DELTA;
pub use host::{Host, HostConfig};
pub use node::{Node, PaymentOutcome};
pub use ops::WalletBalance;
