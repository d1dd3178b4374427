//! `debugfs` (e2fsprogs): read ext2/3/4 file systems without mounting.

use camino::Utf8Path;

use super::Cmd;

// --- secret scan: reference reader for ext4 ----------------------------------

/// `debugfs -R 'rdump / DIR' IMAGE?offset=N`: copy every file of the ext
/// file system at byte `offset` of `image` into `dir` (the scan reads ext4
/// in-process; tests compare its view with this one).
pub fn rdump_all(image: &Utf8Path, offset: u64, dir: &Utf8Path) -> Cmd {
    Cmd::new(
        "debugfs",
        format!("copy the files of the ext file system in {image} out"),
    )
    .arg("-R")
    .arg(format!("rdump / {dir}"))
    .arg(format!("{image}?offset={offset}"))
}
