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

// --- end OVA ----------------------------------------------------------------
