//! External programs. This module tree is the only place in kiln that spawns
//! processes: one submodule per program builds its command lines as data
//! ([`Cmd`]), and [`run`] executes them with a controlled environment.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use camino::Utf8PathBuf;
use serde::Serialize;

pub mod actionlint;
pub mod apt;
pub mod binfmt;
pub mod cargo;
pub mod cloud_init;
pub mod console;
pub mod coreutils;
pub mod curl;
pub mod debugfs;
pub mod docker_registry;
pub mod dosfstools;
pub mod git;
pub mod grub;
pub mod mke2fs;
pub mod mkfs;
pub mod mmdebstrap;
pub mod mtools;
pub mod objcopy;
pub mod pip;
pub mod qemu_img;
pub mod qemu_system;
pub mod registry;
pub mod sha256sum;
pub mod shellcheck;
pub mod skopeo;
pub mod virt_customize;
pub mod vmdk_convert;
pub mod xorriso;
pub mod xz;
pub mod zstd;

pub use registry::Target;

/// One external command, as data: what `--dry-run` prints and what tests assert on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    /// Variables set on top of the controlled base environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<Utf8PathBuf>,
    /// Write the child's stdout to this file instead of capturing it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_to: Option<Utf8PathBuf>,
    /// What kiln streams into the child's stdin ([`run_feeding`]); stdin is
    /// closed otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin_from: Option<String>,
    /// One line saying what the command is for.
    pub summary: String,
    /// Let the child write to kiln's own stdout/stderr (e.g. `cargo test`)
    /// instead of capturing them.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inherit_output: bool,
    /// Let the child write to kiln's stderr, capturing only its stdout
    /// (cargo's build messages on stdout, its progress on stderr).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inherit_stderr: bool,
    /// With [`Cmd::stdout_to`]: stderr goes to the same file, interleaved as
    /// the child writes them (a test binary's whole log).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stderr_to_stdout: bool,
    /// Pass kiln's whole environment through (only for `cargo test`, whose
    /// tests read `CI`, `KILN_*` and cargo's own variables).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inherit_env: bool,
    /// With [`Cmd::inherit_env`]: variables not passed on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unset: Vec<String>,
    /// What to tell the user when the command fails with a known message:
    /// (text in its stderr, advice). Not part of the command's identity.
    #[serde(skip)]
    pub hints: Vec<(String, String)>,
}

impl Cmd {
    pub fn new(program: impl Into<String>, summary: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            stdout_to: None,
            stdin_from: None,
            summary: summary.into(),
            inherit_output: false,
            inherit_stderr: false,
            stderr_to_stdout: false,
            inherit_env: false,
            unset: Vec::new(),
            hints: Vec::new(),
        }
    }
    /// When the command fails and its stderr contains `needle`, the error
    /// ends with `advice`.
    pub fn hint(mut self, needle: impl Into<String>, advice: impl Into<String>) -> Cmd {
        self.hints.push((needle.into(), advice.into()));
        self
    }
    pub fn arg(mut self, a: impl AsRef<str>) -> Cmd {
        self.args.push(a.as_ref().to_string());
        self
    }
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Cmd {
        self.env.insert(k.into(), v.into());
        self
    }
    pub fn cwd(mut self, dir: impl Into<Utf8PathBuf>) -> Cmd {
        self.cwd = Some(dir.into());
        self
    }
    pub fn with_env_inherited(mut self) -> Cmd {
        self.inherit_env = true;
        self
    }
    /// Do not pass `vars` on (with [`Cmd::with_env_inherited`]).
    pub fn without_env(mut self, vars: &[&str]) -> Cmd {
        self.unset.extend(vars.iter().map(|v| v.to_string()));
        self
    }
    pub fn inherit_output(mut self) -> Cmd {
        self.inherit_output = true;
        self
    }
    pub fn stdout_to(mut self, file: impl Into<Utf8PathBuf>) -> Cmd {
        self.stdout_to = Some(file.into());
        self
    }
    /// Both stdout and stderr into `file`, in the order the child writes them.
    pub fn output_to(mut self, file: impl Into<Utf8PathBuf>) -> Cmd {
        self.stdout_to = Some(file.into());
        self.stderr_to_stdout = true;
        self
    }
    pub fn inherit_stderr(mut self) -> Cmd {
        self.inherit_stderr = true;
        self
    }
    /// The environment as `(name, value)` pairs, sorted by name.
    pub fn env_pairs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
    /// kiln writes `what` into the child's stdin while it runs ([`run_feeding`]).
    pub fn stdin_from(mut self, what: impl Into<String>) -> Cmd {
        self.stdin_from = Some(what.into());
        self
    }
    /// Replace `from` by `to` in every argument and env value (used to point a
    /// planned command at a step's temporary output directory).
    pub fn substitute(&self, from: &str, to: &str) -> Cmd {
        let mut c = self.clone();
        for a in &mut c.args {
            *a = a.replace(from, to);
        }
        for v in c.env.values_mut() {
            *v = v.replace(from, to);
        }
        if let Some(p) = &c.stdout_to {
            c.stdout_to = Some(p.as_str().replace(from, to).into());
        }
        if let Some(p) = &c.cwd {
            c.cwd = Some(p.as_str().replace(from, to).into());
        }
        c
    }
}

