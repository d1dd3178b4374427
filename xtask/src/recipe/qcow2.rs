//! `qcow2:` — options of the qcow2 target. (Build: `crate::qcow2`.)
//!
//! Two builders make the same appliance disk: `base: packages` (default)
//! assembles it from Debian packages with mmdebstrap, no root tricks and no
//! VM; `base: {image: {path|url, sha256}}` customizes a vendor cloud image
//! with virt-customize.

use anyhow::{bail, Result};
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

use super::iso::Source;

/// Packages of the demo appliance's root file system. A `linux-image-<arch>`
/// kernel is added unless the list names a `linux-image-*` package.
pub const DEFAULT_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "initramfs-tools",
    "openssh-server",
    "ca-certificates",
    "e2fsprogs",
    "iproute2",
    // DNS: systemd-networkd learns the servers from DHCP; resolved serves them.
    // (On bullseye it is part of `systemd`; `packages_for` drops it there.)
    "systemd-resolved",
];

/// Suites kiln knows how to lay out mirror lines for (`<suite>`,
/// `<suite>-updates`, `<suite>-security`).
pub const SUITES: &[&str] = &["bullseye", "bookworm", "trixie"];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Qcow2Options {
    /// Where the disk comes from: `packages` (mmdebstrap) or `{image: {path|url, sha256}}`.
    #[serde(default)]
    pub base: Base,
    /// Debian suite of the root file system (builder `packages`).
    #[serde(default = "default_suite")]
    pub suite: String,
    /// Packages to install (builder `packages`: the whole set; builder `image`:
    /// installed on top of the vendor image).
    #[serde(default = "default_packages")]
    pub packages: Vec<String>,
    /// Debian mirror URL (e.g. `http://deb.debian.org/debian`); default: the
    /// build host's apt source for `suite` (filled by `resolve`; left unset
    /// when the host has none, and then a build from packages fails saying so).
    #[serde(default)]
    pub mirror: Option<String>,
    /// Security archive URL; default: with the host's mirror, the host's
    /// `<suite>-security` source (filled by `resolve`); else none.
    #[serde(default)]
    pub security_mirror: Option<String>,
    /// Virtual disk size (`20G`, `1536M`); the root file system grows to fill
    /// it at first boot.
    #[serde(default = "default_size")]
    pub size: String,
    /// Boot firmware the disk supports.
    #[serde(default)]
    pub firmware: Firmware,
    /// qcow2 cluster compression.
    #[serde(default)]
    pub compression: Compression,
    /// Extra kernel command-line arguments (after `root=… ro console=ttyS0,115200n8`).
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// Host name of the appliance (default: the appliance name; filled by `resolve`).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Size in bytes, from `size` (filled by `resolve`).
    #[serde(default, skip_deserializing)]
    pub size_bytes: u64,
    /// Why `resolve` found no mirror on the build host (reported when a
    /// step needs the mirror, not before).
    #[serde(skip)]
    mirror_error: Option<String>,
}

impl Default for Qcow2Options {
    fn default() -> Self {
        Qcow2Options {
            base: Base::default(),
            suite: default_suite(),
            packages: default_packages(),
            mirror: None,
            security_mirror: None,
            size: default_size(),
            firmware: Firmware::default(),
            compression: Compression::default(),
            cmdline: Vec::new(),
            hostname: None,
            size_bytes: 0,
            mirror_error: None,
        }
    }
}

fn default_suite() -> String {
    "bookworm".into()
}
fn default_packages() -> Vec<String> {
    DEFAULT_PACKAGES.iter().map(|s| s.to_string()).collect()
}
fn default_size() -> String {
    "20G".into()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(try_from = "BaseRepr", into = "BaseRepr")]
pub enum Base {
    /// Builder 1: a root file system from Debian packages (mmdebstrap).
    #[default]
    Packages,
    /// Builder 2: customize a vendor cloud image (qcow2 or raw), verified by sha256.
    Image(Source),
}

