//! An artifact's inventory: every member at every nesting level, with its
//! size, its sha256 and, where the format records them, its ownership,
//! permissions and modification time, and link targets. It is a visitor of
//! the scan's walker ([`super::walk`]), which opens what the scan opens and
//! hashes each file as it reads it ([`Visit::DETAIL`]); entries are named as
//! the scan names findings: levels joined by `!` (`p2!/etc/hostname`,
//! `/demo-disk1.vmdk!p2!/etc/hostname`).
//!
//! `cargo xtask release --check-reproducible` takes the inventories of two
//! builds of an artifact that differ and [`diff`]s them, to name the file
//! that differs ([`first`], [`describe`]).

use std::collections::HashMap;

use anyhow::{Context, Result};
use camino::Utf8Path;
use sha2::{Digest, Sha256};

pub use super::walk::BLOCKS;
use super::walk::{self, At, Got, Member, Visit};

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A file whose bytes were hashed.
    File,
    /// A file kiln opened (its kind): its own bytes are hashed, and its
    /// members are entries of their own, under its path.
    Container(&'static str),
    Dir,
    /// A symbolic or hard link: its target is hashed.
    Link,
    /// A device node, FIFO or socket: only its metadata is recorded.
    Other,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Container(k) => k,
            Kind::Dir => "directory",
            Kind::Link => "link",
            Kind::Other => "special file",
        }
    }
}

/// One member of an artifact, at any nesting level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its nested path: levels joined by `!`; a partition is `p<N>`.
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    /// sha256 of its bytes (a link's: of its target; a directory: empty).
    /// A disk, partition or file system read in place (where most bytes
    /// are often holes) has a [`BLOCKS`] digest instead: of its non-zero
    /// 4 KiB blocks with their offsets, so that equal bytes give equal
    /// digests however sparse the file beneath, and holes are not read.
    pub sha256: String,
    /// What its container records besides the bytes, where it does (tar,
    /// cpio, ext: `mode 100644 uid 0 gid 0 mtime 1700000000`; a partition:
    /// its type and place on the disk).
    pub meta: Option<String>,
}

/// The inventory of one artifact.
#[derive(Debug)]
pub struct Inventory {
    /// What the artifact itself is (`None`: a plain file, nothing inside).
    pub kind: Option<&'static str>,
    /// Every member, in walk order (sorted names, containers before their
    /// members).
    pub entries: Vec<Entry>,
}

/// The inventory of the artifact at `path`; temporary copies go to `tmp`.
pub fn inventory(path: &Utf8Path, tmp: &Utf8Path) -> Result<Inventory> {
    let mut l = Listing::default();
    let kind =
        walk::walk(path, tmp, &mut l).with_context(|| format!("listing the contents of {path}"))?;
    Ok(Inventory {
        kind,
        entries: l.entries,
    })
}

/// How one entry differs between two inventories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Other bytes (size and sha256 on each side).
    Content { a: (u64, String), b: (u64, String) },
    /// The same bytes, other metadata.
    Meta { a: String, b: String },
    /// A file on one side, a directory or link on the other.
    Kind { a: Kind, b: Kind },
    /// Only in the first inventory.
    OnlyA,
    /// Only in the second inventory.
    OnlyB,
}

/// One entry that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub what: What,
}

