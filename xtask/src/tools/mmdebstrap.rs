//! mmdebstrap: Debian root file systems as a tarball, without root tricks
//! (it runs as root where it is root, in a user namespace otherwise).

use camino::Utf8Path;

use super::Cmd;

/// `mmdebstrap --variant=apt --arch=ARCH --include=PKGS SUITE OUT MIRRORS...`
/// with `SOURCE_DATE_EPOCH` (byte-identical output for the same inputs).
/// `mirrors` are full `deb …` lines: mmdebstrap does not read the host's apt
/// sources by itself.
pub fn rootfs_tar(
    arch: &str,
    suite: &str,
    packages: &[String],
    mirrors: &[String],
    out: &Utf8Path,
    epoch: i64,
) -> Cmd {
    let mut c = Cmd::new(
        "mmdebstrap",
        format!("Debian {suite} root file system for {arch}"),
    )
    .args(["--variant=apt", "--mode=auto", "--format=tar"])
    .arg(format!("--arch={arch}"))
    .arg(format!("--include={}", packages.join(",")))
    // Keep the apt cache and lists out of the image.
    .arg("--skip=output/dev")
    .args([suite, out.as_str()])
    .env("SOURCE_DATE_EPOCH", epoch.to_string());
    for m in mirrors {
        c = c.arg(m);
    }
    c
}
