//! `seed:` — the autoinstall (ISO) and cloud-init (qcow2, Pi) NoCloud seeds.
//! (Generation and validation: `crate::seed`.)
//!
//! Autoinstall settings are optional in the recipe as written. Without a
//! `template`, `resolve` fills Ubuntu-server defaults (so `recipe show`
//! prints exactly what kiln writes): an unattended install (no interactive
//! sections), the admin account created by cloud-init on the installed
//! system (locked password, the recipe's SSH keys), DHCP on every wired
//! interface, the `direct` layout on the largest disk. With a template, only
//! the settings the recipe names are added to it, next to kiln's own
//! late-commands.

use anyhow::{bail, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeedOptions {
    #[serde(default)]
    pub autoinstall: Autoinstall,
    /// The operator's config carrier of the qcow2, OVA and Pi images. Its
    /// presence in the recipe ([`SeedOptions::has_cloud_init`]) puts
    /// cloud-init into every root file system kiln builds from packages.
    #[serde(default, deserialize_with = "written")]
    pub cloud_init: CloudInit,
    /// Allow a password / password hash in a seed (a baked credential). Off by default:
    /// a hash in user-data ends up in the installed image and in every copy of the seed.
    #[serde(default)]
    pub allow_passwords: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Autoinstall {
    /// A user-supplied `user-data` template (its bytes are shipped; kiln only adds
    /// what the recipe requires and never reorders or rewrites its keys).
    #[serde(default)]
    pub template: Option<Utf8PathBuf>,
    /// Installer screens that stop for the operator (default: none, the
    /// install runs unattended). With `network` among them kiln writes no
    /// network settings; other sections kiln writes become the screens'
    /// defaults.
    #[serde(default)]
    pub interactive_sections: Option<Vec<String>>,
    /// The appliance's administrator, created by cloud-init at the installed
    /// system's first boot (autoinstall `user-data`): locked password, the
    /// keys of `ssh_authorized_keys`, groups `adm` and `sudo`, sudo without a
    /// password. Default `<appliance name>-admin`.
    #[serde(default)]
    pub admin_user: Option<String>,
    /// Default `en_US.UTF-8`.
    #[serde(default)]
    pub locale: Option<String>,
    /// Default `us`.
    #[serde(default)]
    pub keyboard_layout: Option<String>,
    /// Default `Etc/UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Install the OpenSSH server (default true).
    #[serde(default)]
    pub ssh_install_server: Option<bool>,
    /// Public keys for the admin user (public: allowed in a seed); without
    /// an admin user (a template), for the installer's first user.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Curtin storage layout name (`direct`, `lvm`, `zfs`); default `direct`.
    #[serde(default)]
    pub storage_layout: Option<String>,
    /// Which disk the layout erases and installs to (subiquity's match
    /// spec); default `{size: largest}`.
    #[serde(default)]
    pub storage_match: Option<DiskMatch>,
    /// Extra packages the installer adds.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Extra late-commands (shell lines), run after kiln's own.
    #[serde(default)]
    pub late_commands: Vec<String>,
}

/// A rule picking the target disk (subiquity's match spec). Every key given
/// must match; `size` picks among several matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiskMatch {
    /// `largest` or `smallest` of the disks that match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<DiskSize>,
    /// An SSD (true) or a rotating disk (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssd: Option<bool>,
    /// udev `ID_SERIAL`, globs allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// udev `ID_MODEL`, globs allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// udev `ID_VENDOR`, globs allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Device path (`/dev/sda`, `/dev/nvme*`), globs allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskSize {
    Largest,
    Smallest,
}

impl DiskSize {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskSize::Largest => "largest",
            DiskSize::Smallest => "smallest",
        }
    }
}

/// Installer sections a recipe may make interactive (subiquity's names).
pub const INTERACTIVE_SECTIONS: &[&str] = &[
    "*",
    "locale",
    "refresh-installer",
    "keyboard",
    "source",
    "network",
    "proxy",
    "apt",
    "storage",
    "identity",
    "ubuntu-pro",
    "ssh",
    "snaps",
    "codecs",
    "drivers",
    "timezone",
    "updates",
    "shutdown",
    "active-directory",
    "oem",
    "kernel",
    "packages",
    "debconf-selections",
];

impl Autoinstall {
    /// The recipe makes `section` interactive (directly or with `*`).
    pub fn is_interactive(&self, section: &str) -> bool {
        self.interactive_sections
            .iter()
            .flatten()
            .any(|s| s == section || s == "*")
    }
}