/// In a planned command, an argument that stands for any number of
/// arguments (e.g. one `-map` per file, known when the op runs).
pub const MORE: &str = "<...>";

impl Cmd {
    /// Does this command fit `template`: the same program, the template's
    /// arguments in order, each equal except where it holds a `<what>` hole
    /// (which matches any text) or is [`MORE`] (any run of arguments), and
    /// the same environment?
    pub fn fits(&self, template: &Cmd) -> bool {
        fn one(value: &str, t: &str) -> bool {
            if !t.contains('<') {
                return value == t;
            }
            let hole = regex::Regex::new(r"<[^<>]*>").expect("static regex");
            let mut pattern = String::from("^");
            let mut last = 0;
            for m in hole.find_iter(t) {
                pattern.push_str(&regex::escape(&t[last..m.start()]));
                pattern.push_str("(?s:.*)");
                last = m.end();
            }
            pattern.push_str(&regex::escape(&t[last..]));
            pattern.push('$');
            regex::Regex::new(&pattern).is_ok_and(|r| r.is_match(value))
        }
        fn args(a: &[String], t: &[String]) -> bool {
            match t.split_first() {
                None => a.is_empty(),
                Some((m, rest)) if m == MORE => (0..=a.len()).any(|k| args(&a[k..], rest)),
                Some((x, rest)) => a
                    .split_first()
                    .is_some_and(|(y, more)| one(y, x) && args(more, rest)),
            }
        }
        self.program == template.program
            && args(&self.args, &template.args)
            && self.env.len() == template.env.len()
            && self
                .env
                .iter()
                .all(|(k, v)| template.env.get(k).is_some_and(|t| one(v, t)))
    }
}

thread_local! {
    /// The commands the in-process op running on this thread declared.
    static DECLARED: std::cell::RefCell<Option<Vec<Cmd>>> = const { std::cell::RefCell::new(None) };
}

/// While the guard lives, this thread may run only commands that fit one of
/// `cmds` (what an op declared in `Op::commands`, with its output directory
/// filled in): a plan's account of what it runs is then complete.
pub fn declare(cmds: Vec<Cmd>) -> Declared {
    DECLARED.with(|d| *d.borrow_mut() = Some(cmds));
    Declared(())
}

pub struct Declared(());

impl Drop for Declared {
    fn drop(&mut self) {
        DECLARED.with(|d| *d.borrow_mut() = None);
    }
}

