//! ISO 9660, read in-process: Rock Ridge names (and symlinks, relocated
//! directories), else Joliet, else plain ISO names. File data is handed out
//! as windows of the image, so nothing is extracted to disk.

use std::collections::HashSet;

use anyhow::{bail, Context, Result};

use super::source::Window;

const BLOCK: u64 = 2048;

pub struct Entry {
    pub path: String,
    pub kind: Kind,
}

pub enum Kind {
    /// Data as `(offset, length)` runs (several for multi-extent files).
    File(Vec<(u64, u64)>),
    Symlink,
}

struct Rec {
    extent: u64,
    size: u64,
    dir: bool,
    multi: bool,
    name: String,
    symlink: bool,
    relocated: bool,
    child_link: Option<u64>,
}

pub struct Iso {
    w: Window,
    root: (u64, u64),
    /// Names from Rock Ridge (true) or Joliet/plain ISO (false).
    rock_ridge: bool,
    joliet: bool,
    /// Bytes the ISO file system occupies (partitions after it are scanned separately).
    pub volume_bytes: u64,
}

impl Iso {
    pub fn open(w: Window) -> Result<Iso> {
        let mut pvd: Option<Vec<u8>> = None;
        let mut svd: Option<Vec<u8>> = None;
        for i in 16..64u64 {
            let d = w
                .bytes(i * BLOCK, BLOCK as usize)
                .context("reading ISO volume descriptors")?;
            if &d[1..6] != b"CD001" {
                bail!("corrupt ISO 9660: volume descriptor {i} has no CD001 signature");
            }
            match d[0] {
                1 if pvd.is_none() => pvd = Some(d),
                2 if matches!(&d[88..91], b"%/@" | b"%/C" | b"%/E") => svd = Some(d),
                255 => break,
                _ => {}
            }
        }
        let pvd = pvd.context("corrupt ISO 9660: no primary volume descriptor")?;
        let bs = u16::from_le_bytes([pvd[128], pvd[129]]) as u64;
        if bs != BLOCK {
            bail!("ISO 9660 logical block size {bs} is not supported");
        }
        let space = u32::from_le_bytes(pvd[80..84].try_into().unwrap()) as u64;
        let root_of = |d: &[u8]| {
            let r = &d[156..190];
            (
                u32::from_le_bytes(r[2..6].try_into().unwrap()) as u64,
                u32::from_le_bytes(r[10..14].try_into().unwrap()) as u64,
            )
        };
        let proot = root_of(&pvd);
        let mut iso = Iso {
            w,
            root: proot,
            rock_ridge: false,
            joliet: false,
            volume_bytes: space * BLOCK,
        };
        // Rock Ridge: the root's "." record carries a SUSP "SP" entry.
        let first = iso.read_dir_records(proot.0, proot.1, false)?;
        iso.rock_ridge = first.first().is_some_and(|r| r.name == "\0sp");
        if !iso.rock_ridge {
            if let Some(s) = svd {
                iso.root = root_of(&s);
                iso.joliet = true;
            }
        }
        Ok(iso)
    }

    fn read_dir_records(&self, extent: u64, size: u64, parse_names: bool) -> Result<Vec<Rec>> {
        if size > 64 << 20 {
            bail!("corrupt ISO 9660: a directory of {size} bytes");
        }
        let data = self
            .w
            .bytes(extent * BLOCK, size as usize)
            .context("reading an ISO directory")?;
        let mut out = Vec::new();
        let mut p = 0usize;
        while p < data.len() {
            let len = data[p] as usize;
            if len == 0 {
                p = (p / BLOCK as usize + 1) * BLOCK as usize;
                continue;
            }
            if len < 34 || p + len > data.len() {
                bail!("corrupt ISO 9660 directory at block {extent}: bad record at offset {p}");
            }
            let r = &data[p..p + len];
            let nlen = r[32] as usize;
            if 33 + nlen > len {
                bail!("corrupt ISO 9660 directory at block {extent}: name overflows its record");
            }
            let raw_name = &r[33..33 + nlen];
            let flags = r[25];
            let mut rec = Rec {
                extent: u32::from_le_bytes(r[2..6].try_into().unwrap()) as u64,
                size: u32::from_le_bytes(r[10..14].try_into().unwrap()) as u64,
                dir: flags & 2 != 0,
                multi: flags & 0x80 != 0,
                name: String::new(),
                symlink: false,
                relocated: false,
                child_link: None,
            };
            let su_start = 33 + nlen + (1 - nlen % 2);
            let su = if su_start < len {
                &r[su_start..]
            } else {
                &[][..]
            };
            if !parse_names {
                rec.name = if su.starts_with(b"SP") {
                    "\0sp".into()
                } else {
                    String::new()
                };
                out.push(rec);
                p += len;
                continue;
            }
            if raw_name == b"\0" || raw_name == b"\x01" {
                p += len;
                continue;
            }
            let mut rr_name: Option<String> = None;
            if self.rock_ridge {
                self.susp(su, &mut rec, &mut rr_name, 0)?;
            }
            rec.name = match rr_name {
                Some(n) => n,
                None if self.joliet => {
                    let units: Vec<u16> = raw_name
                        .chunks(2)
                        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                        .collect();
                    strip_version(&String::from_utf16_lossy(&units))
                }
                None => strip_version(&String::from_utf8_lossy(raw_name)),
            };
            if rec.name.is_empty() || rec.name.contains('/') || rec.name == "." || rec.name == ".."
            {
                bail!(
                    "corrupt ISO 9660 directory at block {extent}: invalid name {:?}",
                    rec.name
                );
            }
            out.push(rec);
            p += len;
        }
        Ok(out)
    }

