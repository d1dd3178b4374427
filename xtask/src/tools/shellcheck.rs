//! shellcheck: lints the appliance's shell scripts (tests).

use camino::Utf8Path;

use super::Cmd;

pub fn check(scripts: &[&Utf8Path]) -> Cmd {
    Cmd::new("shellcheck", "lint shell scripts")
        .args(["--shell=bash", "--severity=style"])
        .args(scripts.iter().map(|p| p.as_str()))
}

pub fn bash_syntax(script: &Utf8Path) -> Cmd {
    Cmd::new("bash", "check shell syntax").args(["-n", script.as_str()])
}