/// A user name `useradd` and subiquity accept.
fn valid_user_name(n: &str) -> bool {
    let mut b = n.bytes();
    n.len() <= 32
        && n != "root"
        && b.next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    /// A user-supplied `#cloud-config` template for qcow2/Pi seeds.
    #[serde(default)]
    pub template: Option<Utf8PathBuf>,
    /// `local-hostname` in meta-data (default: the appliance name; filled by
    /// `resolve`); also the `hostname` the ISO's admin `user-data` sets.
    #[serde(default)]
    pub hostname: Option<String>,
    /// A `network-config` file to ship in the seed (netplan v2 or v1).
    #[serde(default)]
    pub network_config: Option<Utf8PathBuf>,
    /// A file written to `/etc/<name>/provision.env` (mode 0600) at first boot:
    /// the operator's settings, edited on the CIDATA image before attaching it.
    #[serde(default)]
    pub provision_env: Option<Utf8PathBuf>,
    /// Public keys for the default user.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// The recipe has a `seed.cloud_init` section (set while reading it;
    /// an absent section takes the defaults with this false).
    #[serde(skip)]
    pub written: bool,
}

/// `seed.cloud_init` as written in the recipe: marked present.
fn written<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CloudInit, D::Error> {
    let mut c = CloudInit::deserialize(d)?;
    c.written = true;
    Ok(c)
}

impl CloudInit {
    /// `local-hostname` of the seed's meta-data (filled by `resolve`).
    pub fn hostname(&self) -> &str {
        super::filled(&self.hostname, "seed.cloud_init.hostname")
    }
}

impl SeedOptions {
    /// The recipe gives the qcow2, OVA and Pi images a cloud-init seed (a
    /// `seed.cloud_init` section, even `{}`): their roots need cloud-init to
    /// read it.
    pub fn has_cloud_init(&self) -> bool {
        self.cloud_init.written
    }
    /// Check the section and fill its defaults (`name`: the appliance's).
    pub fn resolve(&mut self, file: &Utf8Path, name: &str) -> Result<()> {
        let a = &mut self.autoinstall;
        for (key, list) in [
            ("late_commands", &a.late_commands),
            ("packages", &a.packages),
        ] {
            if let Some(i) = list.iter().position(|s| s.trim().is_empty()) {
                bail!("{file}: seed.autoinstall.{key}[{i}] is empty");
            }
        }
        for (key, keys) in [
            ("autoinstall", &a.ssh_authorized_keys),
            ("cloud_init", &self.cloud_init.ssh_authorized_keys),
        ] {
            for k in keys {
                if !k.starts_with("ssh-") && !k.starts_with("ecdsa-") && !k.starts_with("sk-") {
                    bail!(
                        "{file}: seed.{key}.ssh_authorized_keys: `{}` does not look like an OpenSSH \
                         public key (`ssh-ed25519 AAAA… comment`)",
                        k.chars().take(40).collect::<String>()
                    );
                }
            }
        }
        if let Some(h) = &self.cloud_init.hostname {
            if h.is_empty()
                || h.len() > 63
                || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                bail!("{file}: seed.cloud_init.hostname `{h}` is not a valid host name (letters, digits, `-`)");
            }
        }
        self.cloud_init
            .hostname
            .get_or_insert_with(|| name.to_string());
        for s in a.interactive_sections.iter().flatten() {
            if !INTERACTIVE_SECTIONS.contains(&s.as_str()) {
                bail!(
                    "{file}: seed.autoinstall.interactive_sections: `{s}` is not an installer \
                     section\n    hint: one of {}",
                    INTERACTIVE_SECTIONS.join(", ")
                );
            }
        }
        if let Some(l) = &a.storage_layout {
            if !["direct", "lvm", "zfs"].contains(&l.as_str()) {
                bail!(
                    "{file}: seed.autoinstall.storage_layout: `{l}` is not a layout the installer \
                     knows\n    hint: direct, lvm or zfs"
                );
            }
        }
        if a.storage_match.as_ref() == Some(&DiskMatch::default()) {
            bail!(
                "{file}: seed.autoinstall.storage_match is empty: the installer would erase an \
                 arbitrary disk\n    hint: `size: largest`, or name the disk (serial, model, path)"
            );
        }
        if a.template.is_none() {
            a.interactive_sections.get_or_insert_with(Vec::new);
            a.locale.get_or_insert_with(|| "en_US.UTF-8".into());
            a.keyboard_layout.get_or_insert_with(|| "us".into());
            a.timezone.get_or_insert_with(|| "Etc/UTC".into());
            a.ssh_install_server.get_or_insert(true);
            a.storage_layout.get_or_insert_with(|| "direct".into());
            a.storage_match.get_or_insert_with(|| DiskMatch {
                size: Some(DiskSize::Largest),
                ..DiskMatch::default()
            });
            a.admin_user.get_or_insert_with(|| format!("{name}-admin"));
        }
        if let Some(u) = &a.admin_user {
            if !valid_user_name(u) {
                bail!(
                    "{file}: seed.autoinstall.admin_user `{u}` is not a valid user name\n    hint: \
                     lower-case letters, digits, `_` and `-`, starting with a letter or `_`, at most \
                     32 characters, not root{}",
                    if a.template.is_none() {
                        " (the default is `<appliance name>-admin`; set admin_user)"
                    } else {
                        ""
                    }
                );
            }
        }
        Ok(())
    }
}
