//! What the bench reads about its own process: CPU time, resident memory, open files.

use std::time::Duration;

/// User plus system CPU time this process has used so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// User plus system CPU time another process has used so far (`/proc/PID/stat`), if readable.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the state, field 3;
    // utime and stime are fields 14 and 15, in clock ticks.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf reads a configuration value and has no other effect.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}

/// Resident set size in KiB (`VmRSS` of /proc/self/status), 0 where that is unavailable.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Raises the soft open-file limit to the hard one (every node holds a listening socket);
/// returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: get/setrlimit only read and write the struct we hand them.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur as u64;
        }
    }
    lim.rlim_cur as u64
}

/// `x` to three decimals, as the reports print figures.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        // Spin until 50 ms of CPU were used, however long that takes on a busy machine (a
        // wall-clock spin gets less CPU than it lasts when other processes share the cores).
        let before = cpu_time();
        let start = std::time::Instant::now();
        let mut x: u64 = 1;
        while cpu_time() - before < Duration::from_millis(50) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "a minute of spinning used no CPU time"
            );
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let own = process_cpu_time(std::process::id()).expect("own /proc stat");
        assert!(own >= Duration::from_millis(40), "own CPU read as {own:?}");
    }

    #[test]
    fn rss_is_read_and_fd_limit_is_positive() {
        assert!(rss_kib() > 0);
        assert!(raise_fd_limit() > 0);
    }
}
