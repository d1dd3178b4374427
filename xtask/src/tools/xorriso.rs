//! xorriso: ISO 9660 images.

use camino::Utf8Path;

use super::Cmd;

// --- cidata seed ISO (seeds) ---------------------------------------------

/// A small NoCloud seed ISO (`-volid cidata`, Rock Ridge + Joliet) holding
/// `files` (source path, name at the ISO root). Byte-reproducible when the
/// sources' mtimes are `epoch` (the caller sets them) and
/// `SOURCE_DATE_EPOCH` is set (done here).
pub fn cidata_iso(
    out: &Utf8Path,
    volid: &str,
    files: &[(impl AsRef<Utf8Path>, &str)],
    epoch: i64,
) -> Cmd {
    let mut c = Cmd::new(
        "xorriso",
        format!(
            "write the NoCloud seed ISO {}",
            out.file_name().unwrap_or("")
        ),
    )
    .env("SOURCE_DATE_EPOCH", epoch.to_string())
    // No startup files: the output must not depend on the build host.
    .arg("-no_rc")
    .args([
        "-outdev",
        out.as_str(),
        "-volid",
        volid,
        "-joliet",
        "on",
        "-rockridge",
        "on",
    ]);
    for (src, name) in files {
        c = c.args(["-map", src.as_ref().as_str(), &format!("/{name}")]);
    }
    c
}

// --- end cidata seed ISO ---------------------------------------------------

/// `xorriso -indev ISO -ls PATH` (a listing, for checks).
pub fn ls(iso: &Utf8Path, path: &str) -> Cmd {
    Cmd::new("xorriso", "list a directory of an ISO")
        .arg("-no_rc")
        .args(["-indev", iso.as_str(), "-ls", path])
}
