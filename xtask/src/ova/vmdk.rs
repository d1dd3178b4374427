//! streamOptimized VMDK: the sparse extent header, the embedded text
//! descriptor, and the reproducible content id.
//!
//! Layout (VMware "Virtual Disk Format 5.0"): a 512-byte little-endian
//! `SparseExtentHeader` at offset 0, the text descriptor at
//! `descriptorOffset` sectors (NUL padded, `descriptorSize` sectors), all
//! before `overHead` sectors where the grains start. qemu-img writes a random
//! `CID=xxxxxxxx` into that descriptor; [`set_cid`] replaces it in place
//! with a value derived from the content, rewriting only the descriptor
//! region.

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

/// Byte range (inside `descriptor`) of the hex digits of the single `CID=`
/// line. qemu-img writes `CID=%x`, so there are 1 to 8 of them.
fn cid_range(descriptor: &str) -> Result<std::ops::Range<usize>> {
    let mut found = None;
    let mut at = 0;
    for line in descriptor.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("CID=") {
            let hex = rest.trim_end_matches(['\n', '\r']);
            ensure!(
                (1..=8).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                "VMDK descriptor line `{}` is not `CID=` and 1-8 hex digits",
                line.trim_end()
            );
            ensure!(
                found.is_none(),
                "the VMDK descriptor has more than one CID= line"
            );
            found = Some(at + 4..at + 4 + hex.len());
        }
        at += line.len();
    }
    found.context("the VMDK descriptor has no CID= line")
}

/// Byte range of the 32 hex digits of `ddb.longContentID = "…"`, if present.
fn long_content_id_range(descriptor: &str) -> Option<std::ops::Range<usize>> {
    let key = "ddb.longContentID = \"";
    let start = descriptor.find(key)? + key.len();
    let hex = descriptor[start..].split('"').next()?;
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| start..start + 32)
}

/// The 128-bit long content id for `cid`: 24 hex digits derived from it,
/// then the CID itself (the shape VMware writes).
fn long_content_id(cid: u32) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::new()
        .chain_update(b"kiln-vmdk-long-content-id\0")
        .chain_update(cid.to_be_bytes())
        .finalize();
    format!("{}{cid:08x}", hex::encode(&h[..12]))
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
/// `path` by `cid`, as 8 hex digits. qemu-img's random value has 1 to 8
/// digits, so the whole descriptor region (fixed size, NUL padded, before the
/// first grain) is rewritten: the new text plus NULs, the same length as
/// before, so nothing outside the region moves and the result does not
/// depend on the random value's length. Header and region are checked first.
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
    let (start, len) = h.descriptor_range()?;
    let mut region = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(start))?;
    f.read_exact(&mut region)?;
    // After the text's NUL the region may hold the tail of an older, longer
    // descriptor: qemu rewrites the CID in place (vmdk_write_cid) and a new
    // random value with fewer hex digits leaves the old last bytes behind.
    // The region is inside the metadata (checked above) and is rewritten
    // whole below, so they are cleared.
    let r = cid_range(&desc).with_context(|| format!("{path}: finding the content id"))?;
    let mut text = format!("{}{cid:08x}{}", &desc[..r.start], &desc[r.end..]);
    // VMware's vmdk-convert also writes a random 128-bit `ddb.longContentID`
    // (ending in the CID); derive it from the CID too.
    if let Some(l) = long_content_id_range(&text) {
        text.replace_range(l, &long_content_id(cid));
    }
    ensure!(
        text.len() < region.len(),
        "{path}: no room in the descriptor region for an 8-digit CID"
    );
    let mut new_region = text.clone().into_bytes();
    new_region.resize(region.len(), 0);
    f.seek(SeekFrom::Start(start))?;
    f.write_all(&new_region)
        .with_context(|| format!("writing the content id into {path}"))?;
    // Read it back: the descriptor must now be exactly the new text.
    f.seek(SeekFrom::Start(0))?;
    let (h2, after) = read_header_and_descriptor(&mut f)?;
    ensure!(
        h2 == h && after == text,
        "{path}: the descriptor did not read back as written"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESC: &str = "# Disk DescriptorFile\nversion=1\nCID=b33d6829\nparentCID=ffffffff\n\
                        createType=\"streamOptimized\"\n\nRW 131072 SPARSE \"x.vmdk\"\n";

    #[test]
    fn long_content_id_follows_the_cid() {
        let d = "CID=c23a45cd\nddb.longContentID = \"36b7c78755f44eee0810ba1ec23a45cd\"\n";
        let r = long_content_id_range(d).unwrap();
        assert_eq!(&d[r], "36b7c78755f44eee0810ba1ec23a45cd");
        let l = long_content_id(0x1234abcd);
        assert_eq!(l.len(), 32);
        assert!(l.ends_with("1234abcd"));
        assert_eq!(l, long_content_id(0x1234abcd));
        assert_ne!(l, long_content_id(0x1234abce));
        assert!(long_content_id_range(DESC).is_none());
    }

    #[test]
    fn finds_cid_and_create_type() {
        let r = cid_range(DESC).unwrap();
        assert_eq!(&DESC[r], "b33d6829");
        // qemu-img writes `%x`: fewer than 8 digits happen.
        assert_eq!(cid_range("CID=1bceaae\n").unwrap(), 4..11);
        assert_eq!(create_type(DESC), Some("streamOptimized"));
        // parentCID= is not CID=.
        assert!(cid_range("parentCID=ffffffff\n").is_err());
        assert!(cid_range("CID=123456789\n").is_err());
        assert!(cid_range("CID=xyz\n").is_err());
        assert!(cid_range("CID=00000001\nCID=00000002\n").is_err());
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
