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

/// kiln's own code in the workspace. A change to it re-runs kiln's steps
/// through the code fingerprint in their keys, so it does not move the
/// default epoch (which would rebuild every Debian root for nothing).
pub const TOOLCHAIN: &[&str] = &["xtask", "Cargo.toml", "Cargo.lock", ".cargo"];

/// The default `SOURCE_DATE_EPOCH` (seconds since 1970): the time of the
/// last commit that changed the project outside kiln's own code
/// ([`TOOLCHAIN`]), else of HEAD; `None` outside a repository.
pub fn last_commit_time(root: &Utf8Path) -> Option<i64> {
    let mut cmd = git(root, "default SOURCE_DATE_EPOCH")
        .args(["log", "-1", "--format=%ct", "--", "."])
        .args(TOOLCHAIN.iter().map(|p| format!(":(exclude){p}")));
    if let Some(t) = first_line(&cmd).and_then(|s| s.parse().ok()) {
        return Some(t);
    }
    cmd = git(root, "default SOURCE_DATE_EPOCH").args(["log", "-1", "--format=%ct"]);
    first_line(&cmd)?.parse().ok()
}

/// Whether the checkout is shallow (`git clone --depth N`): its oldest
/// commits look as if they added every file, so the default epoch may be
/// later than a full clone's.
pub fn is_shallow(root: &Utf8Path) -> bool {
    first_line(&git(root, "is the clone shallow").args(["rev-parse", "--is-shallow-repository"]))
        .is_some_and(|s| s == "true")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_epoch_skips_commits_of_kiln_s_own_code() {
        if !crate::testing::require(&["git"]) {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(d.path()).unwrap();
        // git with fixed author and commit dates.
        let git = |args: &[&str], time: i64| {
            let date = format!("@{time} +0000");
            let out = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .env("GIT_AUTHOR_DATE", &date)
                .env("GIT_COMMITTER_DATE", &date)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "git {args:?}: {err}");
        };
        let commit = |path: &str, time: i64| {
            let f = root.join(path);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, time.to_string()).unwrap();
            git(&["-C", root.as_str(), "add", "-A"], time);
            git(&["-C", root.as_str(), "commit", "-qm", path], time);
        };
        assert_eq!(last_commit_time(root), None);
        git(&["init", "-q", root.as_str()], 0);
        // Only kiln's code so far: HEAD's time.
        commit("xtask/src/main.rs", 1_700_000_000);
        assert_eq!(last_commit_time(root), Some(1_700_000_000));
        commit("recipes/demo.yaml", 1_700_000_100);
        commit("xtask/src/lib.rs", 1_700_000_200);
        commit("Cargo.lock", 1_700_000_300);
        assert_eq!(last_commit_time(root), Some(1_700_000_100));
        commit("overlay/etc/demo/README", 1_700_000_400);
        assert_eq!(last_commit_time(root), Some(1_700_000_400));
        commit("xtask/src/main.rs", 1_700_000_500);
        assert!(!is_shallow(root));
        // A clone one commit deep sees its only commit add every file.
        let shallow = root.join("shallow");
        let url = format!("file://{root}");
        git(&["clone", "-q", "--depth", "1", &url, shallow.as_str()], 0);
        assert!(is_shallow(&shallow));
        assert_eq!(last_commit_time(&shallow), Some(1_700_000_500));
    }
}
