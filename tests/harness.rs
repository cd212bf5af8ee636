//! Drives `flotilla host` processes over their JSON-lines console, for end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The `flotilla` binary built beside this test (`cargo build --release` builds it).
pub fn flotilla_bin() -> PathBuf {
    if let Ok(path) = std::env::var("FLOTILLA_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-HASH -> target/<profile>/flotilla
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("flotilla"))
        .expect("target dir")
}

/// A host in its own OS process.
pub struct HostProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    pub nodes: Value,
}

impl HostProcess {
    pub async fn spawn(
        db: &Path,
        chain_json: &Path,
        nodes: &[(&str, &Path)],
    ) -> Result<Self, String> {
        let mut cmd = Command::new(flotilla_bin());
        cmd.arg("host")
            .arg("--db")
            .arg(db)
            .arg("--chain")
            .arg(chain_json);
        for (alias, seed) in nodes {
            cmd.arg("--node").arg(format!("{alias}={}", seed.display()));
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", flotilla_bin().display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        let first = tokio::time::timeout(Duration::from_secs(120), stdout.next_line())
            .await
            .map_err(|_| "host did not start in time".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or("host exited before it started")?;
        let first: Value = serde_json::from_str(&first).map_err(|e| format!("{first}: {e}"))?;
        let nodes = first["ok"]["nodes"].clone();
        Ok(HostProcess {
            child,
            stdin,
            stdout,
            nodes,
        })
    }

    pub fn node_id(&self, alias: &str) -> String {
        self.node(alias)["node_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn addr(&self, alias: &str) -> String {
        self.node(alias)["addr"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn node(&self, alias: &str) -> Value {
        self.nodes
            .as_array()
            .and_then(|a| a.iter().find(|n| n["alias"] == alias).cloned())
            .unwrap_or(Value::Null)
    }

    /// Sends one request and returns its `ok` value, or the host's error text.
    pub async fn call(&mut self, request: Value) -> Result<Value, String> {
        self.stdin
            .write_all(format!("{request}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.stdin.flush().await.map_err(|e| e.to_string())?;
        let line = tokio::time::timeout(Duration::from_secs(120), self.stdout.next_line())
            .await
            .map_err(|_| format!("no answer to {request}"))?
            .map_err(|e| e.to_string())?
            .ok_or("host exited")?;
        let answer: Value = serde_json::from_str(&line).map_err(|e| format!("{line}: {e}"))?;
        match answer.get("ok") {
            Some(v) => Ok(v.clone()),
            None => Err(answer["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_string()),
        }
    }

    /// Calls and panics with context on error (tests only).
    pub async fn must(&mut self, request: Value) -> Value {
        match self.call(request.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("{request} failed: {e}"),
        }
    }

    /// SIGKILL, no shutdown path at all.
    pub async fn kill9(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Closes stdin (clean shutdown) and waits.
    pub async fn stop(mut self) {
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }

    /// Polls `f` against this host until it returns true.
    pub async fn wait_for(
        &mut self,
        what: &str,
        request: Value,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        for _ in 0..600 {
            if let Ok(v) = self.call(request.clone()).await {
                if f(&v) {
                    return v;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

pub fn req(cmd: &str, node: &str) -> Value {
    json!({"cmd": cmd, "node": node})
}
