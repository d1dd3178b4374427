//! `cargo xtask test`: the whole suite, its test binaries side by side.
//!
//! `cargo test` runs test binaries one after another, and most of a kiln
//! test binary's time is spent waiting on one tool (mmdebstrap fetching,
//! dpkg under qemu-user, a TCG guest), so one binary at a time leaves the
//! machine half idle. The suite builds every test binary with
//! `cargo test --no-run`, starts them all at once, each writing its output
//! to a log of its own (`<target>/kiln/test-logs/`), prints each log whole
//! when its binary ends, then a summary. The tests' heavy parts (boots, root
//! file systems) take one of a few machine-wide slots
//! (`xtask/tests/support`'s `heavy()`), so running side by side fills the
//! machine without piling guests onto it.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::tools;
use crate::ui;

/// One test binary cargo built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    /// What cargo calls it: `tests/qcow2.rs`, `src/lib.rs`.
    pub name: String,
    pub exe: Utf8PathBuf,
    /// Its package's directory, where `cargo test` runs it.
    pub dir: Utf8PathBuf,
}

/// Options of `cargo test` that take a value: with them, the next argument
/// is that value, not a test-name filter.
const TAKES_VALUE: &[&str] = &[
    "-p",
    "--package",
    "--exclude",
    "--test",
    "--bin",
    "--example",
    "--bench",
    "-F",
    "--features",
    "-j",
    "--jobs",
    "--target",
    "--target-dir",
    "--profile",
    "--manifest-path",
    "--color",
    "--config",
    "-Z",
];

/// `cargo test`'s arguments, split as `cargo test` splits them: what builds
/// the binaries (the options before `--`) and what every binary gets (a
/// test-name filter given before `--`, then everything after it).
pub fn split_args(args: &[String]) -> (Vec<String>, Vec<String>) {
    let (before, after) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let mut cargo = Vec::new();
    let mut binary = Vec::new();
    let mut it = before.iter();
    while let Some(a) = it.next() {
        if TAKES_VALUE.contains(&a.as_str()) {
            cargo.push(a.clone());
            cargo.extend(it.next().cloned());
        } else if a.starts_with('-') {
            cargo.push(a.clone());
        } else {
            binary.push(a.clone());
        }
    }
    binary.extend(after.iter().cloned());
    (cargo, binary)
}

