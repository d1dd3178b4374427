//! libguestfs tools: virt-customize, virt-sparsify and guestfish (qcow2
//! builder 2).
//! They start a small appliance VM; KVM hangs on some hosts, so callers pass
//! the backend settings chosen by [`libguestfs_env`].

use camino::Utf8Path;

use super::Cmd;

/// `LIBGUESTFS_BACKEND=direct` and, without a usable KVM, `force_tcg`.
pub fn libguestfs_env(mut c: Cmd, tcg: bool) -> Cmd {
    c = c.env("LIBGUESTFS_BACKEND", "direct");
    if tcg {
        c = c.env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg");
    }
    c
}

/// `virt-customize -a DISK --commands-from-file FILE` (one run for every change).
pub fn customize(disk: &Utf8Path, commands: &Utf8Path, network: bool, tcg: bool) -> Cmd {
    let mut c = Cmd::new("virt-customize", "customize the vendor image")
        .args(["--format", "qcow2", "-a", disk.as_str()])
        .args(["--commands-from-file", commands.as_str()]);
    c = if network {
        c.arg("--network")
    } else {
        c.arg("--no-network")
    };
    libguestfs_env(c, tcg)
}

/// `virt-sparsify --in-place DISK`.
pub fn sparsify_in_place(disk: &Utf8Path, tcg: bool) -> Cmd {
    let c = Cmd::new(
        "virt-sparsify",
        "discard unused blocks of the customized image",
    )
    .args(["--in-place", disk.as_str()]);
    libguestfs_env(c, tcg)
}

/// `guestfish --ro -a DISK -i is-file PATH followsymlinks:true`: prints
/// `true` when the image's operating system has the file `path`.
pub fn has_file(disk: &Utf8Path, path: &str, tcg: bool) -> Cmd {
    let c = Cmd::new(
        "guestfish",
        format!("look for {path} in the customized image"),
    )
    .args(["--ro", "--format=qcow2", "-a", disk.as_str(), "-i"])
    .args(["is-file", path, "followsymlinks:true"]);
    libguestfs_env(c, tcg)
}

/// Fetch a vendor image (`curl -fL`); the caller verifies its sha256.
pub fn download(url: &str, out: &Utf8Path) -> Cmd {
    Cmd::new("curl", format!("download {url}")).args([
        "-fL",
        "--retry",
        "3",
        "--silent",
        "--show-error",
        "-o",
        out.as_str(),
        url,
    ])
}

/// Boot `kernel` under KVM without a root file system: a usable KVM reaches
/// the root-mount panic within seconds; a broken one hangs.
pub fn kvm_probe(kernel: &Utf8Path) -> Cmd {
    Cmd::new("qemu-system-x86_64", "probe whether KVM guests run")
        .args([
            "-accel", "kvm", "-m", "256", "-display", "none", "-serial", "stdio", "-monitor",
            "none",
        ])
        .args(["-no-reboot", "-nodefaults", "-kernel", kernel.as_str()])
        .args(["-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"])
}
