//! Disk assembly of builder 1, in one cached step, with no mounts and no
//! loop devices:
//!
//! 1. walk the mmdebstrap tarball's headers to size the root file system
//!    and copy out the kernel, initrd and os-release;
//! 2. UEFI: on amd64 a unified kernel image (systemd's EFI stub, os-release,
//!    command line, kernel and Debian's initrd, via objcopy); on arm64
//!    systemd-boot with one loader entry, the kernel and kiln's own initrd
//!    ([`crate::initrd`]), all read from the image's packages; either on a
//!    FAT ESP (mkfs.vfat + mtools);
//! 3. BIOS: a GRUB core image in a BIOS-boot partition, GRUB's boot.img in
//!    the MBR, both patched in process;
//! 4. a sparse raw disk; `mkfs.ext4 -d -` makes the root file system in
//!    place in its partition (`-E offset=`) from the mmdebstrap tarball, the
//!    staged tree and kiln's generated files (identity reset, fstab, network,
//!    growth) merged in process and streamed into its stdin, so every file is
//!    owned as in the tarballs without root and no merged tarball or root
//!    image is written in between;
//! 5. a GPT (protective MBR) written in process and the boot partitions
//!    copied in with positioned writes.

use crate::archive::header;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use anyhow::{bail, ensure, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use serde_json::json;

use super::gpt::{self, Guid, Partition, SECTOR};
use crate::plan::{Op, OpCx};
use crate::recipe::Arch;
use crate::tools;

pub const DISK_RAW: &str = "disk.raw";
pub const LAYOUT_JSON: &str = "layout.json";
const MIB: u64 = 1 << 20;

/// Ids of the disk, derived from the epoch and the appliance name.
#[derive(Debug, Clone, Serialize)]
pub struct Ids {
    pub disk: String,
    pub bios_part: String,
    pub esp_part: String,
    pub root_part: String,
    pub root_fs: String,
    pub hash_seed: String,
}

impl Ids {
    pub fn derive(epoch: i64, name: &str, arch: Arch) -> Ids {
        let id =
            |what: &str| crate::epoch::derived_uuid(epoch, &format!("qcow2/{name}/{arch}/{what}"));
        Ids {
            disk: id("disk"),
            bios_part: id("bios-part"),
            esp_part: id("esp-part"),
            root_part: id("root-part"),
            root_fs: id("root-fs"),
            hash_seed: id("root-hash-seed"),
        }
    }
}

/// Everything the disk step needs; `describe` hashes all of it.
#[derive(Debug, Clone, Serialize)]
pub struct DiskSpec {
    pub arch: Arch,
    pub name: String,
    pub hostname: String,
    pub rootfs_tar: Utf8PathBuf,
    /// The staged tree (`stage` step's `tree/`).
    pub overlay_tree: Utf8PathBuf,
    pub size: u64,
    pub uefi: bool,
    pub bios: bool,
    /// The full kernel command line.
    pub cmdline: String,
    /// Generate the first-boot SSH host key unit.
    pub ssh: bool,
    /// systemd-resolved is installed: `/etc/resolv.conf` points at its stub
    /// (the DNS servers DHCP hands to systemd-networkd) and it is enabled.
    pub resolved: bool,
    pub epoch: i64,
    pub ids: Ids,
}

impl DiskSpec {
    /// The serial console is `ttyS0` on amd64 (16550) and `ttyAMA0` on
    /// arm64 (PL011 of qemu's `virt` and of Arm servers).
    pub fn kernel_cmdline(ids: &Ids, arch: Arch, extra: &[String]) -> String {
        let console = match arch {
            Arch::Amd64 => "ttyS0",
            Arch::Arm64 => "ttyAMA0",
        };
        let mut c = format!("root=UUID={} ro console={console},115200n8", ids.root_fs);
        for e in extra {
            c.push(' ');
            c.push_str(e);
        }
        c
    }
}

pub struct DiskOp(pub DiskSpec);

impl Op for DiskOp {
    fn describe(&self) -> serde_json::Value {
        json!({ "qcow2-disk": self.0 })
    }
    fn commands(&self) -> Vec<tools::Cmd> {
        commands(&self.0, Utf8Path::new(crate::plan::OUT))
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        assemble(&self.0, cx.out)
    }
}

/// The commands [`assemble`] runs for `spec` into `out`, in order; `<…>`
/// stands for what is only known from the root file system's contents.
pub fn commands(spec: &DiskSpec, out: &Utf8Path) -> Vec<tools::Cmd> {
    let work = out.join("work");
    let esp_img = work.join("esp.img");
    let mut v = vec![];
    if spec.uefi {
        if !super::kiln_initrd(spec.arch) {
            let hole = |what: &str| Utf8PathBuf::from(format!("<{what}>"));
            let (osrel, kernel, initrd) = (hole("os-release"), hole("kernel"), hole("initrd"));
            let cmdline = work.join("cmdline");
            let sections: Vec<tools::objcopy::Section> = [
                (".osrel", &osrel),
                (".cmdline", &cmdline),
                (".linux", &kernel),
                (".initrd", &initrd),
            ]
            .into_iter()
            .map(|(name, file)| tools::objcopy::Section {
                name,
                file,
                vma: None,
            })
            .collect();
            v.push(tools::objcopy::add_sections(
                Utf8Path::new(tools::objcopy::EFI_STUB_X64),
                &sections,
                &work.join("BOOTX64.EFI"),
                spec.epoch,
            ));
        }
        let layout = esp_layout(spec, &work, Utf8Path::new("<kernel>"));
        v.push(tools::dosfstools::mkfs_vfat_invariant(
            &esp_img, "ESP", spec.epoch,
        ));
        let dirs: Vec<&str> = layout.dirs.iter().map(String::as_str).collect();
        v.push(tools::mtools::mmd(&esp_img, &dirs, spec.epoch));
        for (file, dest) in &layout.files {
            v.push(tools::mtools::mcopy_in(&esp_img, file, dest, spec.epoch));
        }
    }
    if spec.bios {
        v.push(tools::grub::mkimage_i386_pc(
            &work.join("grub-early.cfg"),
            "/boot/grub",
            &work.join("core.img"),
        ));
    }
    v.push(mkfs_root(
        spec,
        &out.join(DISK_RAW),
        &work.join("mke2fs.conf"),
        "<offset>",
        "<size>",
    ));
    v
}

/// `mkfs.ext4` of the root file system at `offset` of the disk, `bytes`
/// long, from the merged root on its stdin.
fn mkfs_root(
    spec: &DiskSpec,
    disk: &Utf8Path,
    conf: &Utf8Path,
    offset: impl std::fmt::Display,
    bytes: impl std::fmt::Display,
) -> tools::Cmd {
    tools::mke2fs::mkfs_ext4_at(
        disk,
        &offset.to_string(),
        &bytes.to_string(),
        "the merged root tarball",
        "root",
        &spec.ids.root_fs,
        &spec.ids.hash_seed,
        conf,
        spec.epoch,
    )
}

/// What the merge found in the root file system.
#[derive(Debug, Default)]
struct Boot {
    kernel: Option<(String, Utf8PathBuf)>,
    initrd: Option<(String, Utf8PathBuf)>,
    os_release: Option<Utf8PathBuf>,
    root_links: BTreeSet<String>,
    /// Bytes the file system needs for data (4 KiB blocks) and entries.
    data_bytes: u64,
    entries: u64,
}

/// A path kiln puts into the root, replacing what the Debian tarball has.
#[derive(Debug, Clone)]
enum New {
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
/// identity, host leftovers, apt caches).
fn dropped(rel: &str) -> bool {
    const EXACT: &[&str] = &[
        "var/lib/dbus/machine-id",
        "var/lib/systemd/random-seed",
        "etc/resolv.conf",
        "var/cache/debconf/config.dat-old",
        "var/cache/debconf/templates.dat-old",
    ];
    if EXACT.contains(&rel) {
        return true;
    }
    if let Some(rest) = rel.strip_prefix("etc/ssh/") {
        return rest.starts_with("ssh_host_");
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
    false
}

/// kiln's generated files: identity reset, fstab, network, growth, first-boot
/// SSH keys. The staged tree may replace any of them but `/etc/machine-id`.
fn generated(spec: &DiskSpec) -> BTreeMap<String, New> {
    let mut m = BTreeMap::new();
    let bytes = |s: String, mode: u32| New::Bytes {
        data: s.into_bytes(),
        mode,
    };
    let link = |t: &str| New::Link { target: t.into() };
    let ids = &spec.ids;
    let h = &spec.hostname;
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
    let mut fstab = format!(
        "# Written by kiln. The root file system grows to fill its partition at boot\n\
         # (x-systemd.growfs); systemd-repart grows the partition when the disk grows.\n\
         UUID={}\t/\text4\tdefaults,x-systemd.growfs\t0\t1\n",
        ids.root_fs
    );
    if spec.uefi {
        fstab.push_str(&format!("PARTUUID={}\t/boot/efi\tvfat\tumask=0077,nofail,x-systemd.automount,x-systemd.idle-timeout=60\t0\t2\n", ids.esp_part));
        m.insert("boot/efi".into(), New::Dir { mode: 0o755 });
    }
    m.insert("etc/fstab".into(), bytes(fstab, 0o644));
    m.insert("etc/repart.d".into(), New::DirIfMissing);
    m.insert(
        "etc/repart.d/50-root.conf".into(),
        bytes("# Grow the root partition into free space at the end of the disk.\n[Partition]\nType=root\n".into(), 0o644),
    );
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
    if spec.ssh {
        m.insert(
            format!("{sys}/kiln-ssh-hostkeys.service"),
            bytes(
                "[Unit]\nDescription=Generate this instance's SSH host keys\n\
                 ConditionPathExists=/usr/bin/ssh-keygen\nBefore=ssh.service\n\n\
                 [Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\nRemainAfterExit=yes\n\n\
                 [Install]\nWantedBy=multi-user.target ssh.service\n"
                    .into(),
                0o644,
            ),
        );
        m.insert(
            format!("{sys}/multi-user.target.wants/kiln-ssh-hostkeys.service"),
            link("/etc/systemd/system/kiln-ssh-hostkeys.service"),
        );
        m.insert(format!("{sys}/ssh.service.wants"), New::DirIfMissing);
        m.insert(
            format!("{sys}/ssh.service.wants/kiln-ssh-hostkeys.service"),
            link("/etc/systemd/system/kiln-ssh-hostkeys.service"),
        );
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
fn staged(tree: &Utf8Path) -> Result<BTreeMap<String, New>> {
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
fn merge(
    spec: &DiskSpec,
    news: &BTreeMap<String, New>,
    out: Option<&mut dyn Write>,
    boot_dir: &Utf8Path,
) -> Result<Boot> {
    let tar_path = &spec.rootfs_tar;
    let mut magic = [0u8; 4];
    let n = File::open(tar_path)
        .and_then(|mut f| f.read(&mut magic))
        .with_context(|| format!("reading {tar_path}"))?;
    let compressed = n >= 2 && (magic == [0x28, 0xb5, 0x2f, 0xfd] || magic[..2] == [0x1f, 0x8b]);
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
        if rel == "etc/machine-id" || dropped(&rel) {
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

/// The end of the last section of a PE image (image base included), so
/// added sections can follow it.
pub fn pe_end(pe: &[u8]) -> Result<u64> {
    let u16_at = |o: usize| -> Result<u16> {
        Ok(u16::from_le_bytes(
            pe.get(o..o + 2).context("truncated PE")?.try_into()?,
        ))
    };
    let u32_at = |o: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            pe.get(o..o + 4).context("truncated PE")?.try_into()?,
        ))
    };
    ensure!(pe.starts_with(b"MZ"), "not a PE image (no MZ header)");
    let pe_off = u32_at(0x3c)? as usize;
    ensure!(
        pe.get(pe_off..pe_off + 4) == Some(b"PE\0\0"),
        "not a PE image (no PE signature)"
    );
    let coff = pe_off + 4;
    let nsec = u16_at(coff + 2)? as usize;
    let opt_size = u16_at(coff + 16)? as usize;
    let opt = coff + 20;
    ensure!(u16_at(opt)? == 0x20b, "not a PE32+ image");
    let image_base = u64::from_le_bytes(
        pe.get(opt + 24..opt + 32)
            .context("truncated PE")?
            .try_into()?,
    );
    let sect = opt + opt_size;
    let mut end = 0u64;
    for i in 0..nsec {
        let s = sect + i * 40;
        let vsize = u32_at(s + 8)? as u64;
        let va = u32_at(s + 12)? as u64;
        end = end.max(va + vsize);
    }
    Ok(image_base + end)
}

fn align(n: u64, a: u64) -> u64 {
    n.div_ceil(a) * a
}

/// Build the UKI with objcopy: `.osrel`, `.cmdline`, `.linux`, `.initrd`
/// after the stub's own sections, 4 KiB aligned.
fn build_uki(work: &Utf8Path, boot: &Boot, cmdline: &str, epoch: i64) -> Result<()> {
    let stub = Utf8Path::new(tools::objcopy::EFI_STUB_X64);
    if !stub.is_file() {
        return Err(tools::missing_tool(stub.as_str()));
    }
    let stub_bytes = std::fs::read(stub).with_context(|| format!("reading {stub}"))?;
    let (_, kernel) = boot.kernel.as_ref().context(
        "the root file system has no /boot/vmlinuz-*: is a linux-image package installed?",
    )?;
    let (_, initrd) = boot
        .initrd
        .as_ref()
        .context("the root file system has no /boot/initrd.img-*: is initramfs-tools installed?")?;
    let osrel = boot
        .os_release
        .as_ref()
        .context("the root file system has no /usr/lib/os-release")?;
    let cmdline_file = work.join("cmdline");
    std::fs::write(&cmdline_file, cmdline)?;
    let files: [(&str, &Utf8Path); 4] = [
        (".osrel", osrel),
        (".cmdline", &cmdline_file),
        (".linux", kernel),
        (".initrd", initrd),
    ];
    let mut vma = align(
        pe_end(&stub_bytes).with_context(|| format!("reading {stub}"))?,
        4096,
    );
    let mut sections = Vec::new();
    for (name, file) in files {
        sections.push(tools::objcopy::Section {
            name,
            file,
            vma: Some(vma),
        });
        vma = align(vma + std::fs::metadata(file)?.len(), 4096);
    }
    let out = work.join("BOOTX64.EFI");
    tools::run(&tools::objcopy::add_sections(stub, &sections, &out, epoch))?;
    // objcopy stamps the build time; pin it to the epoch and fix the checksum.
    let mut pe = std::fs::read(&out)?;
    pin_pe_timestamp(&mut pe, epoch)?;
    std::fs::write(&out, pe)?;
    Ok(())
}

/// Set a PE image's COFF time stamp to `epoch` and recompute its checksum.
pub fn pin_pe_timestamp(pe: &mut [u8], epoch: i64) -> Result<()> {
    ensure!(pe.len() > 0x40 && pe.starts_with(b"MZ"), "not a PE image");
    let pe_off = u32::from_le_bytes(pe[0x3c..0x40].try_into()?) as usize;
    ensure!(
        pe.get(pe_off..pe_off + 4) == Some(b"PE\0\0"),
        "not a PE image"
    );
    let stamp = u32::try_from(epoch.max(0)).unwrap_or(u32::MAX);
    pe[pe_off + 8..pe_off + 12].copy_from_slice(&stamp.to_le_bytes());
    let ck = pe_off + 24 + 64;
    ensure!(pe.len() > ck + 4, "truncated PE image");
    pe[ck..ck + 4].fill(0);
    let mut sum: u64 = 0;
    for (i, c) in pe.chunks(2).enumerate() {
        if i * 2 >= ck && i * 2 < ck + 4 {
            continue;
        }
        let w = if c.len() == 2 {
            u16::from_le_bytes([c[0], c[1]])
        } else {
            c[0] as u16
        };
        sum += w as u64;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    let total = (sum as u32).wrapping_add(pe.len() as u32);
    pe[ck..ck + 4].copy_from_slice(&total.to_le_bytes());
    Ok(())
}

/// What goes onto the EFI system partition: directories (parents first)
/// and files (source, path on the ESP).
struct Esp {
    dirs: Vec<String>,
    files: Vec<(Utf8PathBuf, String)>,
}

/// What goes on the ESP: on amd64 the UKI (`work/BOOTX64.EFI`) as the
/// removable-media loader; on arm64 systemd-boot, its loader.conf, one
/// entry, `kernel` and kiln's initrd (all but the kernel written to `work`).
fn esp_layout(spec: &DiskSpec, work: &Utf8Path, kernel: &Utf8Path) -> Esp {
    if !super::kiln_initrd(spec.arch) {
        return Esp {
            dirs: vec!["/EFI".into(), "/EFI/BOOT".into()],
            files: vec![(work.join("BOOTX64.EFI"), "/EFI/BOOT/BOOTX64.EFI".into())],
        };
    }
    let n = &spec.name;
    Esp {
        dirs: vec![
            "/EFI".into(),
            "/EFI/BOOT".into(),
            "/loader".into(),
            "/loader/entries".into(),
            format!("/{n}"),
        ],
        files: vec![
            (work.join("BOOTAA64.EFI"), "/EFI/BOOT/BOOTAA64.EFI".into()),
            (work.join("loader.conf"), "/loader/loader.conf".into()),
            (work.join("entry.conf"), format!("/loader/entries/{n}.conf")),
            (kernel.to_owned(), format!("/{n}/linux")),
            (work.join("initrd.img"), format!("/{n}/initrd")),
        ],
    }
}

/// Files of the root tarball whose path (without `./`, with a merged-/usr
/// `usr/` prefix dropped for `lib/`, `bin/` and `sbin/`) passes `want`.
fn read_from_rootfs(
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

const SYSTEMD_BOOT_AA64: &str = "lib/systemd/boot/efi/systemd-bootaa64.efi";
const BUSYBOX: &str = "bin/busybox";

/// kiln's initrd for the image's newest kernel, and systemd-boot, both
/// from the root tarball (arm64).
struct OwnBoot {
    release: String,
    initrd: Vec<u8>,
    loader: Vec<u8>,
}

/// Build the initrd from the image's static busybox and the root disk's
/// modules ([`crate::initrd`]); read systemd-boot for the ESP.
fn own_boot(spec: &DiskSpec) -> Result<OwnBoot> {
    let is_moddata = |p: &str| {
        p.strip_prefix("lib/modules/").is_some_and(|r| {
            r.split_once('/')
                .is_some_and(|(_, f)| f == "modules.dep" || f == "modules.builtin")
        })
    };
    let first = read_from_rootfs(&spec.rootfs_tar, |p| {
        is_moddata(p) || p == BUSYBOX || p == SYSTEMD_BOOT_AA64
    })?;
    let release = first
        .keys()
        .filter_map(|p| p.strip_prefix("lib/modules/")?.strip_suffix("/modules.dep"))
        .max()
        .context(
            "the root file system has no /usr/lib/modules/*/modules.dep: is a linux-image \
             package installed?",
        )?
        .to_string();
    let moddir = format!("lib/modules/{release}/");
    let text = |f: &str| {
        String::from_utf8_lossy(first.get(&format!("{moddir}{f}")).map_or(&[][..], |v| v))
            .into_owned()
    };
    let loader = first.get(SYSTEMD_BOOT_AA64).with_context(|| {
        format!(
            "the root file system has no /usr/{SYSTEMD_BOOT_AA64}: add the systemd-boot-efi package"
        )
    })?;
    let busybox = first.get(BUSYBOX).with_context(|| {
        format!(
            "the root file system has no /usr/{BUSYBOX} for kiln's initrd: add the \
             busybox-static package"
        )
    })?;
    let deps = crate::initrd::ModuleDeps::parse(&text("modules.dep"), &text("modules.builtin"))
        .with_context(|| format!("reading /usr/{moddir}modules.dep"))?;
    let order = deps
        .closure(crate::initrd::ROOT_MODULES, crate::initrd::OPTIONAL_MODULES)
        .with_context(|| format!("kernel {release}"))?;
    let wanted: BTreeSet<String> = order.iter().map(|m| format!("{moddir}{m}")).collect();
    let modules: BTreeMap<String, Vec<u8>> =
        read_from_rootfs(&spec.rootfs_tar, |p| wanted.contains(p))?
            .into_iter()
            .map(|(p, d)| (p[moddir.len()..].to_string(), d))
            .collect();
    let initrd = crate::initrd::build(
        &crate::initrd::Sources {
            busybox,
            modules: &modules,
            order: &order,
        },
        spec.epoch,
    )?;
    crate::ui::info(&format!(
        "  kiln initrd for {release}: {} modules, {} KiB",
        order.len(),
        initrd.len() >> 10
    ));
    Ok(OwnBoot {
        release,
        initrd,
        loader: loader.clone(),
    })
}

/// arm64's ESP: systemd-boot as the removable-media loader, one Boot Loader
/// Specification entry (no timeout, no editor), the kernel and kiln's initrd.
fn systemd_boot_esp(spec: &DiskSpec, boot: &Boot, own: &OwnBoot, work: &Utf8Path) -> Result<Esp> {
    let (release, kernel) = boot.kernel.as_ref().context(
        "the root file system has no /boot/vmlinuz-*: is a linux-image package installed?",
    )?;
    ensure!(
        *release == own.release,
        "the newest kernel is /boot/vmlinuz-{release} but the newest modules are for {}",
        own.release
    );
    let initrd = work.join("initrd.img");
    std::fs::write(&initrd, &own.initrd).with_context(|| format!("writing {initrd}"))?;
    let loader = work.join("BOOTAA64.EFI");
    std::fs::write(&loader, &own.loader).with_context(|| format!("writing {loader}"))?;
    let n = &spec.name;
    let conf = work.join("loader.conf");
    std::fs::write(
        &conf,
        format!("# Written by kiln.\ntimeout 0\ndefault {n}.conf\neditor no\n"),
    )?;
    let entry = work.join("entry.conf");
    std::fs::write(
        &entry,
        format!(
            "title {n}\nversion {release}\nlinux /{n}/linux\ninitrd /{n}/initrd\noptions {}\n",
            spec.cmdline
        ),
    )?;
    Ok(esp_layout(spec, work, kernel))
}

/// Copy `src` into `disk` at `offset`, skipping all-zero blocks so the disk
/// stays sparse.
fn copy_at(disk: &File, offset: u64, src: &Utf8Path, label: &str) -> Result<()> {
    let mut r = File::open(src).with_context(|| format!("opening {src}"))?;
    let total = r.metadata()?.len();
    let mut p = crate::ui::Progress::bytes(label, total);
    let mut buf = vec![0u8; 4 * MIB as usize];
    let mut pos = 0u64;
    loop {
        crate::signals::check()?;
        let mut n = 0;
        while n < buf.len() {
            let k = r.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        for (i, chunk) in buf[..n].chunks(64 * 1024).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                disk.write_all_at(chunk, offset + pos + (i * 64 * 1024) as u64)
                    .with_context(|| format!("writing {label} into the disk image"))?;
            }
        }
        pos += n as u64;
        p.inc(n as u64);
    }
    p.finish();
    Ok(())
}

/// The disk's partitions, in order, as planned before anything is written.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub size: u64,
    pub disk_guid: String,
    pub partitions: Vec<LayoutPart>,
    pub root_fs_bytes: u64,
    pub root_fs_uuid: String,
    pub cmdline: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayoutPart {
    pub number: usize,
    pub name: String,
    pub type_guid: String,
    pub partuuid: String,
    pub offset: u64,
    pub bytes: u64,
}

/// Root file system size for what the merge counted: data, inodes and the
/// journal, with headroom; whole MiB.
fn root_fs_bytes(boot: &Boot) -> u64 {
    let by_data = (boot.data_bytes + 64 * MIB) * 115 / 100 + 64 * MIB;
    // One inode per 16 KiB (mke2fs.conf above), with 30% spare inodes.
    let by_inodes = boot.entries * 13 / 10 * 16384;
    align(by_data.max(by_inodes), MIB)
}

pub fn assemble(spec: &DiskSpec, out: &Utf8Path) -> Result<()> {
    let work = out.join("work");
    std::fs::create_dir_all(&work)?;
    let boot_dir = work.join("boot");
    std::fs::create_dir_all(&boot_dir)?;

    // 1. Merge.
    let mut news = generated(spec);
    for (rel, n) in staged(&spec.overlay_tree)? {
        if rel == "etc/machine-id" {
            bail!("the staged tree provides /etc/machine-id; it must stay empty in an image (identity reset)");
        }
        match (news.get(&rel), &n) {
            (Some(New::DirIfMissing | New::Dir { .. }), New::Dir { .. }) => {}
            _ => {
                news.insert(rel, n);
            }
        }
    }
    // arm64: kiln's initrd, also in /boot where Debian's links point.
    let own = if super::kiln_initrd(spec.arch) {
        let own = own_boot(spec)?;
        news.insert(
            format!("boot/initrd.img-{}", own.release),
            New::Bytes {
                data: own.initrd.clone(),
                mode: 0o644,
            },
        );
        Some(own)
    } else {
        None
    };
    // What the root needs, and its boot files, from the tarball's headers;
    // the merged root itself streams into mkfs.ext4 once the layout is known.
    let boot = merge(spec, &news, None, &boot_dir)?;

    // 2. Layout.
    let fs_bytes = root_fs_bytes(&boot);
    // With kiln's initrd, systemd-boot loads it; else the UKI carries Debian's.
    let esp = match (spec.uefi, &own) {
        (false, _) => None,
        (true, Some(own)) => Some(systemd_boot_esp(spec, &boot, own, &work)?),
        (true, None) => {
            build_uki(&work, &boot, &spec.cmdline, spec.epoch)?;
            Some(esp_layout(spec, &work, Utf8Path::new("")))
        }
    };
    let esp_bytes = match &esp {
        Some(e) => {
            let mut sum = 0;
            for (f, _) in &e.files {
                sum += std::fs::metadata(f)?.len();
            }
            align((sum * 3 / 2 + 8 * MIB).max(128 * MIB), MIB)
        }
        None => 0,
    };
    let sectors = spec.size / SECTOR;
    let mut next = MIB / SECTOR;
    let mut parts = Vec::new();
    let guid = |s: &str| Guid::parse(s);
    // The boot partitions, in order, from the first MiB.
    for (wanted, type_guid, id, bytes, name) in [
        (
            spec.bios,
            gpt::TYPE_BIOS_BOOT,
            &spec.ids.bios_part,
            MIB,
            "bios",
        ),
        (
            spec.uefi,
            gpt::TYPE_ESP,
            &spec.ids.esp_part,
            esp_bytes,
            "esp",
        ),
    ] {
        if wanted {
            parts.push(Partition {
                type_guid: guid(type_guid)?,
                guid: guid(id)?,
                first_lba: next,
                last_lba: next + bytes / SECTOR - 1,
                name: name.into(),
                attributes: 0,
            });
            next += bytes / SECTOR;
        }
    }
    // Root to the end, 4 KiB aligned, so systemd-repart finds nothing to grow.
    let root_last = (gpt::last_usable(sectors) + 1) / 8 * 8 - 1;
    let needed = next * SECTOR + fs_bytes + MIB;
    if spec.size < needed {
        bail!(
            "qcow2.size ({} MiB) is too small: the root file system needs {} MiB, so the disk \
             needs at least {} MiB (set `qcow2.size: {}M` or more in the recipe)",
            spec.size / MIB,
            fs_bytes / MIB,
            needed.div_ceil(MIB),
            needed.div_ceil(MIB)
        );
    }
    let root_type = match spec.arch {
        Arch::Amd64 => gpt::TYPE_ROOT_X86_64,
        Arch::Arm64 => gpt::TYPE_ROOT_ARM64,
    };
    parts.push(Partition {
        type_guid: guid(root_type)?,
        guid: guid(&spec.ids.root_part)?,
        first_lba: next,
        last_lba: root_last,
        name: "root".into(),
        attributes: 0,
    });

    // 4. ESP.
    let esp_img = work.join("esp.img");
    if let Some(esp) = &esp {
        File::create(&esp_img)?.set_len(esp_bytes)?;
        tools::run(&tools::dosfstools::mkfs_vfat_invariant(
            &esp_img, "ESP", spec.epoch,
        ))?;
        let dirs: Vec<&str> = esp.dirs.iter().map(String::as_str).collect();
        tools::run(&tools::mtools::mmd(&esp_img, &dirs, spec.epoch))?;
        for (file, dest) in &esp.files {
            crate::fsutil::set_mtime(file, spec.epoch)?;
            tools::run(&tools::mtools::mcopy_in(&esp_img, file, dest, spec.epoch))?;
        }
    }

    // 5. GRUB core for BIOS.
    let mut boot_code = None;
    let core_img = work.join("core.img");
    if spec.bios {
        let kernel = if boot.root_links.contains("vmlinuz") {
            "/vmlinuz".to_string()
        } else {
            format!(
                "/boot/vmlinuz-{}",
                boot.kernel
                    .as_ref()
                    .context("no kernel in the root file system")?
                    .0
            )
        };
        let initrd = if boot.root_links.contains("initrd.img") {
            "/initrd.img".to_string()
        } else {
            format!(
                "/boot/initrd.img-{}",
                boot.initrd
                    .as_ref()
                    .context("no initrd in the root file system")?
                    .0
            )
        };
        let cfg = format!(
            "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n\
             search --no-floppy --fs-uuid --set=root {}\necho 'Loading Linux...'\nlinux {kernel} {}\ninitrd {initrd}\nboot\n",
            spec.ids.root_fs, spec.cmdline
        );
        let cfg_file = work.join("grub-early.cfg");
        std::fs::write(&cfg_file, cfg)?;
        tools::run(&tools::grub::mkimage_i386_pc(
            &cfg_file,
            "/boot/grub",
            &core_img,
        ))?;
        let core_len = std::fs::metadata(&core_img)?.len();
        ensure!(
            core_len <= MIB,
            "the GRUB core image is {core_len} bytes; the BIOS-boot partition holds 1 MiB"
        );
        let img = std::fs::read(tools::grub::BOOT_IMG)
            .with_context(|| format!("reading {}", tools::grub::BOOT_IMG))?;
        ensure!(
            img.len() == 512,
            "{} is not a 512-byte boot sector",
            tools::grub::BOOT_IMG
        );
        let mut code = img[..440].to_vec();
        // GRUB_BOOT_MACHINE_KERNEL_SECTOR: where boot.img finds core.img.
        code[0x5c..0x64].copy_from_slice(&parts[0].first_lba.to_le_bytes());
        boot_code = Some(code);
        // diskboot.img's first block list: the rest of core.img follows its first sector.
        let mut core = std::fs::read(&core_img)?;
        core[0x200 - 12..0x200 - 4].copy_from_slice(&(parts[0].first_lba + 1).to_le_bytes());
        std::fs::write(&core_img, core)?;
    }

    // 6. Assemble.
    let disk_path = out.join(DISK_RAW);
    let disk = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&disk_path)
        .with_context(|| format!("creating {disk_path}"))?;
    disk.set_len(spec.size)?;

    // Root file system, made in place in its partition from the merged root
    // streamed into mkfs.ext4 (no tarball or image file in between).
    let conf = work.join("mke2fs.conf");
    std::fs::write(&conf, tools::mke2fs::MKE2FS_CONF)?;
    crate::ui::info(&format!(
        "  root file system: {} MiB for {} entries",
        fs_bytes / MIB,
        boot.entries
    ));
    let root = parts.last().expect("the root partition");
    // mke2fs reads a size without a unit as 1 KiB blocks.
    let mkfs = mkfs_root(
        spec,
        &disk_path,
        &conf,
        root.offset(),
        format!("{}k", fs_bytes / 1024),
    );
    let mut written = None;
    tools::run_feeding(&mkfs, |w| {
        written = Some(merge(spec, &news, Some(w), &boot_dir)?);
        Ok(())
    })?;
    let written = written.context("the merge did not run")?;
    ensure!(
        (written.entries, written.data_bytes) == (boot.entries, boot.data_bytes),
        "kiln bug: the merged root has {} entries ({} bytes) but {} ({} bytes) were counted",
        written.entries,
        written.data_bytes,
        boot.entries,
        boot.data_bytes
    );
    gpt::write(
        &disk,
        spec.size,
        guid(&spec.ids.disk)?,
        &parts,
        boot_code.as_deref(),
    )?;
    for p in &parts {
        match p.name.as_str() {
            "bios" => copy_at(&disk, p.offset(), &core_img, "GRUB core")?,
            "esp" => copy_at(&disk, p.offset(), &esp_img, "EFI system partition")?,
            _ => {} // made in place above
        }
    }
    disk.sync_all()?;
    let layout = Layout {
        size: spec.size,
        disk_guid: spec.ids.disk.clone(),
        partitions: parts
            .iter()
            .enumerate()
            .map(|(i, p)| LayoutPart {
                number: i + 1,
                name: p.name.clone(),
                type_guid: p.type_guid.to_string_lower(),
                partuuid: p.guid.to_string_lower(),
                offset: p.offset(),
                bytes: p.bytes(),
            })
            .collect(),
        root_fs_bytes: fs_bytes,
        root_fs_uuid: spec.ids.root_fs.clone(),
        cmdline: spec.cmdline.clone(),
    };
    crate::plan::write_json(&out.join(LAYOUT_JSON), &layout)?;
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {work}"))?;
    let _ = std::io::stdout().flush();
    Ok(())
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
        ] {
            assert!(dropped(p), "{p}");
        }
        for p in [
            "etc/ssh/sshd_config",
            "var/lib/apt/lists/partial",
            "dev",
            "var/lib/systemd/timers",
        ] {
            assert!(!dropped(p), "{p}");
        }
    }

    #[test]
    fn stub_layout() {
        let stub = Utf8Path::new(tools::objcopy::EFI_STUB_X64);
        if !crate::testing::require(&[stub.as_str()]) {
            return;
        }
        let end = pe_end(&std::fs::read(stub).unwrap()).unwrap();
        assert!(end > 0x1000);
        assert!(pe_end(b"not a pe").is_err());
        // Pinning is idempotent and reproduces the stub's own checksum.
        let mut a = std::fs::read(stub).unwrap();
        let orig = a.clone();
        pin_pe_timestamp(&mut a, 0).unwrap();
        assert_eq!(a, orig, "the stub has time stamp 0 and a valid checksum");
    }

    #[test]
    fn cmdline_and_sizes() {
        let ids = Ids::derive(1, "demo", Arch::Amd64);
        assert_eq!(ids.root_fs, Ids::derive(1, "demo", Arch::Amd64).root_fs);
        assert_ne!(ids.root_fs, Ids::derive(2, "demo", Arch::Amd64).root_fs);
        let c = DiskSpec::kernel_cmdline(&ids, Arch::Amd64, &["quiet".into()]);
        assert!(
            c.starts_with(&format!("root=UUID={} ro console=ttyS0", ids.root_fs))
                && c.ends_with(" quiet")
        );
        let c = DiskSpec::kernel_cmdline(&ids, Arch::Arm64, &[]);
        assert!(c.ends_with(" ro console=ttyAMA0,115200n8"), "{c}");
        let b = Boot {
            data_bytes: 600 * MIB,
            entries: 30000,
            ..Default::default()
        };
        let s = root_fs_bytes(&b);
        assert!(s > 600 * MIB && s.is_multiple_of(MIB));
    }
}
