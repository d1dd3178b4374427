//! The OVA container: a plain POSIX USTAR archive, written and read
//! in-process. Only regular files, no directory entries, no pax/GNU
//! extensions (VMware and VirtualBox read plain USTAR; extensions are where
//! importers disagree), uid/gid 0, fixed mode and mtime.

use std::io::{Read, Write};

use anyhow::{bail, ensure, Context, Result};

pub const BLOCK: u64 = 512;
/// Archives are padded to whole 10 KiB records, as tar(1) does.
pub const RECORD: u64 = 20 * BLOCK;
/// The largest member USTAR's 11-octal-digit size field holds (8 GiB - 1).
pub const MAX_MEMBER: u64 = 0o777_7777_7777;
/// Mode of every member.
pub const MODE: u32 = 0o644;

/// Refuse a member USTAR cannot hold. The standard ways past 8 GiB (pax
/// `size` records, GNU base-256 sizes) are not known to be accepted by both
/// VMware and VirtualBox, so kiln does not use them.
pub fn check_member_size(name: &str, size: u64) -> Result<()> {
    if size > MAX_MEMBER {
        bail!(
            "{name} is {size} bytes ({:.2} GiB); an OVA is a USTAR archive, whose members are at most \
             8 GiB - 1 byte ({MAX_MEMBER} bytes). Shrink the disk's used space (the VMDK is compressed, \
             so zeroed free space costs nothing), or ship the qcow2/VMDK outside an OVA.",
            size as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

fn put_octal(field: &mut [u8], v: u64) -> Result<()> {
    // n-1 digits, then NUL.
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    ensure!(
        s.len() == digits,
        "value {v} does not fit a {digits}-digit tar field"
    );
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    Ok(())
}

/// The 512-byte USTAR header of a regular file.
pub fn header(name: &str, size: u64, mtime: i64) -> Result<[u8; 512]> {
    ensure!(
        !name.is_empty() && name.len() <= 100 && name.is_ascii() && !name.contains('/'),
        "OVA member name `{name}` must be 1-100 ASCII characters without `/`"
    );
    check_member_size(name, size)?;
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    put_octal(&mut h[100..108], MODE as u64)?;
    put_octal(&mut h[108..116], 0)?;
    put_octal(&mut h[116..124], 0)?;
    put_octal(&mut h[124..136], size)?;
    put_octal(&mut h[136..148], mtime.max(0) as u64)?;
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    put_octal(&mut h[329..337], 0)?;
    put_octal(&mut h[337..345], 0)?;
    let sum = checksum(&h);
    // Six octal digits, NUL, space.
    h[148..154].copy_from_slice(format!("{sum:06o}").as_bytes());
    h[154] = 0;
    h[155] = b' ';
    Ok(h)
}

/// Header checksum: byte sum with the checksum field read as spaces.
pub fn checksum(h: &[u8; 512]) -> u64 {
    h.iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u64
            } else {
                b as u64
            }
        })
        .sum()
}

fn padding(size: u64) -> usize {
    ((BLOCK - size % BLOCK) % BLOCK) as usize
}

/// Writes members one after the other; [`Writer::finish`] adds the two zero
/// blocks and pads to a whole record.
pub struct Writer<W: Write> {
    w: W,
    written: u64,
    mtime: i64,
}

impl<W: Write> Writer<W> {
    pub fn new(w: W, mtime: i64) -> Self {
        Writer {
            w,
            written: 0,
            mtime,
        }
    }

    /// Bytes written so far (the offset of the next header).
    pub fn position(&self) -> u64 {
        self.written
    }

    fn raw(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    pub fn append_bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let h = header(name, data.len() as u64, self.mtime)?;
        self.raw(&h)?;
        self.raw(data)?;
        self.raw(&vec![0u8; padding(data.len() as u64)])
    }

    /// Append exactly `size` bytes from `r` (an error if it has fewer or
    /// more), calling `progress` with each chunk copied.
    pub fn append_reader(
        &mut self,
        name: &str,
        size: u64,
        r: &mut impl Read,
        mut progress: impl FnMut(&[u8]),
    ) -> Result<()> {
        let h = header(name, size, self.mtime)?;
        self.raw(&h)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            crate::signals::check()?;
            let want = buf.len().min(left as usize);
            let n = r
                .read(&mut buf[..want])
                .with_context(|| format!("reading {name}"))?;
            ensure!(
                n > 0,
                "{name} ended {left} bytes early (it changed while being archived?)"
            );
            self.raw(&buf[..n])?;
            progress(&buf[..n]);
            left -= n as u64;
        }
        let mut one = [0u8; 1];
        ensure!(
            r.read(&mut one)? == 0,
            "{name} grew while it was being archived"
        );
        self.raw(&vec![0u8; padding(size)])
    }

    pub fn finish(mut self) -> Result<W> {
        self.raw(&[0u8; 1024])?;
        let rest = ((RECORD - self.written % RECORD) % RECORD) as usize;
        self.raw(&vec![0u8; rest])?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// A member as read back by the linter.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub size: u64,
    /// Offset of the member's data in the archive.
    pub offset: u64,
    pub typeflag: u8,
}

