//! Waiting on a synchronous path (LDK calls into the signer and the database synchronously)
//! without starving the async runtime.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `wait`, a blocking wait. On a worker of a multi-threaded runtime the worker's other
/// tasks move to another thread first (`block_in_place`), so two blocked callers on a 2-core
/// host do not stop every node; elsewhere `wait` simply runs.
pub fn wait_blocking<T>(wait: impl FnOnce() -> T) -> T {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}
