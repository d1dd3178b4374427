//! `seed:` — the autoinstall (ISO) and cloud-init (qcow2, Pi) NoCloud seeds.
//! (Generation and validation: `crate::seed`.)
//!
//! Autoinstall settings are optional in the recipe as written. Without a
//! `template`, `resolve` fills Ubuntu-server defaults (so `recipe show`
//! prints exactly what kiln writes). With a template, only the settings the
//! recipe names are added to it, next to kiln's own late-commands.

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
    /// Installer screens that stop for the operator (default: network, storage, identity).
    #[serde(default)]
    pub interactive_sections: Option<Vec<String>>,
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
    /// Public keys for the first user (public: allowed in a seed).
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Curtin storage layout name (`direct`, `lvm`); default `direct`.
    #[serde(default)]
    pub storage_layout: Option<String>,
    /// Extra packages the installer adds.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Extra late-commands (shell lines), run after kiln's own.
    #[serde(default)]
    pub late_commands: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    /// A user-supplied `#cloud-config` template for qcow2/Pi seeds.
    #[serde(default)]
    pub template: Option<Utf8PathBuf>,
    /// `local-hostname` in meta-data (default: the appliance name; filled by `resolve`).
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
        if a.template.is_none() {
            a.interactive_sections
                .get_or_insert_with(|| vec!["network".into(), "storage".into(), "identity".into()]);
            a.locale.get_or_insert_with(|| "en_US.UTF-8".into());
            a.keyboard_layout.get_or_insert_with(|| "us".into());
            a.timezone.get_or_insert_with(|| "Etc/UTC".into());
            a.ssh_install_server.get_or_insert(true);
            a.storage_layout.get_or_insert_with(|| "direct".into());
        }
        Ok(())
    }
}
