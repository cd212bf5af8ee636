//! Signing: the one interface through which nodes reach key material.

pub mod config;
pub mod dial;
pub mod hub;
pub mod in_process;
pub mod link;
pub mod protocol;
pub mod seed;
pub mod tls;
pub mod wallet_keys;
pub mod wire;
