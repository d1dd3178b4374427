//! `zstd` (with `tar` and `bash`): the reference pipeline benchmarks compare
//! kiln's archive writer against.

use camino::Utf8Path;

use super::Cmd;

/// `tar -cf - -C DIR . | zstd -T0 -LEVEL > OUT`, failing if either side fails.
pub fn tar_pipeline(dir: &Utf8Path, out: &Utf8Path, level: i32) -> Cmd {
    Cmd::new(
        "bash",
        format!("tar | zstd -T0 -{level} (reference pipeline)"),
    )
    .args([
        "-o",
        "pipefail",
        "-c",
        r#"tar -cf - -C "$1" . | zstd -q -T0 "-$3" > "$2""#,
        "tar-zstd",
    ])
    .args([dir.as_str(), out.as_str(), &level.to_string()])
}

/// `zstd -q -f -T0 -LEVEL SRC -o OUT`: one file on every core (the
/// reference kiln's installer payload is compared with).
pub fn compress_file(src: &Utf8Path, out: &Utf8Path, level: i32) -> Cmd {
    Cmd::new("zstd", format!("zstd -T0 -{level} (reference)"))
        .args(["-q", "-f", "-T0", &format!("-{level}"), src.as_str(), "-o"])
        .arg(out.as_str())
}
