//! cargo: `cargo xtask test` builds the test binaries through it.

use camino::Utf8Path;

use super::Cmd;

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// `cargo test --workspace --no-run`: build every test binary, listing them
/// as JSON messages on stdout (compiler diagnostics rendered on stderr, which
/// the user sees as cargo prints it), with extra cargo args (`-p`, `--test`).
pub fn build_tests(extra: &[String]) -> Cmd {
    Cmd::new(cargo(), "build the test binaries")
        .args([
            "test",
            "--workspace",
            "--locked",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .args(extra)
        .inherit_stderr()
        .with_env_inherited()
}

/// One test binary `cargo test --no-run` built, run as `cargo test` would
/// (in its package's directory, with the caller's environment: tests read
/// `CI` and `KILN_*`), its whole output into `log`.
pub fn test_binary(exe: &Utf8Path, args: &[String], dir: &Utf8Path, log: &Utf8Path) -> Cmd {
    let name = exe.file_name().unwrap_or(exe.as_str());
    Cmd::new(exe.as_str(), format!("run the tests in {name}"))
        .args(args)
        .cwd(dir)
        .output_to(log)
        .with_env_inherited()
}
