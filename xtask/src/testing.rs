//! The test tiers' one switch, shared by unit tests (`#[cfg(test)]` modules)
//! and integration tests (`xtask/tests/support`), so that both mean the same
//! by "in CI" and by a missing tool. kiln itself never calls this.
//!
//! A test that needs a tool calls [`require`] first: when the tool is
//! missing it is skipped with a message, except in CI, where a missing tool
//! fails the test (CI installs everything; a silent skip would hide a broken
//! install).

/// Running in CI: `CI=true` (or `CI=1`), as `.ci/run` sets it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `true` when every program (found the way kiln finds it) and every file
/// (an absolute path) is present. Otherwise: panic in CI, skip elsewhere
/// (print `SKIPPED` and return `false`).
pub fn require(what: &[&str]) -> bool {
    let missing: Vec<&str> = what
        .iter()
        .copied()
        .filter(|w| {
            if w.starts_with('/') {
                !std::path::Path::new(w).exists()
            } else {
                crate::tools::find(w).is_none()
            }
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if in_ci() {
        panic!(
            "CI=true but required tools are missing: {missing:?} (run `cargo xtask doctor --install`)"
        );
    }
    eprintln!("SKIPPED: missing tools {missing:?} (install with `cargo xtask doctor --install`)");
    false
}
