//! qemu-img: convert, check, inspect and resize disk images.

use camino::Utf8Path;

use super::Cmd;

// --- qcow2 target ---

/// `qemu-img convert -f raw -O qcow2 [-c -o compression_type=…] RAW OUT`.
/// `compression`: `None`, `Some("zstd")` or `Some("zlib")`. One coroutine
/// (`-m 1`) and in-order writes keep the cluster layout, so the output is
/// the same for the same input.
pub fn convert_to_qcow2(
    src: &Utf8Path,
    src_format: &str,
    out: &Utf8Path,
    compression: Option<&str>,
) -> Cmd {
    let mut c = Cmd::new("qemu-img", "convert the disk to qcow2")
        .args(["convert", "-q", "-m", "1", "-f", src_format, "-O", "qcow2"]);
    if let Some(kind) = compression {
        c = c
            .arg("-c")
            .args(["-o", &format!("compression_type={kind}")]);
    }
    c.args([src.as_str(), out.as_str()])
}

/// `qemu-img check -f FORMAT IMG` (exit 0: clean; 2: corrupt; 3: leaks).
pub fn check(image: &Utf8Path, format: &str) -> Cmd {
    Cmd::new("qemu-img", "check the image for errors").args(["check", "-f", format, image.as_str()])
}

/// `qemu-img info --output=json IMG`.
pub fn info_json(image: &Utf8Path) -> Cmd {
    Cmd::new("qemu-img", "read the image's format and sizes").args([
        "info",
        "--output=json",
        image.as_str(),
    ])
}

/// `qemu-img resize -f FORMAT IMG SIZE` (bytes).
pub fn resize(image: &Utf8Path, format: &str, bytes: u64) -> Cmd {
    Cmd::new("qemu-img", "resize the image").args([
        "resize",
        "-q",
        "-f",
        format,
        image.as_str(),
        &bytes.to_string(),
    ])
}
