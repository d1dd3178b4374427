//! cargo: `cargo xtask test` runs the test suite through it.

use super::Cmd;

/// `cargo test --workspace --no-fail-fast` (every test binary runs, so one
/// failure does not hide the next), output passed through, with extra args
/// (filters).
pub fn test(extra: &[String]) -> Cmd {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    Cmd::new(cargo, "run the test suite")
        .args(["test", "--workspace", "--locked", "--no-fail-fast"])
        .args(extra)
        .inherit_output()
        .with_env_inherited()
}
