//! What a payments run reached against its goals, so the report answers the question it is
//! run for without a reader working it out from the records.

use serde::Serialize;

use super::record::{Ratio, Record, SignerMode};

/// The targets for a 2-core machine.
#[derive(Debug, Serialize)]
pub struct Goals {
    pub payments_per_s: f64,
    pub p99_ms: f64,
    pub throughput_overhead: f64,
}

pub const GOALS: Goals = Goals {
    payments_per_s: 300.0,
    p99_ms: 100.0,
    throughput_overhead: 1.5,
};

/// One measured point.
#[derive(Debug, Serialize, PartialEq)]
pub struct Point {
    pub concurrency: usize,
    pub payments_per_s: f64,
    pub p99_ms: f64,
}

/// One signer mode against the goals.
#[derive(Debug, Serialize)]
pub struct Reached {
    pub signer: SignerMode,
    /// The highest rate measured.
    pub fastest: Option<Point>,
    /// The highest rate measured with p99 within the goal and no payment failed.
    pub fastest_within_p99: Option<Point>,
    /// Whether one measurement met the rate and the p99 goals together.
    pub rate_and_p99_met: bool,
}

/// The whole run against the goals.
#[derive(Debug, Serialize)]
pub struct Verdict {
    /// What it was judged against (the report lists the goals once, beside it).
    #[serde(skip)]
    goals: &'static Goals,
    pub reached: Vec<Reached>,
    /// The largest remote/in-process throughput overhead measured, and whether it is within
    /// the goal (none without both modes).
    pub max_throughput_overhead: Option<f64>,
    pub overhead_met: Option<bool>,
}

impl Verdict {
    pub fn of(records: &[Record], ratios: &[Ratio], goals: &'static Goals) -> Verdict {
        let mut modes: Vec<SignerMode> = Vec::new();
        for r in records {
            if !modes.contains(&r.signer) {
                modes.push(r.signer);
            }
        }
        let reached = modes
            .into_iter()
            .map(|signer| {
                let mine: Vec<&Record> = records.iter().filter(|r| r.signer == signer).collect();
                let fastest_of = |within: &dyn Fn(&Record) -> bool| {
                    mine.iter()
                        .filter(|r| within(r))
                        .max_by(|a, b| a.payments_per_s.total_cmp(&b.payments_per_s))
                        .map(|r| Point {
                            concurrency: r.concurrency,
                            payments_per_s: r.payments_per_s,
                            p99_ms: r.p99_ms,
                        })
                };
                let fastest_within_p99 =
                    fastest_of(&|r| r.p99_ms <= goals.p99_ms && r.payments_failed == 0);
                Reached {
                    signer,
                    fastest: fastest_of(&|_| true),
                    rate_and_p99_met: fastest_within_p99
                        .as_ref()
                        .is_some_and(|p| p.payments_per_s >= goals.payments_per_s),
                    fastest_within_p99,
                }
            })
            .collect();
        let max_throughput_overhead = ratios
            .iter()
            .map(|r| r.throughput_overhead)
            .max_by(f64::total_cmp);
        Verdict {
            goals,
            reached,
            max_throughput_overhead,
            overhead_met: max_throughput_overhead.map(|o| o <= goals.throughput_overhead),
        }
    }

