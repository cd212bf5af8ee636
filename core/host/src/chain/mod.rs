//! Chain access shared by every node of a host: RPC, block source, observer, fees, broadcast.

pub mod broadcaster;
pub mod cache;
pub mod fees;
pub mod listener;
pub mod observer;
pub mod rpc;
pub mod source;

pub use broadcaster::Broadcaster;
pub use fees::FeeCache;
pub use observer::{ChainError, ChainObserver, ListenerId, ObserverStats};
pub use rpc::{RpcClient, RpcConfig, RpcError};
