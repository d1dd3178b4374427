//! Partition tables, read in-process: GPT (primary header, else the backup,
//! CRCs checked) and MBR (with extended/logical partitions). A table that
//! claims to exist but does not parse is an error: the scan fails closed.

use anyhow::{bail, Context, Result};

use super::source::Window;
use crate::qcow2::gpt::Guid;

const SECTOR: u64 = 512;

#[derive(Debug, Clone)]
pub struct Partition {
    /// 1-based, as `sgdisk`/`fdisk` number them.
    pub index: u32,
    pub start: u64,
    pub len: u64,
    /// GPT type GUID (lower-case, dashed, as `crate::qcow2::gpt::TYPE_*`) or
    /// MBR type as `0xNN`.
    pub kind: String,
}

pub fn is_gpt(h: &[u8]) -> bool {
    h.len() >= 520 && &h[512..520] == b"EFI PART"
}

/// A strict MBR check: boot flags 0/0x80, at least one entry, entries inside the disk.
pub fn is_mbr(h: &[u8], len: u64) -> bool {
    if h.len() < 512 || h[510] != 0x55 || h[511] != 0xaa {
        return false;
    }
    let mut any = false;
    for e in mbr_entries(h) {
        if e.status != 0 && e.status != 0x80 {
            return false;
        }
        if e.kind == 0 || e.count == 0 {
            continue;
        }
        if e.lba == 0 || (e.lba + e.count) * SECTOR > len.max(1) {
            return false;
        }
        any = true;
    }
    any
}

/// A FAT boot sector: sane BPB and a `FAT` file-system type string.
pub fn is_fat(h: &[u8]) -> bool {
    if h.len() < 512 || h[510] != 0x55 || h[511] != 0xaa {
        return false;
    }
    if !(h[0] == 0xeb || h[0] == 0xe9) {
        return false;
    }
    let bps = u16::from_le_bytes([h[11], h[12]]);
    let spc = h[13];
    let fats = h[16];
    let typed = &h[54..57] == b"FAT" || &h[82..85] == b"FAT";
    matches!(bps, 512 | 1024 | 2048 | 4096)
        && spc.is_power_of_two()
        && (1..=4).contains(&fats)
        && typed
}

struct MbrEntry {
    status: u8,
    kind: u8,
    lba: u64,
    count: u64,
}

fn mbr_entries(sector: &[u8]) -> Vec<MbrEntry> {
    (0..4)
        .map(|i| {
            let e = &sector[446 + i * 16..446 + (i + 1) * 16];
            MbrEntry {
                status: e[0],
                kind: e[4],
                lba: u32::from_le_bytes(e[8..12].try_into().unwrap()) as u64,
                count: u32::from_le_bytes(e[12..16].try_into().unwrap()) as u64,
            }
        })
        .collect()
}

/// The partitions of a disk image: GPT if present (or if the MBR is
/// protective), else MBR.
pub fn partitions(w: &Window) -> Result<Vec<Partition>> {
    if w.len < 2 * SECTOR {
        bail!(
            "truncated: {} bytes is too small for a partitioned disk",
            w.len
        );
    }
    let mbr = w.bytes(0, 512)?;
    let protective =
        mbr[510] == 0x55 && mbr[511] == 0xaa && mbr_entries(&mbr).iter().any(|e| e.kind == 0xee);
    let gpt_sig = w.bytes(512, 8)? == b"EFI PART";
    if gpt_sig || protective {
        return gpt(w).context("reading the GPT partition table");
    }
    if mbr[510] != 0x55 || mbr[511] != 0xaa {
        bail!("no partition table (no MBR signature, no GPT header)");
    }
    mbr_partitions(w, &mbr).context("reading the MBR partition table")
}

fn gpt(w: &Window) -> Result<Vec<Partition>> {
    let primary = gpt_at(w, 1);
    let parsed = match primary {
        Ok(p) => p,
        Err(e1) => {
            let last = w.len / SECTOR - 1;
            gpt_at(w, last).with_context(|| {
                format!("the primary GPT header is bad ({e1:#}) and so is the backup")
            })?
        }
    };
    Ok(parsed)
}