    /// One line per finding, for the terminal.
    pub fn lines(&self) -> Vec<String> {
        let goals = self.goals;
        let point = |p: &Option<Point>| match p {
            Some(p) => format!(
                "{:.0}/s at {} in flight (p99 {:.0} ms)",
                p.payments_per_s, p.concurrency, p.p99_ms
            ),
            None => "none".to_string(),
        };
        let met = |m: bool| if m { "met" } else { "not met" };
        let mut lines: Vec<String> = self
            .reached
            .iter()
            .map(|r| {
                format!(
                    "{}: fastest {}; fastest with p99 <= {:.0} ms: {}; {:.0}/s with p99 <= {:.0} ms: {}",
                    r.signer.arg(),
                    point(&r.fastest),
                    goals.p99_ms,
                    point(&r.fastest_within_p99),
                    goals.payments_per_s,
                    goals.p99_ms,
                    met(r.rate_and_p99_met),
                )
            })
            .collect();
        if let (Some(o), Some(m)) = (self.max_throughput_overhead, self.overhead_met) {
            lines.push(format!(
                "remote/in-process throughput overhead at most {o:.2}x (goal {:.1}x): {}",
                goals.throughput_overhead,
                met(m)
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(signer: SignerMode, concurrency: usize, rate: f64, p99: f64) -> Record {
        Record {
            signer,
            pairs: 8,
            concurrency,
            payments: 100,
            payments_ok: 100,
            payments_failed: 0,
            elapsed_s: 1.0,
            payments_per_s: rate,
            p50_ms: p99 / 2.0,
            p90_ms: p99 * 0.8,
            p99_ms: p99,
            max_ms: p99,
            host_cpu_s: 1.0,
            signer_cpu_s: None,
            host_cpu_ms_per_payment: 5.0,
            cpu_ms_per_payment: 8.0,
            signer_requests_per_payment: 10.0,
            db_writes_per_payment: 12.0,
            db_writes_per_commit: 2.0,
        }
    }

    fn ratio(concurrency: usize, overhead: f64) -> Ratio {
        Ratio {
            concurrency,
            throughput_overhead: overhead,
            p50: 1.0,
            p99: 1.0,
            host_cpu_per_payment: 1.0,
            cpu_per_payment: 1.0,
        }
    }

    #[test]
    fn finds_the_fastest_point_within_the_latency_goal() {
        let records = vec![
            record(SignerMode::Remote, 8, 180.0, 55.0),
            record(SignerMode::Remote, 16, 220.0, 99.0),
            record(SignerMode::Remote, 32, 290.0, 200.0),
            record(SignerMode::InProcess, 8, 250.0, 40.0),
            record(SignerMode::InProcess, 16, 310.0, 80.0),
        ];
        let ratios = vec![ratio(8, 1.39), ratio(16, 1.41)];
        let v = Verdict::of(&records, &ratios, &GOALS);
        let remote = &v.reached[0];
        assert_eq!(remote.signer, SignerMode::Remote);
        assert_eq!(remote.fastest.as_ref().map(|p| p.concurrency), Some(32));
        assert_eq!(
            remote.fastest_within_p99,
            Some(Point {
                concurrency: 16,
                payments_per_s: 220.0,
                p99_ms: 99.0
            })
        );
        assert!(!remote.rate_and_p99_met, "290/s only with p99 200 ms");
        assert!(v.reached[1].rate_and_p99_met, "310/s with p99 80 ms");
        assert_eq!(v.max_throughput_overhead, Some(1.41));
        assert_eq!(v.overhead_met, Some(true));
        let text = v.lines().join("\n");
        assert!(
            text.contains("remote: fastest 290/s at 32 in flight"),
            "{text}"
        );
        assert!(text.contains("300/s with p99 <= 100 ms: not met"), "{text}");
        assert!(text.contains("at most 1.41x (goal 1.5x): met"), "{text}");
    }

    #[test]
    fn nothing_within_the_goals_and_one_mode_only() {
        let mut failing = record(SignerMode::Remote, 16, 320.0, 90.0);
        failing.payments_failed = 1;
        let records = vec![record(SignerMode::Remote, 32, 290.0, 150.0), failing];
        let v = Verdict::of(&records, &[], &GOALS);
        assert_eq!(v.reached.len(), 1);
        assert_eq!(
            v.reached[0].fastest_within_p99, None,
            "a failed payment disqualifies"
        );
        assert_eq!(
            v.reached[0].fastest.as_ref().map(|p| p.concurrency),
            Some(16)
        );
        assert!(!v.reached[0].rate_and_p99_met);
        assert_eq!(v.overhead_met, None);
        assert_eq!(v.lines().len(), 1);
    }
}
