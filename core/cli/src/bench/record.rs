//! The figures of a payments run: one record per host (signer mode and concurrency), and the
//! ratio of the remote mode's figures to the in-process baseline's.

use clap::ValueEnum;
use serde::Serialize;

use super::measure::round3;

/// Where each node's signatures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignerMode {
    /// The customer's signer inside the host process (the baseline).
    InProcess,
    /// One signer process for all nodes, dialing the hub over TLS, state on disk.
    Remote,
}

impl SignerMode {
    pub(crate) fn arg(self) -> &'static str {
        match self {
            SignerMode::InProcess => "in-process",
            SignerMode::Remote => "remote",
        }
    }
}

/// One host, one signer mode.
#[derive(Debug, Serialize)]
pub struct Record {
    pub signer: SignerMode,
    pub pairs: usize,
    pub concurrency: usize,
    pub payments: usize,
    pub payments_ok: usize,
    pub payments_failed: usize,
    pub elapsed_s: f64,
    pub payments_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// CPU (user + sys) of this process, which is the host (and, in-process, the signer).
    pub host_cpu_s: f64,
    /// CPU of the signer process (remote mode only).
    pub signer_cpu_s: Option<f64>,
    /// The host's CPU per payment: what limits how many payments one host machine carries
    /// (a deployed signer runs on the customer's side, not on the host's cores).
    pub host_cpu_ms_per_payment: f64,
    /// Both processes' CPU per payment.
    pub cpu_ms_per_payment: f64,
    /// Requests the signers answered during the measurement, per payment (both ends).
    pub signer_requests_per_payment: f64,
    /// Host database writes per payment, and per commit (group commit: one fsync each).
    pub db_writes_per_payment: f64,
    pub db_writes_per_commit: f64,
}

/// Remote over in-process for the same figures at one concurrency: the signer's overhead.
#[derive(Debug, Serialize)]
pub struct Ratio {
    pub concurrency: usize,
    /// In-process rate over remote rate: how many times slower remote signing is.
    pub throughput_overhead: f64,
    pub p50: f64,
    pub p99: f64,
    /// The host's own CPU per payment, remote over in-process (whose figure includes signing).
    pub host_cpu_per_payment: f64,
    /// Host and signer CPU together: on this bench's shared cores, what bounds the throughput.
    pub cpu_per_payment: f64,
}

impl Ratio {
    /// `remote` over `base` (in-process) at the same concurrency.
    pub fn of(remote: &Record, base: &Record) -> Ratio {
        let r = |a: f64, b: f64| if b > 0.0 { round3(a / b) } else { f64::NAN };
        Ratio {
            concurrency: remote.concurrency,
            throughput_overhead: r(base.payments_per_s, remote.payments_per_s),
            p50: r(remote.p50_ms, base.p50_ms),
            p99: r(remote.p99_ms, base.p99_ms),
            host_cpu_per_payment: r(remote.host_cpu_ms_per_payment, base.host_cpu_ms_per_payment),
            cpu_per_payment: r(remote.cpu_ms_per_payment, base.cpu_ms_per_payment),
        }
    }
}
