//! mtools: FAT file systems without mounting.

use camino::Utf8Path;

use super::Cmd;

// --- secret scan: copy a FAT file system's files out ------------------------

/// `mcopy -s -n -i IMAGE@@OFFSET ::/ DIR`: every file of the FAT file system
/// at byte `offset` of `image`, recursively, into `dir`.
pub fn extract_all(image: &Utf8Path, offset: u64, dir: &Utf8Path) -> Cmd {
    Cmd::new(
        "mcopy",
        format!(
            "copy the files of the FAT file system at offset {offset} of {image} out to scan them"
        ),
    )
    .env("MTOOLS_SKIP_CHECK", "1")
    .args(["-s", "-n", "-p", "-i"])
    .arg(format!("{image}@@{offset}"))
    .arg("::/")
    .arg(format!("{dir}/"))
}

/// `mcopy -s -i IMAGE SRC… ::/`: copy files and directories into the root
/// of a FAT image.
pub fn copy_into(image: &Utf8Path, sources: &[&Utf8Path]) -> Cmd {
    Cmd::new("mcopy", format!("copy files into the FAT image {image}"))
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s", "-i"])
        .arg(image.as_str())
        .args(sources.iter().map(|s| s.as_str()))
        .arg("::/")
}
