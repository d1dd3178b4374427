//! The offline installer ISO (`iso.mode: installer`): a hybrid ISO that
//! writes the appliance's own disk onto a target disk.
//!
//! - Payload: the qcow2 builder's disk sized to its content
//!   ([`crate::qcow2::plan_fitted_disk`]), compressed with zstd
//!   (`disk.img.zst`) and appended after xorriso's image as a GPT partition
//!   of kiln's payload type ([`PAYLOAD_TYPE`]), so xorriso never copies it;
//!   its sha256 in `/kiln/disk.img.zst.sha256` and on the install entry's
//!   kernel command line.
//! - Installer: the appliance root's kernel and an initramfs written in
//!   process ([`crate::initrd::Cpio`]): a static busybox, `zstd` and
//!   `sfdisk` with their shared libraries (one cached mmdebstrap
//!   `--variant=extract` step, `installer-tools-<arch>`), the modules for
//!   CD-ROM, USB, virtio, SATA and NVMe media and ISO 9660, and `/init`
//!   ([`init_script`]).
//! - Boot: GRUB with its menu built in, for BIOS (El Torito, and GRUB's
//!   hybrid MBR for a USB stick) and UEFI (a FAT ESP appended as GPT
//!   partition 2), written by xorriso. No mounts, no loop devices.
//!   Reproducible: `SOURCE_DATE_EPOCH`, every file dated the epoch, FAT made
//!   with `--invariant`, zstd's output independent of its thread count.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use anyhow::{bail, ensure, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use serde_json::json;

use crate::initrd::{Cpio, ModuleDeps};
use crate::plan::{Input, Op, OpCx, Plan, StepBuilder, OUT};
use crate::recipe::{Arch, Resolved};
use crate::tools::{self, dosfstools, grub, mtools, xorriso};

/// The extract step's tarball.
pub const TOOLS_TAR: &str = "tools.tar";
/// What the installer runs besides busybox: zstd (the payload), sfdisk
/// (the GPT's backup header moved to the disk's end), eject (the medium
/// out of the drive, so the reboot starts the installed disk, not the
/// installer again; Debian's busybox has no `eject`).
pub const TOOL_PACKAGES: &[&str] = &["busybox-static", "zstd", "fdisk", "eject"];
/// The payload's sha256 on the ISO (`sha256sum -c` of the payload
/// partition's bytes saved as `disk.img.zst`); GRUB and the installer
/// know their medium by it.
pub const PAYLOAD_SHA256: &str = "kiln/disk.img.zst.sha256";
/// The payload partition's GPT type (kiln's own) and name: the installer
/// finds its payload on the medium by the type.
pub const PAYLOAD_TYPE: &str = "ec9ce540-0ef6-4b0b-b8b8-37d2bf81cba8";
pub const PAYLOAD_NAME: &str = "disk.img.zst";
/// xorriso's image with the payload's real sha256, written over the ISO's head.
const HEAD: &str = "head.iso";
/// The payload starts and ends on a CD block: a CD reads whole 2048-byte blocks.
const BLOCK: u64 = 2048;
/// zstd level of the payload (zstd's own default: the bench compares with `zstd -T0`).
pub const ZSTD_LEVEL: i32 = 3;
/// The console lines the installer prints when it is done, and when it stops.
pub const DONE_MARKER: &str = "kiln-installer: install complete";
pub const FAIL_MARKER: &str = "kiln-installer: FAILED:";

/// Kernel modules for the install medium (CD-ROM, USB stick) and the
/// target disk, loaded when the kernel has them as modules.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "scsi_mod",
    "sd_mod",
    "sr_mod",
    "cdrom",
    "libata",
    "ata_piix",
    "ata_generic",
    "libahci",
    "ahci",
    "nvme",
    "usbcore",
    "usb_common",
    "xhci_pci",
    "xhci_hcd",
    "ehci_pci",
    "ehci_hcd",
    "uhci_hcd",
    "ohci_pci",
    "ohci_hcd",
    "usb_storage",
    "uas",
    "mmc_block",
    "sdhci_pci",
];

/// The boot parts' files (the boot step's outputs).
pub const VMLINUZ: &str = "vmlinuz";
pub const INITRD: &str = "initrd.img";
pub const ELTORITO: &str = "eltorito.img";
pub const ESP: &str = "esp.img";

/// The installer's boot parts, from the appliance root and the tools
/// alone: the kernel, the initramfs (the tools, the modules, `/init`), the
/// BIOS GRUB image and the ESP with the UEFI one. Nothing in them names the
/// payload, the appliance or its version (the ISO's GRUB menu passes those
/// on the kernel command line), so a change of the appliance's files
/// rebuilds the disk and the ISO, not these.
#[derive(Debug, Clone, Serialize)]
struct BootParts {
    rootfs_tar: Utf8PathBuf,
    tools_tar: Utf8PathBuf,
    epoch: i64,
}

/// The ISO: the payload compressed, the menu, xorriso.
#[derive(Debug, Clone, Serialize)]
struct Installer {
    /// The fitted disk step's output (`disk.raw`, `layout.json`).
    disk_dir: Utf8PathBuf,
    /// The boot step's output ([`VMLINUZ`], [`INITRD`], [`ELTORITO`], [`ESP`]).
    boot_dir: Utf8PathBuf,
    name: String,
    version: String,
    title: String,
    timeout: u32,
    wipe: bool,
    epoch: i64,
    artifact: String,
}

fn tools_step_name(arch: Arch) -> String {
    format!("installer-tools-{arch}")
}

/// The installer's programs from Debian packages: one cached mmdebstrap
/// `--variant=extract` step (no package scripts run), keyed by its command.
fn plan_tools(r: &Resolved, plan: &mut Plan, arch: Arch) -> Result<usize> {
    if let Some(i) = plan
        .steps
        .iter()
        .position(|s| s.name == tools_step_name(arch))
    {
        return Ok(i);
    }
    let suite = &r.recipe.qcow2.suite;
    let mirrors = crate::qcow2::rootfs::suite_lines(r, suite, "main")?;
    let packages: Vec<String> = TOOL_PACKAGES.iter().map(|p| p.to_string()).collect();
    let cmd = tools::mmdebstrap::image_root_tar(
        arch.debian(),
        suite,
        "extract",
        &packages,
        &mirrors,
        &Utf8Path::new(OUT).join(TOOLS_TAR),
        r.epoch,
    );
    let b = StepBuilder::new(
        tools_step_name(arch),
        format!(
            "the installer's programs ({}) from Debian {suite}",
            packages.join(", ")
        ),
    )
    .input(Input::value("suite", suite))
    .input(Input::value("architecture", arch))
    .input(Input::value("packages", packages.join(",")))
    .input(Input::value("mirrors", mirrors.join(" | ")))
    .input(Input::value("SOURCE_DATE_EPOCH", r.epoch))
    .cmd(cmd)
    .long();
    Ok(plan.add(b))
}

