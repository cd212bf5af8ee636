//! Finding or installing the pinned btcd binary.
//!
//! btcd is built from source with `go install` at a pinned version into Flotilla's cache
//! directory, once per machine. Concurrent installs (parallel tests, two CLIs) each build into
//! their own temporary directory and rename the result into place, so nobody ever runs a
//! half-written binary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::RegtestError;

/// The btcd release the harness is tested against.
pub const BTCD_VERSION: &str = "v0.26.0";
/// Go package path installed at [`BTCD_VERSION`].
const BTCD_PACKAGE: &str = "github.com/btcsuite/btcd";
/// Upper bound for a cold build (downloads modules, compiles ~2 minutes on a slow machine).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Serialises installs inside one process; across processes the rename keeps it safe.
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

/// Where the pinned binary lives (or would): `$FLOTILLA_HOME/bin`, else
/// `$XDG_CACHE_HOME/flotilla/bin`, else `~/.cache/flotilla/bin`.
pub fn cache_bin_dir() -> Result<PathBuf, RegtestError> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(home) = nonempty("FLOTILLA_HOME") {
        return Ok(PathBuf::from(home).join("bin"));
    }
    if let Some(cache) = nonempty("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(cache).join("flotilla").join("bin"));
    }
    nonempty("HOME")
        .map(|h| PathBuf::from(h).join(".cache").join("flotilla").join("bin"))
        .ok_or(RegtestError::NoCacheDir)
}

/// The btcd binary to run if one is already available (override or cache), without installing.
pub fn installed_btcd() -> Result<Option<PathBuf>, RegtestError> {
    if let Some(path) = override_path(std::env::var_os("FLOTILLA_BTCD"))? {
        return Ok(Some(path));
    }
    let path = cached_path(&cache_bin_dir()?);
    Ok(path.is_file().then_some(path))
}

/// Returns the btcd binary, installing the pinned version with `go install` when missing.
/// `FLOTILLA_BTCD`, when set, must name an existing binary and is used as is.
pub async fn ensure_btcd() -> Result<PathBuf, RegtestError> {
    if let Some(path) = installed_btcd()? {
        return Ok(path);
    }
    let bin_dir = cache_bin_dir()?;
    tokio::task::spawn_blocking(move || install_into(&bin_dir, OsString::from("go").as_os_str()))
        .await
        .map_err(|e| RegtestError::unexpected("go install", e))?
}

fn override_path(value: Option<OsString>) -> Result<Option<PathBuf>, RegtestError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => {
            let path = PathBuf::from(v);
            if path.is_file() {
                Ok(Some(path))
            } else {
                Err(RegtestError::BadBtcdOverride(path))
            }
        }
    }
}

fn cached_path(bin_dir: &Path) -> PathBuf {
    bin_dir.join(format!("btcd-{BTCD_VERSION}"))
}

/// Builds btcd with `go` into a private temporary directory under `bin_dir`, then renames it
/// to its final, versioned name. Blocking.
fn install_into(bin_dir: &Path, go: &std::ffi::OsStr) -> Result<PathBuf, RegtestError> {
    let _guard = INSTALL_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let target = cached_path(bin_dir);
    if target.is_file() {
        return Ok(target);
    }
    std::fs::create_dir_all(bin_dir)
        .map_err(|e| RegtestError::io(format!("cannot create {}", bin_dir.display()), e))?;
    let tmp = bin_dir.join(format!(
        ".install-{}-{}",
        std::process::id(),
        bitcoin::secp256k1::rand::random::<u64>()
    ));
    std::fs::create_dir(&tmp)
        .map_err(|e| RegtestError::io(format!("cannot create {}", tmp.display()), e))?;
    let result = build(go, &tmp).and_then(|built| {
        std::fs::rename(&built, &target)
            .map_err(|e| RegtestError::io(format!("cannot move btcd to {}", target.display()), e))
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|()| target)
}

/// Runs `go install` with `GOBIN=out` and returns the path of the built binary.
fn build(go: &std::ffi::OsStr, out: &Path) -> Result<PathBuf, RegtestError> {
    let mut child = std::process::Command::new(go)
        .arg("install")
        .arg(format!("{BTCD_PACKAGE}@{BTCD_VERSION}"))
        .env("GOBIN", out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RegtestError::GoMissing {
                version: BTCD_VERSION,
            },
            _ => RegtestError::io("cannot run `go install`", e),
        })?;
    // Drain stderr on a thread so a chatty build cannot block on a full pipe.
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
        }
        text
    });
    let deadline = std::time::Instant::now() + INSTALL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(e) => return Err(RegtestError::io("waiting for `go install`", e)),
        }
    };
    let stderr = reader.join().unwrap_or_default();
    let failed = |status: String| RegtestError::InstallFailed {
        version: BTCD_VERSION,
        status,
        stderr: tail(&stderr, 20),
    };
    match status {
        None => Err(failed(format!(
            "timed out after {} s",
            INSTALL_TIMEOUT.as_secs()
        ))),
        Some(s) if !s.success() => Err(failed(s.to_string())),
        Some(_) => {
            let built = out.join("btcd");
            if built.is_file() {
                Ok(built)
            } else {
                Err(failed("succeeded but produced no btcd binary".into()))
            }
        }
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_go_is_a_typed_error_naming_what_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let err = install_into(
            dir.path(),
            OsString::from("/nonexistent/flotilla-test/go").as_os_str(),
        )
        .unwrap_err();
        assert!(matches!(err, RegtestError::GoMissing { .. }), "{err}");
        assert!(err.to_string().contains("install Go"));
        // No temporary directory is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn override_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-btcd");
        assert!(matches!(
            override_path(Some(missing.clone().into_os_string())),
            Err(RegtestError::BadBtcdOverride(p)) if p == missing
        ));
        let present = dir.path().join("btcd");
        std::fs::write(&present, b"").unwrap();
        assert_eq!(
            override_path(Some(present.clone().into_os_string())).unwrap(),
            Some(present)
        );
        assert_eq!(override_path(Some(OsString::new())).unwrap(), None);
        assert_eq!(override_path(None).unwrap(), None);
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
