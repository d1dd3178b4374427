//! The MBR ("dos") partition table of a Raspberry Pi card, written and read
//! in process. The Pi's firmware reads only MBR tables; a partition's
//! PARTUUID is `<disk id>-<nn>` (the 32-bit id at byte 440, in hex, and the
//! partition number).

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, ensure, Context, Result};

pub const SECTOR: u64 = 512;
/// Partitions start on 4 MiB boundaries (SD cards' erase blocks), and a
/// card image's size is a multiple of it.
pub const ALIGN: u64 = 4 << 20;
/// Partition type of a FAT32 file system addressed by LBA.
pub const TYPE_FAT32_LBA: u8 = 0x0c;
/// Partition type of a Linux file system.
pub const TYPE_LINUX: u8 = 0x83;

/// One primary partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Part {
    pub kind: u8,
    pub first_lba: u64,
    pub sectors: u64,
}

impl Part {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn bytes(&self) -> u64 {
        self.sectors * SECTOR
    }
}

/// The disk id for `seed` (a derived UUID): its first 32 bits, never zero
/// (zero reads as "no id" to some tools).
pub fn disk_id(seed_uuid: &str) -> Result<u32> {
    let hex: String = seed_uuid.chars().filter(|c| *c != '-').take(8).collect();
    let id = u32::from_str_radix(&hex, 16).with_context(|| format!("disk id from {seed_uuid}"))?;
    Ok(if id == 0 { 1 } else { id })
}

/// `PARTUUID` of partition `number` (1-based) of a disk with `id`.
pub fn partuuid(id: u32, number: usize) -> String {
    format!("{id:08x}-{number:02x}")
}

/// The 512-byte sector: no boot code (the Pi's firmware does not run it),
/// the disk id, up to four primary partitions, the signature.
pub fn sector(id: u32, parts: &[Part]) -> Result<[u8; 512]> {
    ensure!(parts.len() <= 4, "an MBR holds four primary partitions");
    let mut s = [0u8; 512];
    s[440..444].copy_from_slice(&id.to_le_bytes());
    for (i, p) in parts.iter().enumerate() {
        let (Ok(first), Ok(count)) = (u32::try_from(p.first_lba), u32::try_from(p.sectors)) else {
            bail!("partition {} is beyond the 2 TiB an MBR can address", i + 1);
        };
        let e = &mut s[446 + i * 16..446 + (i + 1) * 16];
        e[0] = 0; // not "active": the Pi's firmware does not look
                  // CHS fields say "use LBA" (the maximum), as for any disk past 8 GiB.
        e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        e[4] = p.kind;
        e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        e[8..12].copy_from_slice(&first.to_le_bytes());
        e[12..16].copy_from_slice(&count.to_le_bytes());
    }
    s[510] = 0x55;
    s[511] = 0xaa;
    Ok(s)
}

pub fn write(disk: &File, id: u32, parts: &[Part]) -> Result<()> {
    disk.write_all_at(&sector(id, parts)?, 0)
        .context("writing the MBR")
}

/// A parsed table: the disk id and the used primary entries, in slot order
/// (numbered from 1 by their slot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub id: u32,
    pub parts: Vec<(usize, Part)>,
}

pub fn parse(s: &[u8]) -> Result<Table> {
    ensure!(
        s.len() >= 512 && s[510] == 0x55 && s[511] == 0xaa,
        "no MBR partition table (the boot signature 55 aa at byte 510 is missing)"
    );
    if &s[450..458] == b"EFI PART" || s[446 + 4] == 0xee {
        bail!("the disk has a GPT (protective MBR): a Raspberry Pi boots only from an MBR table");
    }
    let id = u32::from_le_bytes(s[440..444].try_into().expect("4 bytes"));
    let mut parts = Vec::new();
    for i in 0..4 {
        let e = &s[446 + i * 16..446 + (i + 1) * 16];
        let p = Part {
            kind: e[4],
            first_lba: u32::from_le_bytes(e[8..12].try_into().expect("4 bytes")) as u64,
            sectors: u32::from_le_bytes(e[12..16].try_into().expect("4 bytes")) as u64,
        };
        if p.kind != 0 && p.sectors != 0 {
            parts.push((i + 1, p));
        }
    }
    Ok(Table { id, parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips_and_names_partuuids() {
        let parts = [
            Part {
                kind: TYPE_FAT32_LBA,
                first_lba: 8192,
                sectors: 1048576,
            },
            Part {
                kind: TYPE_LINUX,
                first_lba: 8192 + 1048576,
                sectors: 3000000,
            },
        ];
        let s = sector(0x1a2b3c4d, &parts).unwrap();
        let t = parse(&s).unwrap();
        assert_eq!(t.id, 0x1a2b3c4d);
        assert_eq!(t.parts, vec![(1, parts[0]), (2, parts[1])]);
        assert_eq!(partuuid(t.id, 2), "1a2b3c4d-02");
        assert_eq!(disk_id("00000000-0000-4000-8000-000000000000").unwrap(), 1);
        assert_eq!(
            disk_id("deadbeef-0000-4000-8000-000000000000").unwrap(),
            0xdeadbeef
        );
        assert!(parse(&[0u8; 512]).is_err());
    }
}
