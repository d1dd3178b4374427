//! Runs a [`Plan`]: each step either is reused from the cache (its key's
//! directory is complete) or runs into a temporary directory that is renamed
//! into place only on success. Artifacts are then published into `output/`
//! through a temporary name and a rename, after the secret scan.
//!
//! On failure or a signal, temporary directories and files are removed by
//! guards, so neither the cache nor `output/` ever holds a partial result.

use std::time::Instant;

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::plan::{Action, Input, OpCx, Plan, Step, OUT};
use crate::ui;

pub use crate::plan::STAMP;
/// Per step name: the inputs of the last entry built, to explain re-runs.
const LATEST: &str = "latest.json";

#[derive(Serialize, Deserialize)]
struct Stamp {
    name: String,
    key: String,
    inputs: serde_json::Value,
}

/// Called on each artifact before it is published (the secret scan).
pub type Gate<'a> = &'a dyn Fn(&Utf8Path, &str) -> Result<()>;

#[derive(Default)]
pub struct Options<'a> {
    /// Re-run every step even when cached.
    pub force: bool,
    pub gate: Option<Gate<'a>>,
}

/// What happened to each step (tests and `bench` read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ran,
    Cached,
}

pub struct Report {
    pub steps: Vec<(String, Outcome)>,
    pub published: Vec<Utf8PathBuf>,
}

pub fn execute(plan: &Plan, opts: &Options) -> Result<Report> {
    let mut report = Report {
        steps: Vec::new(),
        published: Vec::new(),
    };
    for step in &plan.steps {
        let outcome = run_step(step, opts.force)
            .with_context(|| format!("step `{}` ({}) failed", step.name, step.summary))?;
        report.steps.push((step.name.clone(), outcome));
    }
    if !plan.publish.is_empty() {
        std::fs::create_dir_all(&plan.output)
            .with_context(|| format!("creating the output directory {}", plan.output))?;
    }
    for p in &plan.publish {
        let gate = opts.gate.filter(|_| p.scan);
        let digest = gate_and_digest(&p.from, &p.name, gate, p.sha256)?;
        let dest = plan.output.join(&p.name);
        publish_file(&p.from, &dest)?;
        if let Some(hex) = digest {
            let line = crate::digest::sha256sum_line(&hex, &p.name);
            write_atomic(
                &plan.output.join(format!("{}.sha256", p.name)),
                line.as_bytes(),
            )?;
        }
        ui::info(&format!("wrote {dest}"));
        report.published.push(dest);
    }
    Ok(report)
}

fn run_step(step: &Step, force: bool) -> Result<Outcome> {
    let stamp = step.out.join(STAMP);
    let parent = step.out.parent().expect("step dirs have a parent");
    let latest = parent.join(LATEST);
    if stamp.is_file() && !force {
        ui::info(&format!(
            "{}: cached (inputs unchanged, key {})",
            step.name,
            &step.key[..12]
        ));
        return Ok(Outcome::Cached);
    }
    let why = if force {
        "forced".to_string()
    } else {
        explain(&latest, &step.inputs)
    };
    ui::info(&format!(
        "{}: running — {} ({why})",
        step.name, step.summary
    ));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("creating cache directory {parent}"))?;
    // Unique per process: two builds sharing a cache may run the same step at
    // once; the first to finish wins and the other's result is discarded.
    let tmp = TempDir::new(
        step.out
            .with_extension(format!("tmp-{}", std::process::id())),
    )?;
    let start = Instant::now();
    for action in &step.actions {
        crate::signals::check()?;
        match action {
            Action::Cmd(c) => {
                let c = c.substitute(OUT, tmp.path.as_str());
                ui::info(&format!("  $ {c}"));
                let spinner = step.long.then(|| ui::Progress::spinner(&c.summary));
                let r = crate::tools::run(&c);
                if let Some(s) = spinner {
                    s.finish();
                }
                r?;
            }
            Action::Op(o) => {
                let declared = o
                    .commands()
                    .iter()
                    .map(|c| c.substitute(OUT, tmp.path.as_str()))
                    .collect();
                let _only = crate::tools::declare(declared);
                o.run(&OpCx {
                    out: &tmp.path,
                    step,
                })?
            }
        }
    }
    let inputs = serde_json::to_value(&step.inputs)?;
    let st = Stamp {
        name: step.name.clone(),
        key: step.key.clone(),
        inputs,
    };
    crate::plan::write_json(&tmp.path.join(STAMP), &st)?;
    if step.out.join(STAMP).is_file() && !force {
        // Another build finished the same step meanwhile: identical by key.
        drop(tmp);
        return Ok(Outcome::Ran);
    }
    if step.out.exists() {
        // An incomplete entry (no stamp) or a forced re-run: replace it.
        std::fs::remove_dir_all(&step.out)
            .with_context(|| format!("removing stale cache entry {}", step.out))?;
    }
    tmp.persist(&step.out)?;
    crate::plan::write_json(&latest, &st)?;
    ui::info(&format!(
        "{}: done in {:.1}s",
        step.name,
        start.elapsed().as_secs_f64()
    ));
    Ok(Outcome::Ran)
}

