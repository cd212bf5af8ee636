//! The host's side of signing: LDK's signer interfaces answered without any private key, by
//! asking the node's signer, which runs on the customer's side and dials in.
//!
//! The types here are stand-ins on the host (proxies), never signers: [`KeysProxy`] for LDK's
//! node-level interfaces, [`ChannelSignerProxy`] per channel, [`WalletSignerProxy`] for the
//! on-chain wallet. They reach the signer through a [`SignerLink`]: the gRPC hub a remote
//! signer attaches to ([`hub`], over [`tls`]), or a handler in this process (tests only).
//!
//! [`KeysProxy`]: keys_proxy::KeysProxy
//! [`ChannelSignerProxy`]: channel_signer_proxy::ChannelSignerProxy
//! [`WalletSignerProxy`]: wallet_signer_proxy::WalletSignerProxy
//! [`SignerLink`]: link::SignerLink

pub mod carried;
pub mod channel_signer_proxy;
pub mod hub;
pub mod keys_proxy;
pub mod link;
pub mod pending;
pub mod retirements;
pub mod state_version;
pub mod tls;
pub mod wallet_signer_proxy;
