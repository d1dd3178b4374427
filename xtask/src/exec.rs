//! Runs a [`Plan`]: each step either is reused from the cache (its key's
//! directory is complete) or runs into a temporary directory that is renamed
//! into place only on success. Artifacts are then published into `output/`
//! through a temporary name and a rename, after the secret scan.
//!
//! On failure or a signal, temporary directories and files are removed by
//! guards, so neither the cache nor `output/` ever holds a partial result.
//!
//! Published files are hard links to the cache's files, so a file edited in
//! `output/` (an image booted in place) is edited in the cache too. A step's
//! stamp therefore seals the files published from it (their sha256, size and
//! identity as the step wrote them), and an entry is reused only while they
//! are intact: see [`verify_entry`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    /// The entry's published files (paths in the entry) as the step wrote
    /// them. Stamps of older kiln have none: their files are sealed when
    /// the entry is next reused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    sealed: BTreeMap<String, Seal>,
}

/// A published file's bytes as its step wrote them, and the file's
/// [`identity`] when they were last known to be those bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seal {
    sha256: String,
    size: u64,
    identity: String,
}

/// A file of a step's entry that the plan publishes: its path in the entry
/// and its place in `output/`.
struct Published {
    rel: String,
    dest: Utf8PathBuf,
}

/// Called on each artifact before it is published (the secret scan).
pub type Gate<'a> = &'a dyn Check;

/// A publish check: `check` refuses an artifact with an error. A check whose
/// verdict depends only on the artifact's bytes, its name and what
/// [`Check::verdict_inputs`] returns has its passes remembered (see
/// [`gate_remembered`]), so a no-op rebuild does not check unchanged
/// artifacts again.
pub trait Check: Sync {
    fn check(&self, path: &Utf8Path, name: &str) -> Result<()>;
    /// Everything a pass depends on besides the artifact's bytes, its name and
    /// kiln's code (settings, versions of the tools the check runs); `None`:
    /// never remember a pass.
    fn verdict_inputs(&self) -> Option<serde_json::Value> {
        None
    }
}

impl<F: Fn(&Utf8Path, &str) -> Result<()> + Sync> Check for F {
    fn check(&self, path: &Utf8Path, name: &str) -> Result<()> {
        self(path, name)
    }
}

/// Where remembered passes of the publish gate live, under the cache.
pub const VERDICTS: &str = "scan-verdicts";

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

/// How many steps run at once: steps are mostly one tool each (mmdebstrap,
/// dpkg under qemu-user, a converter) that keeps one core busy, so a plan
/// with independent branches (the amd64 disk and the arm64 root) fills the
/// machine with a step per core, up to four.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