/// What the installer's kernel command line may carry from the recipe:
/// GRUB would expand `$`, split at spaces and end at quotes.
fn command_line_safe(what: &str, v: &str, file: &Utf8Path) -> Result<()> {
    ensure!(
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+~:-".contains(&b)),
        "{file}: the installer ISO passes the {what} `{v}` on the kernel command line: \
         use letters, digits and `._+~:-` only"
    );
    Ok(())
}

/// Add the installer ISO's steps (fitted disk, root, tools, boot parts,
/// the ISO); returns the ISO step's index. The artifact is
/// `<step out>/<name>-<version>-amd64.iso`, published and scanned.
pub fn plan(r: &Resolved, plan: &mut Plan) -> Result<usize> {
    let arch = Arch::Amd64;
    ensure!(
        r.recipe.architectures.contains(&arch),
        "{}: the installer ISO is amd64 (BIOS and UEFI PCs); add amd64 to `architectures`",
        r.file
    );
    // The name is safe already (`appliance.name`: lower-case letters,
    // digits and `-`); a version only avoids `/` and spaces.
    command_line_safe("version", &r.version, &r.file)?;
    let disk = crate::qcow2::plan_fitted_disk(r, plan, arch)?;
    let rootfs = crate::qcow2::rootfs::plan(r, plan, arch)?;
    let tools_step = plan_tools(r, plan, arch)?;
    let parts = BootParts {
        rootfs_tar: plan.step(rootfs).output(crate::qcow2::rootfs::ROOTFS_TAR),
        tools_tar: plan.step(tools_step).output(TOOLS_TAR),
        epoch: r.epoch,
    };
    let b = StepBuilder::new(
        format!("installer-boot-{arch}"),
        "the installer's kernel, initramfs (busybox, zstd, sfdisk, eject, modules, /init) and GRUB",
    )
    .after(plan.step(rootfs))
    .after(plan.step(tools_step))
    .input(Input::value("SOURCE_DATE_EPOCH", r.epoch))
    .requires(grub::X86_64_EFI_LINUX_MOD)
    .op(parts);
    let boot = plan.add(b);
    let io = &r.recipe.iso;
    let op = Installer {
        disk_dir: plan.step(disk.step).out.clone(),
        boot_dir: plan.step(boot).out.clone(),
        name: r.name().to_string(),
        version: r.version.clone(),
        title: format!("Install {} {}", r.name(), r.version),
        timeout: io.timeout,
        wipe: io.wipe,
        epoch: r.epoch,
        artifact: r.artifact_name(arch, "iso"),
    };
    let artifact = op.artifact.clone();
    let b = StepBuilder::new(
        "iso-amd64",
        "the offline installer ISO (the appliance's disk, zstd, with a busybox installer)",
    )
    .after(plan.step(disk.step))
    .after(plan.step(boot))
    .input(Input::value("SOURCE_DATE_EPOCH", r.epoch))
    .requires(grub::BOOT_HYBRID_IMG)
    .op(op)
    .long();
    let i = plan.add(b);
    let from = plan.step(i).output(&artifact);
    plan.publish(from, artifact, true);
    Ok(i)
}

impl Op for BootParts {
    fn describe(&self) -> serde_json::Value {
        json!({ "installer_boot": self })
    }
    fn commands(&self) -> Vec<tools::Cmd> {
        let out = Utf8Path::new(OUT);
        let work = out.join("work");
        let esp = out.join(ESP);
        let efi = work.join("BOOTX64.EFI");
        let mut mkfs = dosfstools::mkfs_vfat_image(&esp, "KILNESP", 0, self.epoch);
        if let Some(kib) = mkfs.args.last_mut() {
            *kib = "<kib>".into();
        }
        vec![
            grub::mkimage_iso(false, &work.join("grub.cfg"), &out.join(ELTORITO)),
            grub::mkimage_iso(true, &work.join("grub.cfg"), &efi),
            mkfs,
            mtools::mmd(&esp, &["/EFI", "/EFI/BOOT"], self.epoch),
            mtools::mcopy_in(&esp, &efi, "/EFI/BOOT/BOOTX64.EFI", self.epoch),
        ]
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        build_boot(self, cx.out)
    }
}

impl Op for Installer {
    fn describe(&self) -> serde_json::Value {
        json!({ "iso_installer": self })
    }
    /// xorriso twice: the ISO's head with the payload's stand-in sha256
    /// (where the payload then goes), and with the real one ([`build`]).
    fn commands(&self) -> Vec<tools::Cmd> {
        let out = Utf8Path::new(OUT);
        [out.join(&self.artifact), out.join(HEAD)]
            .iter()
            .map(|to| {
                xorriso::installer_iso(
                    &out.join("tree"),
                    &self.boot_dir.join(ESP),
                    &volid(&self.name),
                    to,
                    self.epoch,
                )
            })
            .collect()
    }
    fn run(&self, cx: &OpCx) -> Result<()> {
        build(self, cx.out)
    }
}

/// The ISO's volume id: `KILN_<NAME>`, upper case, at most 32 characters.
fn volid(name: &str) -> String {
    let mut v: String = format!("KILN_{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    v.truncate(32);
    v
}

/// What the installer knows of its payload.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The raw image's size (what the target disk must hold).
    pub bytes: u64,
    /// The compressed file's size and sha256 (`disk.img.zst`, padded to
    /// whole CD blocks: the payload partition's bytes).
    pub zst_bytes: u64,
    pub sha256: String,
}

/// The fitted disk's layout (written by the disk step).
#[derive(Debug, serde::Deserialize)]
struct Layout {
    size: u64,
    root_fs_uuid: String,
    cmdline: String,
}

