//! apt-get: installs what `doctor --install` found missing.

use super::Cmd;

pub fn update() -> Cmd {
    Cmd::new("apt-get", "refresh the package lists").args(["update", "-q"])
}

/// `apt-get install` of `packages`, from `release` (e.g. `bookworm-backports`) when given.
pub fn install(packages: &[&str], release: Option<&str>) -> Cmd {
    let mut c = Cmd::new("apt-get", "install missing build tools")
        .env("DEBIAN_FRONTEND", "noninteractive")
        // Recommends stay on: qemu's NIC option ROMs and libguestfs' appliance come that way.
        .args(["install", "-y", "-q"]);
    if let Some(r) = release {
        c = c.args(["-t", r]);
    }
    c.args(packages)
}
