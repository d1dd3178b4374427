//! cpio archives (initramfs images): `newc`/`crc` (070701/070702) and
//! portable ASCII `odc` (070707). An initrd is often several archives in a
//! row (uncompressed microcode, then a compressed main archive): what follows
//! the trailer is handed back to the caller as another blob.

use std::io::Read;

use anyhow::{bail, Context, Result};

pub struct Header {
    pub name: String,
    pub mode: u32,
    pub size: u64,
}

/// Read the next header; `None` at `TRAILER!!!`. `pos` tracks the offset
/// (newc pads headers and data to 4 bytes).
pub fn next<R: Read>(r: &mut R, pos: &mut u64) -> Result<Option<Header>> {
    let mut magic = [0u8; 6];
    r.read_exact(&mut magic)
        .context("truncated cpio archive (no trailer)")?;
    *pos += 6;
    let (mode, size, namesize, newc) = match &magic {
        b"070701" | b"070702" => {
            let mut h = [0u8; 104];
            r.read_exact(&mut h).context("truncated cpio header")?;
            *pos += 104;
            let f = |i: usize| -> Result<u64> {
                let s = std::str::from_utf8(&h[i * 8..i * 8 + 8]).context("corrupt cpio header")?;
                u64::from_str_radix(s, 16).context("corrupt cpio header (not hex)")
            };
            (f(1)? as u32, f(6)?, f(11)?, true)
        }
        b"070707" => {
            let mut h = [0u8; 70];
            r.read_exact(&mut h).context("truncated cpio header")?;
            *pos += 70;
            let f = |a: usize, b: usize| -> Result<u64> {
                let s = std::str::from_utf8(&h[a..b]).context("corrupt cpio header")?;
                u64::from_str_radix(s, 8).context("corrupt cpio header (not octal)")
            };
            (f(12, 18)? as u32, f(59, 70)?, f(53, 59)?, false)
        }
        _ => bail!(
            "corrupt cpio archive: bad header magic at offset {}",
            *pos - 6
        ),
    };
    if namesize == 0 || namesize > 65536 {
        bail!("corrupt cpio header: name size {namesize}");
    }
    let mut name = vec![0u8; namesize as usize];
    r.read_exact(&mut name).context("truncated cpio name")?;
    *pos += namesize;
    if newc {
        skip_pad(r, pos)?;
    }
    let name = String::from_utf8_lossy(name.strip_suffix(b"\0").unwrap_or(&name)).into_owned();
    if name == "TRAILER!!!" {
        return Ok(None);
    }
    Ok(Some(Header { name, mode, size }))
}

/// After an entry's data: skip the padding to 4 bytes (newc only).
pub fn skip_pad<R: Read>(r: &mut R, pos: &mut u64) -> Result<()> {
    let pad = (4 - (*pos % 4)) % 4;
    if pad > 0 {
        let mut b = [0u8; 4];
        r.read_exact(&mut b[..pad as usize])
            .context("truncated cpio padding")?;
        *pos += pad;
    }
    Ok(())
}

pub fn is_newc(head: &[u8]) -> bool {
    head.starts_with(b"070701") || head.starts_with(b"070702")
}