/// The boot step: the kernel and module data read from the root in one
/// pass, the initramfs, GRUB for BIOS and the ESP with GRUB for UEFI.
fn build_boot(op: &BootParts, out: &Utf8Path) -> Result<()> {
    let work = out.join("work");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {work}"))?;
    std::fs::write(work.join("grub.cfg"), EARLY_CFG)?;
    let (kernel, modules) = std::thread::scope(|s| {
        // GRUB's two images build while the root is read.
        let grub = s.spawn(|| {
            tools::run(&grub::mkimage_iso(
                false,
                &work.join("grub.cfg"),
                &out.join(ELTORITO),
            ))?;
            tools::run(&grub::mkimage_iso(
                true,
                &work.join("grub.cfg"),
                &work.join("BOOTX64.EFI"),
            ))
        });
        let read = kernel_and_modules(&op.rootfs_tar);
        grub.join()
            .map_err(|_| anyhow::anyhow!("the GRUB thread panicked"))??;
        read
    })?;
    std::fs::write(out.join(INITRD), initramfs(op, modules)?)?;
    std::fs::write(out.join(VMLINUZ), kernel)?;
    // ESP: GRUB for UEFI as the removable-media loader.
    let efi = work.join("BOOTX64.EFI");
    let esp = out.join(ESP);
    let kib = (std::fs::metadata(&efi)?.len() / 1024 + 1024).div_ceil(1024) * 1024;
    tools::run(&dosfstools::mkfs_vfat_image(&esp, "KILNESP", kib, op.epoch))?;
    tools::run(&mtools::mmd(&esp, &["/EFI", "/EFI/BOOT"], op.epoch))?;
    crate::fsutil::set_mtime(&efi, op.epoch)?;
    tools::run(&mtools::mcopy_in(
        &esp,
        &efi,
        "/EFI/BOOT/BOOTX64.EFI",
        op.epoch,
    ))?;
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {work}"))?;
    crate::fsutil::set_tree_mtimes(out, op.epoch)?;
    Ok(())
}

/// The ISO step. xorriso writes the ISO's head (file system, ESP) first,
/// with a stand-in for the payload's sha256 in the files that name it
/// (the same length), which fixes where the payload starts; the payload
/// compresses straight into the ISO from there on zstd's worker threads
/// (its first bytes wait in the writer's queue until the head is written).
/// Then xorriso writes the head again with the real sha256, which replaces
/// the first one byte for byte, the payload becomes a GPT partition
/// ([`add_payload_partition`]) and the ISO is flushed and hashed. xorriso
/// never copies the payload, and nothing copies it twice.
fn build(op: &Installer, out: &Utf8Path) -> Result<()> {
    let tree = out.join("tree");
    for d in [&tree.join("kiln"), &tree.join("boot/grub")] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {d}"))?;
    }
    let layout_path = op.disk_dir.join(crate::qcow2::disk::LAYOUT_JSON);
    let layout: Layout = serde_json::from_slice(
        &std::fs::read(&layout_path).with_context(|| format!("reading {layout_path}"))?,
    )
    .with_context(|| format!("{layout_path}: the disk step's layout"))?;
    for (from, to) in [
        (VMLINUZ, "kiln/vmlinuz"),
        (INITRD, "kiln/initrd.img"),
        (ELTORITO, "boot/grub/eltorito.img"),
    ] {
        let (from, to) = (op.boot_dir.join(from), tree.join(to));
        std::fs::copy(&from, &to).with_context(|| format!("copying {from} to {to}"))?;
    }
    let raw = op.disk_dir.join(crate::qcow2::disk::DISK_RAW);
    let stand_in = Payload {
        bytes: layout.size,
        zst_bytes: 0,
        sha256: "0".repeat(64),
    };
    let iso = out.join(&op.artifact);
    let head = out.join(HEAD);
    let xorriso = |to: &Utf8Path| {
        tools::run(&xorriso::installer_iso(
            &tree,
            &op.boot_dir.join(ESP),
            &volid(&op.name),
            to,
            op.epoch,
        ))
    };
    crate::fsutil::written_back_while(&iso, || {
        write_menu(op, &layout, &stand_in, &tree)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::fs::File>(1);
        let (start, payload) = std::thread::scope(|s| {
            let iso = &iso;
            let xorriso = &xorriso;
            let first = s.spawn(move || -> Result<u64> {
                use std::io::{Seek, SeekFrom};
                xorriso(iso)?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(iso)
                    .with_context(|| format!("opening {iso}"))?;
                let start = f.seek(SeekFrom::End(0))?;
                ensure!(
                    start.is_multiple_of(BLOCK),
                    "{iso}: xorriso wrote {start} bytes, not whole {BLOCK}-byte blocks"
                );
                // A compression that stopped early reports its own error.
                let _ = tx.send(f);
                Ok(start)
            });
            let payload = compress_into(&raw, Deferred::File(rx))
                .with_context(|| format!("compressing {raw} into {iso}"));
            let start = first
                .join()
                .map_err(|_| anyhow::anyhow!("the xorriso thread panicked"))?;
            // xorriso's error first: the compression only saw it as a closed channel.
            Ok::<_, anyhow::Error>((start?, payload?))
        })?;
        ensure!(
            payload.bytes == layout.size,
            "kiln bug: {raw} is {} bytes, its layout says {}",
            payload.bytes,
            layout.size
        );
        write_menu(op, &layout, &payload, &tree)?;
        xorriso(&head)?;
        let written = std::fs::read(&head).with_context(|| format!("reading {head}"))?;
        ensure!(
            written.len() as u64 == start,
            "kiln bug: xorriso's image is {} bytes with the payload's sha256, {start} with its stand-in",
            written.len()
        );
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&iso)
                .with_context(|| format!("opening {iso}"))?;
            f.write_all_at(&written, 0)
                .with_context(|| format!("writing xorriso's image into {iso}"))?;
        }
        add_payload_partition(&iso, start, payload.zst_bytes, op.epoch)
    })?;
    std::fs::remove_dir_all(&tree).with_context(|| format!("removing {tree}"))?;
    std::fs::remove_file(&head).with_context(|| format!("removing {head}"))?;
    crate::exec::flush_and_digest(&iso)?;
    Ok(())
}

/// The files of the ISO that name the payload: its sha256 (for `sha256sum
/// -c`), `kiln/info` and GRUB's menu. Their lengths do not depend on the
/// sha256's value, so a stand-in lays out the same image.
fn write_menu(op: &Installer, layout: &Layout, payload: &Payload, tree: &Utf8Path) -> Result<()> {
    let files = [
        (
            PAYLOAD_SHA256,
            crate::digest::sha256sum_line(&payload.sha256, PAYLOAD_NAME),
        ),
        (
            "kiln/info",
            format!(
                "{} {} installer (kiln)\nimage {} bytes; payload: partition {PAYLOAD_NAME}, sha256 {}\n",
                op.name, op.version, payload.bytes, payload.sha256
            ),
        ),
        ("boot/grub/grub.cfg", grub_cfg(op, layout, payload)),
    ];
    for (name, text) in files {
        let p = tree.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {p}"))?;
    }
    crate::fsutil::set_tree_mtimes(tree, op.epoch)
}

