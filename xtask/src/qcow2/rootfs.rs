//! The Debian root file system of builder 1: one cached `mmdebstrap` step,
//! keyed by suite, architecture, packages, mirror lines and epoch only, so
//! changing the overlay never re-runs it.

use anyhow::Result;
use camino::Utf8Path;

use crate::plan::{Input, Plan, StepBuilder, OUT};
use crate::recipe::{Arch, Resolved};

/// The tarball inside the rootfs step's output.
pub const ROOTFS_TAR: &str = "rootfs.tar";

/// `deb …` lines for mmdebstrap from the resolved mirrors (the recipe's, else
/// the build host's apt sources; never a hard-coded host). Fails, naming
/// why, when the build host gave no mirror and the recipe names none.
pub fn mirror_lines(r: &Resolved) -> Result<Vec<String>> {
    let q = &r.recipe.qcow2;
    let suite = &q.suite;
    let main = q.mirror()?;
    let mut lines = vec![
        format!("deb {main} {suite} main"),
        format!("deb {main} {suite}-updates main"),
    ];
    if let Some(s) = &q.security_mirror {
        lines.push(format!("deb {s} {suite}-security main"));
    }
    Ok(lines)
}

/// Add the rootfs step for `arch`; returns its index.
pub fn plan(r: &Resolved, plan: &mut Plan, arch: Arch) -> Result<usize> {
    let q = &r.recipe.qcow2;
    let packages = q.packages_for(arch);
    let mirrors = mirror_lines(r)?;
    let out = Utf8Path::new(OUT).join(ROOTFS_TAR);
    let cmd = crate::tools::mmdebstrap::rootfs_tar(
        arch.debian(),
        &q.suite,
        &packages,
        &mirrors,
        &out,
        r.epoch,
        super::kiln_initrd(arch),
    );
    let mut b = StepBuilder::new(
        format!("qcow2-rootfs-{arch}"),
        format!(
            "Debian {} root file system ({} packages) with mmdebstrap",
            q.suite,
            packages.len()
        ),
    )
    .input(Input::value("suite", &q.suite))
    .input(Input::value("architecture", arch))
    .input(Input::value("packages", packages.join(",")))
    .input(Input::value("mirrors", mirrors.join(" | ")))
    .input(Input::value("SOURCE_DATE_EPOCH", r.epoch))
    .input(Input::value(
        "initramfs",
        if super::kiln_initrd(arch) {
            "kiln"
        } else {
            "debian"
        },
    ))
    .cmd(cmd)
    .long();
    if !crate::tools::binfmt::native(arch) {
        // Package scripts of another architecture run under qemu-user.
        b = b
            .requires(&crate::tools::binfmt::rule_file(arch))
            .requires("arch-test");
    }
    Ok(plan.add(b))
}
