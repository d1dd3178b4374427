//! `cargo xtask bench`: each case measures kiln and a baseline tool on the
//! same generated input in the same run, and reports the ratio. Tests never
//! assert on time; this is where speed goals are checked.

pub mod container;
pub mod export;
pub mod installer;
pub mod iso;
pub mod qcow2;
pub mod scan;

use std::time::{Duration, Instant};

use anyhow::Result;
use camino::Utf8Path;
use serde::Serialize;

pub mod ova;

/// One measured comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub case: String,
    /// What kiln did.
    pub kiln: String,
    pub kiln_secs: f64,
    /// What it is compared with.
    pub baseline: String,
    pub baseline_secs: f64,
    /// kiln / baseline (time), or baseline / kiln for throughput cases (see `higher_is_better`).
    pub ratio: f64,
    /// The goal, e.g. `<= 1.2`.
    pub goal: String,
    pub met: bool,
}

impl Measurement {
    /// A time comparison: ratio = kiln / baseline, goal `ratio <= max`.
    pub fn time(
        case: &str,
        kiln: &str,
        k: Duration,
        baseline: &str,
        b: Duration,
        max: f64,
    ) -> Measurement {
        let ratio = k.as_secs_f64() / b.as_secs_f64().max(1e-9);
        Measurement {
            case: case.into(),
            kiln: kiln.into(),
            kiln_secs: k.as_secs_f64(),
            baseline: baseline.into(),
            baseline_secs: b.as_secs_f64(),
            ratio,
            goal: format!("<= {max}x"),
            met: ratio <= max,
        }
    }
    /// An absolute goal on kiln's time (`<= max_secs`); the ratio to the
    /// baseline is printed for scale.
    pub fn within_secs(
        case: &str,
        kiln: &str,
        k: Duration,
        baseline: &str,
        b: Duration,
        max_secs: f64,
    ) -> Measurement {
        Measurement {
            goal: format!("<= {max_secs} s"),
            met: k.as_secs_f64() <= max_secs,
            ..Measurement::time(case, kiln, k, baseline, b, f64::INFINITY)
        }
    }
    /// A figure reported to watch for regressions, without a goal.
    pub fn report(case: &str, kiln: &str, k: Duration, baseline: &str, b: Duration) -> Measurement {
        Measurement {
            goal: "none (reported)".into(),
            met: true,
            ..Measurement::time(case, kiln, k, baseline, b, f64::INFINITY)
        }
    }
    /// A speed-up comparison: ratio = baseline / kiln, goal `ratio >= min`.
    pub fn speedup(
        case: &str,
        kiln: &str,
        k: Duration,
        baseline: &str,
        b: Duration,
        min: f64,
    ) -> Measurement {
        let ratio = b.as_secs_f64() / k.as_secs_f64().max(1e-9);
        Measurement {
            case: case.into(),
            kiln: kiln.into(),
            kiln_secs: k.as_secs_f64(),
            baseline: baseline.into(),
            baseline_secs: b.as_secs_f64(),
            ratio,
            goal: format!(">= {min}x faster"),
            met: ratio >= min,
        }
    }
}

/// Time a closure.
pub fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed()))
}

/// The median of a few timings.
pub fn median(mut ts: Vec<Duration>) -> Duration {
    ts.sort();
    ts[ts.len() / 2]
}

/// Run `baseline` and `kiln` alternately, `rounds` times each; each returns
/// the time of its measured part (set-up and clean-up left out). Returns
/// kiln's last value with the median time of each side. On a machine whose
/// disk speed swings from run to run, alternating spreads the slow and fast
/// moments over both sides, and the median drops the outliers.
pub fn alternating<T>(
    rounds: usize,
    mut baseline: impl FnMut() -> Result<Duration>,
    mut kiln: impl FnMut() -> Result<(T, Duration)>,
) -> Result<(T, Duration, Duration)> {
    let (mut tb, mut tk, mut last) = (Vec::new(), Vec::new(), None);
    for _ in 0..rounds.max(1) {
        tb.push(baseline()?);
        let (v, t) = kiln()?;
        tk.push(t);
        last = Some(v);
    }
    let last = last.expect("at least one round");
    Ok((last, median(tk), median(tb)))
}

/// Context for a case: a scratch directory on the same file system as the
/// cache, the step cache (cases that time one step on top of others, such as
/// the installer ISO, reuse its entries for the rest), and a size scale (1.0 =
/// the sizes the goals are set for; tests use less).
pub struct BenchCx<'a> {
    pub scratch: &'a Utf8Path,
    pub cache: &'a Utf8Path,
    pub scale: f64,
}

impl BenchCx<'_> {
    pub fn bytes(&self, full: u64) -> u64 {
        ((full as f64) * self.scale).max(1.0) as u64
    }
}

pub fn render(ms: &[Measurement]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<30} {:>9} {:>9} {:>8}  {:<15} baseline",
        "case", "kiln s", "base s", "ratio", "goal"
    );
    for m in ms {
        let _ = writeln!(
            s,
            "{:<30} {:>9.2} {:>9.2} {:>8.2}  {:<15} {}{}",
            m.case,
            m.kiln_secs,
            m.baseline_secs,
            m.ratio,
            m.goal,
            m.baseline,
            if m.met { "" } else { "  (goal missed)" }
        );
    }
    s
}
