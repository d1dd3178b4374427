//! The qcow2 target: the appliance as a bootable disk. Two builders, chosen
//! by `qcow2.base` in the recipe, make the same kind of disk:
//!
//! - `packages` (default; [`rootfs`] + [`disk`]): mmdebstrap of a Debian
//!   suite (cached step, keyed only by suite/arch/packages/mirror/epoch), the
//!   staged tree merged over it in process, a GPT disk with an EFI system
//!   partition holding a unified kernel image, an optional BIOS-boot
//!   partition with GRUB, and an ext4 root from `mkfs.ext4 -d`. No root
//!   tricks, no mounts, no loop devices, no VM. Byte-reproducible.
//! - `image` ([`customize`]): a vendor cloud image (sha256-verified),
//!   resized and customized with one virt-customize run.
//!
//! Either way the disk is converted with `qemu-img` into
//! `output/<name>-<version>-<arch>.qcow2` (+ `.sha256`).
//!
//! [`plan_disk`] is the seam for other formats (the OVA wraps the same disk).

pub mod customize;
pub mod disk;
pub(crate) mod esp;
pub mod gpt;
pub(crate) mod merge;
pub mod rootfs;
pub mod spec;
mod uki;

use anyhow::{bail, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::plan::{Input, Plan, StepBuilder, OUT};
use crate::recipe::qcow2::{Base, Compression};
use crate::recipe::{Arch, Resolved};
use spec::{DiskSpec, Ids};

/// The appliance disk before its final conversion, for wrapping it in other
/// formats.
#[derive(Debug, Clone)]
pub struct DiskInfo {
    /// The step that produces the disk (run it before reading `path`).
    pub step: usize,
    /// The disk image inside that step's output.
    pub path: Utf8PathBuf,
    /// `raw` (builder 1) or `qcow2` (builder 2), for `qemu-img -f`.
    pub format: &'static str,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Boots with UEFI (an ESP with a UKI).
    pub uefi: bool,
    /// Boots with BIOS (GRUB in a BIOS-boot partition).
    pub bios: bool,
    /// UEFI but not BIOS: the OVA must ask for EFI firmware.
    pub uefi_only: bool,
}

/// arm64 disks boot kiln's own initrd ([`crate::initrd`]): Debian's
/// mkinitramfs would run under qemu-user on an x86-64 host.
pub fn kiln_initrd(arch: Arch) -> bool {
    arch == Arch::Arm64
}

/// A BIOS-boot partition with GRUB: amd64 only (`firmware: both` means
/// UEFI alone on arm64).
fn bios(q: &crate::recipe::qcow2::Qcow2Options, arch: Arch) -> bool {
    q.firmware.bios() && arch == Arch::Amd64
}

fn disk_step_name(arch: Arch) -> String {
    format!("qcow2-disk-{arch}")
}

/// Plan the raw (builder 1) or customized (builder 2) disk for `arch`,
/// including the stage and rootfs steps it needs. Calling it twice on one
/// plan returns the same step.
pub fn plan_disk(r: &Resolved, plan: &mut Plan, arch: Arch) -> Result<DiskInfo> {
    plan_disk_as(r, plan, arch, disk_step_name(arch), false)
}

/// The same disk as [`plan_disk`] (builder 1 only), sized to its content
/// instead of `qcow2.size`: the installer ISO's payload, whose root grows
/// to the target disk at first boot. Its own step (`installer-disk-<arch>`);
/// `virtual_size` is `qcow2.size`, the real size is in its `layout.json`.
pub fn plan_fitted_disk(r: &Resolved, plan: &mut Plan, arch: Arch) -> Result<DiskInfo> {
    if let Base::Image(_) = &r.recipe.qcow2.base {
        bail!(
            "{}: the installer ISO (iso.mode: installer) writes the disk kiln assembles from              Debian packages; qcow2.base is a vendor image. Use `qcow2.base: packages` or              iso.mode: remaster with iso.base",
            r.file
        );
    }
    plan_disk_as(r, plan, arch, format!("installer-disk-{arch}"), true)
}

fn plan_disk_as(
    r: &Resolved,
    plan: &mut Plan,
    arch: Arch,
    name: String,
    fit: bool,
) -> Result<DiskInfo> {
    let q = &r.recipe.qcow2;
    let info = |step: usize, plan: &Plan| -> DiskInfo {
        let (path, format) = match &q.base {
            Base::Packages => (plan.step(step).output(disk::DISK_RAW), "raw"),
            Base::Image(_) => (plan.step(step).output(customize::CUSTOMIZED), "qcow2"),
        };
        DiskInfo {
            step,
            path,
            format,
            virtual_size: q.size_bytes,
            uefi: q.firmware.uefi(),
            bios: bios(q, arch),
            uefi_only: q.firmware.uefi() && !bios(q, arch),
        }
    };
    if let Some(i) = plan.steps.iter().position(|s| s.name == name) {
        return Ok(info(i, plan));
    }
    let stage = crate::stage::plan_or_reuse(r, plan, arch)?;
    let step = match &q.base {
        Base::Packages => {
            if arch == Arch::Arm64 && !q.firmware.uefi() {
                bail!(
                    "{}: qcow2.firmware: bios cannot boot arm64 (there is no BIOS on Arm); \
                     use `firmware: uefi` or `both` (arm64 disks boot with UEFI only)",
                    r.file
                );
            }
            let rootfs = rootfs::plan(r, plan, arch)?;
            let ids = Ids::derive(r.epoch, r.name(), arch);
            let cmdline = DiskSpec::kernel_cmdline(&ids, arch, &q.cmdline);
            let spec = DiskSpec {
                size: q.size_bytes,
                uefi: q.firmware.uefi(),
                bios: bios(q, arch),
                fit,
                ..DiskSpec::root(
                    r,
                    arch,
                    ids,
                    plan.step(rootfs).output(rootfs::ROOTFS_TAR),
                    plan.step(stage).output(crate::stage::TREE),
                    cmdline,
                )
            };
            let boot = match arch {
                Arch::Amd64 => "ESP+UKI, GRUB",
                Arch::Arm64 => "ESP+systemd-boot, kiln initrd",
            };
            let mut b = StepBuilder::new(
                name,
                if fit {
                    format!("assemble the raw disk sized to its content (GPT, {boot}, ext4 root)")
                } else {
                    format!(
                        "assemble the {} MiB raw disk (GPT, {boot}, ext4 root)",
                        q.size_bytes >> 20
                    )
                },
            )
            .after(plan.step(rootfs))
            .after(plan.step(stage));
            // Read by the assembly itself (the stub through objcopy too), and
            // by mkfs.ext4 for its tar input.
            b = b.requires(crate::tools::mke2fs::LIBARCHIVE);
            if spec.uefi && !kiln_initrd(arch) {
                b = b.requires(crate::tools::objcopy::EFI_STUB_X64);
            }
            if spec.bios {
                b = b.requires(crate::tools::grub::BOOT_IMG);
            }
            plan.add(b.op(disk::DiskOp(spec)).long())
        }
        Base::Image(src) => customize::plan(r, plan, arch, src, stage, &name)?,
    };
    Ok(info(step, plan))
}

/// Plan the whole qcow2 build for `arch`: disk, conversion, publication.
/// Returns the conversion step's index.
pub fn plan(r: &Resolved, plan: &mut Plan, arch: Arch) -> Result<usize> {
    let q = &r.recipe.qcow2;
    let disk = plan_disk(r, plan, arch)?;
    let file = r.artifact_name(arch, "qcow2");
    let out = Utf8Path::new(OUT).join(&file);
    let comp = match q.compression {
        Compression::None => None,
        Compression::Zstd => Some("zstd"),
        Compression::Zlib => Some("zlib"),
    };
    let b = StepBuilder::new(
        format!("qcow2-convert-{arch}"),
        format!("convert the disk to {file}"),
    )
    .after(plan.step(disk.step))
    .input(Input::value(
        "compression",
        format!("{:?}", q.compression).to_lowercase(),
    ))
    .cmd(crate::tools::qemu_img::convert_to_qcow2(
        &disk.path,
        disk.format,
        &out,
        comp,
    ))
    .long();
    let i = plan.add(b);
    let from = plan.step(i).output(&file);
    plan.publish(from, file, true);
    Ok(i)
}
