//! cargo: `cargo xtask test` runs the test suite through it.

use super::Cmd;

/// `cargo test --workspace`, output passed through, with extra args (filters).
pub fn test(extra: &[String]) -> Cmd {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    Cmd::new(cargo, "run the test suite")
        .args(["test", "--workspace", "--locked"])
        .args(extra)
        .inherit_output()
        .with_env_inherited()
}
