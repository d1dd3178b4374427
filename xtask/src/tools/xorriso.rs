//! `xorriso`: ISO 9660 images.

use camino::Utf8Path;

use super::Cmd;

// --- secret scan: reference reader for ISO 9660 ------------------------------

/// `xorriso -osirrox on -indev ISO -extract / DIR`: every file of an ISO
/// (the scan reads ISO 9660 in-process; tests compare its view with this one).
pub fn extract_all(iso: &Utf8Path, dir: &Utf8Path) -> Cmd {
    Cmd::new("xorriso", format!("extract the files of {iso}"))
        .args(["-abort_on", "FAILURE", "-osirrox", "on", "-indev"])
        .arg(iso.as_str())
        .args(["-extract", "/"])
        .arg(dir.as_str())
}
