//! A long-lived program whose output is watched while it runs: a qemu guest
//! and its serial console. [`Console::spawn`] starts it in its own process
//! group; [`Console::wait_for`] waits for a pattern with a deadline;
//! dropping the console (or [`Console::stop`]) stops the whole group, so no
//! guest outlives the check that started it, on success, failure, timeout or
//! Ctrl-C alike.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use regex::Regex;

use super::{check_declared, missing_tool, registry, spawn_reader, Cmd, PASS_ENV};

/// How much console output is kept (the newest part).
const KEEP: usize = 8 << 20;

/// A running program with its stdout and stderr collected into one buffer.
pub struct Console {
    child: Child,
    pid: i32,
    buf: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
    stopped: bool,
    _guard: crate::signals::ChildGuard,
}

/// What [`Console::wait_for`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The pattern matched; `end` is the byte offset just past the match in
    /// [`Console::text`], `at` the time since the program started.
    Found { end: usize, at: Duration },
    /// The program exited first.
    Exited { status: String },
    /// The deadline passed first.
    TimedOut,
    /// A `fail` pattern matched first (its text).
    Failed { line: String },
}

impl Console {
    /// Start `cmd` with stdin closed, in its own process group, with the
    /// same controlled environment as [`super::run`].
    pub fn spawn(cmd: &Cmd) -> Result<Console> {
        crate::signals::check()?;
        check_declared(cmd)?;
        let program = registry::which(&cmd.program).ok_or_else(|| missing_tool(&cmd.program))?;
        let mut c = Command::new(program.as_std_path());
        c.args(&cmd.args).env_clear();
        for k in PASS_ENV {
            if let Ok(v) = std::env::var(k) {
                c.env(k, v);
            }
        }
        c.env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .envs(&cmd.env);
        if let Some(d) = &cmd.cwd {
            c.current_dir(d);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        crate::ui::debug(&format!("$ {cmd}"));
        let mut child = c
            .spawn()
            .with_context(|| format!("starting {} ({})", cmd.program, cmd.summary))?;
        let pid = child.id() as i32;
        let guard = crate::signals::ChildGuard::new(pid);
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(s) = child.stdout.take() {
            readers.push(spawn_reader(s, buf.clone(), KEEP));
        }
        if let Some(s) = child.stderr.take() {
            readers.push(spawn_reader(s, buf.clone(), KEEP));
        }
        Ok(Console {
            child,
            pid,
            buf,
            readers,
            started: Instant::now(),
            stopped: false,
            _guard: guard,
        })
    }

    /// The program's process id (its process group id too).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Time since the program started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Everything printed so far (lossy UTF-8; the newest 8 MiB).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Wait until `pattern` matches the output after byte offset `from`, the
    /// program exits, any of `fail` matches after `from`, or `deadline`
    /// passes. Ctrl-C/SIGTERM stop the program and return
    /// [`crate::signals::Interrupted`].
    pub fn wait_for(
        &mut self,
        pattern: &Regex,
        from: usize,
        fail: &[Regex],
        deadline: Instant,
    ) -> Result<Wait> {
        loop {
            if crate::signals::interrupted() {
                self.stop();
                bail!(crate::signals::Interrupted);
            }
            let text = self.text();
            let from = floor_char_boundary(&text, from.min(text.len()));
            let rest = &text[from..];
            // What the console showed first decides: a failure line before
            // the pattern fails the wait even when both arrived in one read.
            let failed = fail
                .iter()
                .filter_map(|f| f.find(rest))
                .min_by_key(|m| m.start());
            match (pattern.find(rest), failed) {
                (Some(m), f) if f.is_none_or(|f| m.start() < f.start()) => {
                    return Ok(Wait::Found {
                        end: from + m.end(),
                        at: self.started.elapsed(),
                    });
                }
                (_, Some(f)) => {
                    let line = line_around(rest, f.start(), f.end());
                    return Ok(Wait::Failed { line });
                }
                _ => {}
            }
            if let Some(st) = self.child.try_wait()? {
                self.stopped = true;
                self.join_readers();
                // The readers may have taken in the last lines just now.
                let text = self.text();
                let from = floor_char_boundary(&text, from.min(text.len()));
                if let Some(m) = pattern.find(&text[from..]) {
                    return Ok(Wait::Found {
                        end: from + m.end(),
                        at: self.started.elapsed(),
                    });
                }
                return Ok(Wait::Exited {
                    status: st.to_string(),
                });
            }
            if Instant::now() >= deadline {
                return Ok(Wait::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Has the program exited (without being stopped by kiln)?
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            _ => None,
        }
    }

    /// Stop the program's process group (SIGTERM, then SIGKILL after 5 s)
    /// and collect the last of its output.
    pub fn stop(&mut self) {
        if !self.stopped {
            // SIGTERM the group and reap the leader as soon as it exits (an
            // unreaped leader keeps the group alive); SIGKILL whatever is
            // left after 5 s, or at once once the leader is gone.
            unsafe { libc::kill(-self.pid, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
            let _ = self.child.wait();
            self.stopped = true;
        }
        self.join_readers();
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.stop();
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The whole line of `text` holding the byte range `start..end`.
fn line_around(text: &str, start: usize, end: usize) -> String {
    let a = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let b = text[end..]
        .find('\n')
        .map(|i| end + i)
        .unwrap_or(text.len());
    text[a..b].trim_end_matches('\r').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Cmd {
        Cmd::new("sh", "a test console").args(["-c", script])
    }

    fn re(s: &str) -> Regex {
        Regex::new(s).unwrap()
    }

    fn soon(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    #[test]
    fn waits_in_order_and_reports_exit_timeout_and_failure() {
        let mut c = Console::spawn(&sh("echo one; sleep 0.2; echo two; sleep 30")).unwrap();
        let Wait::Found { end, .. } = c.wait_for(&re("one"), 0, &[], soon(10)).unwrap() else {
            panic!("no `one`")
        };
        assert!(matches!(
            c.wait_for(&re("two"), end, &[], soon(10)).unwrap(),
            Wait::Found { .. }
        ));
        // `one` is not seen again after its match.
        assert_eq!(
            c.wait_for(&re("one"), end, &[], Instant::now()).unwrap(),
            Wait::TimedOut
        );
        let pid = c.pid();
        drop(c);
        // Killed members are reaped by their new parent shortly after.
        let t = Instant::now();
        while unsafe { libc::kill(-pid, 0) } == 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_ne!(unsafe { libc::kill(-pid, 0) }, 0, "the group still runs");

        let mut c = Console::spawn(&sh("echo starting; exit 3")).unwrap();
        match c.wait_for(&re("never"), 0, &[], soon(10)).unwrap() {
            Wait::Exited { status } => assert!(status.contains('3'), "{status}"),
            w => panic!("{w:?}"),
        }
        assert!(c.text().contains("starting"));

        let mut c = Console::spawn(&sh("echo 'x: unit FAILED here'; sleep 30")).unwrap();
        match c
            .wait_for(&re("never"), 0, &[re("FAILED")], soon(10))
            .unwrap()
        {
            Wait::Failed { line } => assert_eq!(line, "x: unit FAILED here"),
            w => panic!("{w:?}"),
        }
    }

    #[test]
    fn the_earliest_of_pattern_and_failures_decides() {
        // All three lines arrive in one read; the first on the console wins,
        // whatever the order of the failure patterns.
        let fail = [re("Kernel panic"), re(r"\[FAILED\]")];
        let mut c = Console::spawn(&sh(
            "printf '[FAILED] unit a\\nKernel panic x\\nready\\n'; sleep 30",
        ))
        .unwrap();
        let t = Instant::now();
        while !c.text().contains("ready") && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        match c.wait_for(&re("ready"), 0, &fail, soon(10)).unwrap() {
            Wait::Failed { line } => assert_eq!(line, "[FAILED] unit a"),
            w => panic!("{w:?}"),
        }
        let mut c = Console::spawn(&sh("printf 'ready\\n[FAILED] later\\n'; sleep 30")).unwrap();
        let t = Instant::now();
        while !c.text().contains("later") && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(matches!(
            c.wait_for(&re("ready"), 0, &fail, soon(10)).unwrap(),
            Wait::Found { .. }
        ));
    }

    #[test]
    fn the_last_lines_of_an_exiting_program_are_matched() {
        let mut c = Console::spawn(&sh("echo done-marker")).unwrap();
        assert!(matches!(
            c.wait_for(&re("done-marker"), 0, &[], soon(10)).unwrap(),
            Wait::Found { .. }
        ));
    }
}