/// The test binaries in cargo's JSON messages (`--message-format=json`):
/// every artifact built with the test profile that has an executable, in
/// name order.
pub fn binaries(messages: &str) -> Result<Vec<Binary>> {
    let mut out: Vec<Binary> = Vec::new();
    for line in messages.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("reading cargo's build message `{line}`"))?;
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let manifest = Utf8Path::new(v["manifest_path"].as_str().unwrap_or_default());
        let dir = manifest.parent().unwrap_or(Utf8Path::new(".")).to_owned();
        let src = Utf8Path::new(v["target"]["src_path"].as_str().unwrap_or_default());
        let name = src.strip_prefix(&dir).unwrap_or(src).to_string();
        if out.iter().all(|b| b.exe != exe) {
            out.push(Binary {
                name,
                exe: exe.into(),
                dir,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The counts of libtest's `test result:` lines in a binary's log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

pub fn counts(log: &str) -> Counts {
    let mut c = Counts::default();
    for line in log.lines().filter(|l| l.starts_with("test result:")) {
        for part in line.split([';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => c.passed += n,
                "failed" => c.failed += n,
                "ignored" => c.ignored += n,
                _ => {}
            }
        }
    }
    c
}

/// What became of one binary.
struct Ran {
    binary: Binary,
    log: Utf8PathBuf,
    took: Duration,
    /// `None`: it exited 0; else why it failed.
    failure: Option<String>,
}

/// Build the test binaries, run them side by side, print each log as its
/// binary ends and a summary; an error when any binary failed.
pub fn run(cargo_args: &[String]) -> Result<()> {
    let (build_args, binary_args) = split_args(cargo_args);
    let built = tools::run(&tools::cargo::build_tests(&build_args))?;
    let bins = binaries(&built.stdout_str())?;
    let Some(first) = bins.first() else {
        bail!(
            "cargo built no test binary (arguments: {})",
            build_args.join(" ")
        );
    };
    // `<target>/debug/deps/<binary>` → `<target>/kiln/test-logs`.
    let target = first
        .exe
        .ancestors()
        .nth(3)
        .context("test binaries live in <target>/<profile>/deps")?;
    let logs = target.join("kiln/test-logs");
    if logs.exists() {
        std::fs::remove_dir_all(&logs).with_context(|| format!("clearing {logs}"))?;
    }
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {logs}"))?;
    ui::info(&format!(
        "running {} test binaries side by side (logs in {logs}): {}",
        bins.len(),
        bins.iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let ledger = logs.join(LEDGER);
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel::<Ran>();
    let mut done: Vec<Ran> = Vec::new();
    let low = LowWater::default();
    std::thread::scope(|s| -> Result<()> {
        s.spawn(|| low.watch(&logs));
        for b in &bins {
            let tx = tx.clone();
            let ledger = &ledger;
            let log = logs.join(format!("{}.log", b.name.replace('/', "-")));
            let args = &binary_args;
            s.spawn(move || {
                let t = Instant::now();
                let cmd = tools::cargo::test_binary(&b.exe, args, &b.dir, &log)
                    .env("KILN_TEST_LEDGER", ledger.as_str());
                let failure = match tools::run_unchecked(&cmd) {
                    Ok(Ok(_)) => None,
                    Ok(Err(f)) => Some(f.status),
                    Err(e) => Some(format!("{e:#}")),
                };
                let _ = tx.send(Ran {
                    binary: b.clone(),
                    log,
                    took: t.elapsed(),
                    failure,
                });
            });
        }
        drop(tx);
        let printed = (|| -> Result<()> {
            for ran in rx {
                print_log(&ran)?;
                done.push(ran);
            }
            Ok(())
        })();
        low.stop();
        printed
    })?;
    crate::signals::check()?;
    let held = std::fs::read_to_string(&ledger).unwrap_or_default();
    print!("{}", slot_report(&held));
    if let Some(free) = low.lowest() {
        println!(
            "lowest free disk space beside {target} during the run: {:.1} GiB",
            free as f64 / (1u64 << 30) as f64
        );
    }
    summary(&done, start.elapsed())
}

/// Where the tests' heavy-slot guards record their waits and holds, in the
/// logs directory: `binary<TAB>test<TAB>waited s<TAB>held s` per line.
const LEDGER: &str = "heavy-slots.tsv";

/// The lowest free space seen on the file system of the test logs (the
/// target directory, where the suite's shared cache lives), sampled every
/// few seconds while the binaries run: a full disk fails tests far from
/// its cause, and this names it in the summary.
#[derive(Default)]
struct LowWater {
    lowest: std::sync::Mutex<Option<u64>>,
    done: std::sync::atomic::AtomicBool,
}

impl LowWater {
    fn watch(&self, dir: &Utf8Path) {
        use std::sync::atomic::Ordering;
        while !self.done.load(Ordering::Relaxed) {
            if let Ok(free) = crate::fsutil::free_bytes(dir) {
                let mut l = self.lowest.lock().unwrap_or_else(|e| e.into_inner());
                *l = Some(l.map_or(free, |v| v.min(free)));
            }
            for _ in 0..20 {
                if self.done.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }

    fn stop(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn lowest(&self) -> Option<u64> {
        *self.lowest.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The heavy-slot ledger as a table: each binary's total hold, then the
/// tests that held a slot longest. Empty when nothing held one.
pub fn slot_report(ledger: &str) -> String {
    let mut rows: Vec<(&str, &str, u64, u64)> = ledger
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (b, t) = (f.next()?, f.next()?);
            let waited = f.next()?.parse().ok()?;
            let held = f.next()?.parse().ok()?;
            Some((b, t, waited, held))
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut per_binary: std::collections::BTreeMap<&str, u64> = Default::default();
    for r in &rows {
        *per_binary.entry(r.0).or_default() += r.3;
    }
    let total: u64 = per_binary.values().sum();
    let mut out = format!("\nheavy slots held ({total} s in all):\n");
    let mut bins: Vec<_> = per_binary.into_iter().collect();
    bins.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (b, held) in bins {
        out += &format!("  {b:<12} {held:>6} s\n");
    }
    rows.sort_by(|a, b| b.3.cmp(&a.3).then(a.1.cmp(b.1)));
    out += "longest holders (waited, held):\n";
    for (b, t, waited, held) in rows.iter().take(12) {
        out += &format!("  {:>5} s {:>5} s  {b}::{t}\n", waited, held);
    }
    out
}

fn print_log(ran: &Ran) -> Result<()> {
    let text = std::fs::read_to_string(&ran.log).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\n──── {} ({}, {} s) ────",
        ran.binary.name,
        ran.failure.as_deref().unwrap_or("ok"),
        ran.took.as_secs()
    )?;
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn summary(done: &[Ran], took: Duration) -> Result<()> {
    let mut total = Counts::default();
    let mut out = std::io::stdout().lock();
    writeln!(out, "\ntest binaries ({} s in all):", took.as_secs())?;
    let width = done.iter().map(|r| r.binary.name.len()).max().unwrap_or(0);
    let mut by_name: Vec<&Ran> = done.iter().collect();
    by_name.sort_by(|a, b| a.binary.name.cmp(&b.binary.name));
    for r in &by_name {
        let c = counts(&std::fs::read_to_string(&r.log).unwrap_or_default());
        total.passed += c.passed;
        total.failed += c.failed;
        total.ignored += c.ignored;
        writeln!(
            out,
            "  {:width$}  {:>6}  {:>4} passed {:>3} failed {:>3} ignored  {:>5} s",
            r.binary.name,
            if r.failure.is_some() { "FAILED" } else { "ok" },
            c.passed,
            c.failed,
            c.ignored,
            r.took.as_secs(),
        )?;
    }
    writeln!(
        out,
        "  {} passed, {} failed, {} ignored",
        total.passed, total.failed, total.ignored
    )?;
    out.flush()?;
    let failed: Vec<String> = by_name
        .iter()
        .filter_map(|r| {
            r.failure
                .as_ref()
                .map(|f| format!("{} ({f}; log: {})", r.binary.name, r.log))
        })
        .collect();
    if !failed.is_empty() {
        bail!("test binaries failed:\n  {}", failed.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_split_like_cargo_test() {
        assert_eq!(split_args(&[]), (v(&[]), v(&[])));
        assert_eq!(
            split_args(&v(&["--test", "smoke", "carrier", "--", "--nocapture"])),
            (v(&["--test", "smoke"]), v(&["carrier", "--nocapture"]))
        );
        assert_eq!(
            split_args(&v(&["-p", "xtask", "--lib", "seed::"])),
            (v(&["-p", "xtask", "--lib"]), v(&["seed::"]))
        );
        assert_eq!(
            split_args(&v(&["--", "--test-threads", "1"])),
            (v(&[]), v(&["--test-threads", "1"]))
        );
    }

    #[test]
    fn test_binaries_are_read_from_cargo_messages() {
        let msgs = r#"{"reason":"compiler-artifact","manifest_path":"/w/xtask/Cargo.toml","target":{"kind":["bin"],"name":"xtask","src_path":"/w/xtask/src/main.rs"},"profile":{"test":false},"executable":"/w/target/debug/xtask"}
{"reason":"compiler-artifact","manifest_path":"/w/xtask/Cargo.toml","target":{"kind":["test"],"name":"qcow2","src_path":"/w/xtask/tests/qcow2.rs"},"profile":{"test":true},"executable":"/w/target/debug/deps/qcow2-1"}
{"reason":"compiler-artifact","manifest_path":"/w/xtask/Cargo.toml","target":{"kind":["lib"],"name":"xtask","src_path":"/w/xtask/src/lib.rs"},"profile":{"test":true},"executable":"/w/target/debug/deps/xtask-2"}
{"reason":"compiler-artifact","manifest_path":"/w/xtask/Cargo.toml","target":{"kind":["lib"],"name":"xtask","src_path":"/w/xtask/src/lib.rs"},"profile":{"test":false},"executable":null}
{"reason":"build-finished","success":true}"#;
        let b = binaries(msgs).unwrap();
        assert_eq!(
            b,
            vec![
                Binary {
                    name: "src/lib.rs".into(),
                    exe: "/w/target/debug/deps/xtask-2".into(),
                    dir: "/w/xtask".into()
                },
                Binary {
                    name: "tests/qcow2.rs".into(),
                    exe: "/w/target/debug/deps/qcow2-1".into(),
                    dir: "/w/xtask".into()
                },
            ]
        );
    }

    #[test]
    fn the_slot_report_sums_binaries_and_ranks_holders() {
        assert_eq!(slot_report(""), "");
        let ledger = "pi\tboots\t10\t300\nqcow2\tbuilds\t0\t120\npi\tlints\t5\t20\nbroken line\n";
        let r = slot_report(ledger);
        assert!(r.contains("(440 s in all)"), "{r}");
        let pi = r.find("  pi ").unwrap();
        let qcow2 = r.find("  qcow2 ").unwrap();
        assert!(pi < qcow2, "{r}");
        assert!(r.contains("   320 s"), "{r}");
        let boots = r.find("pi::boots").unwrap();
        let lints = r.find("pi::lints").unwrap();
        assert!(
            boots < r.find("qcow2::builds").unwrap() && r.find("qcow2::builds").unwrap() < lints,
            "{r}"
        );
        assert!(r.contains("     10 s   300 s  pi::boots"), "{r}");
    }

    #[test]
    fn counts_add_up_libtest_result_lines() {
        let log = "running 3 tests\ntest a ... ok\n\ntest result: FAILED. 2 passed; 1 failed; 4 ignored; 0 measured; 0 filtered out; finished in 1.00s\n";
        assert_eq!(
            counts(log),
            Counts {
                passed: 2,
                failed: 1,
                ignored: 4
            }
        );
    }
}
