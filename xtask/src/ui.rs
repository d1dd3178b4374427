//! What a person sees: step status lines, progress bars on a terminal, plain
//! log lines otherwise. Everything goes to stderr; stdout is for results
//! (`--json`, `recipe show`).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static VERBOSE: AtomicBool = AtomicBool::new(false);
static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_verbose(v: bool) {
    VERBOSE.store(v, Ordering::Relaxed);
}
pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

/// Every bar on the terminal: steps run side by side, so their bars are
/// drawn together, and log lines are printed above them.
fn bars() -> &'static MultiProgress {
    static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// One log line on stderr, above the bars on a terminal.
fn line(text: &str) {
    if tty() {
        bars().suspend(|| eprintln!("{text}"));
    } else {
        eprintln!("{text}");
    }
}

pub fn info(msg: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        line(&format!("kiln: {msg}"));
    }
}

pub fn warn(msg: &str) {
    line(&format!("kiln: warning: {msg}"));
}

pub fn debug(msg: &str) {
    if VERBOSE.load(Ordering::Relaxed) {
        line(&format!("kiln: {msg}"));
    }
}

fn tty() -> bool {
    std::io::stderr().is_terminal() && !QUIET.load(Ordering::Relaxed)
}

/// A byte-count progress bar for long work. On a terminal it draws a bar; off
/// a terminal it logs at most one line per 10% so CI logs stay readable.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    last_decile: u64,
}

impl Progress {
    pub fn bytes(label: &str, total: u64) -> Progress {
        let bar = tty().then(|| {
            let b = bars().add(ProgressBar::new(total));
            b.set_style(
                ProgressStyle::with_template(
                    "kiln: {msg:20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            b.set_message(label.to_string());
            b
        });
        Progress {
            bar,
            label: label.to_string(),
            total,
            done: 0,
            last_decile: 0,
        }
    }

    /// A spinner for work of unknown size (an external tool running).
    pub fn spinner(label: &str) -> Progress {
        let bar = tty().then(|| {
            let b = bars().add(ProgressBar::new_spinner());
            b.set_style(ProgressStyle::with_template("kiln: {spinner} {msg} ({elapsed})").unwrap());
            b.set_message(label.to_string());
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        });
        Progress {
            bar,
            label: label.to_string(),
            total: 0,
            done: 0,
            last_decile: 0,
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(b) => b.inc(n),
            None if self.total > 0 && !QUIET.load(Ordering::Relaxed) => {
                let decile = self.done * 10 / self.total;
                if decile > self.last_decile && decile < 10 {
                    self.last_decile = decile;
                    line(&format!("kiln: {} {}%", self.label, decile * 10));
                }
            }
            None => {}
        }
    }

    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
