//! mmdebstrap: Debian root file systems as a tarball, without root tricks
//! (it runs as root where it is root, in a user namespace otherwise).

use camino::Utf8Path;

use super::Cmd;

/// Where Debian's initramfs-tools installs its entry point (bookworm on).
const UPDATE_INITRAMFS: &str = "/usr/sbin/update-initramfs";

/// `mmdebstrap --variant=apt --arch=ARCH --include=PKGS SUITE OUT MIRRORS...`
/// with `SOURCE_DATE_EPOCH` (byte-identical output for the same inputs).
/// `mirrors` are full `deb …` lines: mmdebstrap does not read the host's apt
/// sources by itself.
///
/// `no_initramfs`: keep initramfs-tools from building an initrd while the
/// packages install (`update-initramfs` diverted to `true`, the diversion
/// removed at the end, so the image's own tool is intact). For a foreign
/// architecture, where mkinitramfs under qemu-user takes ten minutes and
/// more; kiln builds that initrd itself ([`crate::initrd`]).
pub fn rootfs_tar(
    arch: &str,
    suite: &str,
    packages: &[String],
    mirrors: &[String],
    out: &Utf8Path,
    epoch: i64,
    no_initramfs: bool,
) -> Cmd {
    let mut c = Cmd::new(
        "mmdebstrap",
        format!("Debian {suite} root file system for {arch}"),
    )
    .args(["--variant=apt", "--mode=auto", "--format=tar"])
    .arg(format!("--arch={arch}"))
    .arg(format!("--include={}", packages.join(",")))
    // Keep the apt cache and lists out of the image.
    .arg("--skip=output/dev");
    if no_initramfs {
        c = c
            .arg(format!("--essential-hook=chroot \"$1\" dpkg-divert --quiet --local --rename --add {UPDATE_INITRAMFS} && ln -s /bin/true \"$1{UPDATE_INITRAMFS}\""))
            .arg(format!("--customize-hook=rm \"$1{UPDATE_INITRAMFS}\" && chroot \"$1\" dpkg-divert --quiet --local --rename --remove {UPDATE_INITRAMFS}"));
    }
    c = c
        .args([suite, out.as_str()])
        .env("SOURCE_DATE_EPOCH", epoch.to_string());
    for m in mirrors {
        c = c.arg(m);
    }
    c
}

/// A container image's root: `mmdebstrap --variant=VARIANT --mode=auto
/// --format=tar --arch=ARCH --include=PKGS --skip=output/dev SUITE OUT
/// MIRRORS...` with `SOURCE_DATE_EPOCH` (byte-identical output for the same
/// inputs). kiln filters the tarball into the image's layer.
pub fn image_root_tar(
    arch: &str,
    suite: &str,
    variant: &str,
    packages: &[String],
    mirrors: &[String],
    out: &Utf8Path,
    epoch: i64,
) -> Cmd {
    let mut c = Cmd::new(
        "mmdebstrap",
        format!("Debian {suite} container root ({variant}) for {arch}"),
    )
    .arg(format!("--variant={variant}"))
    .args(["--mode=auto", "--format=tar"])
    .arg(format!("--arch={arch}"))
    .arg(format!("--include={}", packages.join(",")))
    .arg("--skip=output/dev")
    .args([suite, out.as_str()])
    .env("SOURCE_DATE_EPOCH", epoch.to_string());
    for m in mirrors {
        c = c.arg(m);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_root_names_its_variant_and_packages() {
        let c = image_root_tar(
            "arm64",
            "bookworm",
            "extract",
            &["busybox-static".into()],
            &["deb http://deb.example/debian bookworm main".into()],
            Utf8Path::new("/w/rootfs.tar"),
            1_700_000_000,
        );
        assert_eq!(
            c.args,
            [
                "--variant=extract",
                "--mode=auto",
                "--format=tar",
                "--arch=arm64",
                "--include=busybox-static",
                "--skip=output/dev",
                "bookworm",
                "/w/rootfs.tar",
                "deb http://deb.example/debian bookworm main",
            ]
        );
        assert_eq!(c.env_pairs(), [("SOURCE_DATE_EPOCH", "1700000000")]);
    }

    /// The root tarball is byte-identical for the same inputs through
    /// `SOURCE_DATE_EPOCH`; mirrors come last, as full `deb` lines.
    #[test]
    fn the_root_tarball_is_pinned_by_the_epoch() {
        let c = rootfs_tar(
            "amd64",
            "bookworm",
            &["systemd".into(), "linux-image-amd64".into()],
            &["deb http://deb.example/debian bookworm main".into()],
            Utf8Path::new("/w/root.tar"),
            1_700_000_000,
            false,
        );
        assert_eq!(c.program, "mmdebstrap");
        assert_eq!(
            c.args,
            [
                "--variant=apt",
                "--mode=auto",
                "--format=tar",
                "--arch=amd64",
                "--include=systemd,linux-image-amd64",
                "--skip=output/dev",
                "bookworm",
                "/w/root.tar",
                "deb http://deb.example/debian bookworm main",
            ]
        );
        let env = c.env_pairs();
        assert_eq!(env, [("SOURCE_DATE_EPOCH", "1700000000")]);
    }
}
