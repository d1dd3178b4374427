//! ext2/3/4, read in-process from a window of an image: superblock, group
//! descriptors, inodes, extent trees and block maps, directories. No mount,
//! no root, no temporary copy. Anything it does not understand (unknown
//! incompatible features, bad magic numbers, blocks outside the file system,
//! directory loops) is an error: the scan fails closed.

use std::collections::HashSet;

use anyhow::{bail, Context, Result};

use super::source::{Window, HOLE};

const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_MMP: u32 = 0x100;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;
const SUPPORTED: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;

const FL_ENCRYPT: u32 = 0x800;
const FL_EXTENTS: u32 = 0x80000;
const FL_INLINE: u32 = 0x1000_0000;

pub struct Fs {
    w: Window,
    bs: u64,
    blocks: u64,
    ipg: u64,
    inode_size: u64,
    inode_tables: Vec<u64>,
    inodes: u64,
}

/// What a directory entry is.
pub enum Node {
    /// A regular file: its data as `(offset in the image window, length)` runs
    /// in file order, holes (sparse or unwritten blocks) as
    /// `(`[`HOLE`]`, length)` runs of zeros, so the runs read back the file's
    /// exact bytes; and its size.
    File {
        runs: Vec<(u64, u64)>,
        size: u64,
        inline: Option<Vec<u8>>,
    },
    Symlink,
    Other,
}

/// What an inode records besides its data (nanoseconds are left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Type and permission bits, as `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

