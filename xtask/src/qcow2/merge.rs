//! The root file system of builder 1's disk, merged in process: the
//! mmdebstrap tarball, the staged tree and kiln's generated files (identity
//! reset, fstab, network, growth). One walk of the tarball's headers sizes
//! the root file system and copies out the kernel, initrd and os-release;
//! the other streams the merged root into `mkfs.ext4 -d -`'s stdin, so every
//! file is owned as in the tarballs without root and no merged tarball or
//! root image is written in between.

use crate::archive::header;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};

use anyhow::{bail, ensure, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::spec::{DiskSpec, CARRIER_DROP_IN};

/// What the merge found in the root file system.
#[derive(Debug, Default)]
pub(crate) struct Boot {
    pub(crate) kernel: Option<(String, Utf8PathBuf)>,
    pub(crate) initrd: Option<(String, Utf8PathBuf)>,
    pub(crate) os_release: Option<Utf8PathBuf>,
    pub(crate) root_links: BTreeSet<String>,
    /// Bytes the file system needs for data (4 KiB blocks) and entries.
    pub(crate) data_bytes: u64,
    pub(crate) entries: u64,
}

/// A path kiln puts into the root, replacing what the Debian tarball has.
#[derive(Debug, Clone)]
pub(crate) enum New {
    Dir {
        mode: u32,
    },
    /// A parent directory that is created only when the rootfs lacks it.
    DirIfMissing,
    File {
        source: Utf8PathBuf,
        mode: u32,
    },
    Bytes {
        data: Vec<u8>,
        mode: u32,
    },
    Link {
        target: String,
    },
}

/// Paths of the Debian tarball that must not reach the image (per-instance
/// identity, host leftovers, apt caches). `link` is a symbolic link's target.
/// The files of [`crate::identity::IDENTITIES`] go whatever the package list
/// says (they are there only when their package is); their first-boot units
/// come with the packages ([`generated`]).
fn dropped(rel: &str, link: Option<&str>) -> bool {
    const EXACT: &[&str] = &[
        "var/lib/dbus/machine-id",
        "var/lib/systemd/random-seed",
        "etc/resolv.conf",
        "var/cache/debconf/config.dat-old",
        "var/cache/debconf/templates.dat-old",
    ];
    if EXACT.contains(&rel) || crate::identity::is_identity_file(rel, link) {
        return true;
    }
    if let Some(rest) = rel.strip_prefix("var/lib/apt/lists/") {
        return !rest.is_empty() && rest != "partial" && rest != "lock";
    }
    if let Some(rest) = rel.strip_prefix("var/cache/apt/") {
        return rest.ends_with(".bin") || (rest.starts_with("archives/") && rest.ends_with(".deb"));
    }
    if let Some(rest) = rel.strip_prefix("dev/") {
        return !rest.is_empty();
    }
    // cloud-init's record of a boot (the instance it configured, its
    // semaphores) and its logs: with them, an instance would take the image
    // for already configured and never read its config carrier.
    if let Some(rest) = rel.strip_prefix("var/lib/cloud/") {
        let top = rest.split('/').next().unwrap_or("");
        return top.starts_with("instance") || top == "data" || top == "sem";
    }
    if let Some(log) = rel.strip_prefix("var/log/") {
        return log.starts_with("cloud-init") && log.ends_with(".log");
    }
    // Debian's raspi-firmware copies the firmware into /boot/firmware, the
    // Pi's boot partition's mount point: kiln writes that partition itself,
    // and copies under a mount point are never seen.
    if let Some(rest) = rel.strip_prefix("boot/firmware/") {
        return !rest.is_empty();
    }
    false
}

/// Grows the root partition (the last of an MBR disk) to the end of the
/// disk; systemd-growfs then grows the file system (`x-systemd.growfs`).
/// Does nothing when the partition already ends there.
const GROW_ROOT_MBR: &str = r#"#!/bin/sh
# Written by kiln: grow the root partition to the end of the card (MBR).
set -eu
src=$(findmnt -no SOURCE /)
part=${src#/dev/}
num=$(cat "/sys/class/block/$part/partition")
disk=/dev/$(basename "$(readlink -f "/sys/class/block/$part/..")")
size=$(cat "/sys/class/block/$part/size")
echo ', +' | sfdisk --quiet --no-reread --no-tell-kernel -N "$num" "$disk"
partx -u -n "$num" "$disk"
grown=$(cat "/sys/class/block/$part/size")
if [ "$grown" != "$size" ]; then
  echo "kiln-grow-root: $src grown from $((size / 2048)) MiB to $((grown / 2048)) MiB"
fi
"#;

const GROW_ROOT_UNIT: &str = "[Unit]\n\
Description=Grow the root partition to the end of the card\n\
DefaultDependencies=no\n\
After=systemd-remount-fs.service\n\
Before=systemd-growfs-root.service systemd-growfs@-.service local-fs.target shutdown.target\n\
Conflicts=shutdown.target\n\
ConditionPathExists=/usr/sbin/sfdisk\n\
\n\
[Service]\n\
Type=oneshot\n\
RemainAfterExit=yes\n\
ExecStart=/usr/lib/kiln/grow-root\n\
StandardOutput=journal+console\n";

/// kiln's generated files: identity reset, fstab, network, growth, first-boot
/// units of the per-install identities of the `installed` packages. The
/// staged tree may replace any of them but `/etc/machine-id`.
pub(super) fn generated(spec: &DiskSpec, installed: &BTreeSet<String>) -> BTreeMap<String, New> {
    let mut m = BTreeMap::new();
    let bytes = |s: String, mode: u32| New::Bytes {
        data: s.into_bytes(),
        mode,
    };
    let link = |t: &str| New::Link { target: t.into() };
    let ids = &spec.ids;
    let h = &spec.hostname;
    // The mount point of the kernel's devtmpfs: the initramfs moves its /dev
    // there before switching root, and refuses a root without one. mmdebstrap
    // leaves /dev out of its tarball (`--skip=output/dev`: no device nodes).
    m.insert("dev".into(), New::DirIfMissing);
    m.insert("etc/hostname".into(), bytes(format!("{h}\n"), 0o644));
    m.insert(
        "etc/hosts".into(),
        bytes(
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{h}\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
            ),
            0o644,
        ),
    );
    let grows = match &spec.pi_boot {
        None => "systemd-repart grows the partition when the disk grows",
        Some(_) => "kiln-grow-root grows the partition to the end of the card",
    };
    let mut fstab = format!(
        "# Written by kiln. The root file system grows to fill its partition at boot\n\
         # (x-systemd.growfs); {grows}.\n\
         UUID={}\t/\text4\tdefaults,x-systemd.growfs\t0\t1\n",
        ids.root_fs
    );
    if spec.uefi {
        fstab.push_str(&format!("PARTUUID={}\t/boot/efi\tvfat\tumask=0077,nofail,x-systemd.automount,x-systemd.idle-timeout=60\t0\t2\n", ids.esp_part));
        m.insert("boot/efi".into(), New::Dir { mode: 0o755 });
    }
    match &spec.pi_boot {
        None => {
            m.insert("etc/repart.d".into(), New::DirIfMissing);
            m.insert(
                "etc/repart.d/50-root.conf".into(),
                bytes("# Grow the root partition into free space at the end of the disk.\n[Partition]\nType=root\n".into(), 0o644),
            );
        }
        Some(partuuid) => {
            // A Raspberry Pi card: the firmware partition at /boot/firmware
            // (where Debian's raspi-firmware looks), and an MBR, which
            // systemd-repart does not grow.
            // Mounted on first access: boot never waits for the partition.
            fstab.push_str(&format!(
                "PARTUUID={partuuid}\t/boot/firmware\tvfat\tdefaults,nofail,x-systemd.automount\t0\t2\n"
            ));
            m.insert("boot/firmware".into(), New::Dir { mode: 0o755 });
            m.insert("usr/lib/kiln".into(), New::DirIfMissing);
            m.insert(
                "usr/lib/kiln/grow-root".into(),
                bytes(GROW_ROOT_MBR.into(), 0o755),
            );
            m.insert(
                "etc/systemd/system/kiln-grow-root.service".into(),
                bytes(GROW_ROOT_UNIT.into(), 0o644),
            );
            m.insert(
                "etc/systemd/system/local-fs.target.wants".into(),
                New::DirIfMissing,
            );
            m.insert(
                "etc/systemd/system/local-fs.target.wants/kiln-grow-root.service".into(),
                link("/etc/systemd/system/kiln-grow-root.service"),
            );
        }
    }
    m.insert("etc/fstab".into(), bytes(fstab, 0o644));
    if let Some(c) = &spec.carrier {
        m.insert("etc/cloud".into(), New::DirIfMissing);
        m.insert("etc/cloud/cloud.cfg.d".into(), New::DirIfMissing);
        m.insert(CARRIER_DROP_IN.into(), bytes(c.drop_in(), 0o644));
    }
    m.insert(
        "etc/systemd/network/80-kiln-dhcp.network".into(),
        bytes("# DHCP on every wired interface, matched by name (not MAC).\n[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n".into(), 0o644),
    );
    let sys = "etc/systemd/system";
    m.insert(
        format!("{sys}/multi-user.target.wants/systemd-networkd.service"),
        link("/lib/systemd/system/systemd-networkd.service"),
    );
    m.insert(
        format!("{sys}/sockets.target.wants/systemd-networkd.socket"),
        link("/lib/systemd/system/systemd-networkd.socket"),
    );
    if spec.resolved {
        m.insert(
            "etc/resolv.conf".into(),
            link("../run/systemd/resolve/stub-resolv.conf"),
        );
        m.insert(
            format!("{sys}/multi-user.target.wants/systemd-resolved.service"),
            link("/lib/systemd/system/systemd-resolved.service"),
        );
        m.insert(
            format!("{sys}/dbus-org.freedesktop.resolve1.service"),
            link("/lib/systemd/system/systemd-resolved.service"),
        );
    }
    // Empty machine-id marks the first boot; systemd-firstboot must not prompt.
    m.insert(
        format!("{sys}/systemd-firstboot.service"),
        link("/dev/null"),
    );
    // Per-install identities of the installed packages (SSH host keys, the
    // snakeoil pair, …): their files are dropped from the root (`dropped`),
    // and a unit makes this instance's own at first boot, before the
    // services that use them.
    for id in crate::identity::installed(|p| installed.contains(p)) {
        let unit = id.unit_name();
        m.insert(format!("{sys}/{unit}"), bytes(id.unit(), 0o644));
        for by in id.wanted_by() {
            m.insert(format!("{sys}/{by}.wants"), New::DirIfMissing);
            m.insert(
                format!("{sys}/{by}.wants/{unit}"),
                link(&format!("/etc/systemd/system/{unit}")),
            );
        }
    }
    for dir in [
        format!("{sys}/multi-user.target.wants"),
        format!("{sys}/sockets.target.wants"),
    ] {
        m.insert(dir, New::DirIfMissing);
    }
    m
}

/// The staged tree as `New` entries.
pub(super) fn staged(tree: &Utf8Path) -> Result<BTreeMap<String, New>> {
    use std::os::unix::fs::PermissionsExt;
    let mut m = BTreeMap::new();
    for (rel, md) in crate::digest::walk_sorted(tree)? {
        let ft = md.file_type();
        let mode = md.permissions().mode() & 0o7777;
        let e = if ft.is_symlink() {
            let t = std::fs::read_link(tree.join(&rel))
                .with_context(|| format!("reading link {rel}"))?;
            New::Link {
                target: t.to_string_lossy().into_owned(),
            }
        } else if ft.is_dir() {
            New::Dir { mode }
        } else if ft.is_file() {
            New::File {
                source: tree.join(&rel),
                mode,
            }
        } else {
            bail!("{}: not a file, directory or link", tree.join(&rel));
        };
        m.insert(rel.to_string(), e);
    }
    Ok(m)
}

fn blocks(n: u64) -> u64 {
    n.div_ceil(4096) * 4096
}

/// Merge the Debian tarball and `news` (staged tree over generated files).
/// With `out`, write the merged root there as a tar stream; without, only
/// walk the Debian tarball's headers (seeking over file data) to count what
/// the file system needs and copy the kernel, initrd and os-release into
/// `boot_dir`. Both walks count the same entries.
pub(crate) fn merge(
    spec: &DiskSpec,
    news: &BTreeMap<String, New>,
    out: Option<&mut dyn Write>,
    boot_dir: &Utf8Path,
) -> Result<Boot> {
    let tar_path = &spec.rootfs_tar;
    let compressed = compressed(tar_path)?;
    let Some(out) = out else {
        if compressed {
            let mut ar = crate::archive::open_tar(tar_path)?;
            let entries = ar
                .entries()
                .with_context(|| format!("reading {tar_path}"))?;
            return merge_entries::<_, std::io::Sink>(spec, news, entries, None, boot_dir, None);
        }
        let f = File::open(tar_path).with_context(|| format!("opening {tar_path}"))?;
        let mut ar = tar::Archive::new(std::io::BufReader::with_capacity(64 * 1024, f));
        let entries = ar
            .entries_with_seek()
            .with_context(|| format!("reading {tar_path}"))?;
        return merge_entries::<_, std::io::Sink>(spec, news, entries, None, boot_dir, None);
    };
    let mut b = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, out));
    b.follow_symlinks(false);
    let total = std::fs::metadata(tar_path)?.len();
    let mut progress = crate::ui::Progress::bytes("merge root file system", total);
    let mut ar = crate::archive::open_tar(tar_path)?;
    let entries = ar
        .entries()
        .with_context(|| format!("reading {tar_path}"))?;
    let boot = merge_entries(
        spec,
        news,
        entries,
        Some(&mut b),
        boot_dir,
        Some(&mut progress),
    )?;
    progress.finish();
    b.into_inner()
        .context("finishing the merged root tarball")?
        .flush()
        .context("writing the merged root tarball")?;
    Ok(boot)
}

