//! `cargo xtask qcow2`.

use anyhow::Result;

use crate::cx::Cx;
use crate::recipe::Arch;

/// Build the appliance disk as qcow2 (from Debian packages, or by customizing a vendor cloud image).
///
/// Build the appliance disk as `output/<name>-<version>-<arch>.qcow2`
/// (+ `.sha256`), after the secret scan passed it.
///
/// With `qcow2.base: packages` (the default) the root file system comes from
/// Debian packages (`mmdebstrap`, mirror from the host's apt sources unless
/// `qcow2.mirror` is set) and the disk is assembled without root tricks,
/// mounts, loop devices or a VM: GPT, an EFI system partition with a unified
/// kernel image (UEFI), GRUB in a BIOS-boot partition (BIOS), ext4 root that
/// grows to fill the disk at first boot. arm64 disks (UEFI only) boot
/// systemd-boot and an initrd kiln writes itself; on an x86-64 host their
/// package scripts run under qemu-user (run as root, kiln installs it and
/// registers it with binfmt_misc first, as it installs every tool a plan
/// needs). Two builds with the same inputs are byte-identical. The Debian
/// root is a cached step: changing only the overlay re-runs the assembly,
/// not mmdebstrap.
///
/// With `qcow2.base: {image: {path|url, sha256}}` a vendor cloud image is
/// verified, resized and customized in one virt-customize run.
///
/// Recipe keys: `qcow2.suite`, `packages`, `mirror`, `size` (e.g. `20G`),
/// `firmware` (uefi|bios|both), `compression` (none|zstd|zlib), `cmdline`,
/// `hostname`, `base`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Architecture [default: every architecture of the recipe].
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
}

pub fn run(cx: &Cx, a: Args) -> Result<()> {
    let r = cx.recipe()?;
    let arches = match a.arch {
        Some(a) => vec![a],
        None => r.recipe.architectures.clone(),
    };
    let make = || {
        let mut plan = cx.plan("qcow2");
        for &arch in &arches {
            crate::qcow2::plan(&r, &mut plan, arch)?;
        }
        Ok(plan)
    };
    let gate = crate::scan::gate(&r);
    cx.execute(make, Some(&gate))?;
    Ok(())
}
