//! `zstd` (with `tar` and `bash`): the reference pipeline benchmarks compare
//! kiln's archive writer against.

use camino::Utf8Path;

use super::Cmd;

/// `tar -cf - -C DIR . | zstd -T0 -3 > OUT`, failing if either side fails.
pub fn tar_pipeline(dir: &Utf8Path, out: &Utf8Path) -> Cmd {
    Cmd::new("bash", "tar | zstd -T0 -3 (reference pipeline)")
        .args([
            "-o",
            "pipefail",
            "-c",
            r#"tar -cf - -C "$1" . | zstd -q -T0 -3 > "$2""#,
            "tar-zstd",
        ])
        .args([dir.as_str(), out.as_str()])
}
