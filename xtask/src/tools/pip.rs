//! pip: installs the few test tools Debian does not package, from PyPI,
//! pinned to an exact version (`doctor --install`, as root).

use super::Cmd;

/// `python3 -m pip install` of pinned requirement specifiers
/// (`name==version`).
pub fn install(specs: &[&str]) -> Cmd {
    Cmd::new("python3", "install pinned tools from PyPI")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
        ])
        .args(specs)
}