/// Is the tarball zstd or gzip compressed (no seeking over file data)?
fn compressed(tar_path: &Utf8Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let n = File::open(tar_path)
        .and_then(|mut f| f.read(&mut magic))
        .with_context(|| format!("reading {tar_path}"))?;
    Ok(n >= 2 && (magic == [0x28, 0xb5, 0x2f, 0xfd] || magic[..2] == [0x1f, 0x8b]))
}

fn merge_entries<R: Read, W: Write>(
    spec: &DiskSpec,
    news: &BTreeMap<String, New>,
    entries: tar::Entries<'_, R>,
    mut b: Option<&mut tar::Builder<W>>,
    boot_dir: &Utf8Path,
    mut progress: Option<&mut crate::ui::Progress>,
) -> Result<Boot> {
    let mut boot = Boot::default();
    let mut pending = news.clone();
    for entry in entries {
        crate::signals::check()?;
        let mut entry = entry.with_context(|| format!("reading {}", spec.rootfs_tar))?;
        let raw_path = entry.path()?.to_string_lossy().into_owned();
        let rel = raw_path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let kind = entry.header().entry_type();
        if let Some(p) = progress.as_mut() {
            p.inc(entry.size() + 512);
        }
        if rel.is_empty() {
            continue; // the root directory itself: root_owner=0:0, mode 0755
        }
        let link = if kind == tar::EntryType::Symlink {
            entry.link_name()?.map(|l| l.to_string_lossy().into_owned())
        } else {
            None
        };
        if rel == "etc/machine-id" || dropped(&rel, link.as_deref()) {
            continue;
        }
        if let Some(n) = pending.get(&rel) {
            match (n, kind.is_dir()) {
                (New::Dir { .. } | New::DirIfMissing, true) => {
                    // Keep Debian's directory (owner, mode); the children still come.
                    pending.remove(&rel);
                }
                (New::Dir { .. } | New::DirIfMissing, false) => bail!(
                    "/{rel} is a directory in the staged tree but not in the Debian root \
                     (a {:?}); put the files where the Debian path points instead",
                    kind
                ),
                (_, true) => {
                    bail!("/{rel} is a file in the staged tree but a directory in the Debian root")
                }
                (_, false) => continue, // replaced; written with the new entries
            }
        }
        if kind.is_file() {
            boot.data_bytes += blocks(entry.size());
        } else {
            boot.data_bytes += 4096;
        }
        boot.entries += 1;
        if kind == tar::EntryType::Symlink && !rel.contains('/') {
            boot.root_links.insert(rel.clone());
        }
        let Some(b) = b.as_mut() else {
            // The counting walk: copy the boot files out.
            let is_kernel = rel.starts_with("boot/vmlinuz-");
            let is_initrd = rel.starts_with("boot/initrd.img-");
            if kind.is_file() && (is_kernel || is_initrd || rel == "usr/lib/os-release") {
                let mut data = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut data)?;
                let name = rel.rsplit('/').next().unwrap_or("file").to_string();
                let copy = boot_dir.join(&name);
                std::fs::write(&copy, &data).with_context(|| format!("writing {copy}"))?;
                let version = name
                    .split_once('-')
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default();
                let newer = |cur: &Option<(String, Utf8PathBuf)>| {
                    cur.as_ref().is_none_or(|(v, _)| *v < version)
                };
                if is_kernel && newer(&boot.kernel) {
                    boot.kernel = Some((version, copy));
                } else if is_initrd && newer(&boot.initrd) {
                    boot.initrd = Some((version, copy));
                } else if !is_kernel && !is_initrd {
                    boot.os_release = Some(copy);
                }
            }
            continue;
        };
        let mut h = entry.header().clone();
        // Extended attributes (file capabilities) ride in PAX records.
        let xattrs: Vec<(String, Vec<u8>)> = match entry.pax_extensions()? {
            Some(exts) => exts
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let k = e.key().ok()?;
                    k.starts_with("SCHILY.xattr.")
                        .then(|| (k.to_string(), e.value_bytes().to_vec()))
                })
                .collect(),
            None => Vec::new(),
        };
        if !xattrs.is_empty() {
            b.append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()?
                    .with_context(|| format!("/{rel}: link without a target"))?
                    .into_owned();
                b.append_link(&mut h, &raw_path, &target)
                    .with_context(|| format!("writing /{rel}"))?;
            }
            _ => {
                b.append_data(&mut h, &raw_path, &mut entry)
                    .with_context(|| format!("writing /{rel}"))?;
            }
        }
    }
    // New paths, parents before children (sorted).
    for (rel, n) in &pending {
        crate::signals::check()?;
        let path = format!("./{rel}");
        boot.entries += 1;
        let (kind, mode, len) = match n {
            New::Dir { mode } => (tar::EntryType::Directory, *mode, 0),
            New::DirIfMissing => (tar::EntryType::Directory, 0o755, 0),
            New::File { source, mode } => (
                tar::EntryType::Regular,
                *mode,
                std::fs::metadata(source)
                    .with_context(|| format!("reading {source}"))?
                    .len(),
            ),
            New::Bytes { data, mode } => (tar::EntryType::Regular, *mode, data.len() as u64),
            New::Link { .. } => (tar::EntryType::Symlink, 0o777, 0),
        };
        boot.data_bytes += if kind == tar::EntryType::Regular {
            blocks(len)
        } else {
            4096
        };
        let Some(b) = b.as_mut() else {
            continue;
        };
        let mut h = header(kind, mode, len, spec.epoch);
        match n {
            New::Dir { .. } | New::DirIfMissing => {
                b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
            }
            New::File { source, .. } => {
                let f = File::open(source).with_context(|| format!("opening {source}"))?;
                ensure!(
                    f.metadata()?.len() == len,
                    "{source} changed while the disk was assembled"
                );
                b.append_data(&mut h, &path, f)
                    .with_context(|| format!("adding {source} as /{rel}"))?;
            }
            New::Bytes { data, .. } => {
                b.append_data(&mut h, &path, data.as_slice())?;
            }
            New::Link { target } => {
                b.append_link(&mut h, &path, target)?;
            }
        }
    }
    if let Some(b) = b.as_mut() {
        // Identity reset: an empty machine-id (first boot), no dbus copy of it.
        b.append_data(
            &mut header(tar::EntryType::Regular, 0o444, 0, spec.epoch),
            "./etc/machine-id",
            std::io::empty(),
        )?;
    }
    Ok(boot)
}

