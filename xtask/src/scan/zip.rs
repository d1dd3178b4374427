//! ZIP archives (jars, wheels, Java data files), read in-process through
//! the central directory: stored and deflated members are scanned; members
//! in other methods or encrypted ones are reported as opaque.

use anyhow::{bail, Context, Result};

use super::source::Window;

pub struct Member {
    pub name: String,
    pub method: u16,
    pub encrypted: bool,
    /// Offset and length of the compressed data.
    pub data: (u64, u64),
    pub size: u64,
    pub dir: bool,
}

pub fn members(w: &Window) -> Result<Vec<Member>> {
    let tail_len = w.len.min(65536 + 22);
    let tail = w.bytes(w.len - tail_len, tail_len as usize)?;
    let eocd = (0..=tail.len().saturating_sub(22))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .context("corrupt or truncated ZIP: no end-of-central-directory record")?;
    let e = &tail[eocd..];
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64;
    let entries = u16_at(e, 10);
    let cd_size = u32_at(e, 12);
    let cd_off = u32_at(e, 16);
    if entries == 0xffff || cd_size == 0xffff_ffff || cd_off == 0xffff_ffff {
        bail!("ZIP64 archives are not supported by kiln's reader");
    }
    let cd = w
        .bytes(cd_off, cd_size as usize)
        .context("reading the ZIP central directory")?;
    let mut out = Vec::new();
    let mut p = 0usize;
    for i in 0..entries {
        if p + 46 > cd.len() || cd[p..p + 4] != [0x50, 0x4b, 0x01, 0x02] {
            bail!("corrupt ZIP central directory at entry {i}");
        }
        let c = &cd[p..];
        let flags = u16_at(c, 8);
        let method = u16_at(c, 10) as u16;
        let csize = u32_at(c, 20);
        let size = u32_at(c, 24);
        let (nl, xl, cl) = (
            u16_at(c, 28) as usize,
            u16_at(c, 30) as usize,
            u16_at(c, 32) as usize,
        );
        let local = u32_at(c, 42);
        if p + 46 + nl > cd.len() {
            bail!("corrupt ZIP central directory: a name overflows it");
        }
        let name = String::from_utf8_lossy(&c[46..46 + nl]).into_owned();
        p += 46 + nl + xl + cl;
        let lh = w
            .bytes(local, 30)
            .with_context(|| format!("reading the local header of {name}"))?;
        if lh[0..4] != [0x50, 0x4b, 0x03, 0x04] {
            bail!("corrupt ZIP: bad local header for {name}");
        }
        let start = local + 30 + u16_at(&lh, 26) + u16_at(&lh, 28);
        if start.checked_add(csize).is_none_or(|e| e > w.len) {
            bail!("truncated ZIP: {name} lies beyond the end of the archive");
        }
        out.push(Member {
            dir: name.ends_with('/'),
            name,
            method,
            encrypted: flags & 1 != 0,
            data: (start, csize),
            size,
        });
    }
    Ok(out)
}