/// A writer whose file comes later: the first write waits for it.
enum Deferred {
    File(std::sync::mpsc::Receiver<std::fs::File>),
    Ready(std::fs::File),
}

impl Write for Deferred {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Deferred::File(rx) = self {
            let f = rx
                .recv()
                .map_err(|_| std::io::Error::other("the ISO's head was not written"))?;
            *self = Deferred::Ready(f);
        }
        match self {
            Deferred::Ready(f) => f.write(buf),
            Deferred::File(_) => unreachable!("set above"),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Deferred::Ready(f) => f.flush(),
            Deferred::File(_) => Ok(()),
        }
    }
}

/// Make the `len` bytes at `start` of `iso` (past xorriso's image, whole
/// CD blocks) a GPT partition of [`PAYLOAD_TYPE`], the backup GPT after
/// it. The partition is outside the ISO 9660 file system, like the ESP
/// xorriso appends.
pub fn add_payload_partition(iso: &Utf8Path, start: u64, len: u64, epoch: i64) -> Result<()> {
    use crate::qcow2::gpt::{self, Guid, SECTOR};
    ensure!(
        start.is_multiple_of(BLOCK) && len.is_multiple_of(BLOCK) && len > 0,
        "kiln bug: the payload at {start} ({len} bytes) is not in whole {BLOCK}-byte blocks"
    );
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(iso)
        .with_context(|| format!("opening {iso}"))?;
    let part = gpt::Partition {
        type_guid: Guid::parse(PAYLOAD_TYPE)?,
        guid: Guid(crate::epoch::derived_id(
            epoch,
            "installer payload partition",
        )),
        first_lba: start / SECTOR,
        last_lba: (start + len) / SECTOR - 1,
        name: PAYLOAD_NAME.into(),
        attributes: 0,
    };
    gpt::add_partition(&f, &part, BLOCK)
        .with_context(|| format!("{iso}: adding the payload to xorriso's GPT"))?;
    Ok(())
}

/// Compress `raw` into `to` (zstd, all cores, with the frame's content
/// checksum, by which the installer's `zstd -d` verifies every byte it
/// writes), padded to whole CD blocks ([`skippable_padding`]). The sha256
/// of what is written, as `sha256sum -c` checks the payload saved from its
/// partition (`disk.img.zst.sha256`), is taken on the writer's thread
/// ([`crate::digest::BackgroundWriter`]) while zstd's workers compress: it
/// names the image on the installer's command line, by which the installer
/// knows its medium.
pub fn compress_into<W: Write + Send + 'static>(raw: &Utf8Path, to: W) -> Result<Payload> {
    let w = crate::digest::BackgroundWriter::new(to).context("starting the writer thread")?;
    let w = Counting { inner: w, n: 0 };
    let (bytes, mut w) = crate::archive::zstd_file(raw, w, ZSTD_LEVEL, "compress the disk")?;
    w.write_all(&skippable_padding(w.n))?;
    let (_, sha256, zst_bytes) = w.inner.finish()?;
    Ok(Payload {
        bytes,
        zst_bytes,
        sha256,
    })
}

/// A zstd skippable frame that pads a stream of `n` bytes to whole CD
/// blocks (at least its 8-byte header, so up to one block more): `zstd -d`
/// and every zstd reader skip it, so the payload partition, padding and
/// all, is one valid stream and its sha256 is the partition's.
fn skippable_padding(n: u64) -> Vec<u8> {
    let mut pad = (n.next_multiple_of(BLOCK) - n) as usize;
    if pad < 8 {
        pad += BLOCK as usize;
    }
    let mut v = vec![0u8; pad];
    v[..4].copy_from_slice(&0x184d_2a50u32.to_le_bytes());
    v[4..8].copy_from_slice(&((pad - 8) as u32).to_le_bytes());
    v
}

/// A writer that counts what passes through it.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Files by name, in order: (file name, bytes).
type Files = Vec<(String, Vec<u8>)>;

/// The appliance root's kernel (bytes) and the installer's modules,
/// dependencies first: one pass over the root for the kernel and the
/// module tables, one for the modules they name.
fn kernel_and_modules(rootfs_tar: &Utf8Path) -> Result<(Vec<u8>, Files)> {
    let mut found = crate::qcow2::merge::read_from_rootfs(rootfs_tar, |p| {
        p.starts_with("boot/vmlinuz-")
            || p.strip_prefix("lib/modules/").is_some_and(|r| {
                r.split_once('/')
                    .is_some_and(|(_, f)| f == "modules.dep" || f == "modules.builtin")
            })
    })?;
    let kernel_path = found
        .keys()
        .filter(|p| p.starts_with("boot/vmlinuz-"))
        .max()
        .cloned()
        .with_context(|| {
            format!("{rootfs_tar}: no /boot/vmlinuz-*: is a linux-image package installed?")
        })?;
    let kernel = found.remove(&kernel_path).unwrap_or_default();
    let release = &kernel_path["boot/vmlinuz-".len()..];
    let moddir = format!("lib/modules/{release}/");
    let text = |f: &str| {
        String::from_utf8_lossy(found.get(&format!("{moddir}{f}")).map_or(&[][..], |v| v))
            .into_owned()
    };
    let deps = ModuleDeps::parse(&text("modules.dep"), &text("modules.builtin"))
        .with_context(|| format!("{rootfs_tar}: /usr/{moddir}modules.dep"))?;
    let order = deps
        .closure(&["isofs"], MODULES)
        .with_context(|| format!("kernel {release}"))?;
    let wanted: std::collections::BTreeSet<String> =
        order.iter().map(|m| format!("{moddir}{m}")).collect();
    let mut files = crate::qcow2::merge::read_from_rootfs(rootfs_tar, |p| wanted.contains(p))?;
    let mut v = Vec::new();
    for m in &order {
        let data = files
            .remove(&format!("{moddir}{m}"))
            .with_context(|| format!("module {m} was not read from {rootfs_tar}"))?;
        if !m.ends_with(".ko") {
            bail!("module {m} is compressed; the installer loads plain .ko files (busybox insmod)");
        }
        let f = m.rsplit('/').next().unwrap_or(m).to_string();
        v.push((f, data));
    }
    Ok((kernel, v))
}