/// Every entry that differs between `a` and `b`: those of `a` in its walk
/// order, then those only in `b`, in its order. A path met twice in one
/// inventory (two concatenated cpio archives naming the same file) is
/// matched by occurrence.
pub fn diff(a: &[Entry], b: &[Entry]) -> Vec<Change> {
    let keyed = |v: &[Entry]| -> Vec<(String, usize)> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        v.iter()
            .enumerate()
            .map(|(i, e)| {
                let n = seen.entry(e.path.as_str()).or_insert(0);
                *n += 1;
                let key = if *n == 1 {
                    e.path.clone()
                } else {
                    format!("{} ({})", e.path, n)
                };
                (key, i)
            })
            .collect()
    };
    let (ka, kb) = (keyed(a), keyed(b));
    let in_b: HashMap<&str, usize> = kb.iter().map(|(k, i)| (k.as_str(), *i)).collect();
    let in_a: HashMap<&str, usize> = ka.iter().map(|(k, i)| (k.as_str(), *i)).collect();
    let mut out = Vec::new();
    for (key, i) in &ka {
        let ea = &a[*i];
        let Some(&j) = in_b.get(key.as_str()) else {
            out.push(Change {
                path: key.clone(),
                what: What::OnlyA,
            });
            continue;
        };
        let eb = &b[j];
        let what = if !same_kind(ea.kind, eb.kind) {
            What::Kind {
                a: ea.kind,
                b: eb.kind,
            }
        } else if ea.sha256 != eb.sha256 || ea.size != eb.size {
            What::Content {
                a: (ea.size, ea.sha256.clone()),
                b: (eb.size, eb.sha256.clone()),
            }
        } else if ea.meta != eb.meta {
            What::Meta {
                a: ea.meta.clone().unwrap_or_default(),
                b: eb.meta.clone().unwrap_or_default(),
            }
        } else {
            continue;
        };
        out.push(Change {
            path: key.clone(),
            what,
        });
    }
    for (key, _) in &kb {
        if !in_a.contains_key(key.as_str()) {
            out.push(Change {
                path: key.clone(),
                what: What::OnlyB,
            });
        }
    }
    out
}

/// A file and a container are the same kind of entry: the same name read
/// as a tar on one side and as plain bytes on the other differs in content.
fn same_kind(a: Kind, b: Kind) -> bool {
    let file = |k| matches!(k, Kind::File | Kind::Container(_));
    a == b || file(a) && file(b)
}

/// The difference to name first: the first change in order, then, while a
/// change lies inside it (its path continues with `!`), the first of those;
/// so a disk whose partition differs because one file in it does names the
/// file, and a container that differs while all its members are the same
/// is named itself.
pub fn first(changes: &[Change]) -> Option<&Change> {
    let mut cur = changes.first()?;
    loop {
        let inside = format!("{}!", cur.path);
        match changes.iter().find(|c| c.path.starts_with(&inside)) {
            Some(c) => cur = c,
            None => return Some(cur),
        }
    }
}

/// The levels of `path` as a reader would say them: each level with what
/// it is (`partition 2 (ext file system) → /etc/hostname`), from the entries
/// of its inventory.
pub fn describe(path: &str, entries: &[Entry]) -> String {
    let kinds: HashMap<&str, Kind> = entries.iter().map(|e| (e.path.as_str(), e.kind)).collect();
    let mut parts = Vec::new();
    let mut prefix = String::new();
    for level in path.split('!') {
        if !prefix.is_empty() {
            prefix.push('!');
        }
        prefix.push_str(level);
        let name = match level.strip_prefix('p') {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                format!("partition {n}")
            }
            _ => level.to_string(),
        };
        parts.push(match kinds.get(prefix.as_str()) {
            Some(Kind::Container(k)) => format!("{name} ({k})"),
            _ => name,
        });
    }
    parts.join(" → ")
}

fn digest_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The inventory's visitor: an entry for every member, a file's filled in
/// when the walker has read it.
#[derive(Default)]
struct Listing {
    entries: Vec<Entry>,
    /// The files being read, innermost last.
    open: Vec<usize>,
}

impl Visit for Listing {
    const DETAIL: bool = true;

    fn file(&mut self, at: &At, meta: Option<String>) {
        self.open.push(self.entries.len());
        self.entries.push(Entry {
            path: at.path(),
            kind: Kind::File,
            size: 0,
            sha256: String::new(),
            meta,
        });
    }

    fn done(&mut self, _at: &At, got: Got) {
        let i = self.open.pop().expect("done follows file");
        let e = &mut self.entries[i];
        e.sha256 = got.sha256;
        e.size = got.size;
        if let Some(k) = got.kind {
            e.kind = Kind::Container(k);
        }
    }

