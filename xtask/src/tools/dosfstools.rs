//! dosfstools: `mkfs.vfat` creates FAT file systems in image files.

use camino::Utf8Path;

use super::Cmd;

/// Create a FAT image file of `kib` KiB labelled `label`. `--invariant`
/// fixes the serial number and times, so the image is reproducible.
pub fn mkfs_vfat_image(image: &Utf8Path, label: &str, kib: u64, epoch: i64) -> Cmd {
    Cmd::new(
        "mkfs.vfat",
        format!(
            "create the FAT image {} ({label})",
            image.file_name().unwrap_or("")
        ),
    )
    .env("SOURCE_DATE_EPOCH", epoch.to_string())
    .args([
        "--invariant",
        "-n",
        label,
        "-C",
        image.as_str(),
        &kib.to_string(),
    ])
}

// --- qcow2 (EFI system partition) ---

/// `mkfs.vfat --invariant -F 32` on an existing image file: the serial and
/// every time stamp are fixed, so the result depends only on the content.
pub fn mkfs_vfat_invariant(image: &Utf8Path, label: &str, epoch: i64) -> Cmd {
    Cmd::new("mkfs.vfat", format!("FAT32 file system `{label}`"))
        .args(["--invariant", "-F", "32", "-n", label, image.as_str()])
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
}