/// The packages installed in the root tarball, from dpkg's file lists
/// (`var/lib/dpkg/info/<package>[:<arch>].list`); only headers are read.
pub(crate) fn installed_packages(tar_path: &Utf8Path) -> Result<BTreeSet<String>> {
    let mut found = BTreeSet::new();
    let mut note = |raw: &str| {
        let rel = raw.trim_start_matches("./");
        if let Some(name) = rel
            .strip_prefix("var/lib/dpkg/info/")
            .and_then(|n| n.strip_suffix(".list"))
        {
            let pkg = name.split_once(':').map_or(name, |(p, _)| p);
            found.insert(pkg.to_string());
        }
    };
    let ctx = || format!("reading {tar_path}");
    if compressed(tar_path)? {
        let mut ar = crate::archive::open_tar(tar_path)?;
        for e in ar.entries().with_context(ctx)? {
            note(&e.with_context(ctx)?.path()?.to_string_lossy());
        }
    } else {
        let f = File::open(tar_path).with_context(ctx)?;
        let mut ar = tar::Archive::new(std::io::BufReader::with_capacity(64 * 1024, f));
        for e in ar.entries_with_seek().with_context(ctx)? {
            crate::signals::check()?;
            note(&e.with_context(ctx)?.path()?.to_string_lossy());
        }
    }
    Ok(found)
}

