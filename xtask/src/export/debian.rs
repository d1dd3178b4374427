//! Container images from Debian packages (`source: { debian: … }`): a cached
//! mmdebstrap step writes the root as a tarball (`image-root-<name>-<arch>`),
//! and the image step ([`super::oci::ImageOp`]) filters it into one
//! deterministic layer: entries in the tarball's order, minus what a
//! container does not need, with the recipe's overlay laid over it.
//!
//! Dropped: the contents of `dev/`, `var/lib/apt/lists/`, `var/cache/apt/`
//! and `var/log/` (their directories stay), the build host's `etc/hostname`
//! and `etc/resolv.conf` (the container runtime provides both), and, unless
//! `docs: true`, `usr/share/{doc,man,info}` and translations under
//! `usr/share/locale/` (each package's `usr/share/doc/<pkg>/copyright`
//! stays). `etc/machine-id` is kept empty. A hard link whose target is
//! dropped or replaced becomes the file itself. Extended attributes (file
//! capabilities, as PAX `SCHILY.xattr.*` records) stay with their entries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::plan::{Input, Plan, StepBuilder, OUT};
use crate::recipe::payloads::{DebianSource, ImagePayload};
use crate::recipe::{Arch, Resolved};

/// The tarball inside the root step's output.
pub const ROOTFS_TAR: &str = "rootfs.tar";

/// The name of an image's root step.
pub fn root_step_name(img: &ImagePayload, arch: Arch) -> String {
    format!("image-root-{}-{arch}", img.name)
}

/// The root step: mmdebstrap of the image's packages into `rootfs.tar`,
/// keyed by its command and mmdebstrap's version (not by kiln's code).
pub fn root_step(
    r: &Resolved,
    img: &ImagePayload,
    d: &DebianSource,
    arch: Arch,
) -> Result<StepBuilder> {
    let suite = d.suite();
    let mirrors = crate::qcow2::rootfs::suite_lines(r, suite, "main")?;
    let out = Utf8Path::new(OUT).join(ROOTFS_TAR);
    let n = &img.name;
    let at = |needle: &str| crate::recipe::locate(&r.file, &format!("name: {n}"), needle);
    let mut cmd = crate::tools::mmdebstrap::image_root_tar(
        arch.debian(),
        suite,
        d.variant.name(),
        &d.packages,
        &mirrors,
        &out,
        r.epoch,
    );
    let main = r.recipe.qcow2.mirror()?;
    // Hints are tried in order: a mirror without the architecture also
    // makes every package unlocatable, so it comes first.
    cmd = cmd
        .hint(
            format!("doesn't support architecture '{arch}'"),
            format!(
                "{}: image `{n}`: the mirror {main} has no {arch} packages for suite `{suite}`; \
                 drop {arch} from `architectures` or set `qcow2.mirror` to a mirror that has it",
                crate::recipe::locate(&r.file, "architectures", "architectures:")
            ),
        )
        .hint(
            "does not have a Release file",
            format!(
                "{}: image `{n}`: the mirror {main} has no suite `{suite}` \
                 (source.debian.suite); pick a suite the mirror serves, or set `qcow2.mirror`",
                if d.suite.is_some() && at("suite:").contains(':') {
                    at("suite:")
                } else {
                    at("debian:")
                }
            ),
        );
    for p in &d.packages {
        let advice = format!(
            "{}: image `{n}`: Debian {suite} has no package `{p}` for {arch} \
             (source.debian.packages); check its name (`apt-cache policy {p}`) or the suite",
            at(p)
        );
        cmd = cmd
            .hint(format!("Unable to locate package {p}"), advice.clone())
            .hint(
                format!("Package '{p}' has no installation candidate"),
                advice,
            );
    }
    let mut b = StepBuilder::new(
        root_step_name(img, arch),
        format!(
            "Debian {suite} root of image `{n}` ({}) with mmdebstrap",
            d.variant.name()
        ),
    )
    .input(Input::value("suite", suite))
    .input(Input::value("architecture", arch))
    .input(Input::value("variant", d.variant.name()))
    .input(Input::value("packages", d.packages.join(",")))
    .input(Input::value("mirrors", mirrors.join(" | ")))
    .input(Input::value("SOURCE_DATE_EPOCH", r.epoch))
    .cmd(cmd)
    .long();
    if d.variant.runs_scripts() && !crate::tools::binfmt::native(arch) {
        // Package scripts of another architecture run under qemu-user
        // (`extract` runs none).
        b = b
            .requires(&crate::tools::binfmt::rule_file(arch))
            .requires("arch-test");
    }
    Ok(b)
}