/// How `base` is written: the word `packages`, or `{image: {…}}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
enum BaseRepr {
    Word(String),
    Image(ImageBase),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ImageBase {
    image: Source,
}

impl TryFrom<BaseRepr> for Base {
    type Error = String;
    fn try_from(r: BaseRepr) -> std::result::Result<Base, String> {
        match r {
            BaseRepr::Word(w) if w == "packages" => Ok(Base::Packages),
            BaseRepr::Word(w) => Err(format!(
                "qcow2.base `{w}`: expected `packages` or `{{image: {{path|url: …, sha256: …}}}}`"
            )),
            BaseRepr::Image(i) => Ok(Base::Image(i.image)),
        }
    }
}

impl From<Base> for BaseRepr {
    fn from(b: Base) -> BaseRepr {
        match b {
            Base::Packages => BaseRepr::Word("packages".into()),
            Base::Image(image) => BaseRepr::Image(ImageBase { image }),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// UEFI only: EFI system partition with a unified kernel image.
    Uefi,
    /// BIOS only: GRUB in a BIOS-boot partition.
    Bios,
    /// Both (the default).
    #[default]
    Both,
}

impl Firmware {
    pub fn uefi(self) -> bool {
        matches!(self, Firmware::Uefi | Firmware::Both)
    }
    pub fn bios(self) -> bool {
        matches!(self, Firmware::Bios | Firmware::Both)
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    #[default]
    Zstd,
    Zlib,
}

impl Qcow2Options {
    /// Check the section and fill its defaults: `hostname` from the appliance
    /// `name`, `mirror` and `security_mirror` from the apt sources under
    /// `etc_apt` (the build host's `/etc/apt`) unless the recipe names a
    /// mirror. A host without a usable source is no error here: the mirror
    /// stays empty and [`Qcow2Options::mirror`] says why when a step needs it.
    pub fn resolve(&mut self, file: &Utf8Path, name: &str, etc_apt: &Utf8Path) -> Result<()> {
        if !SUITES.contains(&self.suite.as_str()) {
            bail!(
                "{file}: qcow2.suite `{}` is not a Debian suite kiln knows (one of: {})",
                self.suite,
                SUITES.join(", ")
            );
        }
        for p in &self.packages {
            if p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.:=~".contains(&b))
            {
                bail!("{file}: qcow2.packages entry `{p}` is not a Debian package name");
            }
        }
        for (key, m) in [
            ("mirror", &mut self.mirror),
            ("security_mirror", &mut self.security_mirror),
        ] {
            if let Some(m) = m {
                if !(m.starts_with("http://")
                    || m.starts_with("https://")
                    || m.starts_with("file:/"))
                {
                    bail!("{file}: qcow2.{key} `{m}` must be an http://, https:// or file:/ URL");
                }
                m.truncate(m.trim_end_matches('/').len());
            }
        }
        self.size_bytes =
            parse_size(&self.size).map_err(|e| anyhow::anyhow!("{file}: qcow2.size: {e}"))?;
        for a in &self.cmdline {
            if a.is_empty() || a.contains(['\n', '"', '\'']) {
                bail!("{file}: qcow2.cmdline entry `{a}` must be one word without quotes");
            }
        }
        if let Some(h) = &self.hostname {
            if h.is_empty()
                || h.len() > 63
                || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                bail!("{file}: qcow2.hostname `{h}` must be 1-63 letters, digits or `-`");
            }
        }
        if let Base::Image(src) = &self.base {
            src.check(file, "qcow2.base.image")?;
        }
        self.hostname.get_or_insert_with(|| name.to_string());
        if self.mirror.is_none() {
            let host = crate::hostapt::sources(etc_apt).and_then(|s| {
                let main = crate::hostapt::debian_mirror(&s, &self.suite)?;
                Ok((main, crate::hostapt::security_mirror(&s, &self.suite)))
            });
            match host {
                Ok((main, security)) => {
                    self.mirror = Some(main);
                    if self.security_mirror.is_none() {
                        self.security_mirror = security;
                    }
                }
                Err(e) => {
                    self.mirror_error = Some(format!("{file}: qcow2.mirror is not set and {e:#}"))
                }
            }
        }
        Ok(())
    }

    /// The host name of the appliance (filled by `resolve`).
    pub fn hostname(&self) -> &str {
        super::filled(&self.hostname, "qcow2.hostname")
    }

    /// The Debian mirror (filled by `resolve`), or why the build host gave none.
    pub fn mirror(&self) -> Result<&str> {
        match (&self.mirror, &self.mirror_error) {
            (Some(m), _) => Ok(m),
            (None, Some(e)) => bail!("{e}"),
            (None, None) => panic!("qcow2.mirror is read before Recipe::resolve filled it"),
        }
    }

    /// The packages with the kernel added when the list has none.
    pub fn packages_for(&self, arch: super::Arch) -> Vec<String> {
        let mut p = self.packages.clone();
        if self.suite == "bullseye" {
            p.retain(|x| x != "systemd-resolved");
        }
        if !p.iter().any(|x| x.starts_with("linux-image-")) {
            p.push(format!("linux-image-{}", arch.debian()));
        }
        if arch == super::Arch::Arm64 {
            // arm64 boots systemd-boot from the ESP and kiln's own initrd,
            // built from the image's static busybox (`crate::initrd`).
            for extra in ["systemd-boot-efi", "busybox-static"] {
                if !p.iter().any(|x| x == extra) {
                    p.push(extra.to_string());
                }
            }
        }
        p
    }
}

/// `20G`, `1536M`, `1T`, `1073741824` (binary units, like qemu-img), rounded
/// up to whole MiB.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("`{s}`: unknown unit `{c}` (use K, M, G or T)"),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("`{s}` is not a size like `20G` or `1536M`"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("`{s}` is too large"))?;
    let mib = 1u64 << 20;
    let bytes = bytes.div_ceil(mib) * mib;
    if bytes < 64 * mib {
        bail!("`{s}` is too small for a bootable disk (at least 64M; the demo needs about 1.5G)");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20G").unwrap(), 20 << 30);
        assert_eq!(parse_size("1536M").unwrap(), 1536 << 20);
        assert_eq!(parse_size("1073741825").unwrap(), (1 << 30) + (1 << 20));
        assert!(parse_size("20X").is_err());
        assert!(parse_size("1M")
            .unwrap_err()
            .to_string()
            .contains("too small"));
    }

    #[test]
    fn base_forms() {
        let o: Qcow2Options = yaml_serde::from_str("base: packages\n").unwrap();
        assert!(matches!(o.base, Base::Packages));
        let o: Qcow2Options = yaml_serde::from_str(&format!(
            "base:\n  image:\n    path: x.qcow2\n    sha256: {}\n",
            "a".repeat(64)
        ))
        .unwrap();
        assert!(matches!(o.base, Base::Image(_)));
        assert!(yaml_serde::from_str::<Qcow2Options>("firmware: efi\n").is_err());
        assert!(yaml_serde::from_str::<Qcow2Options>("base: pkgs\n").is_err());
        let shown = yaml_serde::to_string(&o).unwrap();
        assert!(
            shown.contains("image:") && shown.contains("x.qcow2"),
            "{shown}"
        );
        let mut o = Qcow2Options {
            suite: "bookwrm".into(),
            ..Default::default()
        };
        assert!(o
            .resolve(
                Utf8Path::new("r.yaml"),
                "demo",
                Utf8Path::new("/nonexistent")
            )
            .unwrap_err()
            .to_string()
            .contains("bookwrm"));
    }

    #[test]
    fn hostname_and_mirror_are_filled_from_the_name_and_the_host() {
        let f = Utf8Path::new("r.yaml");
        let host = tempfile::tempdir().unwrap();
        let etc = Utf8Path::from_path(host.path()).unwrap();
        std::fs::write(
            etc.join("sources.list"),
            "deb http://m.example/debian/ bookworm main\n\
             deb http://s.example/debian-security bookworm-security main\n",
        )
        .unwrap();
        let mut o = Qcow2Options::default();
        o.resolve(f, "demo", etc).unwrap();
        assert_eq!(o.hostname(), "demo");
        assert_eq!(o.mirror().unwrap(), "http://m.example/debian");
        assert_eq!(
            o.security_mirror.as_deref(),
            Some("http://s.example/debian-security")
        );
        // The recipe's mirror wins, and brings its own security archive or none.
        let mut o: Qcow2Options =
            yaml_serde::from_str("mirror: http://x.example/debian/\nhostname: box\n").unwrap();
        o.resolve(f, "demo", etc).unwrap();
        assert_eq!(o.mirror().unwrap(), "http://x.example/debian");
        assert_eq!(o.hostname(), "box");
        assert_eq!(o.security_mirror, None);
        // No host sources: resolving succeeds; a step asking for the mirror learns why there is none.
        let bare = tempfile::tempdir().unwrap();
        let mut o = Qcow2Options::default();
        o.resolve(f, "demo", Utf8Path::from_path(bare.path()).unwrap())
            .unwrap();
        assert!(o.mirror.is_none());
        let e = o.mirror().unwrap_err().to_string();
        assert!(
            e.contains("r.yaml: qcow2.mirror is not set") && e.contains("no apt sources"),
            "{e}"
        );
    }

    #[test]
    fn packages_add_the_kernel_and_fit_the_suite() {
        let o = Qcow2Options::default();
        let p = o.packages_for(super::super::Arch::Amd64);
        assert!(p.contains(&"linux-image-amd64".to_string()), "{p:?}");
        assert!(p.contains(&"systemd-resolved".to_string()), "{p:?}");
        // bullseye has no systemd-resolved package (it is inside systemd).
        let o = Qcow2Options {
            suite: "bullseye".into(),
            ..Default::default()
        };
        let p = o.packages_for(super::super::Arch::Arm64);
        assert!(!p.iter().any(|x| x == "systemd-resolved"), "{p:?}");
        assert!(p.contains(&"linux-image-arm64".to_string()), "{p:?}");
        assert!(p.contains(&"systemd-boot-efi".to_string()), "{p:?}");
        assert!(p.contains(&"busybox-static".to_string()), "{p:?}");
        let amd = o.packages_for(super::super::Arch::Amd64);
        assert!(!amd.iter().any(|x| x == "busybox-static"), "{amd:?}");
    }
}
