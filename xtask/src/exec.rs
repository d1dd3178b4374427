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
        let verdicts = plan.cache.join(VERDICTS);
        let digest = gate_remembered(&p.from, &p.name, gate, p.sha256, &verdicts)?;
        let dest = plan.output.join(&p.name);
        // Linking into `output/` changes the file's change time: when the
        // memo held just before it, the digest still holds for its bytes.
        let memo_held = digest.is_some() && known_digest(&p.from) == digest;
        publish_file(&p.from, &dest)?;
        if let (true, Some(hex)) = (memo_held, &digest) {
            remember_digest(&p.from, hex);
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
        let _ = std::fs::write(memo_path(file), format!("{hex} {id}\n"));
    }
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
        let _ = std::fs::write(memo_path(file), format!("{hex} {id}\n"));
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
}