/// Add the root step once; returns its index.
pub fn plan_root(
    r: &Resolved,
    plan: &mut Plan,
    img: &ImagePayload,
    d: &DebianSource,
    arch: Arch,
) -> Result<usize> {
    let name = root_step_name(img, arch);
    if let Some(i) = plan.steps.iter().position(|s| s.name == name) {
        return Ok(i);
    }
    let b = root_step(r, img, d, arch)?;
    Ok(plan.add(b))
}

/// How the root tarball becomes a layer.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Keep documentation, manual pages and translations.
    pub docs: bool,
    /// `SOURCE_DATE_EPOCH`: the overlay's mtimes, and a ceiling for the root's.
    pub epoch: i64,
}

/// What becomes of one entry of the root tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop,
    /// Kept as an empty file (`etc/machine-id`).
    Empty,
}

impl Filter {
    /// The verdict for `path` (relative, without `./`; a directory's without
    /// its trailing `/`). Directories are always kept.
    pub fn verdict(&self, path: &str, is_dir: bool) -> Verdict {
        if path.is_empty() {
            return Verdict::Drop; // the root itself: layers carry no `./`
        }
        if is_dir {
            return Verdict::Keep;
        }
        const GONE: &[&str] = &["dev/", "var/lib/apt/lists/", "var/cache/apt/", "var/log/"];
        if GONE.iter().any(|p| path.starts_with(p))
            || path == "etc/hostname"
            || path == "etc/resolv.conf"
        {
            return Verdict::Drop;
        }
        if path == "etc/machine-id" {
            return Verdict::Empty;
        }
        if !self.docs {
            if let Some(rest) = path.strip_prefix("usr/share/doc/") {
                let parts: Vec<&str> = rest.split('/').collect();
                return if parts.len() == 2 && parts[1] == "copyright" {
                    Verdict::Keep
                } else {
                    Verdict::Drop
                };
            }
            if path.starts_with("usr/share/man/") || path.starts_with("usr/share/info/") {
                return Verdict::Drop;
            }
            // Translations are in per-language directories; `locale.alias` stays.
            if let Some(rest) = path.strip_prefix("usr/share/locale/") {
                if rest.contains('/') {
                    return Verdict::Drop;
                }
            }
        }
        Verdict::Keep
    }
}

/// `./usr/bin/x` and `/usr/bin/x` -> `usr/bin/x`; `./dir/` -> `dir`.
fn normalize(p: &str) -> String {
    let p = p.strip_prefix("./").unwrap_or(p);
    let p = p.trim_start_matches('/');
    let p = if p == "." { "" } else { p };
    p.trim_end_matches('/').to_string()
}

fn entry_path(e: &tar::Entry<impl Read>) -> Result<String> {
    let p = e.path().context("reading an entry's path")?;
    let s = p
        .to_str()
        .with_context(|| format!("{}: a path that is not UTF-8", p.display()))?;
    Ok(normalize(s))
}

fn link_target(e: &tar::Entry<impl Read>) -> Result<String> {
    let l = e
        .link_name()
        .context("reading a link's target")?
        .context("a link without a target")?;
    l.to_str()
        .map(str::to_string)
        .with_context(|| format!("{}: a link target that is not UTF-8", l.display()))
}

