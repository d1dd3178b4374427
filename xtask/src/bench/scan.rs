//! Bench case `scan-disk`: scan a 1 GiB raw GPT disk image (a 64 MiB FAT ESP
//! and an ext4 root filled with generated text and binary files) and compare
//! with `cat IMAGE > /dev/null` on the hot cache, in the same run. Goal: at
//! most 3× the time of `cat`.

use std::io::{Seek, SeekFrom, Write};

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::{timed, BenchCx, Measurement};
use crate::qcow2::gpt;

const MIB: u64 = 1 << 20;

/// A deterministic, fast generator for fixture bytes (xorshift64*).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Fill `dir` with about `bytes` of content: 75% incompressible binaries
/// (8 MiB each), 25% small text files (config-like lines, ~8 KiB each).
fn content(dir: &Utf8Path, bytes: u64) -> Result<()> {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let bin = dir.join("usr/lib/demo");
    std::fs::create_dir_all(&bin)?;
    let mut left = bytes * 3 / 4;
    let mut i = 0;
    while left > 0 {
        let n = left.min(8 * MIB);
        let mut buf = vec![0u8; n as usize];
        g.fill(&mut buf);
        std::fs::write(bin.join(format!("blob{i:04}.bin")), &buf)?;
        left -= n;
        i += 1;
    }
    let mut left = bytes / 4;
    let mut i = 0;
    while left > 0 {
        let d = dir.join(format!("etc/demo/conf{:03}", i / 100));
        std::fs::create_dir_all(&d)?;
        let mut text = String::new();
        let mut l = 0;
        while text.len() < 8192 {
            text.push_str(&format!(
                "option_{l} = value {} # setting {}\n",
                g.next() % 100_000,
                g.next() % 97
            ));
            l += 1;
        }
        std::fs::write(d.join(format!("file{i:05}.conf")), &text)?;
        left = left.saturating_sub(text.len() as u64);
        i += 1;
    }
    Ok(())
}

/// Write a GPT (protective MBR, primary and backup headers) for `parts`
/// (`(type GUID bytes, first LBA, last LBA)`) into a `size`-byte file.
fn write_gpt(f: &mut std::fs::File, size: u64, parts: &[([u8; 16], u64, u64)]) -> Result<()> {
    let lbas = size / 512;
    let mut mbr = [0u8; 512];
    mbr[446 + 4] = 0xee;
    mbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    mbr[446 + 12..446 + 16]
        .copy_from_slice(&((lbas - 1).min(u32::MAX as u64) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let mut entries = vec![0u8; 128 * 128];
    for (i, (kind, first, last)) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[..16].copy_from_slice(kind);
        e[16..32].copy_from_slice(&crate::epoch::derived_id(0, &format!("bench-part-{i}")));
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
    }
    let ecrc = crc32fast::hash(&entries);
    let header = |me: u64, other: u64, table: u64| {
        let mut h = [0u8; 92];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&me.to_le_bytes());
        h[32..40].copy_from_slice(&other.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(lbas - 34).to_le_bytes());
        h[56..72].copy_from_slice(&crate::epoch::derived_id(0, "bench-disk"));
        h[72..80].copy_from_slice(&table.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&ecrc.to_le_bytes());
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&mbr)?;
    f.write_all(&header(1, lbas - 1, 2))?;
    f.seek(SeekFrom::Start(2 * 512))?;
    f.write_all(&entries)?;
    f.seek(SeekFrom::Start((lbas - 33) * 512))?;
    f.write_all(&entries)?;
    f.seek(SeekFrom::Start((lbas - 1) * 512))?;
    f.write_all(&header(lbas - 1, 1, lbas - 33))?;
    Ok(())
}

/// A partition type GUID as stored on disk.
fn type_guid(s: &str) -> Result<[u8; 16]> {
    Ok(gpt::Guid::parse(s)?.to_disk())
}

