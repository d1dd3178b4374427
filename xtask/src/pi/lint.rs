//! `cargo xtask pi lint IMAGE`, also run on every build: what a Raspberry
//! Pi needs to boot the card, read back from the image itself. The MBR
//! table (4 MiB aligned, FAT boot partition first, Linux root), the
//! firmware of each board family whose device tree is on the card, every
//! `start*.elf` with its matching `fixup*.dat`, `config.txt` syntax and the
//! files it names, a one-line `cmdline.txt` whose `root=PARTUUID=` is a
//! partition of this table. Every problem is reported, not just the first.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::boot;
use super::mbr;
use crate::recipe::pi::Board;
use crate::tools;

/// What a passing lint found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Board families with a device tree on the card.
    pub boards: Vec<String>,
    /// Files in the boot partition's root directory.
    pub files: Vec<String>,
}

/// `mcopy` of the boot partition's files out of the image (at `offset`).
pub fn extract_command(
    image: &Utf8Path,
    offset: impl std::fmt::Display,
    dir: &Utf8Path,
) -> tools::Cmd {
    tools::mtools::extract_all(image, offset, dir)
}

/// Lint `image`, a raw image (`.img`) or one compressed as kiln publishes
/// it (`.img.zst`, `.img.xz`), unpacked into a temporary directory first.
pub fn check(image: &Utf8Path) -> Result<Report> {
    let tmp = tempfile::Builder::new()
        .prefix("kiln-pi-lint.")
        .tempdir()
        .context("creating a temporary directory for the lint")?;
    let dir = Utf8Path::from_path(tmp.path()).context("non-UTF-8 temporary directory")?;
    let raw = unpack(image, dir)?;
    check_with(&raw, &dir.join("boot"))
}

/// A raw image to read: `image` itself, or it unpacked into `dir`.
pub fn unpack(image: &Utf8Path, dir: &Utf8Path) -> Result<Utf8PathBuf> {
    let name = image.file_name().unwrap_or("image");
    if name.ends_with(".zst") {
        let raw = dir.join("image.img");
        let src = File::open(image).with_context(|| format!("opening {image}"))?;
        let mut dec = zstd::stream::read::Decoder::new(src)
            .with_context(|| format!("reading the zstd stream {image}"))?;
        let mut out = File::create(&raw).with_context(|| format!("creating {raw}"))?;
        // Sparse: a card is mostly free space, and a smoke unpacks one per
        // boot.
        crate::fsutil::copy_sparse(&mut dec, &mut out)
            .with_context(|| format!("unpacking {image}"))?;
        Ok(raw)
    } else if name.ends_with(".xz") {
        let raw = dir.join("image.img");
        tools::run(&tools::xz::decompress(image, &raw))?;
        Ok(raw)
    } else {
        Ok(image.to_owned())
    }
}

/// Lint the raw `image`, extracting its boot files into `scratch` (removed
/// after).
pub fn check_with(image: &Utf8Path, scratch: &Utf8Path) -> Result<Report> {
    let r = lint(image, scratch);
    let _ = std::fs::remove_dir_all(scratch);
    match r? {
        (report, problems) if problems.is_empty() => Ok(report),
        (_, problems) => bail!(
            "{image} would not boot on a Raspberry Pi:\n  - {}",
            problems.join("\n  - ")
        ),
    }
}

