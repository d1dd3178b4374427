//! xorriso: ISO 9660 images — reading them, remastering without extracting,
//! and writing small seed ISOs.

use camino::Utf8Path;

use super::Cmd;

// ---- remaster (iso target) ------------------------------------------------

/// Print the base's boot records and system area as options/tables, and list
/// the files near the root (to find grub.cfg, loopback.cfg, md5sum.txt).
/// Reports go to stdout.
pub fn inspect(iso: &Utf8Path) -> Cmd {
    Cmd::new(
        "xorriso",
        "read the ISO's boot records, system area and top-level files",
    )
    .args(["-no_rc", "-indev", iso.as_str()])
    .args([
        "-report_el_torito",
        "as_mkisofs",
        "-report_system_area",
        "plain",
    ])
    .args(["-find", "/", "-maxdepth", "3", "-type", "f", "--"])
}

/// Copy files out of an ISO: `(path in the ISO, local destination)`.
pub fn extract(iso: &Utf8Path, files: &[(String, String)]) -> Cmd {
    let mut c = Cmd::new("xorriso", "copy files out of the ISO").args([
        "-no_rc",
        "-osirrox",
        "on",
        "-indev",
        iso.as_str(),
    ]);
    for (from, to) in files {
        c = c.args(["-extract", from.as_str(), to.as_str()]);
    }
    c
}

/// Write `out` as `base` plus `maps` (`(local path, path in the ISO)`),
/// replaying the base's El Torito catalog, MBR/GPT and appended partitions
/// (`-boot_image any replay`). Reproducible: with `SOURCE_DATE_EPOCH` set,
/// xorriso derives the volume dates, file dates (`all_file_dates
/// set_to_mtime`) and GPT GUIDs from it; the mapped inputs' mtimes must be
/// the epoch too. `out` must not exist (an existing file is treated as a
/// medium to append to).
pub fn remaster(base: &Utf8Path, out: &Utf8Path, maps: &[(String, String)], epoch: i64) -> Cmd {
    let mut c = Cmd::new(
        "xorriso",
        "remaster the base ISO (boot records replayed, new files mapped in)",
    )
    .env("SOURCE_DATE_EPOCH", epoch.to_string())
    .arg("-no_rc")
    // xorriso's default fsyncs the output every 16 MiB, which more than
    // doubles the time of a multi-GiB remaster. kiln flushes the image itself
    // afterwards, while it hashes it (the bytes are identical either way).
    .args(["-stdio_sync", "off"])
    .args(["-indev", base.as_str(), "-outdev", out.as_str()]);
    for (local, iso) in maps {
        c = c.args(["-map", local.as_str(), iso.as_str()]);
    }
    c.args(["-boot_image", "any", "replay"])
}

/// Layout settings of the base that the replayed boot setup does not carry
/// (see `iso::layout`), set after it: the cylinder alignment, and the padding
/// written after the appended partitions (`included`, as `-as mkisofs` does).
pub fn keep_layout(cyl_align: Option<&str>, padding: Option<u64>) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(m) = cyl_align {
        v.extend([
            "-boot_image".into(),
            "any".into(),
            format!("partition_cyl_align={m}"),
        ]);
    }
    if let Some(p) = padding {
        v.extend([
            "-padding".into(),
            p.to_string(),
            "-padding".into(),
            "included".into(),
        ]);
    }
    v
}

/// The base's boot setup as xorriso commands (`-report_el_torito cmd`, one
/// per line on stdout): what `-boot_image any replay` runs.
pub fn boot_setup(iso: &Utf8Path) -> Cmd {
    Cmd::new("xorriso", "read the ISO's boot setup as xorriso commands")
        .args(["-no_rc", "-indev", iso.as_str()])
        .args(["-report_el_torito", "cmd"])
}

/// Add a session to `image`, a copy of the base: the changed and added
/// files (`maps`) and a new directory tree are appended after the base's
/// bytes, and the volume descriptors and system area at LBA 0–31 are
/// rewritten to point at them; every other byte of the base stays where it
/// is. `boot` is the base's boot setup as from [`replay_for_growing`]
/// (`-boot_image any replay` itself cannot re-append the EFI partition when
/// growing). Reproducible like [`remaster`].
pub fn grow(image: &Utf8Path, maps: &[(String, String)], boot: &[String], epoch: i64) -> Cmd {
    let mut c = Cmd::new(
        "xorriso",
        "add a session to the copy of the base ISO (boot setup replayed, new files mapped in)",
    )
    .env("SOURCE_DATE_EPOCH", epoch.to_string())
    .arg("-no_rc")
    .args(["-stdio_sync", "off"])
    .args(["-dev", image.as_str()]);
    for (local, iso) in maps {
        c = c.args(["-map", local.as_str(), iso.as_str()]);
    }
    c.args(["-boot_image", "any", "discard"]).args(boot)
}

