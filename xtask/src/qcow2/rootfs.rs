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
///
/// A root that serves a Raspberry Pi image adds the component that holds
/// `raspi-firmware` (`non-free-firmware` from bookworm on, `non-free` before).
pub fn mirror_lines(r: &Resolved, arch: Arch) -> Result<Vec<String>> {
    suite_lines(r, &r.recipe.qcow2.suite, components(r, arch))
}

/// `deb …` lines for `suite` and `components` from the resolved mirrors:
/// the suite, its `-updates` and, with a security mirror, its `-security`.
/// (A container image from Debian packages asks for `main` of its own suite.)
pub fn suite_lines(r: &Resolved, suite: &str, components: &str) -> Result<Vec<String>> {
    let q = &r.recipe.qcow2;
    let main = q.mirror()?;
    let mut lines = vec![
        format!("deb {main} {suite} {components}"),
        format!("deb {main} {suite}-updates {components}"),
    ];
    if let Some(s) = &q.security_mirror {
        lines.push(format!("deb {s} {suite}-security {components}"));
    }
    Ok(lines)
}

/// The archive components of `arch`'s root.
fn components(r: &Resolved, arch: Arch) -> &'static str {
    match (r.pi_root(arch), r.recipe.qcow2.suite.as_str()) {
        (false, _) => "main",
        (true, "bullseye") => "main non-free",
        (true, _) => "main non-free-firmware",
    }
}

/// The name of `arch`'s root file system step.
pub fn step_name(arch: Arch) -> String {
    format!("qcow2-rootfs-{arch}")
}

/// Add the rootfs step for `arch` (once: a second call returns the same
/// step, so the qcow2 and the Raspberry Pi image share one root); returns
/// its index.
pub fn plan(r: &Resolved, plan: &mut Plan, arch: Arch) -> Result<usize> {
    if let Some(i) = plan.steps.iter().position(|s| s.name == step_name(arch)) {
        return Ok(i);
    }
    let q = &r.recipe.qcow2;
    let packages = r.root_packages(arch);
    let mirrors = mirror_lines(r, arch)?;
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
    let cmd = if packages.iter().any(|p| p == "raspi-firmware") {
        let main = q.mirror()?;
        let advice = format!(
            "raspi-firmware is in Debian's `non-free-firmware` component (`non-free` before \
             bookworm), which kiln asks for in its mirror lines (`deb {main} {} {}`); the mirror \
             {main} does not serve it. Add that component to the mirror, or set `qcow2.mirror` \
             to one that has it",
            q.suite,
            components(r, arch),
        );
        cmd.hint("Unable to locate package raspi-firmware", advice.clone())
            .hint("'raspi-firmware' has no installation candidate", advice)
    } else {
        cmd
    };
    let mut b = StepBuilder::new(
        step_name(arch),
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