fn lint(image: &Utf8Path, scratch: &Utf8Path) -> Result<(Report, Vec<String>)> {
    let mut problems = Vec::new();
    let mut f = File::open(image).with_context(|| format!("opening {image}"))?;
    let len = f.metadata()?.len();
    let mut sector = [0u8; 512];
    f.read_exact(&mut sector)
        .with_context(|| format!("reading the partition table of {image}"))?;
    let table = mbr::parse(&sector).with_context(|| format!("{image}"))?;
    if !len.is_multiple_of(mbr::ALIGN) {
        problems.push(format!(
            "the image is {len} bytes, not a multiple of 4 MiB (SD cards and Imager expect one)"
        ));
    }
    let Some(&(1, boot_part)) = table.parts.first() else {
        bail!("{image}: partition 1 is missing: the Pi's firmware boots from the first partition");
    };
    if ![0x0b, 0x0c, 0x0e].contains(&boot_part.kind) {
        problems.push(format!(
            "partition 1 has type {:#04x}, not FAT (0x0c): the firmware does not read it",
            boot_part.kind
        ));
    }
    for (n, p) in &table.parts {
        if !p.offset().is_multiple_of(mbr::ALIGN) {
            problems.push(format!("partition {n} does not start on a 4 MiB boundary"));
        }
        if p.offset() + p.bytes() > len {
            problems.push(format!("partition {n} ends past the end of the image"));
        }
    }
    std::fs::create_dir_all(scratch)?;
    tools::run(&extract_command(image, boot_part.offset(), scratch))
        .with_context(|| format!("reading the boot partition (FAT) of {image}"))?;
    let mut files = BTreeSet::new();
    for e in std::fs::read_dir(scratch).with_context(|| format!("listing {scratch}"))? {
        let e = e?;
        if e.file_type()?.is_file() {
            files.insert(e.file_name().to_string_lossy().into_owned());
        }
    }
    // Firmware: each family whose device tree is here needs its files.
    let mut boards = Vec::new();
    for b in [Board::Pi3, Board::Pi4, Board::Pi5] {
        if files
            .iter()
            .any(|f| f.starts_with(b.dtb_prefix()) && f.ends_with(".dtb"))
        {
            boards.push(b.section().to_string());
            for need in b.firmware() {
                if !files.contains(*need) {
                    problems.push(format!(
                        "{need} is missing: the {} boards (device tree {}*.dtb) need it",
                        b.section(),
                        b.dtb_prefix()
                    ));
                }
            }
        }
    }
    if boards.is_empty() {
        problems.push("no Raspberry Pi device tree (bcm2837-*, bcm2711-*, bcm2712*.dtb)".into());
    }
    for f in &files {
        let pair = |from: &str, from_ext: &str, to: &str, to_ext: &str| {
            let s = f.strip_prefix(from)?.strip_suffix(from_ext)?;
            Some(format!("{to}{s}{to_ext}"))
        };
        if let Some(m) = pair("start", ".elf", "fixup", ".dat") {
            if !files.contains(&m) {
                problems.push(format!("{f} has no matching {m}"));
            }
        }
        if let Some(m) = pair("fixup", ".dat", "start", ".elf") {
            if !files.contains(&m) {
                problems.push(format!("{f} has no matching {m}"));
            }
        }
    }
    // config.txt and what it names.
    let mut cmdline_file = boot::CMDLINE.to_string();
    let mut kernel = None;
    let mut arm64 = false;
    match std::fs::read_to_string(scratch.join(boot::CONFIG)) {
        Err(_) => problems.push(format!("{} is missing", boot::CONFIG)),
        Ok(text) => {
            for (i, line) in text.lines().enumerate() {
                let at = format!("{}:{}", boot::CONFIG, i + 1);
                let l = line.trim();
                if l.is_empty() || l.starts_with('#') {
                    continue;
                }
                if let Some(sec) = l.strip_prefix('[') {
                    if !sec.ends_with(']') || sec.len() < 2 {
                        problems.push(format!("{at}: `{l}` is not a [section]"));
                    }
                    continue;
                }
                if let Some(rest) = l.strip_prefix("initramfs ") {
                    let words: Vec<&str> = rest.split_whitespace().collect();
                    match words.as_slice() {
                        [file, "followkernel"] => {
                            if !files.contains(*file) {
                                problems.push(format!("{at}: the initramfs {file} is missing"));
                            }
                        }
                        [_, addr] if addr.starts_with("0x") => {}
                        _ => problems.push(format!(
                            "{at}: `{l}`: expected `initramfs FILE followkernel`"
                        )),
                    }
                    continue;
                }
                let Some((k, v)) = l.split_once('=') else {
                    problems.push(format!(
                        "{at}: `{l}` is neither `key=value`, `[section]` nor `initramfs FILE followkernel`"
                    ));
                    continue;
                };
                let (k, v) = (k.trim(), v.trim());
                if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    problems.push(format!("{at}: `{k}` is not a setting name"));
                }
                match k {
                    "kernel" => kernel = Some(v.to_string()),
                    "cmdline" => cmdline_file = v.to_string(),
                    "arm_64bit" => arm64 = v == "1",
                    _ => {}
                }
            }
        }
    }
    if !arm64 && files.contains(boot::CONFIG) {
        problems.push(format!(
            "{} does not set arm_64bit=1: the firmware would start an arm64 kernel in 32-bit mode",
            boot::CONFIG
        ));
    }
    let kernel = kernel.unwrap_or_else(|| "kernel8.img".into());
    if !files.contains(&kernel) {
        problems.push(format!("the kernel {kernel} is missing"));
    }
    // cmdline.txt: one line naming a partition of this table.
    match std::fs::read_to_string(scratch.join(&cmdline_file)) {
        Err(_) => problems.push(format!("{cmdline_file} is missing")),
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            if lines.len() != 1 || lines[0].trim().is_empty() {
                problems.push(format!(
                    "{cmdline_file} has {} lines: the firmware reads only the first, so it must be \
                     exactly one line",
                    lines.len()
                ));
            }
            let first = lines.first().copied().unwrap_or("");
            match first
                .split_whitespace()
                .find_map(|w| w.strip_prefix("root="))
            {
                None => problems.push(format!("{cmdline_file} has no root=")),
                Some(root) => {
                    if let Some(pu) = root.strip_prefix("PARTUUID=") {
                        let ok = table
                            .parts
                            .iter()
                            .any(|(n, _)| mbr::partuuid(table.id, *n) == pu.to_ascii_lowercase());
                        if !ok {
                            problems.push(format!(
                                "{cmdline_file}: root=PARTUUID={pu} is not a partition of this \
                                 image (disk id {:08x}: {})",
                                table.id,
                                table
                                    .parts
                                    .iter()
                                    .map(|(n, _)| mbr::partuuid(table.id, *n))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok((
        Report {
            boards,
            files: files.into_iter().collect(),
        },
        problems,
    ))
}