impl Fs {
    pub fn open(w: Window) -> Result<Fs> {
        let sb = w.bytes(1024, 1024).context("reading the ext superblock")?;
        let u16_at = |o: usize| u16::from_le_bytes(sb[o..o + 2].try_into().unwrap()) as u64;
        let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().unwrap()) as u64;
        if u16_at(56) != 0xef53 {
            bail!("not an ext2/3/4 file system (bad superblock magic)");
        }
        let log = u32_at(24);
        if log > 6 {
            bail!("corrupt ext superblock: block size 2^(10+{log})");
        }
        let bs = 1024u64 << log;
        let incompat = u32_at(96) as u32;
        if incompat & INCOMPAT_RECOVER != 0 {
            bail!("the ext file system needs journal recovery (not cleanly unmounted): its files may be incomplete");
        }
        if incompat & INCOMPAT_JOURNAL_DEV != 0 {
            bail!("this is an external ext journal device, not a file system");
        }
        if incompat & INCOMPAT_META_BG != 0 {
            bail!("ext feature meta_bg is not supported by kiln's reader");
        }
        let unknown = incompat & !SUPPORTED;
        if unknown != 0 {
            bail!("unsupported ext incompatible features {unknown:#x}");
        }
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let blocks = u32_at(4) | if is64 { u32_at(0x150) << 32 } else { 0 };
        let first_data = u32_at(20);
        let bpg = u32_at(32);
        let ipg = u32_at(40);
        let inodes = u32_at(0);
        let inode_size = if u32_at(76) >= 1 { u16_at(88) } else { 128 };
        if bpg == 0 || ipg == 0 || !(128..=bs).contains(&inode_size) {
            bail!("corrupt ext superblock (blocks/inodes per group, inode size)");
        }
        if blocks * bs > w.len {
            bail!(
                "truncated: the ext file system says {} bytes ({} blocks), its container holds {}",
                blocks * bs,
                blocks,
                w.len
            );
        }
        let desc = if is64 { u16_at(0xfe).max(32) } else { 32 };
        let groups = (blocks - first_data).div_ceil(bpg);
        let gdt = w
            .bytes((first_data + 1) * bs, (groups * desc) as usize)
            .context("reading the ext group descriptors")?;
        let mut inode_tables = Vec::with_capacity(groups as usize);
        for g in 0..groups as usize {
            let d = &gdt[g * desc as usize..(g + 1) * desc as usize];
            let lo = u32::from_le_bytes(d[8..12].try_into().unwrap()) as u64;
            let hi = if desc >= 64 {
                u32::from_le_bytes(d[0x28..0x2c].try_into().unwrap()) as u64
            } else {
                0
            };
            let t = lo | (hi << 32);
            if t >= blocks {
                bail!("corrupt ext group descriptor {g}: inode table at block {t} is outside the file system");
            }
            inode_tables.push(t);
        }
        Ok(Fs {
            w,
            bs,
            blocks,
            ipg,
            inode_size,
            inode_tables,
            inodes,
        })
    }

    fn inode(&self, ino: u64) -> Result<Vec<u8>> {
        if ino == 0 || ino > self.inodes {
            bail!("corrupt ext directory: inode {ino} does not exist");
        }
        let g = ((ino - 1) / self.ipg) as usize;
        let idx = (ino - 1) % self.ipg;
        let table = *self
            .inode_tables
            .get(g)
            .context("inode group out of range")?;
        self.w.bytes(
            table * self.bs + idx * self.inode_size,
            self.inode_size as usize,
        )
    }

    fn block_ok(&self, b: u64, n: u64) -> Result<()> {
        if b.checked_add(n).is_none_or(|e| e > self.blocks) {
            bail!(
                "corrupt ext file system: blocks {b}..{} lie outside it ({} blocks)",
                b + n,
                self.blocks
            );
        }
        Ok(())
    }

    /// Look at inode `ino`.
    pub fn node(&self, ino: u64) -> Result<Node> {
        let raw = self.inode(ino)?;
        let mode = u16::from_le_bytes([raw[0], raw[1]]) as u32;
        let flags = u32::from_le_bytes(raw[0x20..0x24].try_into().unwrap());
        let size = u32::from_le_bytes(raw[4..8].try_into().unwrap()) as u64
            | (u32::from_le_bytes(raw[0x6c..0x70].try_into().unwrap()) as u64) << 32;
        match mode & 0o170000 {
            0o100000 | 0o040000 => {}
            0o120000 => return Ok(Node::Symlink),
            _ => return Ok(Node::Other),
        }
        self.data(ino, &raw, flags, size)
    }

    /// Ownership, permissions and modification time of inode `ino`.
    pub fn meta(&self, ino: u64) -> Result<Meta> {
        let raw = self.inode(ino)?;
        let u16_at = |o: usize| u16::from_le_bytes([raw[o], raw[o + 1]]) as u32;
        Ok(Meta {
            mode: u16_at(0),
            uid: u16_at(2) | u16_at(0x78) << 16,
            gid: u16_at(24) | u16_at(0x7a) << 16,
            mtime: i32::from_le_bytes(raw[16..20].try_into().unwrap()) as i64,
        })
    }

    /// The target of the symbolic link at inode `ino`: kept in the inode
    /// itself when short (a "fast" link), else in its data blocks.
    pub fn link_target(&self, ino: u64) -> Result<Vec<u8>> {
        let raw = self.inode(ino)?;
        let flags = u32::from_le_bytes(raw[0x20..0x24].try_into().unwrap());
        let size = u32::from_le_bytes(raw[4..8].try_into().unwrap()) as u64;
        if size < 60 && flags & (FL_EXTENTS | FL_INLINE) == 0
            || flags & FL_INLINE != 0 && size <= 60
        {
            return Ok(raw[0x28..0x28 + size as usize].to_vec());
        }
        match self.data(ino, &raw, flags, size)? {
            Node::File {
                inline: Some(b), ..
            } => Ok(b),
            Node::File { runs, .. } => self.read_runs(&runs, size),
            _ => unreachable!("data() describes a file"),
        }
    }

    /// The data of inode `ino` (its raw bytes `raw`): inline, or as runs.
    /// A file's bytes from its runs (holes read as zeros).
    fn read_runs(&self, runs: &[(u64, u64)], size: u64) -> Result<Vec<u8>> {
        let mut v = Vec::with_capacity(size as usize);
        for &(off, len) in runs {
            if off == HOLE {
                v.resize(v.len() + len as usize, 0);
            } else {
                v.extend(self.w.bytes(off, len as usize)?);
            }
        }
        Ok(v)
    }

    fn data(&self, ino: u64, raw: &[u8], flags: u32, size: u64) -> Result<Node> {
        if flags & FL_ENCRYPT != 0 {
            bail!("inode {ino} is encrypted (fscrypt): kiln cannot read it");
        }
        if flags & FL_INLINE != 0 {
            if size > 60 {
                bail!("inode {ino}: inline data larger than 60 bytes is not supported by kiln's reader");
            }
            return Ok(Node::File {
                runs: Vec::new(),
                size,
                inline: Some(raw[0x28..0x28 + size as usize].to_vec()),
            });
        }
        let iblock = &raw[0x28..0x28 + 60];
        let mut runs: Vec<(u64, u64, u64)> = Vec::new(); // (logical block, physical block, count)
        if flags & FL_EXTENTS != 0 {
            self.extents(iblock, 0, &mut runs)
                .with_context(|| format!("reading the extent tree of inode {ino}"))?;
        } else {
            self.blockmap(iblock, &mut runs)
                .with_context(|| format!("reading the block map of inode {ino}"))?;
        }
        runs.sort_by_key(|r| r.0);
        let mut out = Vec::new();
        let mut at = 0u64; // bytes of the file covered so far
        for (lb, pb, n) in runs {
            let start = lb * self.bs;
            if start >= size || start < at {
                continue;
            }
            if start > at {
                out.push((HOLE, start - at));
            }
            let len = (n * self.bs).min(size - start);
            out.push((pb * self.bs, len));
            at = start + len;
        }
        if at < size {
            out.push((HOLE, size - at));
        }
        Ok(Node::File {
            runs: out,
            size,
            inline: None,
        })
    }

    fn extents(&self, node: &[u8], depth: u32, runs: &mut Vec<(u64, u64, u64)>) -> Result<()> {
        if depth > 8 || node.len() < 12 {
            bail!("corrupt extent tree (too deep)");
        }
        let u16_at = |o: usize| u16::from_le_bytes([node[o], node[o + 1]]) as u64;
        let u32_at = |o: usize| u32::from_le_bytes(node[o..o + 4].try_into().unwrap()) as u64;
        if u16_at(0) != 0xf30a {
            bail!("corrupt extent header (bad magic)");
        }
        let entries = u16_at(2) as usize;
        let level = u16_at(6);
        if 12 + entries * 12 > node.len() {
            bail!("corrupt extent header ({entries} entries do not fit)");
        }
        for i in 0..entries {
            let e = 12 + i * 12;
            if level == 0 {
                let lb = u32_at(e);
                let mut len = u16_at(e + 4);
                let uninit = len > 32768;
                if uninit {
                    len -= 32768;
                }
                let pb = (u16_at(e + 6) << 32) | u32_at(e + 8);
                self.block_ok(pb, len)?;
                // Unwritten extents read as zeros: left to the hole runs.
                if !uninit {
                    runs.push((lb, pb, len));
                }
            } else {
                let leaf = u32_at(e + 4) | (u16_at(e + 8) << 32);
                self.block_ok(leaf, 1)?;
                let child = self.w.bytes(leaf * self.bs, self.bs as usize)?;
                self.extents(&child, depth + 1, runs)?;
            }
        }
        Ok(())
    }

    fn blockmap(&self, iblock: &[u8], runs: &mut Vec<(u64, u64, u64)>) -> Result<()> {
        let ptr =
            |b: &[u8], i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap()) as u64;
        let per = self.bs / 4;
        let push = |lb: u64, pb: u64, runs: &mut Vec<(u64, u64, u64)>| -> Result<()> {
            if pb == 0 {
                return Ok(());
            }
            self.block_ok(pb, 1)?;
            match runs.last_mut() {
                Some(r) if r.0 + r.2 == lb && r.1 + r.2 == pb => r.2 += 1,
                _ => runs.push((lb, pb, 1)),
            }
            Ok(())
        };
        for i in 0..12 {
            push(i as u64, ptr(iblock, i), runs)?;
        }
        // Indirect levels: (pointer, depth, first logical block).
        let mut stack = vec![
            (ptr(iblock, 12), 1u32, 12u64),
            (ptr(iblock, 13), 2, 12 + per),
            (ptr(iblock, 14), 3, 12 + per + per * per),
        ];
        while let Some((b, level, first)) = stack.pop() {
            if b == 0 {
                continue;
            }
            self.block_ok(b, 1)?;
            let blk = self.w.bytes(b * self.bs, self.bs as usize)?;
            let span = per.pow(level - 1);
            for i in 0..per as usize {
                let p = ptr(&blk, i);
                let lb = first + i as u64 * span;
                if level == 1 {
                    push(lb, p, runs)?;
                } else if p != 0 {
                    stack.push((p, level - 1, lb));
                }
            }
        }
        Ok(())
    }

    /// Every path in the file system with its inode, depth first, sorted by name.
    pub fn walk(&self, mut visit: impl FnMut(&str, u64, bool) -> Result<()>) -> Result<()> {
        let mut seen = HashSet::new();
        let mut stack = vec![(String::new(), 2u64)];
        while let Some((dir, ino)) = stack.pop() {
            crate::signals::check()?;
            if !seen.insert(ino) {
                bail!("corrupt ext file system: directory inode {ino} is reachable twice (a loop)");
            }
            let data = match self.node(ino)? {
                Node::File { runs, size, inline } => {
                    if size > 256 << 20 {
                        bail!("corrupt ext directory {dir}/: {size} bytes");
                    }
                    match inline {
                        Some(b) => b,
                        None => self.read_runs(&runs, size)?,
                    }
                }
                _ => bail!("corrupt ext file system: {dir}/ is not a directory"),
            };
            let mut entries = Vec::new();
            let mut p = 0usize;
            while p + 8 <= data.len() {
                let child = u32::from_le_bytes(data[p..p + 4].try_into().unwrap()) as u64;
                let rec = u16::from_le_bytes([data[p + 4], data[p + 5]]) as usize;
                let nlen = data[p + 6] as usize;
                if rec < 8 || p + rec > data.len() || 8 + nlen > rec {
                    bail!("corrupt ext directory {dir}/ (inode {ino}): bad entry at offset {p}");
                }
                if child != 0 && nlen > 0 {
                    let name = &data[p + 8..p + 8 + nlen];
                    if name != b"." && name != b".." {
                        let name = String::from_utf8_lossy(name).into_owned();
                        if name.contains('/') {
                            bail!("corrupt ext directory {dir}/: a name contains `/`");
                        }
                        entries.push((name, child));
                    }
                }
                p += rec;
            }
            entries.sort();
            let mut subdirs = Vec::new();
            for (name, child) in entries {
                let path = format!("{dir}/{name}");
                let raw = self.inode(child)?;
                let is_dir = u16::from_le_bytes([raw[0], raw[1]]) as u32 & 0o170000 == 0o040000;
                visit(&path, child, is_dir)?;
                if is_dir {
                    subdirs.push((path, child));
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }
}
