//! A signer running inside an app's own process (what the bindings call `RemoteSigner`): the
//! same [`SeedSigner`] and dial loop as `flotilla signer`, on a small runtime of its own, so a
//! phone app or a Python backend holds the keys without running tokio itself.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::Network;
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::config::SignerConfig;
use crate::dial::{self, DialConfig, DialError, DialStats};
use crate::durable::DurableHandler;
use crate::policy::{ApprovalHook, Policy};
use crate::seed_signer::{MarketError, SeedSigner, SetupError};
use crate::state::StateError;
use crate::state_db::SqliteStateStore;

/// How long [`EmbeddedSigner::stop`] lets an answer in progress finish.
const STOP_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("signer setup failed: {0}")]
    Setup(#[from] SetupError),
    #[error("cannot start the signer's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Signs for one node until stopped (or dropped): dials the hub, proves the node key, answers
/// requests under the config's limits and asks `approval` before each outgoing payment.
pub struct EmbeddedSigner {
    signer: Arc<SeedSigner>,
    stop: watch::Sender<bool>,
    stats: Arc<DialStats>,
    /// Taken by [`EmbeddedSigner::stop`]; a runtime cannot be shut down through `&self`.
    runtime: Mutex<Option<Runtime>>,
}

impl EmbeddedSigner {
    /// Loads (or creates) the node's state in `state_dir` and starts dialing. Checks the URL,
    /// the CA and the state file before returning, so a bad setup fails here, not later in
    /// the background.
    pub fn start(
        config: &SignerConfig,
        network: Network,
        ca_pem: Vec<u8>,
        state_dir: &Path,
        approval: Option<Arc<dyn ApprovalHook>>,
    ) -> Result<Self, EmbedError> {
        let dial = DialConfig {
            host_url: config.host_url().to_string(),
            ca_pem,
        };
        dial::check(&dial)?;
        let state = SqliteStateStore::in_dir(state_dir, &config.node_id())?;
        let mut signer = SeedSigner::new(
            config.seed(),
            network,
            Policy::new(config.limits()),
            Box::new(state),
        )?;
        if let Some(hook) = approval {
            signer = signer.with_approval(hook);
        }
        // One worker: a single node's requests are answered in order anyway. Multi-threaded
        // flavor because answers run in block_in_place (the approval hook may take a while).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flotilla-signer")
            .enable_all()
            .build()
            .map_err(EmbedError::Runtime)?;
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(DialStats::default());
        let signer = Arc::new(signer);
        let handlers: Vec<Arc<dyn DurableHandler>> = vec![signer.clone()];
        let serving = dial::serve_with_stats(dial, handlers, stopped, stats.clone());
        runtime.spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!("embedded signer stopped: {e}");
            }
        });
        Ok(EmbeddedSigner {
            signer,
            stop,
            stats,
            runtime: Mutex::new(Some(runtime)),
        })
    }

    /// The market feerate from the app's own source: the fee cap follows it for an hour.
    pub fn report_market_feerate(&self, feerate_per_kw: u32) -> Result<(), MarketError> {
        self.signer.report_market_feerate(feerate_per_kw)
    }

    /// Attaches, answers and failures so far (for status screens and tests).
    pub fn stats(&self) -> &DialStats {
        &self.stats
    }

    /// Stops dialing and answering; the host parks the node until a signer attaches again.
    /// Idempotent. Blocks up to [`STOP_GRACE`] for the answer in progress.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match runtime {
            // Called from inside a runtime (say, from the approval hook): waiting is not allowed.
            Some(runtime) if tokio::runtime::Handle::try_current().is_ok() => {
                runtime.shutdown_background()
            }
            Some(runtime) => runtime.shutdown_timeout(STOP_GRACE),
            None => {}
        }
    }

    pub fn is_running(&self) -> bool {
        self.runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

impl Drop for EmbeddedSigner {
    fn drop(&mut self) {
        self.stop();
    }
}
