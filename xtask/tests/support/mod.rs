//! Shared test helpers: the tiers (unit, tool, boot), a throw-away copy of the
//! demo project to build in, and the checks several test files make the same
//! way: nothing left behind, checksums, golden files, qemu boots.
//!
//! Tool tests call [`require`] first: when a tool is missing they are skipped
//! with a message, except under `CI=true`, where a missing tool fails the test
//! (CI installs everything; a silent skip would hide a broken install).
//! [`in_ci`] and [`require`] are `xtask::testing`'s, which unit tests use too.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use xtask::recipe::Arch;
use xtask::tools::{Cmd, Watch};

pub mod iso_fixture;

// Not every test binary calls both.
#[allow(unused_imports)]
pub use xtask::testing::{in_ci, require};

/// The kiln workspace.
pub fn workspace() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The tests' `SOURCE_DATE_EPOCH`: the last commit's time (commits that
/// changed only kiln's own code aside), as `cargo xtask build` takes it when
/// none is set (1700000000 outside a git checkout). With the same epoch and
/// the same step cache ([`Project::share_cache`]: the build's own
/// `target/kiln/cache`), the tests reuse the Debian root file systems the
/// README's build command made instead of building them again (on CI, one
/// after the other, that is minutes per architecture, the arm64 one under
/// emulation). Keys are by content, so sharing is safe both ways.
pub fn epoch() -> i64 {
    static EPOCH: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *EPOCH
        .get_or_init(|| xtask::tools::git::last_commit_time(&workspace()).unwrap_or(1_700_000_000))
}

/// What building the demo's qcow2 needs (programs and host files), read
/// from its plan (`--dry-run --json`, every step's `needs`): the tests
/// require exactly what kiln itself checks before a build.
pub fn qcow2_build_tools() -> &'static [&'static str] {
    static TOOLS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    TOOLS.get_or_init(|| {
        let p = Project::demo();
        let plan: serde_json::Value =
            serde_json::from_str(&stdout(&p.run(&["--dry-run", "--json", "qcow2"]))).unwrap();
        let mut needs: Vec<&'static str> = plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["needs"].as_array().unwrap().clone())
            .map(|n| &*Box::leak(n.as_str().unwrap().to_string().into_boxed_str()))
            .collect();
        needs.sort();
        needs.dedup();
        needs
    })
}

/// A copy of the demo project (overlay, systemd, nocloud, recipes, payloads) in a
/// temporary directory, with its own cache and output.
pub struct Project {
    /// Removes the project on drop; `None` for [`Project::demo_for_process`].
    dir: Option<tempfile::TempDir>,
    pub root: Utf8PathBuf,
    /// Use the suite-wide step cache (see [`Project::share_cache`]).
    pub shared_cache: bool,
    /// Give kiln `TMPDIR=<root>/tmp` (see [`Project::private_tmp`]).
    pub private_tmp: bool,
}

/// Name prefix of the directories of [`Project::demo_for_process`].
const SHARED_PREFIX: &str = "kiln-test-shared-";

impl Project {
    pub fn demo() -> Project {
        let p = Project::empty();
        p.copy_demo();
        p
    }

    pub fn empty() -> Project {
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-")
            .tempdir()
            .unwrap();
        let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
        Project {
            dir: Some(dir),
            root,
            shared_cache: false,
            private_tmp: false,
        }
    }

    /// A copy of the demo project that lives as long as the test process:
    /// for a fixture several tests share through a `static` (a `OnceLock`).
    /// Statics are never dropped, so a `TempDir` held there would stay in
    /// the system temp directory after every run; this directory is removed
    /// when the process exits instead ([`remove_at_exit`]). A process that
    /// is killed runs no exit handlers: its directory (named after its pid)
    /// is removed by the next test process that makes one.
    pub fn demo_for_process() -> Project {
        remove_dead_processes_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{SHARED_PREFIX}{}-", std::process::id()))
            .tempdir()
            .unwrap()
            .keep();
        let root = Utf8PathBuf::from_path_buf(dir).unwrap();
        remove_at_exit(&root);
        let p = Project {
            dir: None,
            root,
            shared_cache: false,
            private_tmp: false,
        };
        p.copy_demo();
        p
    }

