//! `qemu-img`: convert and check disk images.

use camino::Utf8Path;

use super::Cmd;

// --- secret scan: read qcow2/VMDK/VHDX/VDI disks as raw ---------------------

/// `qemu-img check`: refuses truncated or corrupt images before they are
/// read (qemu reads clusters past a truncated qcow2's end as zeros, which
/// would let a scan "pass" on missing data). Exit 0 = clean, 3 = leaked
/// clusters only (harmless), 63 = format has no check.
pub fn check(image: &Utf8Path, format: &str) -> Cmd {
    Cmd::new(
        "qemu-img",
        format!("check {image} for corruption before scanning it"),
    )
    .args(["check", "-q", "-f", format])
    .arg(image.as_str())
}

/// Exit codes of [`check`] that mean the image is readable.
pub fn check_ok(code: Option<i32>) -> bool {
    matches!(code, Some(0) | Some(3) | Some(63))
}

/// `qemu-img convert -f FORMAT -O raw`: a raw (sparse) copy to scan.
pub fn convert_to_raw(image: &Utf8Path, format: &str, raw: &Utf8Path) -> Cmd {
    Cmd::new(
        "qemu-img",
        format!("convert {image} ({format}) to raw to scan it"),
    )
    .args(["convert", "-q", "-f", format, "-O", "raw"])
    .arg(image.as_str())
    .arg(raw.as_str())
}
