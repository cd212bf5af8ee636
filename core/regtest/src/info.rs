//! `DIR/regtest.json`: how to reach a running regtest btcd, shared between the CLI commands
//! and anything else (tests, demo) that attaches to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use flotilla_host::chain::rpc::RpcConfig;
use serde::{Deserialize, Serialize};

use super::RegtestError;

/// File name of the description inside a regtest directory.
pub const INFO_FILE: &str = "regtest.json";

/// Everything needed to talk to one running regtest btcd.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegtestInfo {
    /// JSON-RPC endpoint (`https://127.0.0.1:PORT`, our self-signed P-256 certificate).
    pub rpc: RpcConfig,
    /// P2P listen address, for linking two instances.
    pub p2p_addr: SocketAddr,
    /// Process id of btcd.
    pub pid: u32,
    /// Address every mined coinbase pays (the harness key).
    pub mining_address: String,
}

pub(crate) fn info_path(dir: &Path) -> PathBuf {
    dir.join(INFO_FILE)
}

/// Reads `DIR/regtest.json`.
pub(crate) fn read(dir: &Path) -> Result<RegtestInfo, RegtestError> {
    let path = info_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RegtestError::NoInfo(path))
        }
        Err(e) => {
            return Err(RegtestError::BadInfo {
                path,
                reason: e.to_string(),
            })
        }
    };
    serde_json::from_str(&text).map_err(|e| RegtestError::BadInfo {
        path,
        reason: e.to_string(),
    })
}

/// Writes `DIR/regtest.json` atomically (temp file, then rename), so a reader never sees half
/// a file.
pub(crate) fn write(dir: &Path, info: &RegtestInfo) -> Result<(), RegtestError> {
    let path = info_path(dir);
    let tmp = dir.join(format!(".{INFO_FILE}.{}.tmp", std::process::id()));
    let text = serde_json::to_string_pretty(info)
        .map_err(|e| RegtestError::unexpected("regtest.json", e))?;
    std::fs::write(&tmp, text + "\n")
        .map_err(|e| RegtestError::io(format!("cannot write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        RegtestError::io(format!("cannot write {}", path.display()), e)
    })
}

/// Removes `DIR/regtest.json` if it still describes process `pid` (a newer `up` may have
/// replaced it).
pub(crate) fn remove_if_pid(dir: &Path, pid: u32) {
    if matches!(read(dir), Ok(info) if info.pid == pid) {
        let _ = std::fs::remove_file(info_path(dir));
    }
}