/// Why a step runs: which inputs differ from the last entry built for it.
fn explain(latest: &Utf8Path, now: &[Input]) -> String {
    let Ok(text) = std::fs::read_to_string(latest) else {
        return "not built before".into();
    };
    let Ok(prev) = serde_json::from_str::<Stamp>(&text) else {
        return "no usable record of the previous build".into();
    };
    let prev: Vec<Input> = serde_json::from_value(prev.inputs).unwrap_or_default();
    let mut changed = Vec::new();
    for i in now {
        if !prev.contains(i) {
            changed.push(i.label());
        }
    }
    for p in &prev {
        if !now.iter().any(|i| i.label() == p.label()) {
            changed.push(format!("{} (removed)", p.label()));
        }
    }
    if changed.is_empty() {
        "inputs as before; the previous entry was evicted or the step definition changed".into()
    } else {
        changed.dedup();
        format!("changed: {}", changed.join(", "))
    }
}

/// A directory removed on drop unless persisted.
pub struct TempDir {
    pub path: Utf8PathBuf,
    keep: bool,
}

impl TempDir {
    pub fn new(path: Utf8PathBuf) -> Result<TempDir> {
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing leftover temporary directory {path}"))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {path}"))?;
        Ok(TempDir { path, keep: false })
    }
    pub fn persist(mut self, to: &Utf8Path) -> Result<()> {
        std::fs::rename(&self.path, to).with_context(|| format!("moving {} to {to}", self.path))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A file that is removed on drop unless persisted (renamed into place).
pub struct TempFile {
    pub path: Utf8PathBuf,
    keep: bool,
}

impl TempFile {
    /// A hidden temporary name beside `dest` (same file system, so the rename is atomic).
    pub fn beside(dest: &Utf8Path) -> TempFile {
        let name = dest.file_name().unwrap_or("out");
        let path = dest.with_file_name(format!(".{name}.kiln-partial"));
        let _ = std::fs::remove_file(&path);
        TempFile { path, keep: false }
    }
    pub fn persist(mut self, dest: &Utf8Path) -> Result<()> {
        std::fs::rename(&self.path, dest)
            .with_context(|| format!("renaming {} to {dest}", self.path))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Write `bytes` to `dest` through a temporary name.
pub fn write_atomic(dest: &Utf8Path, bytes: &[u8]) -> Result<()> {
    let t = TempFile::beside(dest);
    std::fs::write(&t.path, bytes).with_context(|| format!("writing {}", t.path))?;
    t.persist(dest)
}

/// Put a cached artifact into `output/`: a hard link when the cache and the
/// output share a file system (no copy of multi-GiB images), else a copy;
/// either way through a temporary name, so `dest` is complete or absent.
pub fn publish_file(from: &Utf8Path, dest: &Utf8Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(a), Ok(b)) = (std::fs::metadata(from), std::fs::metadata(dest)) {
        if a.dev() == b.dev() && a.ino() == b.ino() {
            return Ok(());
        }
    }
    let t = TempFile::beside(dest);
    if std::fs::hard_link(from, &t.path).is_err() {
        copy_with_progress(from, &t.path)
            .with_context(|| format!("copying {from} to {}", t.path))?;
    }
    t.persist(dest)
}

fn copy_with_progress(from: &Utf8Path, to: &Utf8Path) -> Result<()> {
    use std::io::{Read, Write};
    let mut r = std::fs::File::open(from)?;
    let total = r.metadata()?.len();
    let mut w = std::fs::File::create(to)?;
    let mut p = ui::Progress::bytes("copy", total);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        crate::signals::check()?;
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n])?;
        p.inc(n as u64);
    }
    w.sync_all()?;
    p.finish();
    Ok(())
}