/// Files of the root tarball whose path (without `./`, with a merged-/usr
/// `usr/` prefix dropped for `lib/`, `bin/` and `sbin/`) passes `want`.
pub(crate) fn read_from_rootfs(
    tar: &Utf8Path,
    want: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut found = BTreeMap::new();
    let mut ar = crate::archive::open_tar(tar)?;
    for entry in ar.entries().with_context(|| format!("reading {tar}"))? {
        crate::signals::check()?;
        let mut entry = entry.with_context(|| format!("reading {tar}"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry.path()?.to_string_lossy().into_owned();
        let rel = raw.trim_start_matches("./");
        let rel = match rel.strip_prefix("usr/") {
            Some(r) if ["lib/", "bin/", "sbin/"].iter().any(|p| r.starts_with(p)) => r,
            _ => rel,
        };
        if want(rel) {
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut data)
                .with_context(|| format!("reading /{rel} from {tar}"))?;
            found.insert(rel.to_string(), data);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_paths_are_dropped() {
        for p in [
            "etc/ssh/ssh_host_ed25519_key",
            "var/lib/systemd/random-seed",
            "var/lib/dbus/machine-id",
            "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
            "var/cache/apt/pkgcache.bin",
            "var/cache/apt/archives/x.deb",
            "dev/null",
            "etc/resolv.conf",
            "boot/firmware/start4.elf",
            "var/lib/cloud/instance",
            "var/lib/cloud/instances/demo-1/user-data.txt",
            "var/lib/cloud/data/status.json",
            "var/lib/cloud/sem/config_scripts_per_once.once",
            "var/log/cloud-init.log",
            "var/log/cloud-init-output.log",
        ] {
            assert!(dropped(p, None), "{p}");
        }
        for p in [
            "etc/ssh/sshd_config",
            "var/lib/apt/lists/partial",
            "dev",
            "var/lib/systemd/timers",
            "var/lib/cloud",
            "var/lib/cloud/scripts/per-boot",
            "var/lib/cloud/seed/nocloud/user-data",
            "var/log/journal",
        ] {
            assert!(!dropped(p, None), "{p}");
        }
    }

    /// Every per-install identity of the table: all its files are dropped
    /// from the root, its private keys are reported by a scan rule whose fix
    /// names the regeneration command, and its unit is written exactly when
    /// its package is installed.
    #[test]
    fn every_identity_is_dropped_scanned_and_regenerated() {
        use crate::identity::{Pattern, IDENTITIES};
        use crate::scan::rules::{self, Engine};
        // A PEM private key block as the scan sees one (not a real key).
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7q3Zf".repeat(3)
        );
        let engine = Engine::new();
        for id in IDENTITIES {
            for p in id.remove {
                let (rel, link) = match *p {
                    Pattern::Exact(f) => (f.to_string(), None),
                    Pattern::Prefix(f) => (format!("{f}example_key.pub"), None),
                    Pattern::LinkTo { dir, target } => (format!("{dir}0a1b2c3d.0"), Some(target)),
                };
                assert!(dropped(&rel, link), "{}: /{rel} reaches the image", id.name);
            }
            assert!(!id.keys.is_empty(), "{}", id.name);
            for k in id.keys {
                assert!(dropped(k, None), "{}: /{k} reaches the image", id.name);
                let path = format!("/{k}");
                let hits = engine.file(&path, pem.as_bytes());
                assert!(!hits.is_empty(), "{}: no scan rule reports {path}", id.name);
                for h in &hits {
                    let fix = rules::fix(rules::find(h.rule).unwrap(), &path);
                    assert!(fix.contains(id.command()), "{path} [{}]: {fix}", h.rule);
                }
            }
        }
        // A hash link to another certificate stays.
        assert!(!dropped(
            "etc/ssl/certs/0a1b2c3d.0",
            Some("ISRG_Root_X1.pem")
        ));

        let spec = DiskSpec {
            arch: crate::recipe::Arch::Amd64,
            name: "demo".into(),
            hostname: "demo".into(),
            rootfs_tar: "/r.tar".into(),
            overlay_tree: "/t".into(),
            size: 0,
            uefi: false,
            bios: false,
            cmdline: String::new(),
            resolved: false,
            epoch: 1,
            ids: super::super::spec::Ids::derive(1, "demo", crate::recipe::Arch::Amd64),
            pi_boot: None,
            carrier: None,
            fit: false,
        };
        let sys = "etc/systemd/system";
        let none = generated(&spec, &BTreeSet::new());
        let all: BTreeSet<String> = IDENTITIES.iter().map(|i| i.package.to_string()).collect();
        let with = generated(&spec, &all);
        for id in IDENTITIES {
            let unit = format!("{sys}/{}", id.unit_name());
            assert!(!none.contains_key(&unit), "{unit} without {}", id.package);
            match with.get(&unit) {
                Some(New::Bytes { data, .. }) => {
                    let text = String::from_utf8_lossy(data);
                    assert!(
                        text.contains(&format!("ExecStart={}\n", id.regenerate)),
                        "{text}"
                    );
                    for b in id.before {
                        assert!(text.contains(b), "{unit} is not ordered before {b}");
                    }
                }
                other => panic!("{unit}: {other:?}"),
            }
            for by in id.wanted_by() {
                let l = format!("{sys}/{by}.wants/{}", id.unit_name());
                assert!(matches!(with.get(&l), Some(New::Link { .. })), "{l}");
            }
        }
    }

    #[test]
    fn installed_packages_come_from_dpkg_file_lists() {
        let dir = tempfile::tempdir().unwrap();
        let tar_path = Utf8PathBuf::from_path_buf(dir.path().join("root.tar")).unwrap();
        let mut b = tar::Builder::new(File::create(&tar_path).unwrap());
        for (path, data) in [
            ("./var/lib/dpkg/info/ssl-cert.list", &b"/etc/ssl\n"[..]),
            ("./var/lib/dpkg/info/libc6:amd64.list", b"/usr/lib\n"),
            (
                "./var/lib/dpkg/info/openssh-server.postinst",
                b"#!/bin/sh\n",
            ),
            ("./etc/ssl/certs/ssl-cert-snakeoil.pem", b"x"),
        ] {
            let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64, 1);
            b.append_data(&mut h, path, data).unwrap();
        }
        b.into_inner().unwrap().flush().unwrap();
        let got = installed_packages(&tar_path).unwrap();
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            ["libc6".to_string(), "ssl-cert".to_string()]
        );
    }
}
