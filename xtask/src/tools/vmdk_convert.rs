//! `vmdk-convert` (VMware's open-vmdk): writes streamOptimized VMDKs the way
//! VMware's own tools do. Optional: `ova.converter: vmdk-convert`.

use camino::Utf8Path;

use super::Cmd;

/// Convert a raw disk image to a streamOptimized VMDK (lsilogic adapter,
/// open-vmdk's default compression).
pub fn convert(raw: &Utf8Path, dst: &Utf8Path) -> Cmd {
    Cmd::new(
        "vmdk-convert",
        "convert the disk to a streamOptimized VMDK (VMware's converter)",
    )
    .args([raw.as_str(), dst.as_str()])
}
