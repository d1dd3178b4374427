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

// --- smoke boots ---

/// `qemu-img create -f qcow2 -F FORMAT -b BASE OUT [SIZE]`: a throw-away
/// overlay, so that a guest writes into `out` and never into `base` (an
/// absolute path: qemu resolves a relative one against the overlay's
/// directory). `size` (bytes) makes the guest's disk larger than the base,
/// as a bigger SD card or virtual disk would be; `None` keeps the base's size.
pub fn overlay(base: &Utf8Path, format: &str, out: &Utf8Path, size: Option<u64>) -> Cmd {
    let c = Cmd::new(
        "qemu-img",
        format!("a throw-away overlay on {}", base.file_name().unwrap_or("")),
    )
    .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
    .arg(base.as_str())
    .arg(out.as_str());
    match size {
        Some(n) => c.arg(n.to_string()),
        None => c,
    }
}

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

// --- OVA: streamOptimized VMDKs -------------------------------------------

/// Convert `src` (format `src_format`: raw, qcow2, vmdk) to a streamOptimized
/// VMDK on an LSI Logic adapter — the only VMDK flavour ESXi imports from an
/// OVA. qemu-img writes a random `CID=` into it; see `ova::vmdk::set_cid`.
pub fn convert_stream_vmdk(src: &Utf8Path, src_format: &str, dst: &Utf8Path) -> Cmd {
    Cmd::new("qemu-img", "convert the disk to a streamOptimized VMDK")
        .args(["convert", "-f", src_format, "-O", "vmdk"])
        .args(["-o", "subformat=streamOptimized,adapter_type=lsilogic"])
        .args([src.as_str(), dst.as_str()])
}

// --- end OVA ----------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// One coroutine (`-m 1`) and no out-of-order writes (no `-W`) keep the
    /// cluster layout, so the same raw disk always gives the same qcow2.
    #[test]
    fn qcow2_conversion_writes_in_order() {
        let (raw, out) = (Utf8Path::new("/w/disk.raw"), Utf8Path::new("/w/d.qcow2"));
        let c = convert_to_qcow2(raw, "raw", out, Some("zstd"));
        assert_eq!(c.program, "qemu-img");
        assert_eq!(
            c.args,
            [
                "convert",
                "-q",
                "-m",
                "1",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-c",
                "-o",
                "compression_type=zstd",
                "/w/disk.raw",
                "/w/d.qcow2",
            ]
        );
        let c = convert_to_qcow2(raw, "raw", out, None);
        assert_eq!(
            c.args,
            [
                "convert",
                "-q",
                "-m",
                "1",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "/w/disk.raw",
                "/w/d.qcow2",
            ]
        );
        assert!(c.env.is_empty(), "{:?}", c.env);
    }

    /// The VMDK flavour ESXi imports; its random `CID=` is replaced
    /// afterwards (`ova::vmdk::set_cid`), not by a flag.
    #[test]
    fn stream_vmdk_conversion() {
        let c = convert_stream_vmdk(
            Utf8Path::new("/w/d.qcow2"),
            "qcow2",
            Utf8Path::new("/w/d.vmdk"),
        );
        assert_eq!(
            c.args,
            [
                "convert",
                "-f",
                "qcow2",
                "-O",
                "vmdk",
                "-o",
                "subformat=streamOptimized,adapter_type=lsilogic",
                "/w/d.qcow2",
                "/w/d.vmdk",
            ]
        );
    }
}
