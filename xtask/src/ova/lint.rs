//! `ova lint`: re-read any OVA and check what VMware and VirtualBox rely on.
//!
//! - plain USTAR, only regular files, no directory entries;
//! - the `.ovf` descriptor first; the `.mf` right after it (or after a
//!   `.cert`), or last; the referenced files in `References` order;
//! - the descriptor is well-formed XML with the OVF 1.x envelope namespace;
//! - every `References/File` is present with its declared `ovf:size`, and
//!   nothing else is in the archive;
//! - the manifest's syntax, its algorithm (the one asked for), that it covers
//!   the `.ovf` and every referenced file, and every digest;
//! - every disk's VMDK: magic, header version >= 3, streamOptimized flags,
//!   `createType`, and `ovf:capacity` equal to its virtual size.
//!
//! The archive is read once for all digests; its own sha256 comes out of the
//! same pass (on a second thread), for the published `.sha256`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};

use anyhow::{Context, Result};
use camino::Utf8Path;

use super::manifest::{self, DigestAlgo, Hasher};
use super::{ovf, tar, vmdk};

/// The descriptor and manifest are read into memory; refuse absurd sizes.
const MAX_TEXT_MEMBER: u64 = 64 << 20;

#[derive(Debug)]
pub struct Report {
    /// Everything wrong (empty: the OVA passes).
    pub problems: Vec<String>,
    /// Member names in archive order.
    pub members: Vec<String>,
    /// sha256 of the whole OVA file.
    pub sha256: String,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn read_member(f: &mut std::fs::File, m: &tar::Member) -> Result<Vec<u8>> {
    anyhow::ensure!(
        m.size <= MAX_TEXT_MEMBER,
        "{} is {} bytes, too large for a descriptor/manifest",
        m.name,
        m.size
    );
    f.seek(SeekFrom::Start(m.offset))?;
    let mut b = vec![0u8; m.size as usize];
    f.read_exact(&mut b)
        .with_context(|| format!("reading {}", m.name))?;
    Ok(b)
}

/// Lint the OVA at `path`; `digest` is the manifest algorithm required.
pub fn lint(path: &Utf8Path, digest: DigestAlgo) -> Result<Report> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    let total = f.metadata()?.len();
    let listing =
        tar::list(&mut f, total).with_context(|| format!("reading the tar headers of {path}"))?;
    let mut problems = listing.problems;
    let members = listing.members;
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let by_name: BTreeMap<&str, &tar::Member> =
        members.iter().map(|m| (m.name.as_str(), m)).collect();
    if by_name.len() != members.len() {
        problems.push("a member name occurs twice in the archive".into());
    }

    // The descriptor.
    let ovfs: Vec<&tar::Member> = members
        .iter()
        .filter(|m| m.name.ends_with(".ovf"))
        .collect();
    let mut facts = ovf::Facts::default();
    let mut ovf_parsed = false;
    match ovfs.as_slice() {
        [] => problems.push("no .ovf descriptor in the archive".into()),
        [o] => {
            if members[0].name != o.name {
                problems.push(format!(
                    "the first member is `{}`; the .ovf descriptor (`{}`) must come first",
                    members[0].name, o.name
                ));
            }
            let text = read_member(&mut f, o)?;
            match std::str::from_utf8(&text) {
                Err(_) => problems.push(format!("{} is not UTF-8 text", o.name)),
                Ok(t) => match ovf::inspect(t) {
                    Ok(x) => {
                        facts = x;
                        ovf_parsed = true;
                    }
                    Err(e) => problems.push(format!("{}: {e:#}", o.name)),
                },
            }
        }
        _ => problems.push("more than one .ovf descriptor in the archive".into()),
    }
    let ovf_name = ovfs.first().map(|m| m.name.clone());

