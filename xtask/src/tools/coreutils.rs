//! coreutils: baselines for benchmarks.

use camino::Utf8Path;

use super::Cmd;

// --- secret-scan bench baseline ----------------------------------------------

/// `cat FILE > /dev/null`: the floor for any reader of `file`.
pub fn cat_to_null(file: &Utf8Path) -> Cmd {
    Cmd::new("cat", format!("read {file} once (baseline)"))
        .arg(file.as_str())
        .stdout_to("/dev/null")
}
