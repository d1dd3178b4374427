//! mtools: read and write FAT images without mounting them.

use camino::{Utf8Path, Utf8PathBuf};

use super::Cmd;

fn base(program: &str, summary: String, epoch: Option<i64>) -> Cmd {
    // Skip the "not a DOS disk" sanity checks on image files; no rc files.
    let c = Cmd::new(program, summary)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("MTOOLSRC", "/dev/null");
    match epoch {
        Some(e) => c.env("SOURCE_DATE_EPOCH", e.to_string()),
        None => c,
    }
}

/// Copy `files` into the root of the FAT image, keeping their mtimes (`-m`).
pub fn mcopy_into(image: &Utf8Path, files: &[Utf8PathBuf], epoch: i64) -> Cmd {
    let mut c = base(
        "mcopy",
        format!(
            "copy {} file(s) into {}",
            files.len(),
            image.file_name().unwrap_or("")
        ),
        Some(epoch),
    )
    .args(["-i", image.as_str(), "-m"]);
    for f in files {
        c = c.arg(f.as_str());
    }
    c.arg("::/")
}

/// `mtype -i IMAGE ::/NAME`: a file's content on stdout.
pub fn mtype(image: &Utf8Path, name: &str) -> Cmd {
    base("mtype", format!("read {name} from a FAT image"), None).args([
        "-i",
        image.as_str(),
        &format!("::/{name}"),
    ])
}

/// `mdir -i IMAGE ::/`: the root directory listing.
pub fn mdir(image: &Utf8Path) -> Cmd {
    base("mdir", "list a FAT image".into(), None).args(["-i", image.as_str(), "::/"])
}

// --- secret scan: copy a FAT file system's files out ------------------------

/// `mcopy -s -n -i IMAGE@@OFFSET ::/ DIR`: every file of the FAT file system
/// at byte `offset` of `image`, recursively, into `dir`.
pub fn extract_all(image: &Utf8Path, offset: impl std::fmt::Display, dir: &Utf8Path) -> Cmd {
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

/// `mcopy -o -i IMAGE@@OFFSET FILE… ::/`: copy `files` into the root of the
/// FAT file system at byte `offset` of `image`, replacing files of the same
/// names.
pub fn replace_at(image: &Utf8Path, offset: u64, files: &[Utf8PathBuf]) -> Cmd {
    let mut c = Cmd::new(
        "mcopy",
        format!(
            "write {} file(s) onto the FAT file system at offset {offset} of {}",
            files.len(),
            image.file_name().unwrap_or("the image")
        ),
    )
    .env("MTOOLS_SKIP_CHECK", "1")
    .env("MTOOLSRC", "/dev/null")
    .args(["-o", "-i"])
    .arg(format!("{image}@@{offset}"));
    for f in files {
        c = c.arg(f.as_str());
    }
    c.arg("::/")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Files keep their (epoch) mtimes (`-m`), new directory entries are
    /// stamped with `SOURCE_DATE_EPOCH`, and no rc file of the build host
    /// is read.
    #[test]
    fn writes_keep_mtimes_and_stamp_the_epoch() {
        let img = Utf8Path::new("/w/cidata.img");
        let c = mcopy_into(
            img,
            &["/w/user-data".into(), "/w/meta-data".into()],
            1_700_000_000,
        );
        assert_eq!(c.program, "mcopy");
        assert_eq!(
            c.args,
            [
                "-i",
                "/w/cidata.img",
                "-m",
                "/w/user-data",
                "/w/meta-data",
                "::/"
            ]
        );
        assert_eq!(
            c.env_pairs(),
            [
                ("MTOOLSRC", "/dev/null"),
                ("MTOOLS_SKIP_CHECK", "1"),
                ("SOURCE_DATE_EPOCH", "1700000000"),
            ]
        );

        let esp = Utf8Path::new("/w/esp.img");
        let c = mmd(esp, &["/EFI", "/EFI/BOOT"], 1_700_000_000);
        assert_eq!(c.program, "mmd");
        assert_eq!(c.args, ["-i", "/w/esp.img", "::/EFI", "::/EFI/BOOT"]);
        assert_eq!(
            c.env_pairs(),
            [
                ("MTOOLS_SKIP_CHECK", "1"),
                ("SOURCE_DATE_EPOCH", "1700000000")
            ]
        );

        let c = mcopy_in(
            esp,
            Utf8Path::new("/w/BOOTX64.EFI"),
            "/EFI/BOOT/BOOTX64.EFI",
            1_700_000_000,
        );
        assert_eq!(
            c.args,
            [
                "-m",
                "-o",
                "-i",
                "/w/esp.img",
                "/w/BOOTX64.EFI",
                "::/EFI/BOOT/BOOTX64.EFI"
            ]
        );
        assert_eq!(
            c.env_pairs(),
            [
                ("MTOOLS_SKIP_CHECK", "1"),
                ("SOURCE_DATE_EPOCH", "1700000000")
            ]
        );
    }
}