/// An entry of the tools tarball the initramfs takes.
enum ToolEntry {
    File(Vec<u8>, u32),
    Link(String),
}

/// busybox, zstd, sfdisk, eject and every shared library of the extract step
/// (the packages' dependency closure), by path in the initramfs.
fn tool_files(tar: &Utf8Path) -> Result<BTreeMap<String, ToolEntry>> {
    let mut found = BTreeMap::new();
    let mut ar = crate::archive::open_tar(tar)?;
    for entry in ar.entries().with_context(|| format!("reading {tar}"))? {
        let mut entry = entry.with_context(|| format!("reading {tar}"))?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let rel = raw.trim_start_matches("./");
        let rel = rel.strip_prefix("usr/").unwrap_or(rel);
        let dest = match rel {
            "bin/busybox" | "bin/zstd" | "sbin/sfdisk" | "bin/eject" => {
                format!("bin/{}", rel.rsplit('/').next().unwrap_or(rel))
            }
            r if r.starts_with("lib64/") => r.to_string(),
            r if r
                .strip_prefix("lib/x86_64-linux-gnu/")
                .is_some_and(|f| !f.contains('/') && f.contains(".so")) =>
            {
                r.to_string()
            }
            _ => continue,
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            let target = entry
                .link_name()?
                .with_context(|| format!("{tar}: /{rel}: a link without a target"))?
                .to_string_lossy()
                .into_owned();
            found.insert(dest, ToolEntry::Link(target));
        } else if kind.is_file() {
            let mode = entry.header().mode()? & 0o7777;
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut data)
                .with_context(|| format!("reading /{rel} from {tar}"))?;
            found.insert(dest, ToolEntry::File(data, mode));
        }
    }
    for need in ["bin/busybox", "bin/zstd", "bin/sfdisk", "bin/eject"] {
        ensure!(
            found.contains_key(need),
            "{tar}: no /{need} (the packages {} should provide it)",
            TOOL_PACKAGES.join(", ")
        );
    }
    Ok(found)
}

