//! qemu-img: convert and inspect disk images.

use camino::Utf8Path;

use super::Cmd;

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

/// `qemu-img info --output=json` of an image of a known format.
pub fn info_json(path: &Utf8Path, format: &str) -> Cmd {
    Cmd::new("qemu-img", "inspect a disk image").args([
        "info",
        "--output=json",
        "-f",
        format,
        path.as_str(),
    ])
}

/// `qemu-img check` (exit 0: consistent).
pub fn check(path: &Utf8Path, format: &str) -> Cmd {
    Cmd::new("qemu-img", "check a disk image's consistency").args([
        "check",
        "-f",
        format,
        path.as_str(),
    ])
}

/// Convert any image to raw (tests compare the bytes with the source disk).
pub fn convert_to_raw(src: &Utf8Path, src_format: &str, dst: &Utf8Path) -> Cmd {
    Cmd::new("qemu-img", "convert a disk image to raw").args([
        "convert",
        "-f",
        src_format,
        "-O",
        "raw",
        src.as_str(),
        dst.as_str(),
    ])
}