    fn copy_demo(&self) {
        for d in ["overlay", "systemd", "nocloud", "recipes", "payloads"] {
            copy_tree(&workspace().join(d), &self.root.join(d));
        }
    }

    /// Build in the suite-wide cache, `cargo xtask build`'s own
    /// `target/kiln/cache`: expensive steps (the Debian root file systems)
    /// are then built once per test run, not once per test, and not again
    /// after the README's build (see [`epoch`]). Cache entries are
    /// content-addressed, so sharing is safe.
    pub fn share_cache(mut self) -> Project {
        self.shared_cache = true;
        self
    }

    /// Run kiln with `TMPDIR=<root>/tmp`, so that [`Project::assert_no_leftovers`]
    /// also sees what kiln (and the tools it runs) left in its temporary
    /// directory. Kept to builds without mmdebstrap, whose unshare mode needs
    /// a temporary directory its unprivileged user can enter (this one is
    /// inside a mode 0700 directory).
    pub fn private_tmp(mut self) -> Project {
        std::fs::create_dir_all(self.root.join("tmp")).unwrap();
        self.private_tmp = true;
        self
    }

    pub fn cache_dir(&self) -> Utf8PathBuf {
        if self.shared_cache {
            workspace().join("target/kiln/cache")
        } else {
            self.root.join("cache")
        }
    }