    fn susp(
        &self,
        mut su: &[u8],
        rec: &mut Rec,
        name: &mut Option<String>,
        depth: u32,
    ) -> Result<()> {
        if depth > 16 {
            bail!("corrupt Rock Ridge data: continuation areas loop");
        }
        while su.len() >= 4 {
            let l = su[2] as usize;
            if l < 4 || l > su.len() {
                break;
            }
            let e = &su[..l];
            match &e[..2] {
                b"NM" if l >= 5 => {
                    let flags = e[4];
                    if flags & 0x6 == 0 {
                        name.get_or_insert_with(String::new)
                            .push_str(&String::from_utf8_lossy(&e[5..]));
                    }
                }
                b"SL" => rec.symlink = true,
                b"RE" => rec.relocated = true,
                b"CL" if l >= 12 => {
                    rec.child_link = Some(u32::from_le_bytes(e[4..8].try_into().unwrap()) as u64)
                }
                b"CE" if l >= 28 => {
                    let blk = u32::from_le_bytes(e[4..8].try_into().unwrap()) as u64;
                    let off = u32::from_le_bytes(e[12..16].try_into().unwrap()) as u64;
                    let n = u32::from_le_bytes(e[20..24].try_into().unwrap()) as usize;
                    if n > 65536 {
                        bail!("corrupt Rock Ridge continuation area ({n} bytes)");
                    }
                    let more = self
                        .w
                        .bytes(blk * BLOCK + off, n)
                        .context("reading a Rock Ridge continuation area")?;
                    self.susp(&more, rec, name, depth + 1)?;
                }
                b"ST" => break,
                _ => {}
            }
            su = &su[l..];
        }
        Ok(())
    }

    /// Every file and symlink, depth first.
    pub fn walk(&self, mut visit: impl FnMut(Entry) -> Result<()>) -> Result<()> {
        let mut seen = HashSet::new();
        let mut stack = vec![(String::new(), self.root.0, self.root.1)];
        while let Some((dir, extent, size)) = stack.pop() {
            crate::signals::check()?;
            if !seen.insert(extent) {
                bail!("corrupt ISO 9660: directory at block {extent} is reachable twice (a loop)");
            }
            let recs = self.read_dir_records(extent, size, true)?;
            let mut subdirs = Vec::new();
            let mut i = 0;
            while i < recs.len() {
                let r = &recs[i];
                let path = format!("{dir}/{}", r.name);
                if let Some(blk) = r.child_link {
                    // A relocated directory: its "." record holds the size.
                    let dot = self.read_dir_records(blk, BLOCK, false)?;
                    let sz = dot.first().map(|d| d.size).unwrap_or(BLOCK);
                    subdirs.push((path, blk, sz));
                    i += 1;
                    continue;
                }
                if r.dir {
                    if !r.relocated {
                        subdirs.push((path, r.extent, r.size));
                    }
                    i += 1;
                    continue;
                }
                if r.symlink {
                    visit(Entry {
                        path,
                        kind: Kind::Symlink,
                    })?;
                    i += 1;
                    continue;
                }
                let mut runs = vec![(r.extent * BLOCK, r.size)];
                let mut j = i;
                while recs[j].multi && j + 1 < recs.len() && recs[j + 1].name == r.name {
                    j += 1;
                    runs.push((recs[j].extent * BLOCK, recs[j].size));
                }
                for &(off, len) in &runs {
                    if off.checked_add(len).is_none_or(|e| e > self.w.len) {
                        bail!("truncated ISO: {path} lies beyond the end of the image");
                    }
                }
                visit(Entry {
                    path,
                    kind: Kind::File(runs),
                })?;
                i = j + 1;
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }
}

fn strip_version(n: &str) -> String {
    let n = n.split(';').next().unwrap_or(n);
    n.strip_suffix('.').unwrap_or(n).to_string()
}