pub fn execute(plan: &Plan, opts: &Options) -> Result<Report> {
    let outcomes = run_steps(plan, opts.force, workers())?;
    let mut report = Report {
        steps: plan
            .steps
            .iter()
            .map(|s| s.name.clone())
            .zip(outcomes)
            .collect(),
        published: Vec::new(),
    };
    if !plan.publish.is_empty() {
        std::fs::create_dir_all(&plan.output)
            .with_context(|| format!("creating the output directory {}", plan.output))?;
    }
    for p in &plan.publish {
        let gate = opts.gate.filter(|_| p.scan);
        let verdicts = plan.cache.join(VERDICTS);
        let digest = gate_remembered(&p.from, &p.name, gate, p.sha256, &verdicts)?;
        let dest = plan.output.join(&p.name);
        // Linking into `output/` changes the file's change time: when the
        // memo held just before it, the digest still holds for its bytes.
        let memo_held = digest.is_some() && known_digest(&p.from) == digest;
        let before = identity(&p.from);
        publish_file(&p.from, &dest)?;
        if let (true, Some(hex)) = (memo_held, &digest) {
            remember_digest(&p.from, hex);
        }
        // So does the seal of the step it comes from, if it held.
        if let (Some(b), Some(a)) = (before, identity(&p.from)) {
            let owner = plan
                .steps
                .iter()
                .find_map(|s| Some((s, p.from.strip_prefix(&s.out).ok()?)));
            if let (true, Some((s, rel))) = (b != a, owner) {
                reseal(&s.out, rel.as_str(), &b, &a);
            }
        }
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

/// The indices of the steps each step reads (its `Input::Step`s).
fn dependencies(plan: &Plan) -> Vec<Vec<usize>> {
    plan.steps
        .iter()
        .map(|s| {
            s.inputs
                .iter()
                .filter_map(|i| match i {
                    Input::Step { name, .. } => plan.steps.iter().position(|d| &d.name == name),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

/// Run (or reuse) every step, each once the steps it reads are done, up to
/// `workers` at once, in plan order among the ready ones. The first failure
/// stops the steps still running (their tools are stopped, their temporary
/// directories removed) and starts no more; it is the error returned.
/// Outcomes are in plan order.
fn run_steps(plan: &Plan, force: bool, workers: usize) -> Result<Vec<Outcome>> {
    let deps = dependencies(plan);
    let n = plan.steps.len();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    let mut started = vec![false; n];
    let mut running = 0usize;
    let mut failure: Option<anyhow::Error> = None;
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Outcome>)>();
    std::thread::scope(|s| loop {
        if failure.is_none() {
            for i in 0..n {
                if running >= workers.max(1) {
                    break;
                }
                if started[i] || !deps[i].iter().all(|d| outcomes[*d].is_some()) {
                    continue;
                }
                started[i] = true;
                running += 1;
                let step = &plan.steps[i];
                let published = published_from(plan, step);
                let (tx, cancel) = (tx.clone(), cancel.clone());
                s.spawn(move || {
                    let r =
                        crate::signals::with_cancel(cancel, || run_step(step, &published, force))
                            .with_context(|| {
                                format!("step `{}` ({}) failed", step.name, step.summary)
                            });
                    let _ = tx.send((i, r));
                });
            }
        }
        if running == 0 {
            break;
        }
        let (i, r) = rx.recv().expect("a running step reports back");
        running -= 1;
        match r {
            Ok(o) => outcomes[i] = Some(o),
            Err(e) if failure.is_none() => {
                if running > 0 {
                    ui::info(&format!(
                        "{}: failed; stopping the {running} step(s) still running",
                        plan.steps[i].name
                    ));
                }
                cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                failure = Some(e);
            }
            Err(_) => {}
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every step ran"))
        .collect())
}

/// The files the plan publishes out of `step`'s entry.
fn published_from(plan: &Plan, step: &Step) -> Vec<Published> {
    plan.publish
        .iter()
        .filter_map(|p| {
            let rel = p.from.strip_prefix(&step.out).ok()?;
            Some(Published {
                rel: rel.to_string(),
                dest: plan.output.join(&p.name),
            })
        })
        .collect()
}

fn run_step(step: &Step, published: &[Published], force: bool) -> Result<Outcome> {
    let stamp = step.out.join(STAMP);
    let parent = step.out.parent().expect("step dirs have a parent");
    let latest = parent.join(LATEST);
    let mut discarded = false;
    if stamp.is_file() && !force {
        match verify_entry(step, published)? {
            None => {
                ui::info(&format!(
                    "{}: cached (inputs unchanged, key {})",
                    step.name,
                    &step.key[..12]
                ));
                return Ok(Outcome::Cached);
            }
            Some(changed) => {
                ui::warn(&format!(
                    "{}: {changed}; its cache entry {} is discarded and the step runs again",
                    step.name, step.out
                ));
                discard(&step.out)?;
                discarded = true;
            }
        }
    }
    std::fs::create_dir_all(parent)
        .with_context(|| format!("creating cache directory {parent}"))?;
    // Another kiln sharing the cache (a CI job, a test) may be building this
    // entry: wait for it, then take what it built.
    let _lock = EntryLock::take(step)?;
    if !force && stamp.is_file() && verify_entry(step, published)?.is_none() {
        ui::info(&format!(
            "{}: cached (built meanwhile by another kiln sharing the cache, key {})",
            step.name,
            &step.key[..12]
        ));
        return Ok(Outcome::Cached);
    }
    let why = if force {
        "forced".to_string()
    } else if discarded {
        "its cache entry was changed after it was written".to_string()
    } else {
        explain(&latest, &step.inputs)
    };
    ui::info(&format!(
        "{}: running — {} ({why})",
        step.name, step.summary
    ));
    // Unique per process: should two builds still run the same step at once
    // (on a file system without `flock`), the first to finish wins and the
    // other's result is discarded.
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
    let mut sealed = BTreeMap::new();
    for p in published {
        if let Some(seal) = seal_file(&tmp.path.join(&p.rel))? {
            sealed.insert(p.rel.clone(), seal);
        }
    }
    let st = Stamp {
        name: step.name.clone(),
        key: step.key.clone(),
        inputs,
        sealed,
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

/// Held while a step builds its entry: in a cache that several kiln
/// processes share, one at a time builds an entry (the same step under the
/// same key), and the others wait, then find it built. An exclusive `flock`
/// on `<key>.lock` beside the entry; its holder removes the file when done
/// (also on an error or a signal), and a waiter that locked a file already
/// removed tries again on the new one, so no lock file outlives its build.
struct EntryLock {
    path: Utf8PathBuf,
    _file: std::fs::File,
}

impl EntryLock {
    fn take(step: &Step) -> Result<EntryLock> {
        use std::os::unix::fs::MetadataExt;
        let path = step.out.with_extension("lock");
        let mut told = false;
        loop {
            crate::signals::check()?;
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening the lock {path}"))?;
            match f.try_lock() {
                Ok(()) => {
                    let held = f.metadata().with_context(|| format!("reading {path}"))?;
                    let now = std::fs::metadata(&path).ok();
                    if now.is_some_and(|m| (m.dev(), m.ino()) == (held.dev(), held.ino())) {
                        return Ok(EntryLock { path, _file: f });
                    }
                    // Its holder removed it after building: try the new one.
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !told {
                        ui::info(&format!(
                            "{}: another kiln sharing the cache is building it (key {}); waiting",
                            step.name,
                            &step.key[..12]
                        ));
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    // A file system without `flock`: build unlocked, as
                    // before there was a lock (a race costs time, not bytes).
                    ui::warn(&format!(
                        "{}: cannot lock {path} ({e}); building without the lock",
                        step.name
                    ));
                    return Ok(EntryLock { path, _file: f });
                }
            }
        }
    }
}

impl Drop for EntryLock {
    fn drop(&mut self) {
        // Removed while still locked (the file closes after this): a waiter
        // that gets the lock next sees its file gone.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A [`Seal`] of `file` as it is now (`None`: no such file; publishing
/// will say so). Its sha256 usually comes from the memo the step wrote, or
/// is the one publishing would take anyway.
fn seal_file(file: &Utf8Path) -> Result<Option<Seal>> {
    let Some(md) = std::fs::metadata(file).ok().filter(|m| m.is_file()) else {
        return Ok(None);
    };
    let sha256 = cached_digest(file)?;
    Ok(Some(Seal {
        sha256,
        size: md.len(),
        identity: crate::digest::file_identity(&md),
    }))
}

/// Check a complete entry before it is reused. Each sealed file whose
/// identity is as recorded is intact without being read (a write changes
/// its change time, which no one can set back), so a no-op build reads
/// nothing. A file whose identity changed (touched, linked or unlinked, or
/// written) is read: the same bytes → its identity is recorded again and
/// the entry is reused; other bytes, another size, or gone → returns what
/// changed, and the caller discards the entry. Files the plan publishes
/// that have no seal yet (entries written by older kiln) are sealed now.
fn verify_entry(step: &Step, published: &[Published]) -> Result<Option<String>> {
    let path = step.out.join(STAMP);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let Ok(mut st) = serde_json::from_str::<Stamp>(&text) else {
        return Ok(Some(format!("its stamp {path} is unreadable")));
    };
    let mut rewrite = false;
    for (rel, seal) in &mut st.sealed {
        let file = step.out.join(rel);
        let Ok(md) = std::fs::metadata(&file) else {
            return Ok(Some(format!("{file} was deleted from the cache")));
        };
        let id = crate::digest::file_identity(&md);
        if id == seal.identity {
            continue;
        }
        // Named as the user knows it: its place in `output/`, while that
        // is still the same file.
        let linked = published
            .iter()
            .find(|p| &p.rel == rel && same_file(&p.dest, &file))
            .map(|p| &p.dest);
        let what = match linked {
            Some(dest) => format!("{dest} was changed in place since kiln published it"),
            None => format!("{file} was changed since its step wrote it"),
        };
        if md.len() != seal.size {
            return Ok(Some(format!(
                "{what} ({} bytes when written, {} now)",
                seal.size,
                md.len()
            )));
        }
        let hex = match crate::digest::file_sha256(&file) {
            Ok(h) => h,
            Err(e) => return Ok(Some(format!("{file} cannot be read ({e:#})"))),
        };
        if hex != seal.sha256 {
            return Ok(Some(format!(
                "{what} (sha256 {}… when written, {}… now)",
                &seal.sha256[..12],
                &hex[..12]
            )));
        }
        // The same bytes: trust the identity they have now (taken before
        // reading, so a write meanwhile is caught next time).
        write_memo(&file, &hex, &id);
        seal.identity = id;
        rewrite = true;
    }
    for p in published {
        if !st.sealed.contains_key(&p.rel) {
            if let Some(seal) = seal_file(&step.out.join(&p.rel))? {
                st.sealed.insert(p.rel.clone(), seal);
                rewrite = true;
            }
        }
    }
    if rewrite {
        // Best effort: a stamp not rewritten only costs a read next time.
        let _ = write_stamp(&path, &st);
    }
    Ok(None)
}

/// Record that a sealed file's identity changed from `before` to `after`
/// without a write (publishing linked it, which changes its change time).
fn reseal(entry: &Utf8Path, rel: &str, before: &str, after: &str) {
    let path = entry.join(STAMP);
    let Some(mut st) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Stamp>(&t).ok())
    else {
        return;
    };
    if let Some(seal) = st.sealed.get_mut(rel).filter(|s| s.identity == before) {
        seal.identity = after.to_string();
        let _ = write_stamp(&path, &st);
    }
}

/// Rewrite a complete entry's stamp: through a temporary name, so the
/// entry never looks incomplete.
fn write_stamp(path: &Utf8Path, st: &Stamp) -> Result<()> {
    let mut text = serde_json::to_string_pretty(st)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

fn same_file(a: &Utf8Path, b: &Utf8Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Remove a cache entry that can no longer be trusted. It is renamed aside
/// first, so no build sees it half removed; files linked from `output/`
/// keep their bytes there until they are published again.
fn discard(out: &Utf8Path) -> Result<()> {
    let aside = out.with_extension(format!("discarded-{}", std::process::id()));
    match std::fs::rename(out, &aside) {
        Ok(()) => std::fs::remove_dir_all(&aside)
            .with_context(|| format!("removing the discarded cache entry {aside}")),
        // Another build discarded it first.
        Err(_) if !out.exists() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("moving {out} aside to discard it")),
    }
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
            g.check(from, name)?;
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

/// [`gate_and_digest`], with the gate's passes remembered in `verdicts`
/// (one file per pass, named by a digest of the artifact's sha256, its name,
/// the gate's [`Check::verdict_inputs`] and kiln's code fingerprint). An
/// artifact whose bytes are known (its digest memo matches the file's
/// identity, see [`known_digest`]) and whose pass is on record is not
/// checked again; any other is, and its sha256 is taken at the same time.
/// Returns the sha256 when `digest` asks for it.
pub fn gate_remembered(
    from: &Utf8Path,
    name: &str,
    gate: Option<Gate>,
    digest: bool,
    verdicts: &Utf8Path,
) -> Result<Option<String>> {
    let Some((g, inputs)) = gate.and_then(|g| g.verdict_inputs().map(|i| (g, i))) else {
        return gate_and_digest(from, name, gate, digest);
    };
    let record = |hex: &str| verdicts.join(verdict_key(hex, name, &inputs));
    if let Some(hex) = known_digest(from) {
        if record(&hex).is_file() {
            ui::info(&format!(
                "scan of {name}: passed before (same bytes, sha256 {}, same settings and kiln)",
                &hex[..12]
            ));
            return Ok(digest.then_some(hex));
        }
    }
    let hex = gate_and_digest(from, name, Some(g), true)?.expect("the digest was asked for");
    // Best effort: a pass that cannot be recorded only costs a scan next time.
    let doc = serde_json::json!({ "artifact": name, "sha256": hex, "inputs": inputs });
    let _ = std::fs::create_dir_all(verdicts)
        .map_err(anyhow::Error::from)
        .and_then(|_| crate::plan::write_json(&record(&hex), &doc));
    Ok(digest.then_some(hex))
}

/// The name of a remembered pass.
fn verdict_key(sha256: &str, name: &str, inputs: &serde_json::Value) -> String {
    let doc = serde_json::json!({
        "format": 1,
        "artifact": name,
        "sha256": sha256,
        "inputs": inputs,
        "code": crate::plan::code_fingerprint(),
    });
    crate::digest::bytes_sha256(doc.to_string().as_bytes())
}

/// What a file's digest memo is checked against: device, inode, size,
/// modification and change times. Writing to the file changes its change
/// time (which no one can set back), so a memo never outlives a change.
fn identity(file: &Utf8Path) -> Option<String> {
    let md = std::fs::metadata(file).ok()?;
    Some(crate::digest::file_identity(&md))
}

fn memo_path(file: &Utf8Path) -> Utf8PathBuf {
    let name = file.file_name().unwrap_or("file");
    file.with_file_name(format!(".{name}.sha256"))
}

/// The sha256 remembered beside `file` (`.<name>.sha256`), if the file is
/// still the one it was taken of (same [`identity`]).
pub fn known_digest(file: &Utf8Path) -> Option<String> {
    let s = std::fs::read_to_string(memo_path(file)).ok()?;
    let (hex, id) = s.trim().split_once(' ')?;
    (hex.len() == 64 && Some(id) == identity(file).as_deref()).then(|| hex.to_string())
}

/// Remember `hex` as the sha256 of `file` as it is now (best effort). Only
/// for a digest of the file's current bytes: taken just before, by the
/// code that wrote it or read it.
pub fn remember_digest(file: &Utf8Path, hex: &str) {
    if let Some(id) = identity(file) {
        write_memo(file, hex, &id);
    }
}

/// The memo of `file`: `hex` is its sha256 while its identity is `id`.
fn write_memo(file: &Utf8Path, hex: &str, id: &str) {
    let _ = std::fs::write(memo_path(file), format!("{hex} {id}\n"));
}

/// sha256 of a cached artifact, remembered beside it (`.<name>.sha256`, with
/// the file's [`identity`]) so a no-op rebuild does not re-read multi-GiB
/// files, and a changed file is read again.
pub fn cached_digest(file: &Utf8Path) -> Result<String> {
    if let Some(hex) = known_digest(file) {
        return Ok(hex);
    }
    // The identity before reading: a change while the file is read makes
    // the memo stale at once.
    let before = identity(file);
    let hex = crate::digest::file_sha256(file)?;
    if let Some(id) = before {
        write_memo(file, &hex, &id);
    }
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
        assert_eq!(known_digest(&a).as_deref(), Some(want.as_str()));
        assert_eq!(gate_and_digest(&a, "a.img", None, false).unwrap(), None);

        let b = file_with(dir, "b.img", &data);
        let refuse = |_: &Utf8Path, name: &str| anyhow::bail!("the scan refused {name}");
        let err = gate_and_digest(&b, "b.img", Some(&refuse), true).unwrap_err();
        assert_eq!(err.to_string(), "the scan refused b.img");
    }

    /// Counts its checks; its passes may be remembered.
    struct Counting {
        seen: std::sync::Mutex<Vec<String>>,
        settings: &'static str,
        refuse: bool,
    }

    impl Check for Counting {
        fn check(&self, _: &Utf8Path, name: &str) -> Result<()> {
            self.seen.lock().unwrap().push(name.to_string());
            anyhow::ensure!(!self.refuse, "the scan refused {name}");
            Ok(())
        }
        fn verdict_inputs(&self) -> Option<serde_json::Value> {
            Some(serde_json::json!({ "allow": self.settings }))
        }
    }

    fn counting(settings: &'static str) -> Counting {
        Counting {
            seen: Default::default(),
            settings,
            refuse: false,
        }
    }

    fn checks(c: &Counting) -> usize {
        c.seen.lock().unwrap().len()
    }

    #[test]
    fn a_remembered_pass_skips_the_unchanged_artifact_and_never_a_changed_one() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let verdicts = dir.join("verdicts");
        let a = file_with(dir, "a.img", &vec![1u8; 1 << 20]);
        let want = crate::digest::file_sha256(&a).unwrap();
        let g = counting("x");
        let run = |g: &Counting, name: &str| gate_remembered(&a, name, Some(g), true, &verdicts);

        assert_eq!(run(&g, "a.img").unwrap().as_deref(), Some(want.as_str()));
        assert_eq!(checks(&g), 1);
        // Unchanged: the pass is remembered, the digest comes from the memo.
        assert_eq!(run(&g, "a.img").unwrap().as_deref(), Some(want.as_str()));
        assert_eq!(checks(&g), 1, "an unchanged artifact was scanned again");
        // Other settings, another published name: checked again.
        assert!(run(&counting("y"), "a.img").is_ok());
        let other = counting("x");
        assert!(run(&other, "b.img").is_ok());
        assert_eq!(checks(&other), 1);

        // Changed in place, same size, modification time set back: the
        // change time still gives it away. (File times tick coarsely: let a
        // tick pass first, as any later edit of a published image would.)
        std::thread::sleep(std::time::Duration::from_millis(30));
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        let mut bytes = std::fs::read(&a).unwrap();
        bytes[4242] = 2;
        std::fs::write(&a, &bytes).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let changed = crate::digest::file_sha256(&a).unwrap();
        let refusing = Counting {
            refuse: true,
            ..counting("x")
        };
        let err = run(&refusing, "a.img").unwrap_err();
        assert_eq!(err.to_string(), "the scan refused a.img");
        assert_eq!(checks(&refusing), 1, "a changed artifact was not scanned");
        // A refusal is not remembered; a pass of the new bytes is, and the
        // old bytes' pass still stands for them alone.
        assert!(run(&refusing, "a.img").is_err());
        assert_eq!(checks(&refusing), 2);
        assert_eq!(run(&g, "a.img").unwrap().as_deref(), Some(changed.as_str()));
        assert_eq!(checks(&g), 2);
        assert!(run(&g, "a.img").is_ok());
        assert_eq!(checks(&g), 2);

        // A gate without verdict inputs (a plain closure) is never skipped.
        let n = std::sync::atomic::AtomicUsize::new(0);
        let plain = |_: &Utf8Path, _: &str| {
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        };
        for _ in 0..2 {
            gate_remembered(&a, "a.img", Some(&plain), true, &verdicts).unwrap();
        }
        assert_eq!(n.into_inner(), 2);
    }

    /// Through the executor: a no-op publish does not scan again, and an
    /// artifact edited through its link in `output/` (the cache's own file)
    /// is scanned again and gets its new sha256.
    #[test]
    fn publishing_again_scans_only_a_changed_artifact() {
        let d = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(d.path()).unwrap();
        let (cache, output) = (root.join("cache"), root.join("output"));
        let entry = cache.join("disk/0123");
        std::fs::create_dir_all(&entry).unwrap();
        let a = file_with(&entry, "x.img", &vec![5u8; 1 << 20]);
        let mut plan = crate::plan::Plan::new("test", &root.join("r.yaml"), root, &cache, &output);
        plan.publish(a.clone(), "x.img".into(), true);
        let g = counting("x");
        let opts = Options {
            force: false,
            gate: Some(&g),
        };
        let sums = || std::fs::read_to_string(output.join("x.img.sha256")).unwrap();
        let want = |p: &Utf8Path| {
            crate::digest::sha256sum_line(&crate::digest::file_sha256(p).unwrap(), "x.img")
        };
        for _ in 0..3 {
            execute(&plan, &opts).unwrap();
            assert_eq!(sums(), want(&a));
        }
        assert_eq!(checks(&g), 1, "an unchanged artifact was scanned again");

        std::thread::sleep(std::time::Duration::from_millis(30));
        {
            use std::io::{Seek, Write};
            let mut f = std::fs::File::options()
                .write(true)
                .open(output.join("x.img"))
                .unwrap();
            f.seek(std::io::SeekFrom::Start(777)).unwrap();
            f.write_all(b"!").unwrap();
        }
        execute(&plan, &opts).unwrap();
        assert_eq!(checks(&g), 2, "a changed artifact was not scanned");
        assert_eq!(sums(), want(&a));
        execute(&plan, &opts).unwrap();
        assert_eq!(checks(&g), 2);
    }

    /// A step that writes `x.img` and counts its runs, in a plan that
    /// publishes it (or not), with its cache and output in a temporary
    /// directory.
    struct Sealed {
        _dir: tempfile::TempDir,
        plan: crate::plan::Plan,
        runs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        /// The file in the step's cache entry.
        cached: Utf8PathBuf,
        /// Its place in `output/`.
        published: Utf8PathBuf,
    }

    struct WriteImage(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl crate::plan::Op for WriteImage {
        fn describe(&self) -> serde_json::Value {
            serde_json::json!({ "write": "x.img" })
        }
        fn run(&self, cx: &OpCx) -> Result<()> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::fs::write(cx.out.join("x.img"), image())?;
            Ok(())
        }
    }

    fn image() -> Vec<u8> {
        (0..1u32 << 20).map(|i| (i % 251) as u8).collect()
    }

    fn sealed_plan(publish: bool) -> Sealed {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(dir.path()).unwrap().to_owned();
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let plan = image_plan(&root, &runs, publish);
        Sealed {
            _dir: dir,
            cached: plan.steps[0].output("x.img"),
            published: plan.output.join("x.img"),
            plan,
            runs,
        }
    }

    /// The plan of [`sealed_plan`], with its cache and output under `root`.
    fn image_plan(
        root: &Utf8Path,
        runs: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
        publish: bool,
    ) -> crate::plan::Plan {
        let (cache, output) = (root.join("cache"), root.join("output"));
        let mut plan = crate::plan::Plan::new("test", &root.join("r.yaml"), root, &cache, &output);
        let i = plan.add(
            crate::plan::StepBuilder::new("disk", "write an image").op(WriteImage(runs.clone())),
        );
        if publish {
            plan.publish(plan.step(i).output("x.img"), "x.img".into(), true);
        }
        plan
    }

    impl Sealed {
        fn build(&self, gate: &Counting) -> Outcome {
            Self::build_plan(&self.plan, gate)
        }
        fn build_plan(plan: &crate::plan::Plan, gate: &Counting) -> Outcome {
            let opts = Options {
                force: false,
                gate: Some(gate),
            };
            let mut r = execute(plan, &opts).unwrap();
            assert_eq!(r.steps.len(), 1);
            r.steps.pop().unwrap().1
        }
        /// The same step in a plan that publishes nothing.
        fn reading_plan(&self) -> crate::plan::Plan {
            image_plan(&self.plan.root, &self.runs, false)
        }
        fn runs(&self) -> usize {
            self.runs.load(std::sync::atomic::Ordering::Relaxed)
        }
        /// Files hashed in its cache so far (the step's file, under its
        /// temporary or its final name).
        fn reads(&self) -> usize {
            crate::digest::reads::under(&self.plan.cache)
        }
        /// `output/` holds what the step wrote, with the right `.sha256`.
        fn assert_published_intact(&self) {
            assert!(std::fs::read(&self.published).unwrap() == image());
            let sums = self.published.with_file_name("x.img.sha256");
            let want =
                crate::digest::sha256sum_line(&crate::digest::bytes_sha256(&image()), "x.img");
            assert_eq!(std::fs::read_to_string(sums).unwrap(), want);
        }
    }

    /// Write one byte in place, a tick after anything before (as a VM
    /// booted from the published image would).
    fn poke(file: &Utf8Path) {
        use std::io::{Seek, Write};
        std::thread::sleep(std::time::Duration::from_millis(30));
        let mut f = std::fs::File::options().write(true).open(file).unwrap();
        f.seek(std::io::SeekFrom::Start(777)).unwrap();
        f.write_all(b"!").unwrap();
    }

    #[test]
    fn a_published_file_changed_in_place_makes_its_step_run_again() {
        let t = sealed_plan(true);
        let g = counting("x");
        assert_eq!(t.build(&g), Outcome::Ran);
        t.assert_published_intact();
        // The seal and the publish share one read of the new file.
        assert_eq!(t.reads(), 1);
        assert_eq!(t.build(&g), Outcome::Cached);
        assert_eq!(
            (t.runs(), t.reads(), checks(&g)),
            (1, 1, 1),
            "a no-op build read the image"
        );

        // Booted in place: the cache's file is the same inode.
        poke(&t.published);
        assert_eq!(
            t.build(&g),
            Outcome::Ran,
            "a changed cache entry was reused"
        );
        assert_eq!(t.runs(), 2);
        t.assert_published_intact();
        assert!(std::fs::read(&t.cached).unwrap() == image());
        // The same bytes as before: their scan pass still stands.
        assert_eq!(checks(&g), 1);
        let reads = t.reads();
        assert_eq!(t.build(&g), Outcome::Cached);
        assert_eq!((t.runs(), t.reads()), (2, reads));

        // Deleting the published file changes the cache file's identity
        // (its link count), not its bytes: read once, then trusted again.
        std::thread::sleep(std::time::Duration::from_millis(30));
        std::fs::remove_file(&t.published).unwrap();
        assert_eq!(t.build(&g), Outcome::Cached);
        assert_eq!(t.reads(), reads + 1);
        t.assert_published_intact();
        assert_eq!(t.build(&g), Outcome::Cached);
        assert_eq!((t.runs(), t.reads()), (2, reads + 1));
    }

    #[test]
    fn a_sealed_file_truncated_or_deleted_in_the_cache_makes_its_step_run_again() {
        let t = sealed_plan(true);
        let g = counting("x");
        t.build(&g);
        std::thread::sleep(std::time::Duration::from_millis(30));
        std::fs::File::options()
            .write(true)
            .open(&t.cached)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let reads = t.reads();
        assert_eq!(t.build(&g), Outcome::Ran);
        // Another size needs no read to be told apart.
        assert_eq!((t.runs(), t.reads()), (2, reads + 1));
        t.assert_published_intact();

        std::fs::remove_file(&t.cached).unwrap();
        assert_eq!(t.build(&g), Outcome::Ran);
        assert_eq!(t.runs(), 3);
        t.assert_published_intact();
        // Nothing of the discarded entries is left beside the new one.
        let dir = t.cached.parent().unwrap().parent().unwrap();
        let names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != LATEST)
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_touched_file_with_the_same_bytes_is_read_once_and_reused() {
        let t = sealed_plan(true);
        let g = counting("x");
        t.build(&g);
        std::thread::sleep(std::time::Duration::from_millis(30));
        std::fs::File::options()
            .write(true)
            .open(&t.published)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        let reads = t.reads();
        assert_eq!(t.build(&g), Outcome::Cached);
        assert_eq!((t.runs(), t.reads()), (1, reads + 1));
        assert_eq!(t.build(&g), Outcome::Cached);
        assert_eq!(t.reads(), reads + 1, "the new identity was not recorded");
        t.assert_published_intact();
    }

    /// An entry sealed by a plan that published its file protects a plan
    /// that only reads it (an OVA made from the qcow2's disk); an entry
    /// without seals (older kiln, or built by a plan that did not publish
    /// the file) is sealed when a plan first publishes from it.
    #[test]
    fn seals_hold_for_every_plan_that_reuses_the_entry() {
        let t = sealed_plan(true);
        let g = counting("x");
        let reading = t.reading_plan();
        assert_eq!(t.build(&g), Outcome::Ran);
        poke(&t.published);
        assert_eq!(Sealed::build_plan(&reading, &g), Outcome::Ran);
        assert!(std::fs::read(&t.cached).unwrap() == image());
        assert_eq!(Sealed::build_plan(&reading, &g), Outcome::Cached);
        assert_eq!(t.runs(), 2);

        // Built by a plan that published nothing: no seals; the first plan
        // to publish from it seals the file (reading it, which publishing
        // needs anyway) and reuses the entry.
        let u = sealed_plan(true);
        let reading = u.reading_plan();
        assert_eq!(Sealed::build_plan(&reading, &g), Outcome::Ran);
        assert_eq!(u.reads(), 0);
        assert_eq!(u.build(&g), Outcome::Cached);
        assert_eq!((u.runs(), u.reads()), (1, 1));
        u.assert_published_intact();
        poke(&u.published);
        assert_eq!(u.build(&g), Outcome::Ran);
        assert_eq!(u.runs(), 2);
        u.assert_published_intact();
    }

    #[test]
    fn a_digest_memo_holds_only_while_the_file_is_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let a = file_with(dir, "a.img", b"first");
        let h1 = cached_digest(&a).unwrap();
        assert_eq!(known_digest(&a).as_deref(), Some(h1.as_str()));
        std::thread::sleep(std::time::Duration::from_millis(30));
        std::fs::write(&a, b"other").unwrap();
        assert_eq!(known_digest(&a), None);
        assert_eq!(
            cached_digest(&a).unwrap(),
            crate::digest::file_sha256(&a).unwrap()
        );
        // A memo of the old format (a bare digest) is not trusted.
        std::fs::write(dir.join(".a.img.sha256"), &h1).unwrap();
        assert_eq!(known_digest(&a), None);
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

    /// An op for the scheduler's tests: records when it starts and ends,
    /// and does what `Act` says in between.
    struct Probe {
        name: &'static str,
        log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
        act: Act,
    }

    #[derive(Clone)]
    enum Act {
        Nothing,
        /// Wait (at most 60 s) at a barrier the other step also reaches:
        /// only steps that run at the same time get through.
        Meet(
            std::sync::Arc<std::sync::Barrier>,
            std::sync::Arc<std::sync::atomic::AtomicUsize>,
        ),
        Fail,
        /// Run until the job is cancelled, as a long tool would.
        UntilCancelled,
        /// Take a while.
        Sleep(std::time::Duration),
    }

    impl crate::plan::Op for Probe {
        fn describe(&self) -> serde_json::Value {
            serde_json::json!({ "probe": self.name })
        }
        fn run(&self, cx: &OpCx) -> Result<()> {
            self.log
                .lock()
                .unwrap()
                .push(format!("start {}", self.name));
            std::fs::write(cx.out.join("mark"), self.name)?;
            match &self.act {
                Act::Nothing => {}
                Act::Meet(b, arrived) => {
                    arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let t = std::time::Instant::now();
                    while arrived.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                        anyhow::ensure!(
                            t.elapsed() < std::time::Duration::from_secs(60),
                            "{} ran alone: the other independent step did not start beside it",
                            self.name
                        );
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    b.wait();
                }
                Act::Fail => anyhow::bail!("{} broke", self.name),
                Act::Sleep(d) => std::thread::sleep(*d),
                Act::UntilCancelled => loop {
                    crate::signals::check()?;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                },
            }
            self.log.lock().unwrap().push(format!("end {}", self.name));
            Ok(())
        }
    }

    fn probe_plan(
        root: &Utf8Path,
        steps: &[(&'static str, Act, &[&str])],
    ) -> (
        crate::plan::Plan,
        std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut plan = crate::plan::Plan::new(
            "test",
            &root.join("r.yaml"),
            root,
            &root.join("cache"),
            &root.join("output"),
        );
        for (name, act, after) in steps {
            let mut b = crate::plan::StepBuilder::new(*name, format!("probe {name}")).op(Probe {
                name,
                log: log.clone(),
                act: act.clone(),
            });
            for a in *after {
                let i = plan.steps.iter().position(|s| s.name == *a).unwrap();
                b = b.after(plan.step(i));
            }
            plan.add(b);
        }
        (plan, log)
    }

    #[test]
    fn independent_steps_run_side_by_side_and_a_step_waits_for_what_it_reads() {
        let d = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(d.path()).unwrap();
        let meet = Act::Meet(
            std::sync::Arc::new(std::sync::Barrier::new(2)),
            Default::default(),
        );
        // a and b are independent (they can only pass the barrier together);
        // c reads both; d reads c.
        let (plan, log) = probe_plan(
            root,
            &[
                ("a", meet.clone(), &[]),
                ("b", meet, &[]),
                ("c", Act::Nothing, &["a", "b"]),
                ("d", Act::Nothing, &["c"]),
            ],
        );
        let outcomes = run_steps(&plan, false, 2).unwrap();
        assert_eq!(outcomes, vec![Outcome::Ran; 4]);
        let log = log.lock().unwrap().clone();
        let at = |e: &str| log.iter().position(|l| l == e).unwrap();
        assert!(
            at("start c") > at("end a") && at("start c") > at("end b"),
            "{log:?}"
        );
        assert!(at("start d") > at("end c"), "{log:?}");
        // Every entry is complete, and a second run reuses them all.
        for s in &plan.steps {
            assert!(s.out.join(STAMP).is_file(), "{} has no stamp", s.name);
        }
        assert_eq!(
            run_steps(&plan, false, 2).unwrap(),
            vec![Outcome::Cached; 4]
        );
    }

    /// Two kiln processes sharing a cache (here two plans on two threads:
    /// the lock is a `flock` per open file, so threads contend as processes
    /// do) build an entry once: the second waits for the first and reuses
    /// its entry; no lock file is left.
    #[test]
    fn two_builds_sharing_a_cache_build_an_entry_once() {
        let d = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(d.path()).unwrap();
        let slow = Act::Sleep(std::time::Duration::from_millis(600));
        let (first, log_first) = probe_plan(root, &[("slow", slow.clone(), &[])]);
        let (second, log_second) = probe_plan(root, &[("slow", slow, &[])]);
        assert_eq!(first.steps[0].out, second.steps[0].out);
        let outcomes = std::thread::scope(|s| {
            let a = s.spawn(|| run_steps(&first, false, 1));
            while !log_first.lock().unwrap().iter().any(|l| l == "start slow") {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let b = s.spawn(|| run_steps(&second, false, 1));
            (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
        });
        assert_eq!(outcomes, (vec![Outcome::Ran], vec![Outcome::Cached]));
        assert!(
            log_second.lock().unwrap().is_empty(),
            "the second build ran the step"
        );
        let dir = first.steps[0].out.parent().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let entry = first.steps[0].out.file_name().unwrap().to_string();
        assert_eq!(names, [entry, LATEST.to_string()]);
        // A forced build still runs, with the lock taken and given back.
        assert_eq!(run_steps(&second, true, 1).unwrap(), vec![Outcome::Ran]);
        assert!(!first.steps[0].out.with_extension("lock").exists());
    }

    #[test]
    fn a_failing_step_stops_the_running_ones_and_starts_no_more() {
        let d = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(d.path()).unwrap();
        let (plan, log) = probe_plan(
            root,
            &[
                ("long", Act::UntilCancelled, &[]),
                ("broken", Act::Fail, &[]),
                ("after", Act::Nothing, &["broken"]),
            ],
        );
        let err = format!("{:#}", run_steps(&plan, false, 2).unwrap_err());
        assert!(
            err.contains("step `broken`") && err.contains("broken broke"),
            "{err}"
        );
        let log = log.lock().unwrap().clone();
        assert!(!log.iter().any(|l| l == "start after"), "{log:?}");
        assert!(!log.iter().any(|l| l == "end long"), "{log:?}");
        // Nothing of either step is left in the cache, complete or not.
        for s in &plan.steps {
            let dir = s.out.parent().unwrap();
            let left: Vec<_> = std::fs::read_dir(dir)
                .map(|r| r.map(|e| e.unwrap().file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{dir} holds {left:?}");
        }
        // The cancel was this job's alone: this thread is not interrupted.
        assert!(!crate::signals::interrupted());
    }
}
