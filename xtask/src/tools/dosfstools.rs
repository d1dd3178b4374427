//! dosfstools: FAT file systems on image files.

use camino::Utf8Path;

use super::Cmd;

// --- qcow2 (EFI system partition) ---

/// `mkfs.vfat --invariant -F 32` on an existing image file: the serial and
/// every time stamp are fixed, so the result depends only on the content.
pub fn mkfs_vfat_invariant(image: &Utf8Path, label: &str, epoch: i64) -> Cmd {
    Cmd::new("mkfs.vfat", format!("FAT32 file system `{label}`"))
        .args(["--invariant", "-F", "32", "-n", label, image.as_str()])
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
}
