//! actionlint: lints GitHub Actions workflows (tests: the release
//! workflow), with shellcheck on their `run:` scripts when it is on PATH.

use camino::Utf8Path;

use super::Cmd;

pub fn check(workflows: &[&Utf8Path]) -> Cmd {
    Cmd::new("actionlint", "lint GitHub Actions workflows")
        .args(["-no-color", "-oneline"])
        .args(workflows.iter().map(|p| p.as_str()))
}