fn check_declared(cmd: &Cmd) -> Result<()> {
    DECLARED.with(|d| match &*d.borrow() {
        Some(cmds) if !cmds.iter().any(|t| cmd.fits(t)) => bail!(
            "kiln bug: a step ran a command its op does not declare, so `--dry-run` and the \
             tool check did not show it:\n  {cmd}\ndeclared:\n{}",
            cmds.iter()
                .map(|c| format!("  {c}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        _ => Ok(()),
    })
}

impl fmt::Display for Cmd {
    /// The command as a shell line a person can paste.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", shell_quote(v)))
            .collect();
        parts.push(shell_quote(&self.program));
        parts.extend(self.args.iter().map(|a| shell_quote(a)));
        write!(f, "{}", parts.join(" "))?;
        if let Some(out) = &self.stdout_to {
            write!(f, " > {}", shell_quote(out.as_str()))?;
            if self.stderr_to_stdout {
                write!(f, " 2>&1")?;
            }
        }
        if let Some(what) = &self.stdin_from {
            write!(f, " < ({what}, streamed by kiln)")?;
        }
        Ok(())
    }
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What a finished command produced.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// How much of stderr a failure report keeps (the tail).
const STDERR_TAIL: usize = 64 * 1024;
/// Lines of stderr shown in an error message.
const STDERR_LINES: usize = 25;

/// Variables passed through from the caller's environment; everything else is
/// dropped so builds do not depend on the caller's shell.
const PASS_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "USER",
    "TERM",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    // Where skopeo finds registry logins (`skopeo login` writes under
    // XDG_RUNTIME_DIR); credentials change access, never the bytes copied
    // (registry sources are pinned by digest).
    "XDG_RUNTIME_DIR",
    "REGISTRY_AUTH_FILE",
    "DOCKER_CONFIG",
];

/// Run a command to completion with stdin closed, `LANG=C.UTF-8`, in its own
/// process group. Stops it (SIGTERM, then SIGKILL) if kiln is interrupted.
/// A non-zero exit is an error carrying the quoted command line, the exit
/// status and the tail of stderr.
pub fn run(cmd: &Cmd) -> Result<Output> {
    run_inner(cmd, None)
}

/// Like [`run`], with `feed` writing the child's stdin (`cmd.stdin_from`
/// says what) on this thread while the child runs; stdin is closed when
/// `feed` returns. If the child fails, its failure is the error (a feed cut
/// short by the closed pipe is a consequence); else a failed feed is, and
/// the child is stopped.
pub fn run_feeding(
    cmd: &Cmd,
    feed: impl FnOnce(&mut dyn std::io::Write) -> Result<()>,
) -> Result<Output> {
    let mut feed = Some(feed);
    let mut f = |w: &mut dyn std::io::Write| (feed.take().expect("fed once"))(w);
    run_inner(cmd, Some(&mut f))
}

/// Like [`run`], but a non-zero exit is returned as `Ok(Err(report))` so
/// callers can inspect the status (e.g. `qemu-img check` exit codes).
pub fn run_unchecked(cmd: &Cmd) -> Result<std::result::Result<Output, Failure>> {
    match run_inner(cmd, None) {
        Ok(o) => Ok(Ok(o)),
        Err(e) => match e.downcast::<Failure>() {
            Ok(f) => Ok(Err(f)),
            Err(e) => Err(e),
        },
    }
}

/// A tool that ran and failed.
#[derive(Debug)]
pub struct Failure {
    pub command: String,
    pub status: String,
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The command's advice for this failure ([`Cmd::hint`]).
    pub hint: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command failed ({}):\n  {}", self.status, self.command)?;
        let text = String::from_utf8_lossy(&self.stderr);
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(STDERR_LINES)..];
        if tail.is_empty() {
            writeln!(f, "(no stderr output)")?;
        } else {
            writeln!(f, "stderr (last {} lines):", tail.len())?;
            for l in tail {
                writeln!(f, "  | {l}")?;
            }
        }
        match &self.hint {
            Some(h) => write!(f, "hint: {h}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Failure {}

type Feed<'a> = &'a mut dyn FnMut(&mut dyn std::io::Write) -> Result<()>;

fn run_inner(cmd: &Cmd, feed: Option<Feed>) -> Result<Output> {
    crate::signals::check()?;
    check_declared(cmd)?;
    let program = registry::which(&cmd.program).ok_or_else(|| missing_tool(&cmd.program))?;
    let mut c = Command::new(program.as_std_path());
    c.args(&cmd.args);
    if !cmd.inherit_env {
        c.env_clear();
    }
    for k in PASS_ENV {
        if let Ok(v) = std::env::var(k) {
            c.env(k, v);
        }
    }
    for k in &cmd.unset {
        c.env_remove(k);
    }
    c.env("LANG", "C.UTF-8").env("LC_ALL", "C.UTF-8");
    c.envs(&cmd.env);
    if let Some(d) = &cmd.cwd {
        c.current_dir(d);
    }
    c.stdin(if feed.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    c.stderr(if cmd.inherit_output || cmd.inherit_stderr {
        Stdio::inherit()
    } else {
        Stdio::piped()
    });
    match &cmd.stdout_to {
        _ if cmd.inherit_output => {
            c.stdout(Stdio::inherit());
        }
        Some(path) => {
            let f = std::fs::File::create(path)
                .with_context(|| format!("creating {path} for the output of {}", cmd.program))?;
            if cmd.stderr_to_stdout {
                c.stderr(f.try_clone().with_context(|| format!("sharing {path}"))?);
            }
            c.stdout(f);
        }
        None => {
            c.stdout(Stdio::piped());
        }
    }
    // Own process group: kiln decides when children stop, and can stop the
    // whole tree (qemu, mmdebstrap's helpers) at once.
    c.process_group(0);
    crate::ui::debug(&format!("$ {cmd}"));
    let mut child = c
        .spawn()
        .with_context(|| format!("starting {} ({})", cmd.program, cmd.summary))?;
    let pid = child.id() as i32;
    let _guard = crate::signals::ChildGuard::new(pid);

    let stdout_buf = Arc::new(Mutex::new(Vec::new()));
    let stderr_buf = Arc::new(Mutex::new(Vec::new()));
    let t_out = child
        .stdout
        .take()
        .map(|s| spawn_reader(s, stdout_buf.clone(), usize::MAX));
    let t_err = child
        .stderr
        .take()
        .map(|s| spawn_reader(s, stderr_buf.clone(), STDERR_TAIL));

    // Whether kiln stopped the child because the feed failed.
    let mut stopped = false;
    let fed = match (feed, child.stdin.take()) {
        (Some(feed), Some(mut stdin)) => {
            let r = feed(&mut stdin).and_then(|()| Ok(std::io::Write::flush(&mut stdin)?));
            drop(stdin);
            if r.is_err() {
                // A failing child closes the pipe: give it a moment to exit so
                // its own failure is reported rather than the broken pipe.
                let t = std::time::Instant::now();
                while !crate::signals::interrupted()
                    && child.try_wait()?.is_none()
                    && t.elapsed() < Duration::from_secs(2)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if child.try_wait()?.is_none() {
                    crate::signals::stop_group(pid);
                    stopped = true;
                }
            }
            r
        }
        _ => Ok(()),
    };
    let fed = fed.with_context(|| format!("feeding {} ({})", cmd.program, cmd.summary));

    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if crate::signals::interrupted() {
            crate::signals::stop_group(pid);
            let _ = child.wait();
            if let Some(t) = t_out {
                let _ = t.join();
            }
            if let Some(t) = t_err {
                let _ = t.join();
            }
            bail!(crate::signals::Interrupted);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(t) = t_out {
        let _ = t.join();
    }
    if let Some(t) = t_err {
        let _ = t.join();
    }
    let stdout = std::mem::take(&mut *stdout_buf.lock().unwrap());
    let stderr = std::mem::take(&mut *stderr_buf.lock().unwrap());
    let fed = match fed {
        Err(e) if stopped => return Err(e),
        f => f,
    };
    if !status.success() {
        let status_text = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown status".into(),
        };
        let text = String::from_utf8_lossy(&stderr);
        let hint = cmd
            .hints
            .iter()
            .find(|(needle, _)| text.contains(needle.as_str()))
            .map(|(_, advice)| advice.clone());
        return Err(Failure {
            command: cmd.to_string(),
            status: status_text,
            code: status.code(),
            stdout,
            stderr,
            hint,
        }
        .into());
    }
    fed?;
    Ok(Output { stdout, stderr })
}

fn spawn_reader<R: Read + Send + 'static>(
    mut r: R,
    buf: Arc<Mutex<Vec<u8>>>,
    keep: usize,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut b = buf.lock().unwrap();
                    b.extend_from_slice(&chunk[..n]);
                    if b.len() > keep.saturating_mul(2) {
                        let cut = b.len() - keep;
                        b.drain(..cut);
                    }
                }
            }
        }
        let mut b = buf.lock().unwrap();
        if b.len() > keep {
            let cut = b.len() - keep;
            b.drain(..cut);
        }
    })
}

