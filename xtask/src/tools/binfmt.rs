//! binfmt_misc: running another architecture's programs through qemu-user,
//! which mmdebstrap needs to build a foreign root file system (an arm64
//! disk on an x86-64 host runs the packages' maintainer scripts).
//!
//! Registration is kernel state, not a package: Debian's qemu-user-binfmt
//! ships the rule in `/usr/lib/binfmt.d/`, and on a host whose PID 1 is not
//! systemd nothing loads it. [`register`] does (as root).

use anyhow::{bail, Context, Result};
use camino::Utf8Path;

use super::Cmd;
use crate::recipe::Arch;

const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// The rule file of qemu-user-binfmt for `arch`.
pub fn rule_file(arch: Arch) -> String {
    format!("/usr/lib/binfmt.d/qemu-{}.conf", arch.uname())
}

/// Programs for `arch` run natively on this host.
pub fn native(arch: Arch) -> bool {
    std::env::consts::ARCH == arch.uname()
}

/// `arch`'s programs run here: natively, or through an enabled
/// binfmt_misc rule.
pub fn can_run(arch: Arch) -> bool {
    native(arch)
        || std::fs::read_to_string(format!("{BINFMT_DIR}/qemu-{}", arch.uname()))
            .is_ok_and(|s| s.lines().next() == Some("enabled"))
}

/// Fail before any work when `arch`'s programs cannot run here.
pub fn require(arch: Arch) -> Result<()> {
    if can_run(arch) {
        return Ok(());
    }
    bail!(
        "building the {arch} root file system runs {arch} programs (package scripts) on this {} \
         host through qemu-user, and binfmt_misc has no enabled qemu-{} rule; run \
         `cargo xtask doctor --target pi --install` as root (installs qemu-user-binfmt and \
         registers {})",
        std::env::consts::ARCH,
        arch.uname(),
        rule_file(arch)
    )
}

fn mount() -> Cmd {
    Cmd::new("mount", "mount the binfmt_misc file system").args([
        "-t",
        "binfmt_misc",
        "binfmt_misc",
        BINFMT_DIR,
    ])
}

/// Register qemu-user for `arch` with the kernel (mounting binfmt_misc
/// first when nothing has). Needs root.
pub fn register(arch: Arch) -> Result<()> {
    if can_run(arch) {
        return Ok(());
    }
    let rule_path = rule_file(arch);
    let rule = std::fs::read_to_string(&rule_path)
        .with_context(|| format!("reading {rule_path} (package qemu-user-binfmt)"))?;
    let register = Utf8Path::new(BINFMT_DIR).join("register");
    if !register.exists() {
        super::run(&mount())?;
    }
    std::fs::write(&register, rule.trim_end())
        .with_context(|| format!("registering {rule_path} with {register} (needs root)"))?;
    if !can_run(arch) {
        bail!(
            "{rule_path} was written to {register} but qemu-{} is not enabled",
            arch.uname()
        );
    }
    crate::ui::info(&format!("registered {rule_path} with binfmt_misc"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_architecture_is_native() {
        let host = if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::Amd64
        };
        assert!(native(host) && can_run(host));
        assert_eq!(
            rule_file(Arch::Arm64),
            "/usr/lib/binfmt.d/qemu-aarch64.conf"
        );
        assert_eq!(
            mount().to_string(),
            "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"
        );
    }
}