/// The words of [`boot_setup`]'s report, made to work when growing: the
/// report reads boot images, the MBR and appended partitions from the input
/// drive (`--interval:imported_iso:`), which xorriso refuses when input and
/// output are the same file; they are read from `base` instead
/// (`--interval:local_fs:…:BASE`), which holds the same bytes.
pub fn replay_for_growing(report: &str, base: &Utf8Path) -> anyhow::Result<Vec<String>> {
    const IMPORTED: &str = "--interval:imported_iso:";
    let mut out = Vec::new();
    for line in report.lines().filter(|l| l.starts_with('-')) {
        for w in split_words(line)? {
            let Some(i) = w.find(IMPORTED) else {
                out.push(w);
                continue;
            };
            // Interval:Zeroizers:Source (the source is the rest, colons and all).
            let mut parts = w[i + IMPORTED.len()..].splitn(3, ':');
            let (Some(range), Some(zero)) = (parts.next(), parts.next()) else {
                anyhow::bail!("xorriso reported an interval kiln cannot read: {w}");
            };
            out.push(format!(
                "{}--interval:local_fs:{range}:{zero}:{base}",
                &w[..i]
            ));
        }
    }
    Ok(out)
}

/// Split one line of an xorriso report into words: blanks separate words,
/// `'…'` and `"…"` quote (xorriso writes a `'` as `'"'"'`).
fn split_words(line: &str) -> anyhow::Result<Vec<String>> {
    let (mut words, mut cur, mut open, mut quote) = (Vec::new(), String::new(), false, None);
    for ch in line.chars() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(ch);
                open = true;
            }
            (None, c) if c.is_whitespace() => {
                if open {
                    words.push(std::mem::take(&mut cur));
                    open = false;
                }
            }
            (None, c) => {
                cur.push(c);
                open = true;
            }
        }
    }
    anyhow::ensure!(
        quote.is_none(),
        "unbalanced quote in xorriso's report: {line}"
    );
    if open {
        words.push(cur);
    }
    Ok(words)
}

/// A generated Ubuntu-like base for benchmarks: BIOS (`-b`) and EFI (`-e`)
/// El Torito entries and the EFI image appended as GPT partition 2.
pub fn bench_base(root: &Utf8Path, efi_img: &Utf8Path, out: &Utf8Path) -> Cmd {
    Cmd::new("xorriso", "generate a base ISO for the benchmark")
        .env("SOURCE_DATE_EPOCH", "1724716800")
        .args([
            "-no_rc",
            "-as",
            "mkisofs",
            "-r",
            "-J",
            "-joliet-long",
            "-V",
            "KILN BENCH",
            "-o",
            out.as_str(),
        ])
        .args(["--protective-msdos-label", "-partition_offset", "16"])
        .args([
            "-append_partition",
            "2",
            "28732ac11ff8d211ba4b00a0c93ec93b",
            efi_img.as_str(),
            "-appended_part_as_gpt",
        ])
        .args([
            "-c",
            "/boot.catalog",
            "-b",
            "/boot/grub/i386-pc/eltorito.img",
            "-no-emul-boot",
        ])
        .args(["-boot-load-size", "4", "-boot-info-table"])
        .args([
            "-eltorito-alt-boot",
            "-e",
            "--interval:appended_partition_2:all::",
            "-no-emul-boot",
        ])
        .arg(root.as_str())
}

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

// --- installer ISO (crate::iso::installer) ---