fn gpt_at(w: &Window, lba: u64) -> Result<Vec<Partition>> {
    let h = w.bytes(lba * SECTOR, 512)?;
    if &h[0..8] != b"EFI PART" {
        bail!("no GPT header at LBA {lba}");
    }
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
    let hsize = u32_at(12) as usize;
    if !(92..=512).contains(&hsize) {
        bail!("GPT header at LBA {lba} has an invalid size {hsize}");
    }
    let mut copy = h[..hsize].to_vec();
    copy[16..20].fill(0);
    if crc32fast::hash(&copy) != u32_at(16) {
        bail!("GPT header at LBA {lba}: CRC mismatch (corrupt partition table)");
    }
    let entries_lba = u64_at(72);
    let n = u32_at(80) as u64;
    let esize = u32_at(84) as u64;
    if !(128..=4096).contains(&esize) || n > 4096 {
        bail!("GPT header at LBA {lba}: implausible entry table ({n} entries of {esize} bytes)");
    }
    let table = w
        .bytes(entries_lba * SECTOR, (n * esize) as usize)
        .context("reading the GPT entry table")?;
    if crc32fast::hash(&table) != u32_at(88) {
        bail!("GPT entry table at LBA {entries_lba}: CRC mismatch (corrupt partition table)");
    }
    let mut parts = Vec::new();
    for i in 0..n as usize {
        let e = &table[i * esize as usize..(i + 1) * esize as usize];
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let first = u64::from_le_bytes(e[32..40].try_into().unwrap());
        let last = u64::from_le_bytes(e[40..48].try_into().unwrap());
        if last < first {
            bail!(
                "GPT partition {}: last LBA {last} before first LBA {first}",
                i + 1
            );
        }
        parts.push(Partition {
            index: i as u32 + 1,
            start: first * SECTOR,
            len: (last - first + 1) * SECTOR,
            kind: Guid::from_disk(e[..16].try_into().expect("16 bytes")).to_string_lower(),
        });
    }
    Ok(parts)
}

fn mbr_partitions(w: &Window, mbr: &[u8]) -> Result<Vec<Partition>> {
    let mut parts = Vec::new();
    for (i, e) in mbr_entries(mbr).into_iter().enumerate() {
        if e.kind == 0 || e.count == 0 {
            continue;
        }
        if e.status != 0 && e.status != 0x80 {
            bail!(
                "MBR entry {}: invalid boot flag {:#04x} (corrupt partition table)",
                i + 1,
                e.status
            );
        }
        if matches!(e.kind, 0x05 | 0x0f | 0x85) {
            logical(w, e.lba, &mut parts)?;
            continue;
        }
        parts.push(Partition {
            index: i as u32 + 1,
            start: e.lba * SECTOR,
            len: e.count * SECTOR,
            kind: format!("{:#04x}", e.kind),
        });
    }
    Ok(parts)
}

/// Logical partitions: a chain of EBRs, each relative to the extended partition.
fn logical(w: &Window, ext_lba: u64, parts: &mut Vec<Partition>) -> Result<()> {
    let mut ebr_lba = ext_lba;
    let mut index = 5;
    for _ in 0..128 {
        let s = w
            .bytes(ebr_lba * SECTOR, 512)
            .context("reading an extended boot record")?;
        if s[510] != 0x55 || s[511] != 0xaa {
            bail!(
                "extended boot record at LBA {ebr_lba} has no signature (corrupt partition table)"
            );
        }
        let es = mbr_entries(&s);
        if es[0].kind != 0 && es[0].count != 0 {
            parts.push(Partition {
                index,
                start: (ebr_lba + es[0].lba) * SECTOR,
                len: es[0].count * SECTOR,
                kind: format!("{:#04x}", es[0].kind),
            });
            index += 1;
        }
        if es[1].kind == 0 || es[1].count == 0 {
            return Ok(());
        }
        ebr_lba = ext_lba + es[1].lba;
    }
    bail!("more than 128 logical partitions: the EBR chain loops (corrupt partition table)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbr_with_bad_flags_is_not_a_disk() {
        let mut s = vec![0u8; 512];
        s[510] = 0x55;
        s[511] = 0xaa;
        s[446] = 0x12; // not a boot flag
        s[446 + 4] = 0x83;
        s[446 + 8] = 1;
        s[446 + 12] = 1;
        assert!(!is_mbr(&s, 1 << 20));
        s[446] = 0x80;
        assert!(is_mbr(&s, 1 << 20));
    }
}
