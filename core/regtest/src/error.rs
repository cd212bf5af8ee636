//! Why a regtest operation failed.

use std::path::PathBuf;

use bitcoin::{Amount, Txid};
use flotilla_host::chain::rpc::RpcError;

/// Every failure of the regtest harness, typed so callers (CLI, tests, demo) can tell a
/// missing tool from a dead node from bad input.
#[derive(Debug, thiserror::Error)]
pub enum RegtestError {
    #[error(
        "btcd is not installed and `go` was not found on PATH: install Go (https://go.dev/dl, \
         or your package manager's `golang`) so Flotilla can run `go install \
         github.com/btcsuite/btcd@{version}`, or set FLOTILLA_BTCD to an existing btcd binary"
    )]
    GoMissing { version: &'static str },
    #[error("`go install github.com/btcsuite/btcd@{version}` failed ({status}): {stderr}")]
    InstallFailed {
        version: &'static str,
        status: String,
        stderr: String,
    },
    #[error("FLOTILLA_BTCD points at {0}, which is not an existing file")]
    BadBtcdOverride(PathBuf),
    #[error("no cache directory for the btcd binary: set FLOTILLA_HOME or HOME")]
    NoCacheDir,
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("cannot create the RPC TLS certificate: {0}")]
    Cert(String),
    #[error("btcd exited during startup ({status}); last log lines:\n{log_tail}")]
    Exited { status: String, log_tail: String },
    #[error("btcd did not answer RPC within {waited_secs} s; last log lines:\n{log_tail}")]
    NotReady { waited_secs: u64, log_tail: String },
    #[error("no regtest is described in {0} (run `flotilla regtest up` first)")]
    NoInfo(PathBuf),
    #[error("cannot read {path}: {reason}")]
    BadInfo { path: PathBuf, reason: String },
    #[error("btcd (pid {pid}) from {path} is not running (run `flotilla regtest up`)")]
    NotRunning { path: PathBuf, pid: u32 },
    #[error("a regtest btcd is already running from {path} (pid {pid}); `flotilla regtest down` stops it")]
    AlreadyRunning { path: PathBuf, pid: u32 },
    #[error("no saved chain in {0}: restart follows stop_keep_data")]
    NoSavedChain(PathBuf),
    #[error("btcd (pid {0}) did not exit after stop and kill")]
    StopFailed(u32),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("unexpected answer from btcd to {method}: {reason}")]
    Unexpected { method: String, reason: String },
    #[error("invalid amount {amount}: {reason}")]
    BadAmount { amount: Amount, reason: String },
    #[error("the harness cannot pay {wanted}: {available} spendable even after mining {mined_cap} more blocks")]
    InsufficientFunds {
        wanted: Amount,
        available: Amount,
        mined_cap: u32,
    },
    #[error("transaction {0} was not confirmed by the block mined for it")]
    NotConfirmed(Txid),
    #[error("{what} did not happen within {waited_secs} s")]
    Timeout { what: String, waited_secs: u64 },
}

impl RegtestError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RegtestError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn unexpected(method: &str, reason: impl ToString) -> Self {
        RegtestError::Unexpected {
            method: method.to_string(),
            reason: reason.to_string(),
        }
    }
}
