//! `mkfs.ext4` (e2fsprogs) and `mkfs.vfat` (dosfstools): file systems in
//! image files, without mounting.

use camino::Utf8Path;

use super::Cmd;

// --- secret-scan bench fixtures ---------------------------------------------

/// `mkfs.ext4 -d DIR IMAGE SIZE`: an ext4 image of `bytes` holding `dir`.
pub fn ext4_from_dir(image: &Utf8Path, dir: &Utf8Path, bytes: u64) -> Cmd {
    Cmd::new(
        "mkfs.ext4",
        format!("create an ext4 image {image} from {dir}"),
    )
    .args(["-q", "-F", "-E", "root_owner=0:0", "-d"])
    .arg(dir.as_str())
    .arg(image.as_str())
    .arg(format!("{}k", bytes / 1024))
}

/// `mkfs.vfat -n LABEL IMAGE` on an existing (sized) image file.
pub fn vfat(image: &Utf8Path, label: &str) -> Cmd {
    Cmd::new("mkfs.vfat", format!("create a FAT file system in {image}"))
        .args(["-n", label])
        .arg(image.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's ext4 image is owned by root whoever builds it.
    #[test]
    fn ext4_fixture_root_is_owned_by_root() {
        let c = ext4_from_dir(
            Utf8Path::new("/w/e.img"),
            Utf8Path::new("/w/tree"),
            64 << 20,
        );
        assert_eq!(c.program, "mkfs.ext4");
        assert_eq!(
            c.args,
            [
                "-q",
                "-F",
                "-E",
                "root_owner=0:0",
                "-d",
                "/w/tree",
                "/w/e.img",
                "65536k"
            ]
        );
    }
}
