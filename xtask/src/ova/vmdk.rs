//! streamOptimized VMDK: the sparse extent header, the embedded text
//! descriptor, and the reproducible content id.
//!
//! Layout (VMware "Virtual Disk Format 5.0"): a 512-byte little-endian
//! `SparseExtentHeader` at offset 0, the text descriptor at
//! `descriptorOffset` sectors (NUL padded, `descriptorSize` sectors), all
//! before `overHead` sectors where the grains start. qemu-img writes a random
//! `CID=xxxxxxxx` into that descriptor; [`set_cid`] replaces it in place
//! with a value derived from the content, same length, nothing else touched.

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{bail, ensure, Context, Result};
use camino::Utf8Path;

pub const SECTOR: u64 = 512;
/// `KDMV` read as a little-endian u32.
pub const MAGIC: u32 = 0x564d_444b;
/// Grains are deflate-compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Metadata markers (grain/table/footer/EOS) are present.
pub const FLAG_MARKERS: u32 = 1 << 17;
/// `compressAlgorithm` value for deflate.
pub const COMPRESS_DEFLATE: u16 = 1;
/// A descriptor larger than this is not something qemu-img or VMware write.
const MAX_DESCRIPTOR: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    /// Virtual size in sectors.
    pub capacity: u64,
    pub grain_size: u64,
    pub descriptor_offset: u64,
    pub descriptor_size: u64,
    pub overhead: u64,
    pub compress_algorithm: u16,
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Header {
    pub fn parse(b: &[u8; 512]) -> Header {
        Header {
            magic: u32le(b, 0),
            version: u32le(b, 4),
            flags: u32le(b, 8),
            capacity: u64le(b, 12),
            grain_size: u64le(b, 20),
            descriptor_offset: u64le(b, 28),
            descriptor_size: u64le(b, 36),
            overhead: u64le(b, 64),
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        }
    }

    pub fn read(r: &mut impl Read) -> std::io::Result<Header> {
        let mut b = [0u8; 512];
        r.read_exact(&mut b)?;
        Ok(Header::parse(&b))
    }

    /// Virtual disk size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.capacity.saturating_mul(SECTOR)
    }

    /// Why this is not the header of a streamOptimized extent ESXi accepts
    /// (empty: it is).
    pub fn stream_optimized_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.magic != MAGIC {
            p.push(format!(
                "no VMDK sparse extent magic `KDMV` (found {:#010x})",
                self.magic
            ));
            return p;
        }
        if self.version < 3 {
            p.push(format!(
                "VMDK header version {} (streamOptimized needs >= 3; ESXi rejects older)",
                self.version
            ));
        }
        if self.flags & FLAG_COMPRESSED == 0 || self.flags & FLAG_MARKERS == 0 {
            p.push(format!(
                "VMDK flags {:#x} lack compressed grains and/or markers (bits 16 and 17): not streamOptimized",
                self.flags
            ));
        }
        if self.compress_algorithm != COMPRESS_DEFLATE {
            p.push(format!(
                "VMDK compressAlgorithm {} (streamOptimized uses 1 = deflate)",
                self.compress_algorithm
            ));
        }
        if self.capacity == 0 {
            p.push("VMDK capacity is 0 sectors".into());
        }
        p
    }

    /// Byte range of the embedded descriptor, checked to lie inside the
    /// metadata area before the first grain.
    pub fn descriptor_range(&self) -> Result<(u64, u64)> {
        ensure!(
            self.descriptor_offset > 0 && self.descriptor_size > 0,
            "the VMDK has no embedded descriptor"
        );
        let start = self
            .descriptor_offset
            .checked_mul(SECTOR)
            .context("descriptor offset overflows")?;
        let len = self
            .descriptor_size
            .checked_mul(SECTOR)
            .context("descriptor size overflows")?;
        ensure!(
            len <= MAX_DESCRIPTOR,
            "VMDK descriptor of {len} bytes is implausibly large"
        );
        let end = start + len;
        ensure!(
            self.overhead == 0 || end <= self.overhead.saturating_mul(SECTOR),
            "VMDK descriptor (bytes {start}..{end}) overlaps the grain area (starts at sector {})",
            self.overhead
        );
        Ok((start, len))
    }
}

/// The header and the descriptor text (NUL padding removed) of a VMDK read
/// from `r`, positioned at the start of the VMDK.
pub fn read_header_and_descriptor(r: &mut (impl Read + Seek)) -> Result<(Header, String)> {
    let base = r.stream_position()?;
    let h = Header::read(r).context("reading the VMDK header")?;
    ensure!(
        h.magic == MAGIC,
        "not a VMDK sparse extent (no `KDMV` magic)"
    );
    let (start, len) = h.descriptor_range()?;
    r.seek(SeekFrom::Start(base + start))?;
    let mut d = vec![0u8; len as usize];
    r.read_exact(&mut d)
        .context("reading the VMDK descriptor")?;
    let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
    d.truncate(end);
    let text = String::from_utf8(d).context("the VMDK descriptor is not UTF-8 text")?;
    Ok((h, text))
}

