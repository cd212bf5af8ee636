//! Waiting for a condition that a chain, a host or a peer brings about in its own time.

use std::time::{Duration, Instant};

/// A condition that did not hold in time.
#[derive(Debug, thiserror::Error)]
#[error("timed out waiting for {0}")]
pub struct TimedOut(pub String);

/// Polls `ready` every 50 ms until it holds, or fails with [`TimedOut`] naming `what` after
/// `timeout`.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    ready: impl Fn() -> bool,
) -> Result<(), TimedOut> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            return Err(TimedOut(what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