/// The error for a program that is not installed: names the package.
pub fn missing_tool(program: &str) -> anyhow::Error {
    match registry::requirement(program) {
        Some(r) if r.manual.is_some() => anyhow::anyhow!(
            "`{program}` is not installed ({}); {}",
            r.purpose,
            r.manual.unwrap_or_default()
        ),
        Some(r) => anyhow::anyhow!(
            "`{program}` is not installed ({}); install the Debian/Ubuntu package `{}`{} \
             or run `cargo xtask doctor --install`",
            r.purpose,
            r.package,
            if r.backports {
                " (from bookworm-backports on Debian 12)"
            } else {
                ""
            }
        ),
        None => anyhow::anyhow!("`{program}` is not installed and kiln does not know its package"),
    }
}

/// Fail before any work if a program a verb needs is missing; lists all at once.
pub fn require(programs: &[&str]) -> Result<()> {
    let missing: Vec<_> = programs
        .iter()
        .filter(|p| registry::which(p).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = missing
        .iter()
        .map(|p| format!("  - {:#}", missing_tool(p)))
        .collect();
    bail!(
        "missing tools:\n{}\n(`cargo xtask doctor` lists every tool and its package)",
        lines.join("\n")
    )
}

/// A program's path, or `None` when it is not installed.
pub fn find(program: &str) -> Option<Utf8PathBuf> {
    registry::which(program)
}

/// How a watched run ended.
#[derive(Debug)]
pub enum Watch {
    /// Every expected pattern appeared (in order); the child was stopped.
    Matched { output: String },
    /// The child exited before all patterns appeared.
    Exited { output: String, status: String },
    /// The time limit passed; the child was stopped.
    TimedOut { output: String },
}

/// Run a long-lived program (a qemu boot) and watch its stdout+stderr for
/// `patterns`, in order, case-insensitively (literal text). Stops the
/// child's process group as soon as the last one appears, when it exits, or
/// after `limit`. A [`console::Console`] with its stop guard underneath.
pub fn run_until(cmd: &Cmd, patterns: &[&str], limit: Duration) -> Result<Watch> {
    let mut c = console::Console::spawn(cmd)?;
    let deadline = std::time::Instant::now() + limit;
    let mut from = 0;
    for p in patterns {
        let re = regex::RegexBuilder::new(&regex::escape(p))
            .case_insensitive(true)
            .build()
            .expect("an escaped pattern is a valid regex");
        match c.wait_for(&re, from, &[], deadline)? {
            console::Wait::Found { end, .. } => from = end,
            console::Wait::Exited { status } => {
                c.stop();
                return Ok(Watch::Exited {
                    output: c.text(),
                    status,
                });
            }
            console::Wait::TimedOut | console::Wait::Failed { .. } => {
                c.stop();
                return Ok(Watch::TimedOut { output: c.text() });
            }
        }
    }
    c.stop();
    Ok(Watch::Matched { output: c.text() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_fits_its_template_holes_and_all() {
        let t = Cmd::new("mcopy", "x")
            .args(["-i", "/o/esp.img", "<kernel>", "::/<dest>.efi"])
            .env("SOURCE_DATE_EPOCH", "1");
        let c = Cmd::new("mcopy", "y")
            .args(["-i", "/o/esp.img", "/o/vmlinuz-6.1", "::/EFI/a.efi"])
            .env("SOURCE_DATE_EPOCH", "1");
        assert!(c.fits(&t));
        let other_file = Cmd {
            args: vec![
                "-i".into(),
                "/o/x.img".into(),
                "k".into(),
                "::/a.efi".into(),
            ],
            ..c.clone()
        };
        assert!(!other_file.fits(&t));
        let wrong_suffix = Cmd {
            args: vec![
                "-i".into(),
                "/o/esp.img".into(),
                "k".into(),
                "::/a.img".into(),
            ],
            ..c.clone()
        };
        assert!(!wrong_suffix.fits(&t));
        assert!(!c.clone().arg("extra").fits(&t));
        assert!(!c.clone().env("X", "1").fits(&t));
        assert!(!Cmd {
            program: "mmd".into(),
            ..c.clone()
        }
        .fits(&t));
        // `<...>` takes any run of arguments, none included.
        let more = Cmd::new("xorriso", "t").args(["-map", MORE, "-boot", MORE]);
        let run = |a: &[&str]| Cmd::new("xorriso", "r").args(a).fits(&more);
        assert!(run(&["-map", "a", "/a", "-map", "b", "/b", "-boot"]));
        assert!(run(&["-map", "-boot", "x", "y"]));
        assert!(!run(&["-map", "a", "/a"]));
        assert!(!run(&["-boot", "-map"]));
    }

    #[test]
    fn an_undeclared_command_is_refused_while_an_op_runs() {
        let ok = Cmd::new("sh", "declared").args(["-c", "<script>"]);
        {
            let _d = declare(vec![ok]);
            run(&Cmd::new("sh", "fits").args(["-c", "true"])).unwrap();
            let e = run(&Cmd::new("true", "not declared")).unwrap_err();
            assert!(format!("{e:#}").contains("does not declare"), "{e:#}");
        }
        // Outside an op nothing is checked.
        run(&Cmd::new("true", "free")).unwrap();
    }

    #[test]
    fn display_quotes_for_a_shell() {
        let c = Cmd::new("xorriso", "x")
            .args(["-boot_image", "any", "replay", "a b", "it's"])
            .env("SOURCE_DATE_EPOCH", "1");
        assert_eq!(
            c.to_string(),
            "SOURCE_DATE_EPOCH=1 xorriso -boot_image any replay 'a b' 'it'\\''s'"
        );
    }

    #[test]
    fn failure_reports_command_status_and_stderr_tail() {
        // A stand-in tool that fails: tests our error path only.
        let script = (1..=40)
            .map(|i| format!("echo line{i} >&2;"))
            .collect::<String>()
            + "exit 3";
        let c = Cmd::new("sh", "a failing tool").args(["-c", &script]);
        let e = run(&c).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("exit status 3"), "{msg}");
        assert!(msg.contains("sh -c 'echo line1"), "{msg}");
        assert!(
            msg.contains("| line40") && !msg.contains("| line10\n"),
            "{msg}"
        );
        match run_unchecked(&c).unwrap() {
            Err(f) => assert_eq!(f.code, Some(3)),
            Ok(_) => panic!("must fail"),
        }
    }

    #[test]
    fn children_get_a_controlled_environment() {
        std::env::set_var("KILN_TEST_LEAK", "1");
        let out =
            run(&Cmd::new("sh", "print env")
                .args(["-c", "echo $LANG:${KILN_TEST_LEAK:-unset}; cat"]))
            .unwrap();
        // stdin is closed (cat reads EOF at once), LANG is fixed, stray variables are dropped.
        assert_eq!(out.stdout_str(), "C.UTF-8:unset\n");
    }

    #[test]
    fn missing_tool_names_its_package() {
        let e = require(&["xorriso-does-not-exist", "true"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("xorriso-does-not-exist"), "{e}");
        let v = missing_tool("vmdk-convert").to_string();
        assert!(v.contains("open-vmdk") && v.contains("sid"), "{v}");
        let m = missing_tool("mmdebstrap").to_string();
        assert!(
            m.contains("package `mmdebstrap`") && m.contains("bookworm-backports"),
            "{m}"
        );
    }

    /// `/proc/PID` is gone or a zombie (stopped, not yet reaped by init).
    /// The process is gone or a zombie within a few seconds: a kill is
    /// delivered asynchronously, and on a busy machine the target may
    /// still be runnable for a moment after `kill` returns.
    fn stopped(pid: u32) -> bool {
        let dead = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        };
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !dead() {
            if std::time::Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    #[test]
    fn watched_run_stops_at_the_pattern() {
        // The shell starts a long sleep in its process group, prints the
        // patterns and waits; it would print `too late` only if left running.
        let c = Cmd::new("sh", "slow printer").args([
            "-c",
            "sleep 600 & echo sleeper=$!; echo shell=$$; echo booting; \
             echo 'Kernel Command line: x'; wait; echo too late",
        ]);
        let output =
            match run_until(&c, &["booting", "command line:"], Duration::from_secs(300)).unwrap() {
                Watch::Matched { output } => output,
                other => panic!("{other:?}"),
            };
        assert!(output.contains("Kernel Command line"), "{output}");
        assert!(!output.contains("too late"), "{output}");
        // The shell and its child were stopped, not waited for.
        for name in ["shell", "sleeper"] {
            let pid: u32 = output
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} pid in {output}"));
            assert!(stopped(pid), "the {name} ({pid}) still runs");
        }
        match run_until(
            &Cmd::new("sh", "exits").args(["-c", "echo no"]),
            &["yes"],
            Duration::from_secs(20),
        )
        .unwrap()
        {
            Watch::Exited { output, .. } => assert_eq!(output, "no\n"),
            other => panic!("{other:?}"),
        }
    }

    /// An inherited environment passes on everything but what the command
    /// leaves out (`cargo xtask test` builds the tests without the
    /// variables `cargo run` set for kiln, see `cargo::build_tests`).
    #[test]
    fn an_inherited_environment_leaves_out_what_the_command_unsets() {
        let Ok(path) = std::env::var("PATH") else {
            return;
        };
        let home = std::env::var("HOME").unwrap_or_default();
        let script = "echo \"path=$PATH\"; echo \"home=${HOME-unset}\"";
        let out = run(&Cmd::new("sh", "print the environment")
            .args(["-c", script])
            .with_env_inherited()
            .without_env(&["HOME"]))
        .unwrap();
        let text = out.stdout_str();
        assert!(text.contains(&format!("path={path}\n")), "{text}");
        assert!(text.contains("home=unset\n"), "{text} (HOME was {home})");
    }
}