/// A hybrid installer ISO from the directory `tree`: El Torito BIOS
/// (`/boot/grub/eltorito.img`, GRUB's hybrid MBR for disks), and UEFI from
/// `esp` appended as GPT partition 2 (the El Torito EFI entry points at it),
/// so it boots from a CD and from a USB stick written with `dd`.
/// Reproducible with `SOURCE_DATE_EPOCH` (set here) and every file in
/// `tree` dated `epoch` (the caller sets them).
pub fn installer_iso(
    tree: &Utf8Path,
    esp: &Utf8Path,
    volid: &str,
    out: &Utf8Path,
    epoch: i64,
) -> Cmd {
    Cmd::new(
        "xorriso",
        format!("write the installer ISO {}", out.file_name().unwrap_or("")),
    )
    .env("SOURCE_DATE_EPOCH", epoch.to_string())
    .args(["-no_rc", "-as", "mkisofs", "-r", "-J", "-joliet-long"])
    .args(["-V", volid, "-o", out.as_str()])
    .args(["--grub2-mbr", crate::tools::grub::BOOT_HYBRID_IMG])
    .args(["--protective-msdos-label", "-partition_cyl_align", "off"])
    .args(["-partition_offset", "16", "--mbr-force-bootable"])
    .args([
        "-append_partition",
        "2",
        "28732ac11ff8d211ba4b00a0c93ec93b",
        esp.as_str(),
        "-appended_part_as_gpt",
    ])
    .args(["-iso_mbr_part_type", "a2a0d0ebe5b9334487c068b6b72699c7"])
    .args(["-c", "/boot.catalog", "-b", "/boot/grub/eltorito.img"])
    .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
    .arg("--grub2-boot-info")
    .args([
        "-eltorito-alt-boot",
        "-e",
        "--interval:appended_partition_2:all::",
        "-no-emul-boot",
    ])
    .arg(tree.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remaster is reproducible through `SOURCE_DATE_EPOCH` (volume and
    /// file dates, GPT GUIDs) and `-no_rc` (no startup file of the build host
    /// changes the result); the boot records are replayed from the base.
    #[test]
    fn remaster_takes_its_dates_from_the_epoch_and_no_startup_files() {
        let maps = [("/w/grub.cfg".to_string(), "/boot/grub/grub.cfg".to_string())];
        let c = remaster(
            Utf8Path::new("/w/base.iso"),
            Utf8Path::new("/w/out.iso"),
            &maps,
            1_700_000_000,
        );
        assert_eq!(c.program, "xorriso");
        assert_eq!(c.env_pairs(), [("SOURCE_DATE_EPOCH", "1700000000")]);
        assert_eq!(
            c.args,
            [
                "-no_rc",
                "-stdio_sync",
                "off",
                "-indev",
                "/w/base.iso",
                "-outdev",
                "/w/out.iso",
                "-map",
                "/w/grub.cfg",
                "/boot/grub/grub.cfg",
                "-boot_image",
                "any",
                "replay",
            ]
        );
    }

    /// The NoCloud seed ISO: dates from `SOURCE_DATE_EPOCH`, no startup
    /// files, the volume id cloud-init looks for, files mapped to the root.
    #[test]
    fn cidata_iso_takes_its_dates_from_the_epoch_and_no_startup_files() {
        let c = cidata_iso(
            Utf8Path::new("/w/cidata.iso"),
            "cidata",
            &[
                (Utf8Path::new("/w/user-data"), "user-data"),
                (Utf8Path::new("/w/meta-data"), "meta-data"),
            ],
            1_700_000_000,
        );
        assert_eq!(c.env_pairs(), [("SOURCE_DATE_EPOCH", "1700000000")]);
        assert_eq!(
            c.args,
            [
                "-no_rc",
                "-outdev",
                "/w/cidata.iso",
                "-volid",
                "cidata",
                "-joliet",
                "on",
                "-rockridge",
                "on",
                "-map",
                "/w/user-data",
                "/user-data",
                "-map",
                "/w/meta-data",
                "/meta-data",
            ]
        );
    }

    /// The benchmark's generated base is the same in every run.
    #[test]
    fn bench_base_has_a_fixed_epoch() {
        let c = bench_base(
            Utf8Path::new("/w/root"),
            Utf8Path::new("/w/efi.img"),
            Utf8Path::new("/w/base.iso"),
        );
        assert_eq!(c.env_pairs(), [("SOURCE_DATE_EPOCH", "1724716800")]);
        assert_eq!(c.args[..3], ["-no_rc", "-as", "mkisofs"]);
    }

    #[test]
    fn replay_reads_intervals_from_the_base() {
        let report = "-volid 'Ubuntu-Server 24.04.1 LTS amd64'\n\
            -boot_image grub grub2_mbr=--interval:imported_iso:0s-15s:zero_mbrpt,zero_gpt:'o.iso'\n\
            -append_partition 2 28732ac11ff8d211ba4b00a0c93ec93b --interval:imported_iso:25580d-33771d::'o.iso'\n\
            -boot_image any efi_path='--interval:appended_partition_2_start_6395s_size_8192d:all::'\n\
            -boot_image any cat_path='/it'\"'\"'s.cat'\n";
        let w = replay_for_growing(report, Utf8Path::new("/b:a se.iso")).unwrap();
        assert_eq!(
            w,
            [
                "-volid",
                "Ubuntu-Server 24.04.1 LTS amd64",
                "-boot_image",
                "grub",
                "grub2_mbr=--interval:local_fs:0s-15s:zero_mbrpt,zero_gpt:/b:a se.iso",
                "-append_partition",
                "2",
                "28732ac11ff8d211ba4b00a0c93ec93b",
                "--interval:local_fs:25580d-33771d::/b:a se.iso",
                "-boot_image",
                "any",
                "efi_path=--interval:appended_partition_2_start_6395s_size_8192d:all::",
                "-boot_image",
                "any",
                "cat_path=/it's.cat",
            ]
        );
        assert!(replay_for_growing("-volid 'x\n", Utf8Path::new("/b")).is_err());
    }
}
