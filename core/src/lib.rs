//! Flotilla core: a host that runs many LDK nodes in one process, sharing one chain observer,
//! one network graph and one database, with every key held by a signer on the customer's side.

pub mod bench;
mod blocking;
pub mod chain;
pub mod cli;
mod group_commit;
pub mod host;
mod lock_file;
pub mod regtest;
pub mod signer;
pub mod store;
pub mod wallet;
