//! cargo: `cargo xtask test` builds the test binaries through it.

use camino::Utf8Path;

use super::Cmd;

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// What `cargo run` sets for the program it runs (`cargo xtask` is a
/// `cargo run`). Passed on to the cargo that builds the tests, they differ
/// from a shell's environment, and build scripts that watch them (ring's
/// watches `CARGO_MANIFEST_DIR` and `CARGO_PKG_NAME`) run again: ring and
/// everything above it would compile again after a `cargo test --no-run`
/// or a `cargo build` from the shell.
const CARGO_RUN_VARS: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_PKG_NAME",
    "CARGO_PKG_VERSION",
    "CARGO_PKG_VERSION_MAJOR",
    "CARGO_PKG_VERSION_MINOR",
    "CARGO_PKG_VERSION_PATCH",
    "CARGO_PKG_VERSION_PRE",
    "CARGO_PKG_AUTHORS",
    "CARGO_PKG_DESCRIPTION",
    "CARGO_PKG_HOMEPAGE",
    "CARGO_PKG_REPOSITORY",
    "CARGO_PKG_LICENSE",
    "CARGO_PKG_LICENSE_FILE",
    "CARGO_PKG_RUST_VERSION",
    "CARGO_PKG_README",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "OUT_DIR",
];

/// `cargo test --workspace --no-run`: build every test binary, listing them
/// as JSON messages on stdout (compiler diagnostics rendered on stderr, which
/// the user sees as cargo prints it), with extra cargo args (`-p`, `--test`),
/// in the environment of the shell that ran `cargo xtask` ([`CARGO_RUN_VARS`]
/// left out).
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
        .without_env(CARGO_RUN_VARS)
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