/// One overlay entry: (relative path, is a directory).
type OverlayEntries = BTreeMap<String, std::fs::Metadata>;

fn overlay_entries(overlay: Option<&Utf8Path>) -> Result<OverlayEntries> {
    let Some(dir) = overlay else {
        return Ok(BTreeMap::new());
    };
    Ok(crate::digest::walk_sorted(dir)
        .with_context(|| format!("reading overlay {dir}"))?
        .into_iter()
        .map(|(rel, md)| (rel.to_string(), md))
        .collect())
}

/// Write the layer: the root tarball at `tar` filtered by `f`, then the
/// overlay's entries the root lacks or that replace the root's (sorted;
/// uid/gid 0, mtime = epoch, files 0644 or 0755 as git keeps them).
/// Reads the tarball twice: first its names (what is dropped or replaced,
/// and which hard links must become files), then its data.
pub fn write_layer<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    tar: &Utf8Path,
    overlay: Option<&Utf8Path>,
    f: &Filter,
) -> Result<()> {
    let over = overlay_entries(overlay)?;
    let open = || -> Result<tar::Archive<std::io::BufReader<std::fs::File>>> {
        let file = std::fs::File::open(tar).with_context(|| format!("opening {tar}"))?;
        Ok(tar::Archive::new(std::io::BufReader::with_capacity(
            1 << 20,
            file,
        )))
    };
    // Pass 1: names, kinds, hard links.
    let mut root_dirs: HashSet<String> = HashSet::new();
    let mut root_other: HashSet<String> = HashSet::new();
    // Regular files that will not be written under their own name.
    let mut gone: HashSet<String> = HashSet::new();
    // A gone file -> the first kept hard link to it, which carries its data.
    let mut promoted: HashMap<String, String> = HashMap::new();
    {
        let mut a = open()?;
        for e in a
            .entries_with_seek()
            .with_context(|| format!("reading {tar}"))?
        {
            let e = e.with_context(|| format!("reading {tar}"))?;
            let path = entry_path(&e).with_context(|| format!("reading {tar}"))?;
            let kind = e.header().entry_type();
            if kind.is_dir() {
                root_dirs.insert(path);
                continue;
            }
            root_other.insert(path.clone());
            let replaced = over.get(&path).is_some_and(|md| !md.is_dir());
            let dropped = f.verdict(&path, false) == Verdict::Drop || replaced;
            if kind.is_file() && dropped {
                gone.insert(path);
            } else if kind.is_hard_link() && !dropped {
                let target = normalize(&link_target(&e)?);
                if gone.contains(&target) && !promoted.contains_key(&target) {
                    promoted.insert(target, path);
                }
            }
        }
    }
    // The overlay cannot turn a directory into a file or the other way round.
    for (rel, md) in &over {
        if !md.is_dir() && root_dirs.contains(rel) {
            bail!(
                "overlay {}: `{rel}` is a file, but the Debian root has a directory there",
                overlay.expect("entries come from an overlay")
            );
        }
        if md.is_dir() && root_other.contains(rel) {
            bail!(
                "overlay {}: `{rel}` is a directory, but the Debian root has a file or link \
                 there (e.g. `bin` is a link to `usr/bin` in a merged-/usr root: put the files \
                 under the link's target)",
                overlay.expect("entries come from an overlay")
            );
        }
    }
    let promoted_links: HashSet<&String> = promoted.values().collect();
    // Pass 2: the entries.
    let mut a = open()?;
    for e in a.entries().with_context(|| format!("reading {tar}"))? {
        crate::signals::check()?;
        let mut e = e.with_context(|| format!("reading {tar}"))?;
        let path = entry_path(&e).with_context(|| format!("reading {tar}"))?;
        let h = e.header().clone();
        let kind = h.entry_type();
        let what = format!("{tar}: `{path}`");
        let attrs = xattrs(&mut e, &what)?;
        if kind.is_dir() {
            if f.verdict(&path, true) == Verdict::Keep {
                put_xattrs(b, &attrs, &what)?;
                let mut nh = copy_header(&h, kind, 0, f.epoch, &what)?;
                b.append_data(&mut nh, format!("{path}/"), std::io::empty())
                    .with_context(|| format!("archiving {what}"))?;
            }
            continue;
        }
        if kind.is_file() {
            let name = match (gone.contains(&path), promoted.get(&path)) {
                (false, _) => path.clone(),
                (true, Some(link)) => link.clone(),
                (true, None) => continue,
            };
            let size = if f.verdict(&path, false) == Verdict::Empty {
                0
            } else {
                e.size()
            };
            put_xattrs(b, &attrs, &what)?;
            let mut nh = copy_header(&h, kind, size, f.epoch, &what)?;
            b.append_data(&mut nh, &name, (&mut e).take(size))
                .with_context(|| format!("archiving {what}"))?;
            continue;
        }
        let replaced = over.get(&path).is_some_and(|md| !md.is_dir());
        if f.verdict(&path, false) == Verdict::Drop || replaced || promoted_links.contains(&path) {
            continue;
        }
        put_xattrs(b, &attrs, &what)?;
        if kind.is_hard_link() {
            let target = normalize(&link_target(&e)?);
            let target = promoted.get(&target).cloned().unwrap_or(target);
            let mut nh = copy_header(&h, kind, 0, f.epoch, &what)?;
            b.append_link(&mut nh, &path, &target)
                .with_context(|| format!("archiving {what}"))?;
        } else if kind.is_symlink() {
            let target = link_target(&e)?;
            let mut nh = copy_header(&h, kind, 0, f.epoch, &what)?;
            b.append_link(&mut nh, &path, &target)
                .with_context(|| format!("archiving {what}"))?;
        } else {
            // Device nodes and FIFOs outside dev/ (rare), as they are.
            let mut nh = copy_header(&h, kind, 0, f.epoch, &what)?;
            b.append_data(&mut nh, &path, std::io::empty())
                .with_context(|| format!("archiving {what}"))?;
        }
    }
    append_overlay(b, overlay, &over, &root_dirs, f.epoch)
}

