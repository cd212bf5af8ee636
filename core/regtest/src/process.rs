//! Starting, watching and stopping the btcd process.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_host::chain::rpc::{RpcClient, RpcError};

use super::RegtestError;
use crate::install::tail;

/// How long btcd may take from spawn to a working RPC server (slow CI included).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful shutdown may take before the process is killed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);
/// Attempts to start btcd when a chosen free port was taken by someone else meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// Where btcd keeps its files inside a regtest directory.
pub(crate) struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
    /// btcd's own log file (it appends the network name to `--logdir`).
    pub fn log_file(&self) -> PathBuf {
        self.log_dir().join("regtest").join("btcd.log")
    }
    /// btcd's stderr: configuration errors land here, not in its log.
    pub fn stderr_file(&self) -> PathBuf {
        self.dir.join("btcd.stderr")
    }
    /// An empty config file, so a `~/.btcd/btcd.conf` cannot change the harness's node.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("btcd.conf")
    }
}

/// What btcd is started with.
pub(crate) struct Launch<'a> {
    pub btcd: &'a Path,
    pub layout: &'a Layout,
    pub user: &'a str,
    pub password: &'a str,
    pub cert: &'a Path,
    pub key: &'a Path,
    pub mining_address: &'a str,
    /// New session: survives the parent (CLI `up`), not hit by the terminal's Ctrl-C.
    pub detach: bool,
}

/// A btcd that answers RPC.
pub(crate) struct Started {
    pub child: Child,
    pub rpc_addr: SocketAddr,
    pub p2p_addr: SocketAddr,
}

/// User-agent comment that lets one instance recognise another among its peers.
pub(crate) fn ua_tag(p2p_addr: &SocketAddr) -> String {
    format!("flotilla-regtest-{}", p2p_addr.port())
}