    fn member(&mut self, at: &At, member: Member, meta: Option<String>) -> Result<()> {
        let (kind, size, sha256) = match member {
            Member::Dir => (Kind::Dir, 0, String::new()),
            Member::Other => (Kind::Other, 0, String::new()),
            Member::Link(t) => (Kind::Link, t.len() as u64, digest_of(&t)),
        };
        self.entries.push(Entry {
            path: at.path(),
            kind,
            size,
            sha256,
            meta,
        });
        Ok(())
    }

    /// The walker hashes what it reads.
    fn leaf(&mut self, _at: &At, _r: &mut dyn std::io::Read) -> Result<()> {
        Ok(())
    }

    fn opaque(&mut self, _at: &At, _what: &str, _size: u64, _sha256: &str) -> Result<()> {
        Ok(())
    }

    /// Bytes no file system kiln reads are listed as bytes.
    fn unreadable(&mut self, _why: &str) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar archive of `(path, bytes, mode)` files, each dated `mtime`.
    fn tar_of(files: &[(&str, &[u8], u32)], mtime: u64) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, bytes, mode) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(*mode);
            h.set_mtime(mtime);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *bytes).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn listed(dir: &Utf8Path, name: &str, bytes: &[u8]) -> Inventory {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        inventory(&p, dir).unwrap()
    }

    #[test]
    fn a_changed_member_of_a_compressed_tar_is_named_with_what_differs() {
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let inner = tar_of(&[("etc/motd", b"hello\n", 0o644)], 10);
        let build = |nonce: &[u8], mode: u32, extra: bool| {
            let mut files: Vec<(&str, &[u8], u32)> = vec![
                ("etc/build-info.json", b"{}", 0o644),
                ("etc/nonce", nonce, 0o644),
                ("opt/nested.tar", &inner, 0o644),
                ("usr/bin/tool", b"#!/bin/sh\n", mode),
            ];
            if extra {
                files.push(("zz/only-here", b"x", 0o644));
            }
            zstd::encode_all(&tar_of(&files, 1_700_000_000)[..], 3).unwrap()
        };
        let a = listed(dir, "a.tar.zst", &build(b"one", 0o755, false));
        let b = listed(dir, "b.tar.zst", &build(b"two", 0o700, true));
        assert_eq!(a.kind, Some("zstd stream"));
        let paths: Vec<&str> = a.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/build-info.json",
                "/etc/nonce",
                "/opt/nested.tar",
                "/opt/nested.tar!/etc/motd",
                "/usr/bin/tool"
            ]
        );
        assert_eq!(a.entries[2].kind, Kind::Container("tar archive"));
        assert_eq!(a.entries[1].sha256, digest_of(b"one"));
        assert!(
            a.entries[1].meta.as_deref().unwrap().contains("mode 644"),
            "{:?}",
            a.entries[1]
        );

        let changes = diff(&a.entries, &b.entries);
        let whats: Vec<(&str, &What)> =
            changes.iter().map(|c| (c.path.as_str(), &c.what)).collect();
        assert_eq!(whats.len(), 3, "{whats:#?}");
        assert_eq!(
            whats[0],
            (
                "/etc/nonce",
                &What::Content {
                    a: (3, digest_of(b"one")),
                    b: (3, digest_of(b"two"))
                }
            )
        );
        assert!(
            matches!(whats[1], ("/usr/bin/tool", What::Meta { a, b }) if a.contains("mode 755") && b.contains("mode 700")),
            "{whats:#?}"
        );
        assert_eq!(whats[2], ("/zz/only-here", &What::OnlyB));
        assert_eq!(first(&changes).unwrap().path, "/etc/nonce");
        // The same bytes: nothing differs.
        let again = listed(dir, "c.tar.zst", &build(b"one", 0o755, false));
        assert!(diff(&a.entries, &again.entries).is_empty());
    }

    #[test]
    fn the_deepest_difference_is_named_first() {
        let e = |path: &str, what: What| Change {
            path: path.into(),
            what,
        };
        let content = || What::Content {
            a: (1, "a".into()),
            b: (1, "b".into()),
        };
        // A disk's partition differs because a file in an image in it does.
        let changes = [
            e("/disk.vmdk", content()),
            e("/disk.vmdk!p2", content()),
            e("/disk.vmdk!p2!/etc/x", content()),
            e("/disk.vmdk!p2!/etc/y", What::OnlyB),
            e("/other", content()),
        ];
        assert_eq!(first(&changes).unwrap().path, "/disk.vmdk!p2!/etc/x");
        // A container whose members are all the same is named itself.
        assert_eq!(first(&changes[4..]).unwrap().path, "/other");
        assert!(first(&[]).is_none());
        let entries = [
            Entry {
                path: "/disk.vmdk".into(),
                kind: Kind::Container("VMDK disk"),
                size: 0,
                sha256: String::new(),
                meta: None,
            },
            Entry {
                path: "/disk.vmdk!p2".into(),
                kind: Kind::Container("ext file system"),
                size: 0,
                sha256: String::new(),
                meta: None,
            },
        ];
        assert_eq!(
            describe("/disk.vmdk!p2!/etc/x", &entries),
            "/disk.vmdk (VMDK disk) → partition 2 (ext file system) → /etc/x"
        );
    }

    #[test]
    fn ext4_images_are_listed_with_owners_modes_times_and_link_targets() {
        if !crate::testing::require(&["mkfs.ext4"]) {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(d.path()).unwrap();
        let image = |name: &str, nonce: &str| -> Inventory {
            let tree = dir.join(format!("{name}-tree"));
            std::fs::create_dir_all(tree.join("etc")).unwrap();
            std::fs::write(tree.join("etc/hostname"), "demo\n").unwrap();
            std::fs::write(tree.join("etc/nonce"), nonce).unwrap();
            std::os::unix::fs::symlink("/proc/self/mounts", tree.join("etc/mtab")).unwrap();
            let long = format!("/usr/lib/{}", "x".repeat(80));
            std::os::unix::fs::symlink(&long, tree.join("etc/long-link")).unwrap();
            // mkfs.ext4 -d copies the tree's times: pin them, or two images
            // written in different seconds differ in more than their nonce.
            crate::fsutil::set_tree_mtimes(&tree, 1_700_000_000).unwrap();
            let img = dir.join(format!("{name}.ext4"));
            let out = std::process::Command::new(crate::tools::find("mkfs.ext4").unwrap())
                .args([
                    "-q",
                    "-F",
                    "-t",
                    "ext4",
                    "-U",
                    "clear",
                    "-E",
                    "root_owner=0:0,hash_seed=00000000-0000-0000-0000-000000000000",
                    "-d",
                ])
                .arg(tree.as_str())
                .args([img.as_str(), "8M"])
                .env("E2FSPROGS_FAKE_TIME", "1700000000")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            inventory(&img, dir).unwrap()
        };
        let a = image("a", "one\n");
        let b = image("b", "two\n");
        assert_eq!(a.kind, Some("ext file system"));
        let get = |inv: &Inventory, p: &str| {
            inv.entries
                .iter()
                .find(|e| e.path == p)
                .unwrap_or_else(|| panic!("no {p} in {:#?}", inv.entries))
                .clone()
        };
        let host = get(&a, "/etc/hostname");
        assert_eq!((host.kind, host.size), (Kind::File, 5));
        assert_eq!(host.sha256, digest_of(b"demo\n"));
        assert!(host.meta.unwrap().starts_with("mode 100644 uid 0 gid 0"));
        assert_eq!(get(&a, "/etc/mtab").sha256, digest_of(b"/proc/self/mounts"));
        let long = format!("/usr/lib/{}", "x".repeat(80));
        assert_eq!(get(&a, "/etc/long-link").sha256, digest_of(long.as_bytes()));
        assert_eq!(get(&a, "/etc").kind, Kind::Dir);
        let changes = diff(&a.entries, &b.entries);
        let c = first(&changes).unwrap();
        assert_eq!(c.path, "/etc/nonce", "{changes:#?}");
        assert!(matches!(c.what, What::Content { .. }));
    }
}