/// The entry's extended attributes (PAX `SCHILY.xattr.*` records, e.g. a
/// file capability), in the tarball's order, to carry into the layer.
fn xattrs(e: &mut tar::Entry<impl Read>, what: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = e
        .pax_extensions()
        .with_context(|| format!("{what}: reading its PAX header"))?
    {
        for x in exts {
            let x = x.with_context(|| format!("{what}: reading its PAX header"))?;
            let key = x
                .key()
                .with_context(|| format!("{what}: a PAX key that is not UTF-8"))?;
            if key.starts_with("SCHILY.xattr.") {
                out.push((key.to_string(), x.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

/// Write `attrs` as a PAX header for the entry that follows.
fn put_xattrs<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    attrs: &[(String, Vec<u8>)],
    what: &str,
) -> Result<()> {
    if !attrs.is_empty() {
        b.append_pax_extensions(attrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .with_context(|| format!("archiving the extended attributes of {what}"))?;
    }
    Ok(())
}

/// A fresh header for a root entry: its type, mode, owner ids, device
/// numbers and mtime (at most the epoch); no owner names.
fn copy_header(
    h: &tar::Header,
    kind: tar::EntryType,
    size: u64,
    epoch: i64,
    what: &str,
) -> Result<tar::Header> {
    use tar::EntryType as T;
    anyhow::ensure!(
        matches!(
            kind,
            T::Regular | T::Directory | T::Symlink | T::Link | T::Char | T::Block | T::Fifo
        ),
        "{what}: an entry of type {kind:?}, which kiln does not put into an image layer"
    );
    let mut n = tar::Header::new_gnu();
    n.set_entry_type(kind);
    n.set_mode(h.mode().with_context(|| format!("{what}: its mode"))? & 0o7777);
    n.set_uid(h.uid().with_context(|| format!("{what}: its uid"))?);
    n.set_gid(h.gid().with_context(|| format!("{what}: its gid"))?);
    let mtime = h.mtime().with_context(|| format!("{what}: its mtime"))?;
    n.set_mtime(mtime.min(epoch.max(0) as u64));
    n.set_size(size);
    if matches!(kind, T::Char | T::Block) {
        n.set_device_major(h.device_major()?.unwrap_or(0))?;
        n.set_device_minor(h.device_minor()?.unwrap_or(0))?;
    }
    Ok(n)
}

/// The overlay's entries, sorted: directories the root lacks, every file
/// and link (replacing the root's, which were left out).
fn append_overlay<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    overlay: Option<&Utf8Path>,
    over: &OverlayEntries,
    root_dirs: &HashSet<String>,
    epoch: i64,
) -> Result<()> {
    let Some(dir) = overlay else {
        return Ok(());
    };
    for (rel, md) in over {
        let full: Utf8PathBuf = dir.join(rel);
        let ft = md.file_type();
        if ft.is_dir() {
            if !root_dirs.contains(rel) {
                let mut h = crate::archive::header(tar::EntryType::Directory, 0o755, 0, epoch);
                b.append_data(&mut h, format!("{rel}/"), std::io::empty())
                    .with_context(|| format!("archiving {full}"))?;
            }
        } else if ft.is_symlink() {
            let target =
                std::fs::read_link(&full).with_context(|| format!("reading link {full}"))?;
            let mut h = crate::archive::header(tar::EntryType::Symlink, 0o777, 0, epoch);
            b.append_link(&mut h, rel, &target)
                .with_context(|| format!("archiving link {full}"))?;
        } else if ft.is_file() {
            // As git keeps modes: executable or not.
            let mode = if md.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            let file = std::fs::File::open(&full).with_context(|| format!("opening {full}"))?;
            super::append_exact(b, rel, mode, md.len(), file, epoch, full.as_str())?;
        } else {
            bail!("{full}: device nodes, sockets and FIFOs cannot go into an image");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;

    const EPOCH: i64 = 1_700_000_000;

    /// A small root tarball as mmdebstrap writes one (`./` names).
    fn root_tar(path: &Utf8Path) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        let dir = |b: &mut tar::Builder<std::fs::File>, p: &str, mode: u32| {
            let mut h = crate::archive::header(tar::EntryType::Directory, mode, 0, EPOCH);
            b.append_data(&mut h, p, std::io::empty()).unwrap();
        };
        let file = |b: &mut tar::Builder<std::fs::File>, p: &str, mode: u32, body: &str| {
            let mut h =
                crate::archive::header(tar::EntryType::Regular, mode, body.len() as u64, EPOCH);
            b.append_data(&mut h, p, body.as_bytes()).unwrap();
        };
        let link = |b: &mut tar::Builder<std::fs::File>, kind, p: &str, t: &str| {
            let mut h = crate::archive::header(kind, 0o777, 0, EPOCH);
            b.append_link(&mut h, p, t).unwrap();
        };
        dir(&mut b, "./", 0o755);
        dir(&mut b, "./bin/", 0o755);
        file(&mut b, "./bin/busybox", 0o755, "ELF");
        b.append_pax_extensions([("SCHILY.xattr.security.capability", &b"\x01cap"[..])])
            .unwrap();
        file(&mut b, "./bin/ping", 0o755, "ELF");
        dir(&mut b, "./dev/", 0o755);
        let mut h = crate::archive::header(tar::EntryType::Char, 0o666, 0, EPOCH);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "./dev/null", std::io::empty())
            .unwrap();
        dir(&mut b, "./etc/", 0o755);
        file(&mut b, "./etc/hostname", 0o644, "buildhost\n");
        file(&mut b, "./etc/machine-id", 0o444, "0123456789abcdef\n");
        file(&mut b, "./etc/motd", 0o644, "from debian\n");
        dir(&mut b, "./tmp/", 0o1777);
        dir(&mut b, "./usr/", 0o755);
        dir(&mut b, "./usr/share/", 0o755);
        dir(&mut b, "./usr/share/doc/", 0o755);
        dir(&mut b, "./usr/share/doc/busybox/", 0o755);
        file(&mut b, "./usr/share/doc/busybox/changelog.gz", 0o644, "log");
        file(&mut b, "./usr/share/doc/busybox/copyright", 0o644, "GPL");
        // A hard link to a dropped file keeps the file's bytes.
        dir(&mut b, "./usr/share/man/", 0o755);
        file(&mut b, "./usr/share/man/x.1.gz", 0o644, "manual");
        link(
            &mut b,
            tar::EntryType::Link,
            "./usr/share/x-manual",
            "./usr/share/man/x.1.gz",
        );
        link(
            &mut b,
            tar::EntryType::Link,
            "./usr/share/x-manual2",
            "./usr/share/man/x.1.gz",
        );
        let long = format!("./usr/share/{}/deep", "n".repeat(120));
        dir(&mut b, &format!("./usr/share/{}/", "n".repeat(120)), 0o755);
        file(&mut b, &long, 0o644, "long");
        link(
            &mut b,
            tar::EntryType::Symlink,
            "./usr/share/busybox-link",
            "../../bin/busybox",
        );
        dir(&mut b, "./var/", 0o755);
        dir(&mut b, "./var/log/", 0o755);
        dir(&mut b, "./var/log/apt/", 0o755);
        file(&mut b, "./var/log/apt/history.log", 0o644, "installed");
        dir(&mut b, "./var/lib/", 0o755);
        dir(&mut b, "./var/lib/apt/", 0o755);
        dir(&mut b, "./var/lib/apt/lists/", 0o755);
        file(&mut b, "./var/lib/apt/lists/deb_Packages", 0o644, "lists");
        b.finish().unwrap();
    }

    /// (path, type, mode, uid, size, link target, content) of every entry.
    fn listing(bytes: &[u8]) -> Vec<(String, char, u32, u64, String, String)> {
        let mut a = tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let kind = match h.entry_type() {
                    tar::EntryType::Directory => 'd',
                    tar::EntryType::Symlink => 'l',
                    tar::EntryType::Link => 'h',
                    tar::EntryType::Char => 'c',
                    _ => 'f',
                };
                let path = e.path().unwrap().to_str().unwrap().to_string();
                let target = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let mut body = String::new();
                e.read_to_string(&mut body).unwrap();
                assert_eq!(h.mtime().unwrap(), EPOCH as u64, "{path}");
                (
                    path,
                    kind,
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    target,
                    body,
                )
            })
            .collect()
    }

    fn layer(docs: bool, overlay: Option<&Utf8Path>, tar: &Utf8Path) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        write_layer(&mut b, tar, overlay, &Filter { docs, epoch: EPOCH }).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn the_filter_drops_what_a_container_does_not_need_and_the_overlay_replaces() {
        let t = tempfile::tempdir().unwrap();
        let base = Utf8Path::from_path(t.path()).unwrap();
        let tar = base.join("rootfs.tar");
        root_tar(&tar);
        let over = base.join("overlay");
        std::fs::create_dir_all(over.join("srv/www")).unwrap();
        std::fs::create_dir_all(over.join("etc")).unwrap();
        std::fs::write(over.join("srv/www/index.html"), "hello\n").unwrap();
        std::fs::write(over.join("etc/motd"), "from the overlay\n").unwrap();
        std::fs::write(over.join("srv/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            over.join("srv/run.sh"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::set_permissions(
            over.join("srv/www/index.html"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let bytes = layer(false, Some(&over), &tar);
        let got = listing(&bytes);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        let n = "n".repeat(120);
        assert_eq!(
            names,
            [
                "bin/",
                "bin/busybox",
                "bin/ping",
                "dev/",
                "etc/",
                "etc/machine-id",
                "tmp/",
                "usr/",
                "usr/share/",
                "usr/share/doc/",
                "usr/share/doc/busybox/",
                "usr/share/doc/busybox/copyright",
                "usr/share/man/",
                "usr/share/x-manual",
                "usr/share/x-manual2",
                &format!("usr/share/{n}/"),
                &format!("usr/share/{n}/deep"),
                "usr/share/busybox-link",
                "var/",
                "var/log/",
                "var/log/apt/",
                "var/lib/",
                "var/lib/apt/",
                "var/lib/apt/lists/",
                "etc/motd",
                "srv/",
                "srv/run.sh",
                "srv/www/",
                "srv/www/index.html",
            ]
        );
        let get = |p: &str| got.iter().find(|e| e.0 == p).unwrap().clone();
        assert_eq!(get("bin/busybox").2, 0o755);
        // The file capability stays with its file, and only there.
        let mut a = tar::Archive::new(&bytes[..]);
        let caps: Vec<(String, Vec<u8>)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_str().unwrap().to_string();
                let found: Vec<Vec<u8>> = e
                    .pax_extensions()
                    .unwrap()
                    .map(|x| {
                        x.map(|x| x.unwrap())
                            .filter(|x| x.key().unwrap() == "SCHILY.xattr.security.capability")
                            .map(|x| x.value_bytes().to_vec())
                            .collect()
                    })
                    .unwrap_or_default();
                (path, found.concat())
            })
            .filter(|(_, v)| !v.is_empty())
            .collect();
        assert_eq!(caps, [("bin/ping".to_string(), b"\x01cap".to_vec())]);
        assert_eq!(get("tmp/").2, 0o1777, "the root's directory modes stay");
        assert_eq!(get("etc/machine-id").5, "", "machine-id is emptied");
        // The first link carries the dropped manual's bytes, the second links to it.
        assert_eq!(get("usr/share/x-manual").1, 'f');
        assert_eq!(get("usr/share/x-manual").5, "manual");
        assert_eq!(get("usr/share/x-manual2").1, 'h');
        assert_eq!(get("usr/share/x-manual2").4, "usr/share/x-manual");
        assert_eq!(get("usr/share/busybox-link").4, "../../bin/busybox");
        assert_eq!(get(&format!("usr/share/{n}/deep")).5, "long");
        let motd = get("etc/motd");
        assert_eq!(
            (motd.2, motd.3, motd.5.as_str()),
            (0o644, 0, "from the overlay\n")
        );
        assert_eq!(get("srv/run.sh").2, 0o755, "executable as git keeps it");
        assert_eq!(get("srv/www/index.html").2, 0o644);
        // The same bytes every time.
        assert_eq!(bytes, layer(false, Some(&over), &tar));
        // docs: true keeps documentation and manuals (and the manual itself).
        let with_docs = listing(&layer(true, None, &tar));
        let names: Vec<&str> = with_docs.iter().map(|e| e.0.as_str()).collect();
        for p in [
            "usr/share/doc/busybox/changelog.gz",
            "usr/share/man/x.1.gz",
            "etc/motd",
        ] {
            assert!(names.contains(&p), "{p}: {names:?}");
        }
        assert!(!names.contains(&"etc/hostname") && !names.contains(&"dev/null"));
        let x2 = with_docs
            .iter()
            .find(|e| e.0 == "usr/share/x-manual2")
            .unwrap();
        assert_eq!((x2.1, x2.4.as_str()), ('h', "usr/share/man/x.1.gz"));
    }

    #[test]
    fn an_overlay_that_turns_a_directory_into_a_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let base = Utf8Path::from_path(t.path()).unwrap();
        let tar = base.join("rootfs.tar");
        root_tar(&tar);
        let over = base.join("overlay");
        std::fs::create_dir_all(&over).unwrap();
        std::fs::write(over.join("tmp"), "x").unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let e = write_layer(
            &mut b,
            &tar,
            Some(&over),
            &Filter {
                docs: false,
                epoch: EPOCH,
            },
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("`tmp` is a file, but the Debian root has a directory"),
            "{e:#}"
        );
    }

    /// The root step's hints name the recipe line of what mmdebstrap could
    /// not find; arm64 needs qemu-user only for variants that run scripts.
    #[test]
    fn the_root_step_points_mmdebstrap_failures_at_the_recipe() {
        let t = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(t.path()).unwrap();
        let file = root.join("recipe.yaml");
        let text = "appliance:\n  name: t\n  version: '1'\narchitectures: [arm64]\n\
                    qcow2:\n  mirror: http://deb.example/debian\npayloads:\n  images:\n\
                    \x20   - name: web\n      source:\n        debian:\n          packages:\n\
                    \x20           - busybox-static\n            - no-such-package-kiln\n\
                    \x20         suite: trixie\n          variant: VARIANT\n      dest: /opt/img\n";
        let root_cmd = |variant: &str| {
            std::fs::write(&file, text.replace("VARIANT", variant)).unwrap();
            let r = crate::recipe::load_resolved(&file, root).unwrap();
            let img = &r.recipe.payloads.images[0];
            let crate::recipe::payloads::ImageSource::Debian(d) = &img.source else {
                panic!("a debian source")
            };
            let s = root_step(&r, img, d, Arch::Arm64)
                .unwrap()
                .finish(root, &root.join("cache"));
            let Action::Cmd(c) = &s.actions[0] else {
                panic!("a command")
            };
            (c.clone(), s.needs.clone())
        };
        let (c, needs) = root_cmd("extract");
        assert!(c.args.contains(&"--variant=extract".to_string()));
        assert!(c
            .args
            .contains(&"deb http://deb.example/debian trixie main".to_string()));
        assert_eq!(
            needs,
            ["mmdebstrap"],
            "extract runs no scripts: no qemu-user"
        );
        let hint = |needle: &str| {
            c.hints
                .iter()
                .find(|(n, _)| n.contains(needle))
                .map(|(_, a)| a.clone())
                .unwrap_or_else(|| panic!("no hint for {needle}: {:?}", c.hints))
        };
        let h = hint("Unable to locate package no-such-package-kiln");
        assert!(h.starts_with(&format!("{file}:14: image `web`")), "{h}");
        let h = hint("does not have a Release file");
        assert!(
            h.starts_with(&format!("{file}:15: ")) && h.contains("suite `trixie`"),
            "{h}"
        );
        let h = hint("doesn't support architecture 'arm64'");
        assert!(h.starts_with(&format!("{file}:4: ")), "{h}");
        let (_, needs) = root_cmd("essential");
        assert!(needs.contains(&"arch-test".to_string()), "{needs:?}");
    }

    #[test]
    fn verdicts() {
        let f = Filter {
            docs: false,
            epoch: EPOCH,
        };
        assert_eq!(
            f.verdict("usr/share/locale/locale.alias", false),
            Verdict::Keep
        );
        assert_eq!(
            f.verdict("usr/share/locale/de/LC_MESSAGES/x.mo", false),
            Verdict::Drop
        );
        assert_eq!(f.verdict("usr/share/info/dir", false), Verdict::Drop);
        assert_eq!(f.verdict("var/log", true), Verdict::Keep);
        assert_eq!(
            f.verdict("var/cache/apt/pkgcache.bin", false),
            Verdict::Drop
        );
        assert_eq!(f.verdict("etc/resolv.conf", false), Verdict::Drop);
        assert_eq!(f.verdict("", true), Verdict::Drop);
        assert_eq!(normalize("./usr/bin/"), "usr/bin");
        assert_eq!(normalize("./"), "");
    }
}