/// Starts btcd on fresh loopback ports and waits until its RPC answers; `client_for` builds
/// the RPC client for a given RPC address. Retries with new ports if a port was stolen
/// between choosing and binding it.
pub(crate) async fn start(
    launch: &Launch<'_>,
    client_for: impl Fn(SocketAddr) -> Result<RpcClient, RegtestError>,
) -> Result<Started, RegtestError> {
    let mut last = None;
    for _ in 0..PORT_ATTEMPTS {
        let (rpc_addr, p2p_addr) = free_port_pair()?;
        let mut child = spawn(launch, rpc_addr, p2p_addr)?;
        let client = match client_for(rpc_addr) {
            Ok(c) => c,
            Err(e) => {
                kill_now(&mut child);
                return Err(e);
            }
        };
        match wait_ready(&mut child, &client, launch.layout).await {
            Ok(()) => {
                return Ok(Started {
                    child,
                    rpc_addr,
                    p2p_addr,
                })
            }
            Err(e) => {
                kill_now(&mut child);
                let port_clash = matches!(&e, RegtestError::Exited { log_tail, .. }
                    if log_tail.contains("address already in use"));
                if !port_clash {
                    return Err(e);
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(RegtestError::NotReady {
        waited_secs: 0,
        log_tail: String::new(),
    }))
}

/// Starts btcd on the given ports (a restart keeps its address) and waits until its RPC
/// answers through `client`.
pub(crate) async fn start_at(
    launch: &Launch<'_>,
    rpc_addr: SocketAddr,
    p2p_addr: SocketAddr,
    client: &RpcClient,
) -> Result<Child, RegtestError> {
    let mut child = spawn(launch, rpc_addr, p2p_addr)?;
    match wait_ready(&mut child, client, launch.layout).await {
        Ok(()) => Ok(child),
        Err(e) => {
            kill_now(&mut child);
            Err(e)
        }
    }
}

fn free_port_pair() -> Result<(SocketAddr, SocketAddr), RegtestError> {
    let bind = || {
        TcpListener::bind("127.0.0.1:0")
            .map_err(|e| RegtestError::io("cannot find a free loopback port", e))
    };
    // Hold both listeners until both ports are known, so they differ.
    let (a, b) = (bind()?, bind()?);
    let addr = |l: &TcpListener| {
        l.local_addr()
            .map_err(|e| RegtestError::io("cannot find a free loopback port", e))
    };
    Ok((addr(&a)?, addr(&b)?))
}

fn spawn(
    launch: &Launch<'_>,
    rpc_addr: SocketAddr,
    p2p_addr: SocketAddr,
) -> Result<Child, RegtestError> {
    let layout = launch.layout;
    let config = layout.config_file();
    if !config.exists() {
        std::fs::write(&config, b"")
            .map_err(|e| RegtestError::io(format!("cannot write {}", config.display()), e))?;
    }
    let stderr_path = layout.stderr_file();
    let stderr = std::fs::File::create(&stderr_path)
        .map_err(|e| RegtestError::io(format!("cannot create {}", stderr_path.display()), e))?;
    let mut cmd = Command::new(launch.btcd);
    cmd.arg("--regtest")
        .arg(format!("--configfile={}", config.display()))
        .arg(format!("--datadir={}", layout.data_dir().display()))
        .arg(format!("--logdir={}", layout.log_dir().display()))
        .arg(format!("--rpcuser={}", launch.user))
        .arg(format!("--rpcpass={}", launch.password))
        .arg(format!("--rpclisten={rpc_addr}"))
        .arg(format!("--rpccert={}", launch.cert.display()))
        .arg(format!("--rpckey={}", launch.key.display()))
        .arg(format!("--listen={p2p_addr}"))
        .arg(format!("--miningaddr={}", launch.mining_address))
        .arg(format!("--uacomment={}", ua_tag(&p2p_addr)))
        .arg("--txindex")
        // Local test peers must never ban each other (e.g. after a deliberate reorg).
        .arg("--nobanning")
        .arg("--nostalldetect")
        .arg("--nodnsseed")
        // Relay transactions to a linked instance promptly instead of every 10 s.
        .arg("--trickleinterval=50ms")
        // The default pre-allocates 250 MiB per instance; regtest needs a sliver of that.
        .arg("--utxocachemaxsize=16")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    if launch.detach {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.spawn()
        .map_err(|e| RegtestError::io(format!("cannot start btcd ({})", launch.btcd.display()), e))
}

async fn wait_ready(
    child: &mut Child,
    client: &RpcClient,
    layout: &Layout,
) -> Result<(), RegtestError> {
    let start = Instant::now();
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| RegtestError::io("cannot watch btcd", e))?
        {
            return Err(RegtestError::Exited {
                status: status.to_string(),
                log_tail: log_tail(layout),
            });
        }
        match client
            .call::<u64>("getblockcount", serde_json::json!([]))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_permanent() => return Err(e.into()),
            Err(_) if start.elapsed() < READY_TIMEOUT => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(_) => {
                return Err(RegtestError::NotReady {
                    waited_secs: READY_TIMEOUT.as_secs(),
                    log_tail: log_tail(layout),
                })
            }
        }
    }
}

/// The end of btcd's stderr and log, for error messages.
pub(crate) fn log_tail(layout: &Layout) -> String {
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let stderr = read(layout.stderr_file());
    let log = read(layout.log_file());
    let mut out = tail(stderr.trim_end(), 10);
    if !out.is_empty() && !log.is_empty() {
        out.push('\n');
    }
    out.push_str(&tail(log.trim_end(), 20));
    if out.is_empty() {
        out.push_str("(btcd wrote no log)");
    }
    out
}

fn kill_now(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends SIGTERM (btcd shuts down as for RPC `stop`) to `pid`.
pub(crate) fn terminate(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: plain syscall; a stale pid is checked by the caller.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

fn kill_pid(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: plain syscall; a stale pid is checked by the caller.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Stops our own child: SIGTERM, up to `grace` to exit, then SIGKILL. Blocking (for `Drop`).
pub(crate) fn stop_child_blocking(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    terminate(child.id());
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill_now(child);
}

/// Waits up to `grace` for a process to exit (after RPC `stop`), then SIGTERM, then SIGKILL.
/// Uses the `Child` when this process started btcd (to reap it), else the pid.
pub(crate) async fn wait_exit_or_kill(
    child: Option<&mut Child>,
    pid: u32,
    layout: &Layout,
    grace: Duration,
) -> Result<(), RegtestError> {
    let mut child = child;
    let alive = |child: &mut Option<&mut Child>| match child {
        Some(c) => matches!(c.try_wait(), Ok(None)),
        None => is_our_btcd(pid, layout) || exiting(pid),
    };
    for signal in [None, Some(terminate as fn(u32)), Some(kill_pid as fn(u32))] {
        if let Some(send) = signal {
            if !alive(&mut child) {
                return Ok(());
            }
            send(pid);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !alive(&mut child) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if alive(&mut child) {
        Err(RegtestError::StopFailed(pid))
    } else {
        Ok(())
    }
}

/// Whether `pid` is a live (not zombie) btcd using this regtest directory. Where `/proc` is
/// unavailable it falls back to "some process has this pid".
/// A process in the middle of exiting: its memory (and so its command line) is gone, but it is
/// not yet a zombie. Counted as alive so a stop returns only once the process is really gone.
fn exiting(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let running = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    running && cmdline.is_empty()
}

pub(crate) fn is_our_btcd(pid: u32, layout: &Layout) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(raw, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if !Path::new("/proc/self").exists() {
        return true;
    }
    let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
    // Field 3 (after the parenthesised command name) is the state; `Z` is a zombie.
    let zombie = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        .unwrap_or(false);
    if zombie {
        return false;
    }
    // A recycled pid belongs to some other program: do not signal it.
    let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
    let needle = format!("--datadir={}", layout.data_dir().display());
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == needle.as_bytes())
}

/// Whether an RPC error means "nobody is listening" rather than a real failure.
pub(crate) fn is_unreachable(e: &RpcError) -> bool {
    e.is_unreachable()
}
