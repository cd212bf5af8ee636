//! Drives `flotilla host` processes over their JSON-lines console, and `flotilla signer`
//! processes that dial their hubs, for end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use flotilla_regtest::Regtest;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub mod in_process;

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
    /// Nodes that did not start (alias, error), as the host reported them.
    pub failed: Value,
    /// Where its SignerHub listens (`https://…`), and the CA file signers must trust.
    pub hub_url: String,
    pub ca_file: PathBuf,
    /// Where its node and operator API listens (`https://…`, the same CA), and the file the
    /// host wrote the operator's first token to.
    pub api_url: String,
    pub operator_token_file: PathBuf,
}

/// A fresh test directory `<tmp>/flotilla-<name>-<pid>` with a regtest btcd in it, mined past
/// coinbase maturity: the directory, the chain, and the chain file hosts are configured with.
pub async fn fresh_chain(name: &str) -> (PathBuf, Regtest, PathBuf) {
    let dir = std::env::temp_dir().join(format!("flotilla-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let chain = Regtest::spawn_owned(&dir.join("regtest"))
        .await
        .expect("btcd");
    chain.mine(101).await.unwrap();
    let chain_json = dir.join("regtest").join("regtest.json");
    (dir, chain, chain_json)
}

/// A free TCP port on loopback (for a hub that must keep its address across restarts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The node id a seed file gives (what the host registers for its signer).
pub fn node_id_of(seed_file: &Path) -> String {
    let seed = flotilla_signer::seed::read_seed_file(seed_file).expect("seed file");
    flotilla_signer::seed::node_public_key(&seed)
        .expect("node key")
        .to_string()
}

impl HostProcess {
    /// Starts `flotilla host --config` in `dir` (files named after `name`) for `nodes` (alias,
    /// seed file — only their node ids reach the host) with its hub on `hub_port`. Returns once
    /// the hub listens; call [`HostProcess::ready`] after starting the signers.
    pub async fn start(
        dir: &Path,
        name: &str,
        chain_json: &Path,
        hub_port: u16,
        nodes: &[(&str, &Path)],
    ) -> Result<Self, String> {
        Self::start_with_stderr(dir, name, chain_json, hub_port, nodes, Stdio::inherit()).await
    }

    /// [`HostProcess::start`] with the host's log (its stderr) appended to `log`, so a test
    /// can search what LDK said (several runs of one host may share the file).
    pub async fn start_logged(
        dir: &Path,
        name: &str,
        chain_json: &Path,
        hub_port: u16,
        nodes: &[(&str, &Path)],
        log: &Path,
    ) -> Result<Self, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        Self::start_with_stderr(dir, name, chain_json, hub_port, nodes, file.into()).await
    }

    async fn start_with_stderr(
        dir: &Path,
        name: &str,
        chain_json: &Path,
        hub_port: u16,
        nodes: &[(&str, &Path)],
        stderr: Stdio,
    ) -> Result<Self, String> {
        let nodes: Vec<Value> = nodes
            .iter()
            .map(|(alias, seed)| json!({"alias": alias, "node_id": node_id_of(seed)}))
            .collect();
        let config = dir.join(format!("{name}-host.json"));
        let body = json!({
            "db": dir.join(format!("{name}.db")),
            "chain": chain_json,
            "hub_listen": format!("127.0.0.1:{hub_port}"),
            "tls_dir": dir.join(format!("{name}-tls")),
            "nodes": nodes,
            "api_listen": "127.0.0.1:0",
        });
        std::fs::write(&config, body.to_string()).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(flotilla_bin());
        cmd.arg("host").arg("--config").arg(&config);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", flotilla_bin().display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        let hello = next_json(&mut stdout, "hub listening").await?;
        Ok(HostProcess {
            child,
            stdin,
            stdout,
            nodes: Value::Null,
            failed: Value::Null,
            hub_url: hello["ok"]["hub"].as_str().unwrap_or_default().to_string(),
            ca_file: PathBuf::from(hello["ok"]["ca_file"].as_str().unwrap_or_default()),
            api_url: hello["ok"]["api"].as_str().unwrap_or_default().to_string(),
            operator_token_file: PathBuf::from(
                hello["ok"]["operator_token_file"]
                    .as_str()
                    .unwrap_or_default(),
            ),
        })
    }

    /// Waits until every node is up (new nodes wait for their signer's first attach).
    pub async fn ready(&mut self) -> Result<(), String> {
        let up = next_json(&mut self.stdout, "nodes up").await?;
        if up.get("ok").is_none() {
            return Err(format!("host failed to start: {up}"));
        }
        self.nodes = up["ok"]["nodes"].clone();
        self.failed = up["ok"]["failed"].clone();
        Ok(())
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
        self.send(&request).await?;
        self.answer(&request).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends a request without waiting for its answer (see [`HostProcess::answer`]).
    pub async fn send(&mut self, request: &Value) -> Result<(), String> {
        self.stdin
            .write_all(format!("{request}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.stdin.flush().await.map_err(|e| e.to_string())
    }

    /// The answer to the oldest request sent and not yet answered.
    pub async fn answer(&mut self, request: &Value) -> Result<Value, String> {
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

async fn next_json(
    stdout: &mut Lines<BufReader<ChildStdout>>,
    what: &str,
) -> Result<Value, String> {
    let line = tokio::time::timeout(Duration::from_secs(120), stdout.next_line())
        .await
        .map_err(|_| format!("host: timed out waiting for {what}"))?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("host exited before {what}"))?;
    serde_json::from_str(&line).map_err(|e| format!("{line}: {e}"))
}

/// A `flotilla signer` process serving some nodes of one host.
pub struct SignerProcess {
    child: Child,
    config: PathBuf,
}

impl SignerProcess {
    /// Writes the signer's config (seeds, hub URL, CA, state dir, `policy`) and starts it.
    pub fn start(
        dir: &Path,
        name: &str,
        host: &HostProcess,
        seeds: &[&Path],
        policy: Value,
    ) -> Result<Self, String> {
        let config = dir.join(format!("{name}-signer.json"));
        let body = json!({
            "host_url": host.hub_url,
            "ca_file": host.ca_file,
            "state_dir": dir.join(format!("{name}-signer-state")),
            "seed_files": seeds,
            "policy": policy,
        });
        std::fs::write(&config, body.to_string()).map_err(|e| e.to_string())?;
        let child = Self::spawn(&config)?;
        Ok(SignerProcess { child, config })
    }

    fn spawn(config: &Path) -> Result<Child, String> {
        Command::new(flotilla_bin())
            .arg("signer")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn signer: {e}"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL: the signer vanishes mid-whatever.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Starts the same signer again (same seeds, same state dir).
    pub fn restart(&mut self) -> Result<(), String> {
        self.child = Self::spawn(&self.config)?;
        Ok(())
    }
}

/// A seed file for `alias` that looks like a seed (no repeated byte a memory scan could meet
/// by chance), deterministic so runs are comparable.
pub fn write_seed(dir: &Path, alias: &str) -> PathBuf {
    use bitcoin::hashes::{sha256, Hash};
    let path = dir.join(format!("{alias}.seed"));
    let seed = sha256::Hash::hash(format!("flotilla test seed {alias}").as_bytes());
    std::fs::write(&path, seed.to_byte_array()).expect("write seed");
    path
}

/// The channel with `peer` in a `channels` answer.
pub fn channel_to(channels: &Value, peer: &str) -> Option<Value> {
    channels
        .as_array()?
        .iter()
        .find(|c| c["peer"] == peer)
        .cloned()
}

impl HostProcess {
    /// Sends `sat` from the harness's coins to a fresh address of `node`'s wallet (unmined).
    pub async fn send_to_wallet(&mut self, chain: &Regtest, node: &str, sat: u64) {
        let address: bitcoin::Address<_> = self
            .must(req("address", node))
            .await
            .as_str()
            .expect("an address")
            .parse()
            .expect("a valid address");
        chain
            .send(&address.assume_checked(), bitcoin::Amount::from_sat(sat))
            .await
            .expect("harness send");
    }

    /// Waits until `node`'s wallet has exactly `sat` confirmed.
    pub async fn wait_funded(&mut self, node: &str, sat: u64) {
        self.wait_for("funded wallet", req("balance", node), |v| {
            v["wallet"]["confirmed_sat"].as_u64() == Some(sat)
        })
        .await;
    }
}

pub fn req(cmd: &str, node: &str) -> Value {
    json!({"cmd": cmd, "node": node})
}