/// What reading the headers found: the members and format problems.
#[derive(Debug, Default)]
pub struct Listing {
    pub members: Vec<Member>,
    pub problems: Vec<String>,
}

fn field_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn parse_octal(b: &[u8]) -> Option<u64> {
    let s = field_str(b);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// Walk the headers of the archive in `r` (data is skipped with `seek`),
/// noting everything that is not plain USTAR regular files.
pub fn list(r: &mut (impl Read + std::io::Seek), total: u64) -> Result<Listing> {
    use std::io::SeekFrom;
    let mut out = Listing::default();
    let mut at = 0u64;
    let mut gnu_noted = false;
    loop {
        if at + BLOCK > total {
            out.problems.push(if at == 0 {
                format!(
                    "the file is {total} bytes, shorter than one tar header: not a USTAR archive"
                )
            } else {
                format!("the archive ends at byte {total} without the two zero end blocks")
            });
            break;
        }
        r.seek(SeekFrom::Start(at))?;
        let mut h = [0u8; 512];
        r.read_exact(&mut h)?;
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let name = field_str(&h[0..100]);
        let prefix = field_str(&h[345..500]);
        let full = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let stored = parse_octal(&h[148..156]);
        if stored != Some(checksum(&h)) {
            out.problems.push(format!(
                "tar header of `{full}` at byte {at} has a bad checksum"
            ));
        }
        if &h[257..263] == b"ustar\0" && &h[263..265] == b"00" {
            // POSIX USTAR.
        } else if &h[257..265] == b"ustar  \0" {
            if !gnu_noted {
                out.problems
                    .push("the archive uses the GNU tar header format, not POSIX USTAR".into());
                gnu_noted = true;
            }
        } else {
            out.problems.push(format!(
                "`{full}` at byte {at} has no USTAR magic: not a USTAR archive"
            ));
            break;
        }
        let typeflag = h[156];
        let Some(size) = (if h[124] & 0x80 != 0 {
            None
        } else {
            parse_octal(&h[124..136])
        }) else {
            out.problems.push(format!(
                "`{full}`: size field is not octal (a base-256 GNU size is not USTAR)"
            ));
            break;
        };
        match typeflag {
            b'0' | 0 => {}
            b'5' => out.problems.push(format!(
                "`{full}` is a directory entry (an OVA has only files)"
            )),
            b'x' | b'g' => out
                .problems
                .push(format!("`{full}`: pax extended header (not plain USTAR)")),
            b'L' | b'K' => out
                .problems
                .push(format!("`{full}`: GNU long-name entry (not plain USTAR)")),
            t => out.problems.push(format!(
                "`{full}` has tar entry type `{}` (only regular files belong in an OVA)",
                t as char
            )),
        }
        if name.contains('/') || !prefix.is_empty() {
            out.problems.push(format!(
                "`{full}` has a directory part (OVA members sit at the top level)"
            ));
        }
        let offset = at + BLOCK;
        let end = offset + size + padding(size) as u64;
        if offset + size > total {
            out.problems.push(format!(
                "`{full}` claims {size} bytes but the archive ends first"
            ));
            break;
        }
        out.members.push(Member {
            name: full,
            size,
            offset,
            typeflag,
        });
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limit() {
        assert!(check_member_size("d.vmdk", MAX_MEMBER).is_ok());
        let e = check_member_size("d.vmdk", MAX_MEMBER + 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.vmdk") && e.contains("8 GiB"), "{e}");
        assert!(header("d.vmdk", 9 << 30, 0).is_err());
        assert!(header("d.vmdk", MAX_MEMBER, 0).is_ok());
    }

    #[test]
    fn header_fields() {
        let h = header("a.ovf", 1234, 1_700_000_000).unwrap();
        assert_eq!(&h[..5], b"a.ovf");
        assert_eq!(&h[124..136], b"00000002322\0");
        assert_eq!(parse_octal(&h[148..156]), Some(checksum(&h)));
        assert!(header("x/y", 1, 0).is_err());
        assert!(header(&"n".repeat(101), 1, 0).is_err());
    }

    #[test]
    fn round_trip() {
        let mut w = Writer::new(Vec::new(), 5);
        w.append_bytes("a.ovf", b"<x/>").unwrap();
        w.append_reader("b.vmdk", 3, &mut &b"abc"[..], |_| {})
            .unwrap();
        assert!(w.append_reader("c", 4, &mut &b"abc"[..], |_| {}).is_err());
        let mut w = Writer::new(Vec::new(), 5);
        w.append_bytes("a.ovf", b"<x/>").unwrap();
        w.append_reader("b.vmdk", 3, &mut &b"abc"[..], |_| {})
            .unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() as u64 % RECORD, 0);
        let l = list(&mut std::io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        let names: Vec<_> = l
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.size))
            .collect();
        assert_eq!(names, [("a.ovf", 4), ("b.vmdk", 3)]);
        assert_eq!(&bytes[l.members[1].offset as usize..][..3], b"abc");
    }
}
