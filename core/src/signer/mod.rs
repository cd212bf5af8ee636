//! Signing: the one interface through which nodes reach key material.

pub mod config;
pub mod in_process;
pub mod link;
pub mod policy;
pub mod protocol;
pub mod seed;
pub mod service;
pub mod state;
pub mod wallet_keys;