    // Manifest and certificate positions.
    let mfs: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].name.ends_with(".mf"))
        .collect();
    let certs: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].name.ends_with(".cert"))
        .collect();
    let mut entries = Vec::new();
    let mf_name = match mfs.as_slice() {
        [] => {
            problems
                .push("no .mf manifest in the archive (importers cannot verify the files)".into());
            None
        }
        [i] => {
            let i = *i;
            let last = members.len() - 1;
            let after_cert = certs.first().is_some_and(|&c| c == 1 && i == 2);
            let before_last_cert = certs.first().is_some_and(|&c| c == last && i + 1 == last);
            if !(i == 1 || after_cert || i == last || before_last_cert) {
                problems.push(format!(
                    "the manifest `{}` is member {} of {}; it must follow the .ovf (or its .cert) or be last",
                    members[i].name,
                    i + 1,
                    members.len()
                ));
            }
            let text = read_member(&mut f, &members[i])?;
            match std::str::from_utf8(&text)
                .map_err(|_| vec!["the manifest is not UTF-8 text".to_string()])
                .and_then(manifest::parse)
            {
                Ok(e) => entries = e,
                Err(p) => {
                    problems.extend(p.into_iter().map(|p| format!("{}: {p}", members[i].name)))
                }
            }
            Some(members[i].name.clone())
        }
        _ => {
            problems.push("more than one .mf manifest in the archive".into());
            None
        }
    };

    // References: present, sized, ordered; nothing unreferenced.
    let mut referenced_members = Vec::new();
    for r in &facts.files {
        match by_name.get(r.href.as_str()) {
            None => problems.push(format!(
                "References/File `{}` (id {}) is not in the archive",
                r.href, r.id
            )),
            Some(m) => {
                referenced_members.push(m.name.clone());
                match r.size {
                    Some(s) if s != m.size => problems.push(format!(
                        "References/File `{}` declares ovf:size {s} but the member has {} bytes",
                        r.href, m.size
                    )),
                    None => problems.push(format!("References/File `{}` has no ovf:size", r.href)),
                    _ => {}
                }
            }
        }
    }
    let special = |n: &str| {
        Some(n) == ovf_name.as_deref() || Some(n) == mf_name.as_deref() || n.ends_with(".cert")
    };
    let data_order: Vec<String> = names.iter().filter(|n| !special(n)).cloned().collect();
    let ref_set: BTreeSet<&str> = facts.files.iter().map(|r| r.href.as_str()).collect();
    for n in &data_order {
        if !ref_set.contains(n.as_str()) {
            problems.push(format!(
                "`{n}` is in the archive but not in the descriptor's References"
            ));
        }
    }
    let present_order: Vec<&String> = data_order
        .iter()
        .filter(|n| ref_set.contains(n.as_str()))
        .collect();
    let want_order: Vec<&String> = referenced_members.iter().collect();
    if present_order != want_order {
        problems.push(format!(
            "files are in the order {present_order:?}; the descriptor's References order is {want_order:?}"
        ));
    }

    // Manifest coverage and algorithm.
    let mut seen = BTreeSet::new();
    let mut hashers: BTreeMap<String, (Hasher, String)> = BTreeMap::new();
    for e in &entries {
        if !seen.insert(e.file.clone()) {
            problems.push(format!("the manifest lists `{}` twice", e.file));
        }
        if e.algo != digest.manifest_name() {
            problems.push(format!(
                "the manifest uses {} for `{}`, but {} is required{}",
                e.algo,
                e.file,
                digest.manifest_name(),
                if digest == DigestAlgo::Sha256 {
                    " (current vSphere rejects SHA1: \"Invalid OVF checksum algorithm\")"
                } else {
                    ""
                }
            ));
        }
        if Some(e.file.as_str()) == mf_name.as_deref() {
            problems.push("the manifest lists itself".into());
            continue;
        }
        match (by_name.get(e.file.as_str()), Hasher::by_name(&e.algo)) {
            (None, _) => problems.push(format!(
                "the manifest lists `{}`, which is not in the archive",
                e.file
            )),
            (Some(_), Some(h)) => {
                hashers.insert(e.file.clone(), (h, e.hex.clone()));
            }
            (Some(_), None) => {}
        }
    }
    if mf_name.is_some() {
        for n in ovf_name.iter().chain(referenced_members.iter()) {
            if !seen.contains(n) {
                problems.push(format!("the manifest does not cover `{n}`"));
            }
        }
    }

    // One pass over the file: member digests here, the whole-file sha256 on a second thread.
    let mut order: Vec<&tar::Member> = members
        .iter()
        .filter(|m| hashers.contains_key(&m.name))
        .collect();
    order.sort_by_key(|m| m.offset);
    let mut whole = manifest::Background::spawn(Hasher::new(DigestAlgo::Sha256));
    f.seek(SeekFrom::Start(0))?;
    let mut pos = 0u64;
    let mut p = crate::ui::Progress::bytes("lint", total);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        crate::signals::check()?;
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {path}"))?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        whole.feed(chunk);
        let end = pos + n as u64;
        for m in &order {
            let (a, b) = (m.offset.max(pos), (m.offset + m.size).min(end));
            if a < b {
                let h = &mut hashers.get_mut(&m.name).expect("hasher").0;
                h.update(&chunk[(a - pos) as usize..(b - pos) as usize]);
            }
        }
        p.inc(n as u64);
        pos = end;
    }
    p.finish();
    let sha256 = whole.finish();
    for (name, (h, want)) in hashers {
        let got = h.hex();
        if got != want {
            problems.push(format!(
                "digest mismatch for `{name}`: the manifest says {want}, the file has {got}"
            ));
        }
    }

    // Disks.
    for d in &facts.disks {
        let Some(fref) = &d.file_ref else { continue };
        let Some(file) = facts.files.iter().find(|r| &r.id == fref) else {
            problems.push(format!(
                "Disk `{}` refers to file id `{fref}`, which References does not define",
                d.disk_id
            ));
            continue;
        };
        let Some(m) = by_name.get(file.href.as_str()) else {
            continue;
        };
        if d.format.as_deref() != Some(ovf::VMDK_STREAM_FORMAT) {
            problems.push(format!(
                "Disk `{}` has ovf:format {:?}, not the streamOptimized VMDK format {}",
                d.disk_id,
                d.format,
                ovf::VMDK_STREAM_FORMAT
            ));
        }
        f.seek(SeekFrom::Start(m.offset))?;
        if m.size < 512 {
            problems.push(format!("`{}` is too small to be a VMDK", m.name));
            continue;
        }
        let h = match vmdk::Header::read(&mut f) {
            Ok(h) => h,
            Err(e) => {
                problems.push(format!("`{}`: reading the VMDK header: {e}", m.name));
                continue;
            }
        };
        let hp = h.stream_optimized_problems();
        let bad_magic = h.magic != vmdk::MAGIC;
        problems.extend(hp.into_iter().map(|p| format!("`{}`: {p}", m.name)));
        if bad_magic {
            continue;
        }
        f.seek(SeekFrom::Start(m.offset))?;
        match vmdk::read_header_and_descriptor(&mut f) {
            Ok((_, desc)) => match vmdk::create_type(&desc) {
                Some("streamOptimized") => {}
                other => problems.push(format!(
                    "`{}`: descriptor createType is {other:?}, not streamOptimized",
                    m.name
                )),
            },
            Err(e) => problems.push(format!("`{}`: {e:#}", m.name)),
        }
        match d.capacity {
            None => problems.push(format!("Disk `{}` has no ovf:capacity", d.disk_id)),
            Some(c) if c != h.virtual_size() => problems.push(format!(
                "Disk `{}` declares ovf:capacity {c} bytes but `{}` has a virtual size of {} bytes",
                d.disk_id,
                m.name,
                h.virtual_size()
            )),
            _ => {}
        }
    }
    if facts.disks.is_empty() && ovf_parsed {
        problems.push("the descriptor has no DiskSection/Disk".into());
    }
    Ok(Report {
        problems,
        members: names,
        sha256,
    })
}
