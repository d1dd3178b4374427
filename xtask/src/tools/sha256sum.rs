//! `sha256sum` (coreutils): the reference benchmarks compare kiln's hashing with.

use camino::Utf8Path;

use super::Cmd;

pub fn files(paths: &[&Utf8Path]) -> Cmd {
    Cmd::new("sha256sum", "hash files (reference)").args(paths.iter().map(|p| p.as_str()))
}