/// Run the secret-scan `gate` on an artifact and take its sha256 (when
/// `digest`) at the same time, on two threads: both read the whole file and
/// neither needs the other, so a multi-GiB image costs one read's time, not
/// two. The gate's refusal wins over the digest.
pub fn gate_and_digest(
    from: &Utf8Path,
    name: &str,
    gate: Option<Gate>,
    digest: bool,
) -> Result<Option<String>> {
    std::thread::scope(|s| {
        let hashing = digest.then(|| s.spawn(|| cached_digest(from)));
        if let Some(g) = gate {
            g(from, name)?;
        }
        hashing
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("the sha256 thread for {from} panicked"))?
            })
            .transpose()
    })
}

/// fsync a freshly written artifact and, at the same time, take its sha256
/// into the memo [`cached_digest`] reads: for a tool that writes a large
/// image without flushing it, the hash then costs no extra wall time.
pub fn flush_and_digest(file: &Utf8Path) -> Result<String> {
    std::thread::scope(|s| {
        let flush = s.spawn(|| {
            std::fs::File::open(file)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("flushing {file} to disk"))
        });
        let hex = cached_digest(file);
        flush
            .join()
            .map_err(|_| anyhow::anyhow!("the flush thread for {file} panicked"))??;
        hex
    })
}

/// sha256 of a cached artifact, remembered beside it (`.<name>.sha256`) so a
/// no-op rebuild does not re-read multi-GiB files.
pub fn cached_digest(file: &Utf8Path) -> Result<String> {
    let name = file.file_name().unwrap_or("file");
    let memo = file.with_file_name(format!(".{name}.sha256"));
    if let Ok(s) = std::fs::read_to_string(&memo) {
        if s.trim().len() == 64 {
            return Ok(s.trim().to_string());
        }
    }
    let hex = crate::digest::file_sha256(file)?;
    let _ = std::fs::write(&memo, &hex);
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(dir: &Utf8Path, name: &str, bytes: &[u8]) -> Utf8PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn the_gate_and_the_digest_run_together_and_a_refusal_wins() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let data = vec![42u8; 3 << 20];
        let want = crate::digest::file_sha256(&file_with(dir, "ref", &data)).unwrap();

        let a = file_with(dir, "a.img", &data);
        let seen = std::sync::Mutex::new(Vec::new());
        let pass = |p: &Utf8Path, name: &str| {
            seen.lock().unwrap().push(format!("{p} as {name}"));
            Ok(())
        };
        let got = gate_and_digest(&a, "a.img", Some(&pass), true).unwrap();
        assert_eq!(got.as_deref(), Some(want.as_str()));
        assert_eq!(*seen.lock().unwrap(), vec![format!("{a} as a.img")]);
        // Remembered beside the artifact for the next publish.
        assert_eq!(
            std::fs::read_to_string(dir.join(".a.img.sha256")).unwrap(),
            want
        );
        assert_eq!(gate_and_digest(&a, "a.img", None, false).unwrap(), None);

        let b = file_with(dir, "b.img", &data);
        let refuse = |_: &Utf8Path, name: &str| anyhow::bail!("the scan refused {name}");
        let err = gate_and_digest(&b, "b.img", Some(&refuse), true).unwrap_err();
        assert_eq!(err.to_string(), "the scan refused b.img");
    }

    #[test]
    fn flush_and_digest_remembers_the_sha256_of_what_was_written() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let p = file_with(dir, "x.iso", b"an image");
        let hex = flush_and_digest(&p).unwrap();
        assert_eq!(hex, crate::digest::file_sha256(&p).unwrap());
        assert_eq!(cached_digest(&p).unwrap(), hex);
        let missing = flush_and_digest(&dir.join("absent.iso")).unwrap_err();
        assert!(format!("{missing:#}").contains("absent.iso"), "{missing:#}");
    }
}