/// `createType` from a descriptor.
pub fn create_type(descriptor: &str) -> Option<&str> {
    descriptor.lines().find_map(|l| {
        let v = l
            .trim()
            .strip_prefix("createType")?
            .trim_start()
            .strip_prefix('=')?;
        Some(v.trim().trim_matches('"'))
    })
}

/// Byte offset (inside `descriptor`) of the 8 hex digits of the single
/// `CID=` line.
fn cid_offset(descriptor: &str) -> Result<usize> {
    let mut found = None;
    let mut at = 0;
    for line in descriptor.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("CID=") {
            let hex = rest.trim_end_matches(['\n', '\r']);
            ensure!(
                hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                "VMDK descriptor line `{}` is not `CID=` and 8 hex digits",
                line.trim_end()
            );
            ensure!(
                found.is_none(),
                "the VMDK descriptor has more than one CID= line"
            );
            found = Some(at + 4);
        }
        at += line.len();
    }
    found.context("the VMDK descriptor has no CID= line")
}

/// A content id derived from `seed` (never the "no parent" value ffffffff).
pub fn cid_from(seed: &str) -> u32 {
    use sha2::{Digest, Sha256};
    let h = Sha256::new()
        .chain_update(b"kiln-vmdk-cid\0")
        .chain_update(seed.as_bytes())
        .finalize();
    let cid = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    if cid == u32::MAX {
        0xfffffffe
    } else {
        cid
    }
}

/// Replace the `CID=` value in the descriptor of the streamOptimized VMDK at
/// `path` by `cid`: the same 8 bytes, written in place; the header and the
/// descriptor region are checked first.
pub fn set_cid(path: &Utf8Path, cid: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {path} to set its content id"))?;
    let (h, desc) =
        read_header_and_descriptor(&mut f).with_context(|| format!("reading {path}"))?;
    let problems = h.stream_optimized_problems();
    ensure!(problems.is_empty(), "{path}: {}", problems.join("; "));
    match create_type(&desc) {
        Some("streamOptimized") => {}
        other => bail!("{path}: descriptor createType is {other:?}, not streamOptimized"),
    }
    let (start, _) = h.descriptor_range()?;
    let off = cid_offset(&desc).with_context(|| format!("{path}: finding the content id"))?;
    let new = format!("{cid:08x}");
    f.seek(SeekFrom::Start(start + off as u64))?;
    f.write_all(new.as_bytes())
        .with_context(|| format!("writing the content id into {path}"))?;
    // Read it back: the descriptor must now say exactly this.
    f.seek(SeekFrom::Start(0))?;
    let (_, after) = read_header_and_descriptor(&mut f)?;
    ensure!(
        after.len() == desc.len() && after.contains(&format!("\nCID={new}\n")),
        "{path}: the content id did not read back as CID={new}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESC: &str = "# Disk DescriptorFile\nversion=1\nCID=b33d6829\nparentCID=ffffffff\n\
                        createType=\"streamOptimized\"\n\nRW 131072 SPARSE \"x.vmdk\"\n";

    #[test]
    fn finds_cid_and_create_type() {
        let off = cid_offset(DESC).unwrap();
        assert_eq!(&DESC[off..off + 8], "b33d6829");
        assert_eq!(create_type(DESC), Some("streamOptimized"));
        // parentCID= is not CID=.
        assert!(cid_offset("parentCID=ffffffff\n").is_err());
        assert!(cid_offset("CID=12\n").is_err());
        assert!(cid_offset("CID=00000001\nCID=00000002\n").is_err());
    }

    #[test]
    fn cid_is_stable_and_not_ffffffff() {
        assert_eq!(cid_from("a"), cid_from("a"));
        assert_ne!(cid_from("a"), cid_from("b"));
        assert_ne!(cid_from("a"), u32::MAX);
    }

    #[test]
    fn header_checks() {
        let mut b = [0u8; 512];
        b[0..4].copy_from_slice(b"KDMV");
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[12..20].copy_from_slice(&2048u64.to_le_bytes());
        let h = Header::parse(&b);
        assert_eq!(h.virtual_size(), 2048 * 512);
        let p = h.stream_optimized_problems().join("\n");
        assert!(
            p.contains("version 1") && p.contains("not streamOptimized"),
            "{p}"
        );
        b[4..8].copy_from_slice(&3u32.to_le_bytes());
        b[8..12].copy_from_slice(&(FLAG_COMPRESSED | FLAG_MARKERS | 3).to_le_bytes());
        b[77..79].copy_from_slice(&1u16.to_le_bytes());
        assert!(Header::parse(&b).stream_optimized_problems().is_empty());
        b[0] = b'X';
        assert!(Header::parse(&b).stream_optimized_problems()[0].contains("magic"));
    }
}