    pub fn path(&self, rel: &str) -> Utf8PathBuf {
        self.root.join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> Utf8PathBuf {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `cargo xtask ARGS` against this project (root, cache, output inside it).
    pub fn kiln(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.env("KILN_ROOT", &self.root)
            .env("KILN_CACHE", self.cache_dir())
            .env("KILN_OUTPUT", self.root.join("output"))
            .env("SOURCE_DATE_EPOCH", epoch().to_string())
            .env_remove("KILN_RECIPE")
            .env_remove("KILN_REGISTRY_USER")
            .env_remove("KILN_REGISTRY_PASSWORD")
            .env_remove("KILN_REGISTRY_CA")
            .current_dir(&self.root);
        if self.private_tmp {
            c.env("TMPDIR", self.root.join("tmp"));
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.kiln().args(args).output().unwrap();
        if !out.status.success() {
            panic!(
                "kiln {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    /// Run and expect failure; returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let out = self.kiln().args(args).output().unwrap();
        assert!(
            !out.status.success(),
            "kiln {args:?} unexpectedly succeeded:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Files in output/ (names, hidden ones included), sorted.
    pub fn outputs(&self) -> Vec<String> {
        let d = self.root.join("output");
        let mut v: Vec<String> = match std::fs::read_dir(&d) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// kiln left no temporary state in this project: no [`leftovers`] in its
    /// cache or output, and (with [`Project::private_tmp`]) nothing in its
    /// temporary directory. Not for a shared cache, where other tests' steps
    /// may be running.
    pub fn assert_no_leftovers(&self) {
        assert!(
            !self.shared_cache,
            "a shared cache holds other tests' running steps: check a project with its own cache"
        );
        let found = leftovers(&[&self.cache_dir(), &self.root.join("output")]);
        assert!(
            found.is_empty(),
            "kiln left temporary state behind: {found:#?}"
        );
        if self.private_tmp {
            let left: Vec<_> = std::fs::read_dir(self.root.join("tmp"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert!(left.is_empty(), "kiln left files in its TMPDIR: {left:#?}");
        }
    }
}

// ---- leftovers -------------------------------------------------------------

/// Is `name` one of the executor's temporary names? A step runs into
/// `<key>.tmp-<pid>` beside its cache entry (`exec::run_step`), and files are
/// written as `.<name>.kiln-partial` beside their destination
/// (`exec::TempFile::beside`); both are renamed into place or removed, so one
/// that remains is a leak. (A download's `<name>.part` is kept on purpose
/// after a failed transfer, for a resume: not a leftover.)
pub fn is_temporary(name: &str) -> bool {
    if name.starts_with('.') && name.ends_with(".kiln-partial") {
        return true;
    }
    match name.rsplit_once(".tmp-") {
        Some((key, pid)) => {
            !key.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Every file or directory with a temporary name ([`is_temporary`]) under
/// `dirs` (recursively; the inside of a temporary directory is not listed),
/// sorted. A directory that does not exist holds none.
pub fn leftovers(dirs: &[&Utf8Path]) -> Vec<Utf8PathBuf> {
    let mut found = Vec::new();
    for dir in dirs {
        if !dir.exists() {
            continue;
        }
        let mut it = walkdir::WalkDir::new(dir).min_depth(1).into_iter();
        while let Some(e) = it.next() {
            let e = e.unwrap_or_else(|e| panic!("walking {dir}: {e}"));
            if is_temporary(&e.file_name().to_string_lossy()) {
                found.push(Utf8PathBuf::from_path_buf(e.path().to_path_buf()).unwrap());
                if e.file_type().is_dir() {
                    it.skip_current_dir();
                }
            }
        }
    }
    found.sort();
    found
}

// ---- process-wide fixtures -------------------------------------------------

/// Directories removed when the test process exits.
static AT_EXIT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn remove_registered_dirs() {
    // Every test has finished when the process exits; `try_lock` only makes
    // sure exiting can never wait on a lock.
    if let Ok(mut dirs) = AT_EXIT.try_lock() {
        for d in dirs.drain(..) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Remove `dir` when the process exits: `exit(3)` runs `atexit` handlers
/// both when the test harness returns from `main` and when it calls
/// `process::exit` after a failure (statics' destructors never run).
pub fn remove_at_exit(dir: &Utf8Path) {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        let rc = unsafe { libc::atexit(remove_registered_dirs) };
        assert_eq!(rc, 0, "atexit failed");
    });
    AT_EXIT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.as_std_path().to_owned());
}

/// Remove the [`Project::demo_for_process`] directories (ours: same user) of
/// test processes that no longer run: they were killed before exiting.
fn remove_dead_processes_dirs() {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let me = unsafe { libc::getuid() };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SHARED_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let ours = e.metadata().is_ok_and(|m| m.uid() == me);
        if ours && pid > 0 && !process_runs(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Does process `pid` exist (`kill(pid, 0)`; EPERM: it exists, another user's)?
pub fn process_runs(pid: i32) -> bool {
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

// ---- checksums -------------------------------------------------------------

/// sha256 (lowercase hex) of a file.
pub fn sha256(path: &Utf8Path) -> String {
    xtask::digest::file_sha256(path).unwrap_or_else(|e| panic!("sha256 of {path}: {e:#}"))
}

/// `sha256sum --strict -c SUMS`, run in the directory of `sums` (the names in
/// it are relative): every file listed is there and verifies.
pub fn sha256sum_check(sums: &Utf8Path) {
    let dir = sums.parent().unwrap();
    let out = Command::new("sha256sum")
        .args(["--strict", "-c", sums.file_name().unwrap()])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    assert!(
        out.status.success(),
        "sha256sum -c {sums} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A published artifact's `<artifact>.sha256`: exactly one `sha256sum` line
/// with the artifact's digest and its basename (so the pair verifies
/// wherever it is copied), which `sha256sum -c` accepts.
pub fn assert_published_sha256(artifact: &Utf8Path) {
    let name = artifact.file_name().unwrap();
    let sums = artifact.with_file_name(format!("{name}.sha256"));
    let text = std::fs::read_to_string(&sums).unwrap_or_else(|e| panic!("{sums}: {e}"));
    assert_eq!(
        text,
        format!("{}  {name}\n", sha256(artifact)),
        "{sums}: not the digest and basename of {artifact}"
    );
    sha256sum_check(&sums);
}

// ---- golden files ----------------------------------------------------------

/// `KILN_BLESS=1`: golden files are written from what the tests produce
/// instead of compared with it (review the diff before committing). Unset or
/// any other value: compared. Refused in CI, where it would pass anything.
pub fn bless() -> bool {
    let bless = std::env::var("KILN_BLESS").is_ok_and(|v| v == "1");
    assert!(
        !(bless && in_ci()),
        "KILN_BLESS=1 under CI=true: golden files are blessed by hand and reviewed, never in CI"
    );
    bless
}

/// `actual` is the golden file `xtask/tests/golden/NAME` (with
/// `KILN_BLESS=1`: becomes it).
pub fn golden(name: &str, actual: &str) {
    let p = workspace().join("xtask/tests/golden").join(name);
    if bless() {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&p).unwrap_or_else(|_| {
        panic!("{p} is missing: run with KILN_BLESS=1 to write it, then review it")
    });
    assert!(
        actual == expected,
        "{name} differs from the golden file {p} (if the change is intended, re-run with KILN_BLESS=1 \
         and review the diff)\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

// ---- qemu boots ------------------------------------------------------------

/// A writable copy of the UEFI variable store for `arch` (OVMF for amd64,
/// AAVMF for arm64) in `dir`, for `Boot::vars`.
pub fn uefi_vars(dir: &Utf8Path, arch: Arch) -> Utf8PathBuf {
    use std::os::unix::fs::PermissionsExt;
    use xtask::tools::qemu_system::{AAVMF_VARS, OVMF_VARS};
    let (from, name) = match arch {
        Arch::Amd64 => (OVMF_VARS, "OVMF_VARS.fd"),
        Arch::Arm64 => (AAVMF_VARS, "AAVMF_VARS.fd"),
    };
    let to = dir.join(name);
    std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copying {from} to {to}: {e}"));
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    to
}

/// Run `cmd` (a qemu boot, its serial console on stdout) until the console
/// has shown `patterns` in order, case-insensitively, then stop it
/// (`xtask::tools::run_until`); returns the console. Panics with the
/// console's tail when qemu exits first or `limit` passes.
pub fn boot(cmd: &Cmd, patterns: &[&str], limit: Duration) -> String {
    match xtask::tools::run_until(cmd, patterns, limit).unwrap() {
        Watch::Matched { output } => output,
        Watch::Exited { output, status } => panic!(
            "`{cmd}` exited ({status}) before {patterns:?}:\n{}",
            tail(&output)
        ),
        Watch::TimedOut { output } => panic!(
            "`{cmd}`: no {patterns:?} within {limit:?}:\n{}",
            tail(&output)
        ),
    }
}

/// The recipe `text` with its `smoke:` section replaced by `section` (YAML
/// text starting with `smoke:`): everything from `smoke:` up to the next
/// top-level key goes (appended at the end when there is none).
pub fn with_smoke(text: &str, section: &str) -> String {
    let Some(start) = text.find("\nsmoke:\n").map(|i| i + 1) else {
        return format!("{text}\n{section}");
    };
    let rest = &text[start + "smoke:\n".len()..];
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| {
            rest[i..]
                .chars()
                .next()
                .is_some_and(|c| !c.is_whitespace() && c != '#')
        })
        .map(|i| start + "smoke:\n".len() + i)
        .unwrap_or(text.len());
    let nl = if section.ends_with('\n') { "" } else { "\n" };
    format!("{}{section}{nl}{}", &text[..start], &text[end..])
}

/// The recipe `text` with `lines` (YAML, indented two spaces) added to its
/// `qcow2:` section: the demo has one (its package list), so appending a
/// second `qcow2:` key would make the YAML invalid.
pub fn with_qcow2(text: &str, lines: &str) -> String {
    xtask::recipe::with_section_lines(text, "qcow2", lines)
}

/// The recipe `text` without its `qcow2.packages` line (the only
/// `packages:` indented two spaces: the payloads' are deeper).
pub fn without_qcow2_packages(text: &str) -> String {
    text.split_inclusive('\n')
        .filter(|l| !l.starts_with("  packages:"))
        .collect()
}

/// The recipe `text` with its `qcow2.packages` replaced by `packages`.
pub fn with_qcow2_packages(text: &str, packages: &[&str]) -> String {
    with_qcow2(
        &without_qcow2_packages(text),
        &format!("  packages: [{}]\n", packages.join(", ")),
    )
}

/// `recipes/small.yaml`: the demo recipe with a 2 GiB disk and `extra`
/// (YAML, indented) in its `qcow2:` section; a package list there replaces
/// the demo's. The suite-wide cache holds its Debian root, so the test
/// binaries that use it share their disks' cache entries.
pub fn small_recipe(p: &Project, extra: &str) -> String {
    let mut demo = std::fs::read_to_string(p.path("recipes/demo.yaml")).unwrap();
    if extra.lines().any(|l| l.starts_with("  packages:")) {
        demo = without_qcow2_packages(&demo);
    }
    p.write(
        "recipes/small.yaml",
        &with_qcow2(&demo, &format!("  size: 2G\n{extra}")),
    );
    "recipes/small.yaml".into()
}

/// The recipe `text` (the demo's, or one made from it) with its smoke's
/// first boot only: its `again:` list and its `once:` line (which needs a
/// second boot) removed. For the emulated arm64 guests, whose boots under
/// TCG take many minutes: what a second boot proves (first boot does not
/// run again, the identity is kept) is the appliance's scripts' doing, the
/// same on every architecture, and the qcow2 smoke test checks it on amd64.
pub fn first_boot_only(text: &str) -> String {
    let start = text
        .find("\n  again:\n")
        .expect("the recipe's smoke has `again:`");
    let once = text
        .find("\n  once: ")
        .expect("the recipe's smoke has `once:`");
    assert!(start < once, "`again:` comes before `once:`");
    let end = once + 1 + text[once + 1..].find('\n').unwrap();
    format!("{}{}", &text[..start], &text[end..])
}

/// The console log `cargo xtask smoke` wrote for boot `boot` of instance
/// `instance` (machine `uefi`, `bios` or `raspi3b`) of `artifact`.
pub fn smoke_log(
    p: &Project,
    artifact: &Utf8Path,
    instance: usize,
    machine: &str,
    boot: usize,
) -> String {
    let log = p
        .path("output/smoke")
        .join(artifact.file_name().unwrap())
        .join(format!("instance-{instance}-{machine}-boot-{boot}.log"));
    std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{log}: {e}"))
}

/// The last 60 lines of a console.
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

// ---- files and programs ----------------------------------------------------

pub fn copy_tree(from: &Utf8Path, to: &Utf8Path) {
    if !from.exists() {
        return;
    }
    replicate_tree(from, to, |src, dest| std::fs::copy(src, dest).map(|_| ()));
}

/// Hard-link the tree at `from` into `to` (directories made, symlinks
/// recreated): for carrying a cache entry (a Debian root) into another
/// project's cache. Entries are never written after they are published, so
/// sharing their inodes is safe, and the copy takes no space: boot tests
/// running side by side each carried over an 800 MB root before.
pub fn link_tree(from: &Utf8Path, to: &Utf8Path) {
    replicate_tree(from, to, |src, dest| std::fs::hard_link(src, dest));
}

/// The tree at `from` made again at `to`: directories created, symlinks
/// recreated, each file through `file(source, destination)`.
fn replicate_tree(
    from: &Utf8Path,
    to: &Utf8Path,
    file: impl Fn(&std::path::Path, &std::path::Path) -> std::io::Result<()>,
) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap_or_else(|e| panic!("walking {from}: {e}"));
        let rel = e.path().strip_prefix(from).unwrap();
        let dest = to.as_std_path().join(rel);
        let ft = e.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &dest).unwrap();
        } else {
            file(e.path(), &dest).unwrap_or_else(|err| {
                panic!("{} to {}: {err}", e.path().display(), dest.display())
            });
        }
    }
}

/// A plan printed by `--dry-run --json`: step name to (key, output
/// directory, whether it runs an in-process op).
pub fn plan_steps(
    plan: &serde_json::Value,
) -> std::collections::BTreeMap<String, (String, String, bool)> {
    plan["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in the plan: {plan}"))
        .iter()
        .map(|s| {
            let op = s["actions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a.get("op").is_some());
            (
                s["name"].as_str().unwrap().to_string(),
                (
                    s["key"].as_str().unwrap().to_string(),
                    s["out"].as_str().unwrap().to_string(),
                    op,
                ),
            )
        })
        .collect()
}

/// Step name to outcome (`ran`, `cached`) from a verb's `--json` report (the
/// last line of its stdout).
pub fn outcomes(o: &Output) -> std::collections::BTreeMap<String, String> {
    let text = stdout(o);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("no JSON report on the last line ({e}):\n{text}"));
    v["steps"]
        .as_array()
        .expect("a steps array")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run a program directly (test-side inspection: xorriso reports, qemu-img
/// info, tar listings), panicking with its stderr on failure.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A slot for a heavy test (qemu boots, root file systems), held until the
/// guard drops. `cargo xtask test` runs the test binaries side by side, and
/// the CI machine has two cores: boots started by every binary at once only
/// slow each other past their timeouts. The slots are machine-wide (a file
/// lock per slot under `target/kiln/heavy/`), so every binary's heavy tests
/// share them: `KILN_TEST_HEAVY` of them (default 2) run at once, while
/// light tests run beside them.
///
/// When `cargo xtask test` runs the suite it names a ledger
/// (`KILN_TEST_LEDGER`): each guard, as it drops, appends its test, how long
/// it waited for a slot and how long it held one, and the suite prints the
/// longest holders (where CI's minutes go).
pub struct Heavy {
    _slot: std::fs::File,
    asked: std::time::Instant,
    got: std::time::Instant,
}

impl Drop for Heavy {
    fn drop(&mut self) {
        let Ok(ledger) = std::env::var("KILN_TEST_LEDGER") else {
            return;
        };
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .map(|n| n.rsplit_once('-').map_or(n.clone(), |(b, _)| b.to_string()))
            .unwrap_or_default();
        let test = std::thread::current().name().unwrap_or("?").to_string();
        let line = format!(
            "{binary}\t{test}\t{}\t{}\n",
            (self.got - self.asked).as_secs(),
            self.got.elapsed().as_secs()
        );
        // One short `write` with O_APPEND: lines from many processes do not
        // interleave.
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&ledger)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

pub fn heavy() -> Heavy {
    slot(false)
}

/// [`heavy`] for the suite's longest tests (several boots, an install): a
/// slot that frees up goes to a waiting long test before any short one, so
/// the long ones start early and the suite does not end on one of them
/// running alone while the other slot idles.
pub fn heavy_long() -> Heavy {
    slot(true)
}

/// Whether a long test's waiting mark is there (and its process alive).
fn a_long_test_waits(dir: &Utf8Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("long-").and_then(|r| r.split('-').next()) else {
            return false;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            true
        } else {
            // Left by a process that died while waiting.
            let _ = std::fs::remove_file(e.path());
            false
        }
    })
}

fn slot(long: bool) -> Heavy {
    let slots: usize = std::env::var("KILN_TEST_HEAVY")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2);
    let dir = workspace().join("target/kiln/heavy");
    std::fs::create_dir_all(&dir).unwrap();
    let asked = std::time::Instant::now();
    // A long test marks itself waiting; short tests leave free slots to it.
    static WAITER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mark = long.then(|| {
        let n = WAITER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let m = dir.join(format!("long-{}-{n}", std::process::id()));
        std::fs::write(&m, b"").unwrap_or_else(|e| panic!("writing {m}: {e}"));
        m
    });
    loop {
        if long || !a_long_test_waits(&dir) {
            for i in 0..slots {
                let path = dir.join(format!("slot-{i}"));
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .unwrap_or_else(|e| panic!("opening {path}: {e}"));
                match f.try_lock() {
                    Ok(()) => {
                        if let Some(m) = &mark {
                            let _ = std::fs::remove_file(m);
                        }
                        return Heavy {
                            _slot: f,
                            asked,
                            got: std::time::Instant::now(),
                        };
                    }
                    Err(std::fs::TryLockError::WouldBlock) => {}
                    Err(std::fs::TryLockError::Error(e)) => panic!("locking {path}: {e}"),
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

// ---- reading a smoke report ----------------------------------------------------

/// One `<testcase>` of junit.xml: its name and, when it failed, the
/// failure's message.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub failure: Option<String>,
}

/// junit.xml read with an XML parser: the `<testsuites>` totals (tests,
/// failures) and every test case. A malformed file fails the test.
pub fn junit(path: &Utf8Path) -> (usize, usize, Vec<Case>) {
    use quick_xml::events::Event;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let attr = |e: &quick_xml::events::BytesStart, name: &str| -> Option<String> {
        e.attributes().map(|a| a.unwrap()).find_map(|a| {
            (a.key.as_ref() == name).then(|| {
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .unwrap()
                    .into_owned()
            })
        })
    };
    let mut r = quick_xml::Reader::from_str(&text);
    let (mut tests, mut failures) = (None, None);
    let mut cases: Vec<Case> = Vec::new();
    loop {
        match r
            .read_event()
            .unwrap_or_else(|e| panic!("{path} is not well-formed: {e}\n{text}"))
        {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                "testsuites" => {
                    tests = attr(&e, "tests").map(|v| v.parse::<usize>().unwrap());
                    failures = attr(&e, "failures").map(|v| v.parse::<usize>().unwrap());
                }
                "testcase" => cases.push(Case {
                    name: attr(&e, "name").expect("a testcase has a name"),
                    failure: None,
                }),
                "failure" => {
                    let c = cases.last_mut().expect("a failure inside a testcase");
                    c.failure = Some(attr(&e, "message").expect("a failure has a message"));
                }
                _ => {}
            },
            _ => {}
        }
    }
    let tests = tests.unwrap_or_else(|| panic!("{path}: no <testsuites tests=…>\n{text}"));
    let failures = failures.unwrap_or_else(|| panic!("{path}: no <testsuites failures=…>"));
    assert_eq!(tests, cases.len(), "{path}: tests= is not the test cases'");
    assert_eq!(
        failures,
        cases.iter().filter(|c| c.failure.is_some()).count(),
        "{path}: failures= is not the failed test cases'"
    );
    (tests, failures, cases)
}

/// The test case whose name ends with `check` (`#1 uefi boot 1: <check>`
/// or, across guests, `<check>`); panics listing them all if none does.
pub fn case<'a>(cases: &'a [Case], guest: &str, check: &str) -> &'a Case {
    let want = if guest.is_empty() {
        check.to_string()
    } else {
        format!("{guest}: {check}")
    };
    cases
        .iter()
        .find(|c| c.name == want)
        .unwrap_or_else(|| panic!("no test case `{want}` in junit.xml: {cases:#?}"))
}

/// Debian's open-vmdk source package: VMware's `vmdk-convert` is packaged in
/// Debian sid only, so the converter test builds it from this (sha256 pinned).
const OPEN_VMDK_ORIG: &str = "pool/main/o/open-vmdk/open-vmdk_0.3.13+dfsg.orig.tar.xz";
const OPEN_VMDK_SHA256: &str = "e880fc378f63b3abb5143b13282a8216724f0d817fabdfdf74b06d44b2156c03";

/// A directory holding VMware's `vmdk-convert`: the one on PATH, else one
/// built once per suite cache from Debian's source package, fetched from the
/// host's own Debian mirror.
pub fn vmdk_convert_dir() -> Utf8PathBuf {
    if let Some(p) = xtask::tools::find("vmdk-convert") {
        return p.parent().unwrap().to_owned();
    }
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let dir = workspace().join("target/kiln-test-cache/open-vmdk-0.3.13");
    if dir.join("vmdk-convert").is_file() {
        return dir;
    }
    let sources = xtask::hostapt::sources(Utf8Path::new("/etc/apt")).unwrap();
    let suite = xtask::hostapt::host_codename().unwrap_or_else(|| "bookworm".into());
    let mirror = xtask::hostapt::debian_mirror(&sources, &suite).unwrap();
    let work = tempfile::tempdir().unwrap();
    let work = Utf8Path::from_path(work.path()).unwrap().to_owned();
    let tarball = work.join("open-vmdk.orig.tar.xz");
    let url = format!("{}/{OPEN_VMDK_ORIG}", mirror.trim_end_matches('/'));
    sh(
        "curl",
        &["-fsSL", "--retry", "3", "-o", tarball.as_str(), &url],
    );
    assert_eq!(
        sha256(&tarball),
        OPEN_VMDK_SHA256,
        "{url}: not the pinned source"
    );
    sh("tar", &["-xJf", tarball.as_str(), "-C", work.as_str()]);
    let src = work.join("open-vmdk-0.3.13");
    sh("make", &["-s", "-C", src.join("vmdk").as_str()]);
    let built = src.join("build/vmdk/vmdk-convert");
    let tmp = workspace().join("target/kiln-test-cache/open-vmdk-0.3.13.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(&built, tmp.join("vmdk-convert")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).unwrap();
    dir
}

/// Byte offset of GPT partition `n` of a raw disk, as sgdisk reads it.
pub fn partition_offset(raw: &Utf8Path, n: u32) -> u64 {
    let first: u64 = sh("sgdisk", &["-i", &n.to_string(), raw.as_str()])
        .lines()
        .find_map(|l| l.strip_prefix("First sector: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("sgdisk names no first sector of partition {n} of {raw}"))
        .parse()
        .unwrap();
    first * 512
}

/// PATH with `dir` in front.
pub fn path_with(dir: &Utf8Path) -> String {
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// `qemu-img convert -f FROM -O TO SRC DST` (reading images back in tests).
pub fn qemu_convert(src: &Utf8Path, from: &str, dst: &Utf8Path, to: &str) {
    sh(
        "qemu-img",
        &["convert", "-f", from, "-O", to, src.as_str(), dst.as_str()],
    );
}

/// This host runs arm64 package scripts (natively or through a registered
/// qemu-user); in CI it must.
#[allow(dead_code)]
pub fn arm64_programs_run() -> bool {
    if xtask::tools::binfmt::can_run(xtask::recipe::Arch::Arm64) {
        return true;
    }
    if in_ci() {
        panic!("CI=true but arm64 programs do not run here: run `cargo xtask doctor --install` as root (registers qemu-user with binfmt_misc)");
    }
    eprintln!("SKIPPED: arm64 programs do not run here (`cargo xtask doctor --install`)");
    false
}

/// Nothing of a failed export or image build may remain: no archive or
/// root tarball anywhere in the cache, no staged tree, nothing in output/.
pub fn assert_nothing_left(p: &Project) {
    assert!(p.outputs().is_empty(), "output/ holds {:?}", p.outputs());
    p.assert_no_leftovers();
    let cache = p.cache_dir();
    if !cache.exists() {
        return;
    }
    for e in walkdir::WalkDir::new(&cache) {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        assert!(
            !(name.ends_with(".tar")
                || name.ends_with(".tar.zst")
                || name.ends_with(".tar.gz")
                || name == "SHA256SUMS"),
            "left behind: {}",
            e.path().display()
        );
        assert!(
            !e.path().to_string_lossy().contains("/stage-"),
            "a stage entry exists: {}",
            e.path().display()
        );
    }
}

/// A local OCI registry (`docker-registry`, run through
/// `xtask::tools::docker_registry`) on 127.0.0.1 with its storage in a
/// temporary directory: the server is stopped, then the directory removed,
/// when this drops (also when the test panics).
pub struct Registry {
    // Declared first: dropped (stopped) before its directory goes.
    pub server: xtask::tools::docker_registry::LocalRegistry,
    /// The configuration and `storage/` (the registry's blobs and manifests).
    pub dir: Utf8PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.server.host()
    }
    /// Its log and access log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Its log once it has stopped growing for half a second (at most 10 s):
    /// the registry writes a request's access-log line after answering it,
    /// and kiln reads its output through a pipe, so a client may be done
    /// before its last request is in [`Registry::log`].
    pub fn settled_log(&self) -> String {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let mut last = self.log();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.log();
            if now == last || std::time::Instant::now() > until {
                return now;
            }
            last = now;
        }
    }
}

/// Start a [`Registry`] serving as `options` say.
pub fn registry(options: xtask::tools::docker_registry::Options) -> Registry {
    let (guard, dir) = tempdir("kiln-registry-");
    let server = xtask::tools::docker_registry::LocalRegistry::start(&dir, &options)
        .unwrap_or_else(|e| panic!("{e:#}"));
    Registry {
        server,
        dir,
        _dir: guard,
    }
}

/// A temporary directory named `<prefix>…`, removed when the guard drops,
/// and its path.
pub fn tempdir(prefix: &str) -> (tempfile::TempDir, Utf8PathBuf) {
    let d = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let p = Utf8PathBuf::from_path_buf(d.path().to_path_buf()).unwrap();
    (d, p)
}

/// A throw-away CA and a server certificate for 127.0.0.1 signed by it, in
/// `dir`: (ca.crt, server.crt, server.key).
pub fn private_ca(dir: &Utf8Path) -> (Utf8PathBuf, Utf8PathBuf, Utf8PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let f = |n: &str| dir.join(n);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    sh(
        "openssl",
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                f("ca.key").as_str(),
                "-out",
                f("ca.crt").as_str(),
                "-days",
                "2",
                "-subj",
                "/CN=kiln test CA",
            ],
        ]
        .concat(),
    );
    sh(
        "openssl",
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                f("server.key").as_str(),
                "-out",
                f("server.csr").as_str(),
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(f("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    sh(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            f("server.csr").as_str(),
            "-CA",
            f("ca.crt").as_str(),
            "-CAkey",
            f("ca.key").as_str(),
            "-CAcreateserial",
            "-out",
            f("server.crt").as_str(),
            "-days",
            "2",
            "-extfile",
            f("san.ext").as_str(),
        ],
    );
    (f("ca.crt"), f("server.crt"), f("server.key"))
}
