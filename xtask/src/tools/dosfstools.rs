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

#[cfg(test)]
mod tests {
    use super::*;

    /// `--invariant` fixes the volume serial and every time stamp;
    /// `SOURCE_DATE_EPOCH` is set too, for mkfs.vfat versions that read it.
    #[test]
    fn fat_images_are_invariant() {
        let c = mkfs_vfat_image(
            Utf8Path::new("/w/cidata.img"),
            "CIDATA",
            2048,
            1_700_000_000,
        );
        assert_eq!(c.program, "mkfs.vfat");
        assert_eq!(
            c.args,
            ["--invariant", "-n", "CIDATA", "-C", "/w/cidata.img", "2048"]
        );
        assert_eq!(c.env_pairs(), [("SOURCE_DATE_EPOCH", "1700000000")]);
        let c = mkfs_vfat_invariant(Utf8Path::new("/w/esp.img"), "ESP", 1_700_000_000);
        assert_eq!(
            c.args,
            ["--invariant", "-F", "32", "-n", "ESP", "/w/esp.img"]
        );
        assert_eq!(c.env_pairs(), [("SOURCE_DATE_EPOCH", "1700000000")]);
    }
}
