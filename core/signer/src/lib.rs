//! The customer's side of Flotilla: the node's keys and the rules they are used under.
//!
//! A [`SeedSigner`](seed_signer::SeedSigner) holds one node's seed and answers the host's
//! requests ([`flotilla_proto`]) only when its policy, checked against its own state, allows;
//! the state is saved before an answer that depends on it leaves. The signer dials out to the
//! host ([`dial`]), as a `flotilla signer` process or inside an app ([`embedded`]). Nothing here
//! depends on the host.

pub mod config;
pub mod dial;
pub mod durable;
pub mod embedded;
pub mod fee_cap;
pub mod policy;
pub mod seed;
pub mod seed_signer;
pub mod state;
pub mod state_db;
pub mod wallet_keys;