/// The gzip-compressed initramfs: the tools, the modules and `/init`.
fn initramfs(op: &BootParts, modules: Files) -> Result<Vec<u8>> {
    let tools = tool_files(&op.tools_tar)?;
    let mut c = Cpio::new(op.epoch);
    let mut dirs: std::collections::BTreeSet<String> = [
        "bin",
        "dev",
        "lib",
        "lib/modules",
        "media",
        "proc",
        "run",
        "sys",
        "tmp",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for p in tools.keys() {
        let mut d = Utf8Path::new(p).parent();
        while let Some(x) = d.filter(|x| !x.as_str().is_empty()) {
            dirs.insert(x.to_string());
            d = x.parent();
        }
    }
    for d in &dirs {
        c.dir(d);
    }
    c.char_node("dev/console", 5, 1);
    for (p, e) in &tools {
        match e {
            ToolEntry::File(data, mode) => c.file(p, *mode, data),
            ToolEntry::Link(t) => c.symlink(p, t),
        }
    }
    let names: Vec<String> = modules.iter().map(|(f, _)| f.clone()).collect();
    for (f, data) in &modules {
        c.file(&format!("lib/modules/{f}"), 0o644, data);
    }
    c.file("init", 0o755, init_script(&names).as_bytes());
    let cpio = c.finish();
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(&cpio)?;
    Ok(gz.finish()?)
}

/// The installer's kernel command line (console on the serial port; the
/// installer also prints to the screen).
const KERNEL_ARGS: &str = "console=ttyS0,115200n8";

/// Built into both GRUB images: find the medium (by a file only the
/// installer ISO has) and take `/boot/grub/grub.cfg` from it; GRUB's normal
/// mode then reads the menu from that prefix.
const EARLY_CFG: &str = "serial --unit=0 --speed=115200\n\
                         terminal_input serial console\n\
                         terminal_output serial console\n\
                         search --no-floppy --file --set=root /kiln/disk.img.zst.sha256\n\
                         set prefix=($root)/boot/grub\n";

/// GRUB's menu (`/boot/grub/grub.cfg`): install (default, after `timeout`), boot the installed
/// system (the default instead when a disk already holds this appliance's
/// root), a rescue shell. The install entry tells the installer what it
/// installs on the kernel command line ([`image_args`]).
fn grub_cfg(op: &Installer, layout: &Layout, payload: &Payload) -> String {
    let uuid = &layout.root_fs_uuid;
    let named = named_args(op);
    format!(
        "# Written by kiln: the {name} {version} installer.\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout={timeout}\n\
         set default=install\n\
         search --no-floppy --fs-uuid --set=installed {uuid}\n\
         if [ -n \"$installed\" ]; then set default=installed; fi\n\
         search --no-floppy --file --set=root /kiln/disk.img.zst.sha256\n\
         menuentry '{title}' --id install {{\n\
         \x20 linux /kiln/vmlinuz {KERNEL_ARGS} kiln.action=install {image}\n\
         \x20 initrd /kiln/initrd.img\n\
         }}\n\
         menuentry 'Boot installed system' --id installed {{\n\
         \x20 search --no-floppy --fs-uuid --set=root {uuid}\n\
         \x20 linux /vmlinuz {cmdline}\n\
         \x20 initrd /initrd.img\n\
         }}\n\
         menuentry 'Rescue shell' --id rescue {{\n\
         \x20 linux /kiln/vmlinuz {KERNEL_ARGS} kiln.action=rescue {named}\n\
         \x20 initrd /kiln/initrd.img\n\
         }}\n",
        name = op.name,
        version = op.version,
        timeout = op.timeout,
        title = op.title.replace('\'', ""),
        image = image_args(op, payload),
        cmdline = layout.cmdline,
    )
}

/// The appliance's name and version for the installer's messages.
fn named_args(op: &Installer) -> String {
    format!("kiln.name={} kiln.version={}", op.name, op.version)
}

/// The install entry's kernel arguments: the appliance's name and version,
/// the sha256 of `disk.img.zst` (by which the installer knows its medium),
/// the raw image's size,
/// and `kiln.wipe=1` when the recipe sets `iso.wipe`.
fn image_args(op: &Installer, payload: &Payload) -> String {
    let mut a = format!(
        "{} kiln.image={} kiln.bytes={}",
        named_args(op),
        payload.sha256,
        payload.bytes
    );
    if op.wipe {
        a.push_str(" kiln.wipe=1");
    }
    a
}

/// The installer's part that finds the payload on `/dev/$medium` (the
/// medium's whole disk): the GPT entry of [`PAYLOAD_TYPE`] (`$PAYLOAD_TYPE`,
/// its bytes on disk in hex), read by offset, since a CD has no partition
/// devices. GPT header: entry LBA at byte 72, entry count at 80, entry size
/// at 84; entry: first and last LBA at byte 32. Defines `payload`, which
/// writes the partition's bytes to stdout. Needs `say` and `stop`.
pub const FIND_PAYLOAD: &str = "\
[ \"$(dd if=\"/dev/$medium\" bs=512 skip=1 count=1 2>/dev/null | head -c 8)\" = 'EFI PART' ] || stop \"/dev/$medium has no GPT, so no payload partition: write the ISO to the stick as it is (dd)\"
set -- $(od -An -tu8 -j 584 -N 8 \"/dev/$medium\") $(od -An -tu4 -j 592 -N 8 \"/dev/$medium\")
elba=$1; n=$2; esz=$3; pfirst=; i=0
while [ $i -lt \"$n\" ] && [ $i -lt 128 ]; do
  o=$((elba * 512 + i * esz))
  if [ \"$(od -An -tx1 -j $o -N 16 \"/dev/$medium\" | tr -d ' \\n')\" = \"$PAYLOAD_TYPE\" ]; then
    set -- $(od -An -tu8 -j $((o + 32)) -N 16 \"/dev/$medium\"); pfirst=$1; plast=$2; break
  fi
  i=$((i + 1))
done
[ -n \"$pfirst\" ] || stop \"/dev/$medium has no payload partition in its GPT: not an installer medium written by kiln\"
say \"payload: partition $((i + 1)) of /dev/$medium, $(( (plast - pfirst + 1) * 512 )) bytes\"
payload() { dd if=\"/dev/$medium\" bs=1M iflag=skip_bytes,count_bytes,fullblock skip=$((pfirst * 512)) count=$(( (plast - pfirst + 1) * 512 )) 2>/dev/null; }
";

/// The installer, a busybox sh script run as `/init`, the same for every
/// appliance and payload: what it installs comes on the kernel command line
/// (GRUB's install entry, [`image_args`]): `kiln.name=`, `kiln.version=`,
/// `kiln.image=` (the sha256 of the payload), `kiln.bytes=` (the raw
/// image's size).
///
/// 1. finds the install medium (the ISO 9660 file system whose
///    `/kiln/disk.img.zst.sha256` names `kiln.image`) on any block device,
///    and the payload partition in the medium's GPT by its type
///    ([`PAYLOAD_TYPE`]);
/// 2. picks the target: `kiln.disk=` (`vda` or `/dev/vda`), else the first
///    disk that is not the medium, not removable, not read-only and at
///    least the image's size;
/// 3. refuses a disk with partitions or a partition table unless
///    `kiln.wipe=1` (the recipe's `iso.wipe` puts it in the menu);
/// 4. clears the disk's first and last MiB, streams the image onto it
///    from the second MiB on (the payload partition's bytes by offset →
///    zstd → dd), printing progress; zstd checks
///    the frame's content checksum (XXH64 of every decompressed byte, see
///    [`compress_into`]) and fails on any difference. A SHA-256 of the stream
///    in the guest would cost minutes under TCG for the same guarantee
///    against a damaged medium;
/// 5. only then writes the first MiB (the partition table), moves the
///    GPT's backup header to the disk's end (`sfdisk --relocate`), syncs,
///    ejects the medium (a CD's tray opens; a firmware that boots the
///    medium first then starts the installed disk) and reboots
///    (`kiln.done=poweroff` powers off).
///
/// On any failure it prints [`FAIL_MARKER`] and the reason and stops at a
/// shell (`kiln.fail=poweroff` powers off): the partition table is
/// written last, so a failed install never leaves a bootable disk.
/// `modules` are the files under `/lib/modules/`, in load order.
pub fn init_script(modules: &[String]) -> String {
    let mut o = String::new();
    o.push_str(
        "#!/bin/busybox sh\n\
         # kiln's installer: writes an appliance's disk onto a target disk.\n\
         /bin/busybox mkdir -p /proc /sys /dev /run /tmp /media\n\
         /bin/busybox mount -t proc proc /proc\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         NAME=appliance; VERSION=; IMAGE_BYTES=; IMAGE_SHA256=\n\
         WIPE=0; DISK=; ACTION=install; DONE=reboot; FAIL=shell\n",
    );
    // The payload partition's type as its 16 bytes on disk, in hex (as `od -tx1` prints them).
    let payload_type = crate::qcow2::gpt::Guid::parse(PAYLOAD_TYPE)
        .map(|g| hex::encode(g.to_disk()))
        .unwrap_or_default();
    o.push_str(&format!("PAYLOAD_TYPE={payload_type}\n"));
    o.push_str(
        "say() { echo \"kiln-installer: $*\" > /dev/console; echo \"kiln-installer: $*\" > /dev/tty0 2>/dev/null; }\n\
         shell() { while :; do setsid cttyhack sh || sh; done; }\n\
         stop() {\n\
         \x20 say \"FAILED: $*\"\n\
         \x20 say \"nothing was made bootable and nothing reboots\"\n\
         \x20 [ -n \"$pp\" ] && kill \"$pp\" 2>/dev/null\n\
         \x20 sync\n\
         \x20 if [ \"$FAIL\" = poweroff ]; then poweroff -f; fi\n\
         \x20 say \"a shell follows (kiln.fail=poweroff powers off instead)\"\n\
         \x20 shell\n\
         }\n",
    );
    for m in modules {
        o.push_str(&format!("insmod /lib/modules/{m} 2>/dev/null\n"));
    }
    o.push_str(
        "for a in $(cat /proc/cmdline); do\n\
         \x20 case \"$a\" in\n\
         \x20   kiln.name=*) NAME=\"${a#kiln.name=}\" ;;\n\
         \x20   kiln.version=*) VERSION=\"${a#kiln.version=}\" ;;\n\
         \x20   kiln.image=*) IMAGE_SHA256=\"${a#kiln.image=}\" ;;\n\
         \x20   kiln.bytes=*) IMAGE_BYTES=\"${a#kiln.bytes=}\" ;;\n\
         \x20   kiln.disk=*) DISK=\"${a#kiln.disk=}\"; DISK=\"${DISK#/dev/}\" ;;\n\
         \x20   kiln.wipe=*) WIPE=\"${a#kiln.wipe=}\" ;;\n\
         \x20   kiln.action=*) ACTION=\"${a#kiln.action=}\" ;;\n\
         \x20   kiln.done=*) DONE=\"${a#kiln.done=}\" ;;\n\
         \x20   kiln.fail=*) FAIL=\"${a#kiln.fail=}\" ;;\n\
         \x20 esac\n\
         done\n\
         if [ \"$ACTION\" = rescue ]; then say \"rescue shell ($NAME $VERSION installer)\"; shell; fi\n\
         case \"$IMAGE_BYTES\" in ''|*[!0-9]*) stop \"the kernel command line gives no image size (kiln.bytes=$IMAGE_BYTES): boot the ISO's install entry\" ;; esac\n\
         [ ${#IMAGE_SHA256} -eq 64 ] || stop \"the kernel command line names no image (kiln.image=$IMAGE_SHA256): boot the ISO's install entry\"\n\
         say \"$NAME $VERSION: looking for the install medium\"\n\
         medium=; i=0\n\
         while [ -z \"$medium\" ]; do\n\
         \x20 for p in /sys/class/block/*; do\n\
         \x20   d=${p##*/}\n\
         \x20   case \"$d\" in loop*|ram*|zram*) continue ;; esac\n\
         \x20   if mount -t iso9660 -o ro \"/dev/$d\" /media 2>/dev/null; then\n\
         \x20     if [ -f /media/kiln/disk.img.zst.sha256 ] && [ \"$(cut -d' ' -f1 /media/kiln/disk.img.zst.sha256)\" = \"$IMAGE_SHA256\" ]; then\n\
         \x20       medium=$d; break\n\
         \x20     fi\n\
         \x20     umount /media\n\
         \x20   fi\n\
         \x20 done\n\
         \x20 [ -n \"$medium\" ] && break\n\
         \x20 i=$((i + 1)); [ $i -le 60 ] || stop \"no install medium with /kiln/disk.img.zst.sha256 of this installer found\"\n\
         \x20 sleep 1\n\
         done\n\
         # The medium's whole disk (a USB stick's partition belongs to it).\n\
         if [ -f \"/sys/class/block/$medium/partition\" ]; then medium=$(basename \"$(readlink -f \"/sys/class/block/$medium/..\")\"); fi\n\
         say \"install medium: /dev/$medium\"\n\
",
    );
    o.push_str(FIND_PAYLOAD);
    o.push_str(
        "bytes() { echo $(( $(cat \"/sys/block/$1/size\") * 512 )); }\n\
         if [ -z \"$DISK\" ]; then\n\
         \x20 for p in /sys/block/*; do\n\
         \x20   d=${p##*/}\n\
         \x20   case \"$d\" in loop*|ram*|zram*|sr*|fd*) continue ;; esac\n\
         \x20   [ \"$d\" = \"$medium\" ] && continue\n\
         \x20   [ \"$(cat \"$p/removable\")\" = 1 ] && { say \"skipping /dev/$d: removable\"; continue; }\n\
         \x20   [ \"$(cat \"$p/ro\")\" = 1 ] && { say \"skipping /dev/$d: read-only\"; continue; }\n\
         \x20   if [ \"$(bytes \"$d\")\" -lt \"$IMAGE_BYTES\" ]; then say \"skipping /dev/$d: $(bytes \"$d\") bytes, smaller than the image ($IMAGE_BYTES bytes)\"; continue; fi\n\
         \x20   DISK=$d; break\n\
         \x20 done\n\
         \x20 [ -n \"$DISK\" ] || stop \"no target disk: none is fixed, writable and at least $IMAGE_BYTES bytes (the image's size); kiln.disk= names one\"\n\
         fi\n\
         [ -b \"/dev/$DISK\" ] && [ -d \"/sys/block/$DISK\" ] || stop \"kiln.disk=$DISK is not a disk\"\n\
         [ \"$DISK\" = \"$medium\" ] && stop \"kiln.disk=$DISK is the install medium\"\n\
         size=$(bytes \"$DISK\")\n\
         [ \"$size\" -ge \"$IMAGE_BYTES\" ] || stop \"/dev/$DISK holds $size bytes, smaller than the image ($IMAGE_BYTES bytes)\"\n\
         parts=$(cd \"/sys/block/$DISK\" && ls -d \"$DISK\"* 2>/dev/null)\n\
         sig=$(od -An -tx1 -j510 -N2 \"/dev/$DISK\" | tr -d ' \\n')\n\
         gpt=$(dd if=\"/dev/$DISK\" bs=512 skip=1 count=1 2>/dev/null | head -c 8)\n\
         if [ -n \"$parts\" ] || [ \"$sig\" = 55aa ] || [ \"$gpt\" = 'EFI PART' ]; then\n\
         \x20 [ \"$WIPE\" = 1 ] || stop \"/dev/$DISK holds partitions (${parts:-a partition table}); it was left untouched. Boot with kiln.wipe=1 to overwrite it, or kiln.disk= to pick another disk\"\n\
         \x20 say \"/dev/$DISK holds partitions; overwriting them (wipe)\"\n\
         fi\n\
         say \"installing $NAME $VERSION onto /dev/$DISK ($size bytes): $IMAGE_BYTES bytes\"\n\
         # Nothing bootable until the image is verified: clear the first and last MiB.\n\
         dd if=/dev/zero of=\"/dev/$DISK\" bs=1M count=1 conv=fsync 2>/dev/null || stop \"cannot write /dev/$DISK\"\n\
         dd if=/dev/zero of=\"/dev/$DISK\" bs=512 seek=$((size / 512 - 2048)) count=2048 conv=fsync 2>/dev/null || stop \"cannot write the end of /dev/$DISK\"\n\
         progress() {\n\
         \x20 while sleep 5; do\n\
         \x20   set -- $(cat \"/sys/block/$DISK/stat\")\n\
         \x20   say \"written $(( $7 / 2048 )) MiB of $(( IMAGE_BYTES / 1048576 )) MiB\"\n\
         \x20 done\n\
         }\n\
         progress & pp=$!\n\
         set -o pipefail\n\
         payload | zstd -dcq | { dd of=/tmp/head bs=1M count=1 iflag=fullblock 2>/dev/null && dd of=\"/dev/$DISK\" bs=1M seek=1 iflag=fullblock conv=fsync 2>/dev/null; }\n\
         rc=$?\n\
         set +o pipefail\n\
         kill $pp 2>/dev/null; pp=\n\
         [ $rc -eq 0 ] || stop \"writing the image onto /dev/$DISK failed (status $rc): the payload is damaged or the disk failed\"\n\
         [ \"$(wc -c < /tmp/head)\" -eq 1048576 ] || stop \"the image's first MiB is incomplete\"\n\
         say \"image verified (zstd checksum); writing the partition table\"\n\
         dd if=/tmp/head of=\"/dev/$DISK\" bs=1M count=1 conv=fsync 2>/dev/null || stop \"cannot write the partition table of /dev/$DISK\"\n\
         if ! sfdisk --relocate gpt-bak-std \"/dev/$DISK\" > /tmp/sfdisk.log 2>&1; then\n\
         \x20 cat /tmp/sfdisk.log > /dev/console\n\
         \x20 dd if=/dev/zero of=\"/dev/$DISK\" bs=1M count=1 conv=fsync 2>/dev/null\n\
         \x20 stop \"moving the GPT backup header to the end of /dev/$DISK failed\"\n\
         fi\n\
         sync\n\
         umount /media 2>/dev/null\n\
         if timeout 20 eject \"/dev/$medium\" 2>/tmp/eject.log; then say \"ejected the install medium /dev/$medium\"; else say \"could not eject /dev/$medium ($(cat /tmp/eject.log)): remove it before the disk boots\"; fi\n\
         say \"install complete: $NAME $VERSION on /dev/$DISK\"\n\
         if [ \"$DONE\" = poweroff ]; then poweroff -f; fi\n\
         reboot -f\n",
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules() -> Vec<String> {
        vec!["isofs.ko".into()]
    }

    /// The partition table is written only after zstd's check of the
    /// stream (its status), the medium is ejected after it, and every
    /// failure goes through `stop` (no reboot on that path).
    #[test]
    fn the_partition_table_is_written_after_the_check() {
        let s = init_script(&modules());
        assert!(s.starts_with("#!/bin/busybox sh\n"));
        assert!(s.contains("WIPE=0;"));
        assert!(s.contains("insmod /lib/modules/isofs.ko"));
        // Nothing is installed without the image named on the command line.
        for (arg, var) in [
            ("kiln.name", "NAME"),
            ("kiln.version", "VERSION"),
            ("kiln.image", "IMAGE_SHA256"),
            ("kiln.bytes", "IMAGE_BYTES"),
        ] {
            assert!(
                s.contains(&format!("{arg}=*) {var}=\"${{a#{arg}=}}\" ;;")),
                "{arg}: {s}"
            );
        }
        let named = s.find("[ ${#IMAGE_SHA256} -eq 64 ] || stop").unwrap();
        assert!(named < s.find("looking for the install medium").unwrap());
        let check = s.find("[ $rc -eq 0 ] || stop").unwrap();
        assert!(!s.contains("sha256sum"), "{s}");
        let head = s.find("dd if=/tmp/head").unwrap();
        let reboot = s.rfind("reboot -f").unwrap();
        assert!(check < head && head < reboot, "{s}");
        // The medium is ejected once the disk is complete, before the done
        // line (the smoke stops watching there) and the reboot.
        let eject = s.find("eject \"/dev/$medium\"").unwrap();
        let done = s.find("say \"install complete").unwrap();
        assert!(head < eject && eject < done && done < reboot, "{s}");
        let stop = &s[s.find("stop() {").unwrap()..s.find("\n}\n").unwrap()];
        assert!(!stop.contains("reboot -f"), "{stop}");
        assert!(s.contains(&format!(
            "say \"{}",
            &DONE_MARKER["kiln-installer: ".len()..]
        )));
        assert!(s.contains(&format!(
            "say \"{}",
            &FAIL_MARKER["kiln-installer: ".len()..]
        )));
    }

    /// The script passes shellcheck as POSIX sh where shellcheck exists.
    #[test]
    fn the_installer_script_is_valid_sh() {
        if !crate::testing::require(&["shellcheck"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("init");
        std::fs::write(&p, init_script(&modules())).unwrap();
        let out = std::process::Command::new("shellcheck")
            .args(["-s", "sh", "-S", "error"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    fn installer(wipe: bool) -> Installer {
        Installer {
            disk_dir: "/c/disk".into(),
            boot_dir: "/c/boot".into(),
            name: "demo".into(),
            version: "1.0-3-gabc".into(),
            title: "Install demo 1.0-3-gabc".into(),
            timeout: 5,
            wipe,
            epoch: 0,
            artifact: "demo.iso".into(),
        }
    }

    /// The menu's install entry names what the (generic) initramfs installs;
    /// the recipe's `iso.wipe` becomes `kiln.wipe=1` there, and only there.
    #[test]
    fn the_install_entry_names_the_image() {
        let layout = Layout {
            size: 1 << 30,
            root_fs_uuid: "1234".into(),
            cmdline: "root=UUID=1234 ro".into(),
        };
        let payload = Payload {
            bytes: 1 << 30,
            zst_bytes: 1 << 28,
            sha256: "ab".repeat(32),
        };
        let cfg = grub_cfg(&installer(false), &layout, &payload);
        let install = cfg
            .lines()
            .find(|l| l.contains("kiln.action=install"))
            .unwrap();
        for arg in [
            "kiln.name=demo",
            "kiln.version=1.0-3-gabc",
            &format!("kiln.image={}", "ab".repeat(32)),
            "kiln.bytes=1073741824",
        ] {
            assert!(install.split(' ').any(|w| w == arg), "{arg}: {install}");
        }
        assert!(!cfg.contains("kiln.wipe"), "{cfg}");
        let rescue = cfg
            .lines()
            .find(|l| l.contains("kiln.action=rescue"))
            .unwrap();
        assert!(!rescue.contains("kiln.image"), "{rescue}");
        let wiping = grub_cfg(&installer(true), &layout, &payload);
        assert_eq!(wiping.matches("kiln.wipe=1").count(), 1, "{wiping}");
    }

    /// What GRUB would expand or split is refused at plan time, by name.
    #[test]
    fn command_line_values_are_checked() {
        let f = Utf8Path::new("recipes/demo.yaml");
        command_line_safe("version", "1.2.3+git~x:y_z-1", f).unwrap();
        for bad in ["", "1.0$x", "a'b", "a\"b", "a;b"] {
            let e = command_line_safe("version", bad, f)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("recipes/demo.yaml") && e.contains("letters, digits"),
                "{e}"
            );
        }
    }

    #[test]
    fn volume_ids_are_iso9660_safe() {
        assert_eq!(volid("demo"), "KILN_DEMO");
        assert_eq!(volid("my-app.x"), "KILN_MY_APP_X");
        assert_eq!(volid(&"a".repeat(40)).len(), 32);
    }
}