/// Build the disk: returns its path.
pub fn build_disk(dir: &Utf8Path, size: u64) -> Result<Utf8PathBuf> {
    let size = (size / MIB).max(24) * MIB;
    let esp_size = (size / 16).clamp(4 * MIB, 64 * MIB);
    let root_start = MIB + esp_size;
    let root_size = size - root_start - MIB;
    let tree = dir.join("tree");
    content(&tree, root_size * 6 / 10)?;
    let ext = dir.join("root.ext4");
    crate::tools::run(&crate::tools::mkfs::ext4_from_dir(&ext, &tree, root_size))?;
    let esp = dir.join("esp.fat");
    std::fs::File::create(&esp)?.set_len(esp_size)?;
    crate::tools::run(&crate::tools::mkfs::vfat(&esp, "ESP"))?;
    let efi = dir.join("EFI");
    std::fs::create_dir_all(efi.join("boot"))?;
    let mut g = Gen(42);
    let mut loader = vec![0u8; (esp_size / 4) as usize];
    g.fill(&mut loader);
    std::fs::write(efi.join("boot/bootx64.efi"), loader)?;
    crate::tools::run(&crate::tools::mtools::copy_into(&esp, &[&efi]))?;

    let disk = dir.join("disk.raw");
    let mut f = std::fs::File::create(&disk).with_context(|| format!("creating {disk}"))?;
    f.set_len(size)?;
    write_gpt(
        &mut f,
        size,
        &[
            (
                type_guid(gpt::TYPE_ESP)?,
                MIB / 512,
                (MIB + esp_size) / 512 - 1,
            ),
            (
                type_guid(gpt::TYPE_LINUX_DATA)?,
                root_start / 512,
                (root_start + root_size) / 512 - 1,
            ),
        ],
    )?;
    for (img, at) in [(&esp, MIB), (&ext, root_start)] {
        f.seek(SeekFrom::Start(at))?;
        std::io::copy(&mut std::fs::File::open(img)?, &mut f)?;
    }
    f.sync_all()?;
    for p in [&ext, &esp] {
        std::fs::remove_file(p)?;
    }
    std::fs::remove_dir_all(&tree)?;
    std::fs::remove_dir_all(&efi)?;
    Ok(disk)
}

/// The case: `bcx.scale` = 1.0 is a 1 GiB disk.
pub fn scan_disk(bcx: &BenchCx) -> Result<Vec<Measurement>> {
    crate::tools::require(&["mkfs.ext4", "mkfs.vfat", "mcopy", "cat"])?;
    let dir = tempfile::Builder::new()
        .prefix("kiln-bench-scan-")
        .tempdir_in(bcx.scratch)?;
    let dir = Utf8Path::from_path(dir.path())
        .context("scratch path is not UTF-8")?
        .to_owned();
    let disk = build_disk(&dir, bcx.bytes(1 << 30))?;
    let cat = crate::tools::coreutils::cat_to_null(&disk);
    crate::tools::run(&cat)?; // warm the page cache
    let (_, base) = timed(|| crate::tools::run(&cat))?;
    let opts = crate::scan::Options {
        allow: Vec::new(),
        tmp: Some(dir.clone()),
    };
    let (rep, took) = timed(|| Ok(crate::scan::scan_artifact(&disk, "disk.raw", &opts)))?;
    if !rep.ok() {
        bail!(
            "the bench disk did not scan clean: {:?} {:?}",
            rep.error,
            rep.findings
                .iter()
                .map(|f| f.location())
                .collect::<Vec<_>>()
        );
    }
    let size = std::fs::metadata(&disk)?.len();
    Ok(vec![Measurement::time(
        "scan-disk",
        &format!(
            "scan {} raw GPT disk (ext4 in-process, FAT via mtools; {} files, {} of content)",
            crate::scan::human_bytes(size),
            rep.files,
            crate::scan::human_bytes(rep.bytes)
        ),
        took,
        "cat IMAGE > /dev/null (hot cache)",
        base,
        3.0,
    )])
}
