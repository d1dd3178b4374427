//! GPT partition tables (UEFI spec §5.3) with a protective MBR, written
//! in-process with positioned writes into a disk image file: no sgdisk, no
//! loop device. GUIDs come from the epoch, so the table is reproducible.
//!
//! The partition type GUIDs and the GUID codec live here only: the secret
//! scan's partition reader and the OVA's firmware detection read disks with
//! them too.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, ensure, Context, Result};

pub const SECTOR: u64 = 512;
/// Entries in the table (the usual 128 × 128 bytes = 32 sectors).
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

/// Partition type GUIDs (lower-case, dashed). BIOS boot partition: GRUB's
/// core image, no file system (`Hah!IdontNeedEFI` on disk).
pub const TYPE_BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
/// EFI system partition.
pub const TYPE_ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// Discoverable Partitions Specification: root partition, x86-64. systemd-repart
/// matches the root partition by this type to grow it.
pub const TYPE_ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
pub const TYPE_ROOT_ARM64: &str = "b921b045-1df0-41c3-af44-4c6f280d3fae";
/// Linux file-system data (any Linux partition that is not a root).
pub const TYPE_LINUX_DATA: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

/// A GUID in its textual byte order (as in `xxxxxxxx-xxxx-…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub fn parse(s: &str) -> Result<Guid> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        ensure!(hex.len() == 32 && s.len() == 36, "`{s}` is not a GUID");
        let mut b = [0u8; 16];
        hex::decode_to_slice(&hex, &mut b).with_context(|| format!("`{s}` is not a GUID"))?;
        Ok(Guid(b))
    }
    /// The mixed-endian on-disk form (first three fields little-endian).
    pub fn to_disk(self) -> [u8; 16] {
        let b = self.0;
        let mut d = b;
        d[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
        d[4..6].copy_from_slice(&[b[5], b[4]]);
        d[6..8].copy_from_slice(&[b[7], b[6]]);
        d
    }
    /// A GUID read from disk (the inverse of [`Guid::to_disk`]).
    pub fn from_disk(d: [u8; 16]) -> Guid {
        // Swapping the first three fields is its own inverse.
        Guid(Guid(d).to_disk())
    }
    pub fn to_string_lower(self) -> String {
        let h = hex::encode(self.0);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

#[derive(Debug, Clone)]
pub struct Partition {
    pub type_guid: Guid,
    pub guid: Guid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub name: String,
    pub attributes: u64,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn bytes(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
}

/// First usable LBA (after MBR, header, entries).
pub fn first_usable() -> u64 {
    2 + ENTRY_SECTORS
}
/// Last usable LBA of a disk of `sectors` sectors.
pub fn last_usable(sectors: u64) -> u64 {
    sectors - 2 - ENTRY_SECTORS
}

/// Write the protective MBR (with `boot_code`, up to 440 bytes, e.g. GRUB's
/// boot.img), the primary and the backup GPT into `f`, a disk of `bytes`.
pub fn write(
    f: &File,
    bytes: u64,
    disk_guid: Guid,
    parts: &[Partition],
    boot_code: Option<&[u8]>,
) -> Result<()> {
    ensure!(
        bytes.is_multiple_of(SECTOR),
        "disk size {bytes} is not a multiple of {SECTOR}"
    );
    let sectors = bytes / SECTOR;
    ensure!(parts.len() as u64 <= ENTRIES, "too many partitions");
    let (lo, hi) = (first_usable(), last_usable(sectors));
    for (i, p) in parts.iter().enumerate() {
        if p.first_lba < lo || p.last_lba > hi || p.first_lba > p.last_lba {
            bail!(
                "partition {} ({}) at LBA {}..={} is outside {lo}..={hi}",
                i + 1,
                p.name,
                p.first_lba,
                p.last_lba
            );
        }
        for q in &parts[..i] {
            if p.first_lba <= q.last_lba && q.first_lba <= p.last_lba {
                bail!("partitions {} and {} overlap", q.name, p.name);
            }
        }
    }

    // Protective MBR.
    let mut mbr = [0u8; 512];
    if let Some(code) = boot_code {
        ensure!(
            code.len() <= 440,
            "MBR boot code is {} bytes (at most 440)",
            code.len()
        );
        mbr[..code.len()].copy_from_slice(code);
    }
    let e = &mut mbr[446..462];
    e[0] = 0x00; // not active
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    e[4] = 0xee;
    e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    e[12..16].copy_from_slice(&(u32::try_from(sectors - 1).unwrap_or(u32::MAX)).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    f.write_all_at(&mbr, 0)
        .context("writing the protective MBR")?;

    // Entries.
    let mut table = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, p) in parts.iter().enumerate() {
        entry(
            &mut table[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize],
            p,
        )?;
    }
    let table_crc = crc32(&table);

    let header = |my_lba: u64, alt_lba: u64, entries_lba: u64| -> [u8; 512] {
        let mut h = [0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
        h[40..48].copy_from_slice(&lo.to_le_bytes());
        h[48..56].copy_from_slice(&hi.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid.to_disk());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&table_crc.to_le_bytes());
        let c = crc32(&h[..92]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        h
    };
    let last = sectors - 1;
    let backup_entries = last - ENTRY_SECTORS;
    f.write_all_at(&header(1, last, 2), SECTOR)
        .context("writing the GPT header")?;
    f.write_all_at(&table, 2 * SECTOR)
        .context("writing the GPT entries")?;
    f.write_all_at(&table, backup_entries * SECTOR)
        .context("writing the backup GPT entries")?;
    f.write_all_at(&header(last, 1, backup_entries), last * SECTOR)
        .context("writing the backup GPT header")?;
    Ok(())
}

/// `p` as a GPT entry into `e` (zeroed, then its fields).
fn entry(e: &mut [u8], p: &Partition) -> Result<()> {
    e.fill(0);
    e[0..16].copy_from_slice(&p.type_guid.to_disk());
    e[16..32].copy_from_slice(&p.guid.to_disk());
    e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
    e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
    e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
    let units: Vec<u16> = p.name.encode_utf16().collect();
    ensure!(
        units.len() <= 36,
        "partition name `{}` is longer than 36 characters",
        p.name
    );
    for (j, u) in units.iter().enumerate() {
        e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
    }
    Ok(())
}

/// Add `part` to the GPT of `f`, whose data is already written past the
/// disk's old end: it takes the table's first free entry, the disk grows
/// to hold the backup table after `part` (its size a multiple of `align`
/// bytes), the backup table and header move to the new end, the
/// protective MBR covers the new size and the old backup is zeroed. Used
/// on tables kiln did not write (xorriso's hybrid ISO), so the table's own
/// entry count and size are kept. Returns the entry's number (from 1) and
/// the disk's new size.
pub fn add_partition(f: &File, part: &Partition, align: u64) -> Result<(usize, u64)> {
    ensure!(
        align.is_multiple_of(SECTOR) && align > 0,
        "alignment {align} is not a multiple of {SECTOR}"
    );
    let mut mbr = [0u8; 512];
    f.read_exact_at(&mut mbr, 0).context("reading the MBR")?;
    let mut h = [0u8; 512];
    f.read_exact_at(&mut h, SECTOR)
        .context("reading the GPT header")?;
    ensure!(&h[0..8] == b"EFI PART", "no GPT header at LBA 1");
    let u32_at = |h: &[u8; 512], o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
    let u64_at = |h: &[u8; 512], o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
    let hsize = u32_at(&h, 12) as usize;
    ensure!((92..=512).contains(&hsize), "GPT header size {hsize}");
    let mut unsealed = h;
    unsealed[16..20].fill(0);
    ensure!(
        crc32(&unsealed[..hsize]) == u32_at(&h, 16),
        "the GPT header's CRC does not match"
    );
    let (old_backup, entries_lba) = (u64_at(&h, 32), u64_at(&h, 72));
    let (n, size) = (u32_at(&h, 80) as usize, u32_at(&h, 84) as usize);
    ensure!(
        (128..=4096).contains(&size) && (1..=4096).contains(&n),
        "implausible GPT entry table ({n} entries of {size} bytes)"
    );
    let mut table = vec![0u8; n * size];
    f.read_exact_at(&mut table, entries_lba * SECTOR)
        .context("reading the GPT entries")?;
    ensure!(
        crc32(&table) == u32_at(&h, 88),
        "the GPT entries' CRC does not match"
    );
    let table_sectors = ((n * size) as u64).div_ceil(SECTOR);
    let bytes = ((part.last_lba + 2 + table_sectors) * SECTOR).next_multiple_of(align);
    let last = bytes / SECTOR - 1;
    let backup_entries = last - table_sectors;
    ensure!(
        part.first_lba > old_backup && part.first_lba <= part.last_lba && part.last_lba < backup_entries,
        "partition {} at LBA {}..={} is not between the old end (LBA {old_backup}) and the new backup table (LBA {backup_entries})",
        part.name,
        part.first_lba,
        part.last_lba
    );
    let used = |i: &usize| table[i * size..i * size + 16].iter().any(|&b| b != 0);
    // The end of the data the table describes: the old backup is cleared only past it.
    let data_end = (0..n)
        .filter(used)
        .map(|i| u64::from_le_bytes(table[i * size + 40..i * size + 48].try_into().unwrap()))
        .max()
        .unwrap_or(0);
    let slot = (0..n)
        .find(|i| !used(i))
        .context("the GPT has no free entry")?;
    entry(&mut table[slot * size..(slot + 1) * size], part)?;
    let table_crc = crc32(&table);
    let header = |my_lba: u64, alt_lba: u64, entries: u64| {
        let mut o = h;
        o[24..32].copy_from_slice(&my_lba.to_le_bytes());
        o[32..40].copy_from_slice(&alt_lba.to_le_bytes());
        o[48..56].copy_from_slice(&(backup_entries - 1).to_le_bytes());
        o[72..80].copy_from_slice(&entries.to_le_bytes());
        o[88..92].copy_from_slice(&table_crc.to_le_bytes());
        o[16..20].fill(0);
        let c = crc32(&o[..hsize]);
        o[16..20].copy_from_slice(&c.to_le_bytes());
        o
    };
    f.set_len(bytes)
        .context("growing the disk for the backup GPT")?;
    // The old backup (entries, then header) sits in no partition now.
    let old_entries = old_backup.saturating_sub(table_sectors);
    if old_entries > data_end {
        let zeros = vec![0u8; ((table_sectors + 1) * SECTOR) as usize];
        f.write_all_at(&zeros, old_entries * SECTOR)
            .context("clearing the old backup GPT")?;
    }
    f.write_all_at(&table, backup_entries * SECTOR)
        .context("writing the backup GPT entries")?;
    f.write_all_at(&header(last, 1, backup_entries), last * SECTOR)
        .context("writing the backup GPT header")?;
    f.write_all_at(&table, entries_lba * SECTOR)
        .context("writing the GPT entries")?;
    f.write_all_at(&header(1, last, entries_lba), SECTOR)
        .context("writing the GPT header")?;
    // The protective MBR entry spans the disk.
    if mbr[510..512] == [0x55, 0xaa] {
        for i in 0..4 {
            let e = &mut mbr[446 + 16 * i..462 + 16 * i];
            if e[4] == 0xee {
                let start = u32::from_le_bytes(e[8..12].try_into().unwrap()) as u64;
                let old_end = (start + u32::from_le_bytes(e[12..16].try_into().unwrap()) as u64)
                    .saturating_sub(1);
                let count = u32::try_from(bytes / SECTOR - start).unwrap_or(u32::MAX);
                // The end's CHS in the geometry the table was written with,
                // when it is the usual 64 heads × 32 sectors (xorriso's),
                // else "not representable".
                let end_chs = match (chs(old_end), chs(start + count as u64 - 1)) {
                    (Some(old), Some(new)) if old == [e[5], e[6], e[7]] => new,
                    _ => [0xff; 3],
                };
                e[5..8].copy_from_slice(&end_chs);
                e[12..16].copy_from_slice(&count.to_le_bytes());
            }
        }
        f.write_all_at(&mbr, 0)
            .context("writing the protective MBR")?;
    }
    Ok((slot + 1, bytes))
}

/// An LBA as an MBR CHS address in a 64-head, 32-sector geometry (head,
/// sector and cylinder's high bits, cylinder's low bits); `None` past
/// cylinder 1023.
fn chs(lba: u64) -> Option<[u8; 3]> {
    const HEADS: u64 = 64;
    const SECTORS: u64 = 32;
    let c = lba / (HEADS * SECTORS);
    let h = lba / SECTORS % HEADS;
    let s = lba % SECTORS + 1;
    (c <= 1023).then_some([h as u8, (s as u8) | ((c >> 8) as u8) << 6, c as u8])
}

/// CRC-32 (IEEE 802.3, reflected), as GPT uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_guid_order() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        let g = Guid::parse(TYPE_ESP).unwrap();
        assert_eq!(hex::encode(g.to_disk()), "28732ac11ff8d211ba4b00a0c93ec93b");
        assert_eq!(g.to_string_lower(), TYPE_ESP);
        assert_eq!(Guid::from_disk(g.to_disk()), g);
        let bios = Guid::parse(TYPE_BIOS_BOOT).unwrap();
        assert_eq!(&bios.to_disk(), b"Hah!IdontNeedEFI");
        let linux = Guid::parse(TYPE_LINUX_DATA).unwrap();
        assert_eq!(
            hex::encode(linux.to_disk()),
            "af3dc60f838472478e793d69d8477de4"
        );
        assert!(Guid::parse("nope").is_err());
    }

    /// A new disk image file of `bytes` in `dir`.
    fn disk(dir: &tempfile::TempDir, bytes: u64) -> (File, camino::Utf8PathBuf) {
        let p = camino::Utf8PathBuf::from_path_buf(dir.path().join("d.img")).unwrap();
        let f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        f.set_len(bytes).unwrap();
        (f, p)
    }

    fn esp() -> Partition {
        Partition {
            type_guid: Guid::parse(TYPE_ESP).unwrap(),
            guid: Guid(crate::epoch::derived_id(1, "p")),
            first_lba: 2048,
            last_lba: 4095,
            name: "esp".into(),
            attributes: 0,
        }
    }

    #[test]
    fn table_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = 8 << 20;
        let (f, _) = disk(&dir, bytes);
        let part = esp();
        write(
            &f,
            bytes,
            Guid(crate::epoch::derived_id(1, "d")),
            std::slice::from_ref(&part),
            None,
        )
        .unwrap();
        let mut h = [0u8; 512];
        f.read_exact_at(&mut h, 512).unwrap();
        assert_eq!(&h[0..8], b"EFI PART");
        let stored = u32::from_le_bytes(h[16..20].try_into().unwrap());
        h[16..20].fill(0);
        assert_eq!(crc32(&h[..92]), stored);
        let mut e = [0u8; 128];
        f.read_exact_at(&mut e, 1024).unwrap();
        assert_eq!(u64::from_le_bytes(e[32..40].try_into().unwrap()), 2048);
        // Overlaps and out-of-range partitions are refused.
        let mut bad = part.clone();
        bad.last_lba = bytes / 512;
        assert!(write(&f, bytes, Guid([0; 16]), &[bad], None).is_err());
        assert!(write(&f, bytes, Guid([0; 16]), &[part.clone(), part], None).is_err());
    }

    /// A partition added to a grown disk reads back (scan's own GPT
    /// reader, primary and backup), the backup table moved to the new end,
    /// the old one zeroed, the protective MBR spanning the new size.
    #[test]
    fn a_partition_added_after_growing_reads_back_from_either_header() {
        let dir = tempfile::tempdir().unwrap();
        let small: u64 = 4 << 20;
        let (f, p) = disk(&dir, small);
        let d = Guid(crate::epoch::derived_id(1, "d"));
        write(&f, small, d, &[esp()], None).unwrap();
        f.set_len(small + (1 << 20)).unwrap();
        let data = Partition {
            type_guid: Guid::parse(TYPE_LINUX_DATA).unwrap(),
            guid: Guid(crate::epoch::derived_id(1, "q")),
            first_lba: small / SECTOR,
            last_lba: small / SECTOR + 2047,
            name: "data".into(),
            attributes: 0,
        };
        // Not past the old end: refused.
        let mut early = data.clone();
        early.first_lba = 100;
        assert!(add_partition(&f, &early, 2048).is_err());
        let (number, big) = add_partition(&f, &data, 2048).unwrap();
        assert_eq!(number, 2);
        // The backup table (32 sectors) and header after the data: 33
        // sectors, rounded up to whole 2048-byte blocks (9).
        assert_eq!(big, small + (1 << 20) + 9 * 2048);
        assert_eq!(f.metadata().unwrap().len(), big);
        let read = || {
            let w = crate::scan::source::Window::open(&p).unwrap();
            crate::scan::disk::partitions(&w).unwrap()
        };
        let parts = read();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[1].start, parts[1].len), (small, 1 << 20));
        assert_eq!(parts[1].kind, TYPE_LINUX_DATA);
        // The old backup header is gone; the MBR's 0xee entry spans the disk.
        let mut old = [0u8; 512];
        f.read_exact_at(&mut old, small - SECTOR).unwrap();
        assert!(old.iter().all(|&b| b == 0));
        let mut mbr = [0u8; 512];
        f.read_exact_at(&mut mbr, 0).unwrap();
        assert_eq!(
            u32::from_le_bytes(mbr[458..462].try_into().unwrap()) as u64,
            big / SECTOR - 1
        );
        // With the primary header destroyed, the backup at the end tells the same.
        f.write_all_at(&[0u8; 512], SECTOR).unwrap();
        let again = read();
        assert_eq!(again.len(), 2);
        assert_eq!((again[1].start, again[1].len), (small, 1 << 20));
        // kiln edits only a table it read whole: no primary header, no edit.
        assert!(add_partition(&f, &data, 2048).is_err());
    }
}
