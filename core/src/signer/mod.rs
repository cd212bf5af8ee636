//! Signing: the one interface through which nodes reach key material.

pub mod config;
pub mod seed;
pub mod wallet_keys;
