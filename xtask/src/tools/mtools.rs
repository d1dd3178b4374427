//! mtools: read and write FAT images without mounting them.

use camino::Utf8Path;

use super::Cmd;

// --- qcow2 (EFI system partition) ---

/// `mmd -i IMG ::/DIR…` (directory entries stamped with `SOURCE_DATE_EPOCH`).
pub fn mmd(image: &Utf8Path, dirs: &[&str], epoch: i64) -> Cmd {
    let mut c = Cmd::new("mmd", "create directories in a FAT image")
        .args(["-i", image.as_str()])
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("SOURCE_DATE_EPOCH", epoch.to_string());
    for d in dirs {
        c = c.arg(format!("::{d}"));
    }
    c
}

/// `mcopy -m -i IMG SRC ::DEST` (keeps the source's mtime; set it to the epoch).
pub fn mcopy_in(image: &Utf8Path, src: &Utf8Path, dest: &str, epoch: i64) -> Cmd {
    Cmd::new(
        "mcopy",
        format!(
            "copy {} into a FAT image",
            src.file_name().unwrap_or("a file")
        ),
    )
    .args(["-m", "-o", "-i", image.as_str(), src.as_str()])
    .arg(format!("::{dest}"))
    .env("MTOOLS_SKIP_CHECK", "1")
    .env("SOURCE_DATE_EPOCH", epoch.to_string())
}
