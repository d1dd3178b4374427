//! git: the appliance's version, revision and default epoch.

use camino::Utf8Path;

use super::Cmd;

fn git(root: &Utf8Path, summary: &str) -> Cmd {
    Cmd::new("git", summary).args(["-C", root.as_str()])
}

fn first_line(cmd: &Cmd) -> Option<String> {
    super::find("git")?;
    let out = super::run(cmd).ok()?;
    let s = out.stdout_str().lines().next()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// `git describe --tags --always --dirty`, or `None` outside a repository.
pub fn describe(root: &Utf8Path) -> Option<String> {
    first_line(
        &git(root, "appliance version from git")
            .args(["describe", "--tags", "--always", "--dirty"]),
    )
}

/// The full revision of HEAD.
pub fn revision(root: &Utf8Path) -> Option<String> {
    first_line(&git(root, "git revision").args(["rev-parse", "HEAD"]))
}

/// Commit time of HEAD (seconds since the epoch): the default `SOURCE_DATE_EPOCH`.
pub fn last_commit_time(root: &Utf8Path) -> Option<i64> {
    first_line(&git(root, "default SOURCE_DATE_EPOCH").args(["log", "-1", "--format=%ct"]))?
        .parse()
        .ok()
}

/// What `git status --porcelain` lists in the project (changed, staged and
/// untracked files; ignored ones such as `output/` and `target/` are not):
/// `None` outside a repository (or without git), else the lines, empty for
/// a clean tree.
pub fn changes(root: &Utf8Path) -> Option<Vec<String>> {
    super::find("git")?;
    let cmd = git(root, "is the work tree clean").args(["status", "--porcelain"]);
    let out = super::run(&cmd).ok()?;
    Some(
        out.stdout_str()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
    )
}
