//! `seed:` — the autoinstall (ISO) and cloud-init (qcow2, Pi) NoCloud seeds.
//! (Generation and validation: `crate::seed`.)

use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeedOptions {
    #[serde(default)]
    pub autoinstall: Autoinstall,
    #[serde(default)]
    pub cloud_init: CloudInit,
    /// Allow a password / password hash in a seed (a baked credential). Off by default.
    #[serde(default)]
    pub allow_passwords: bool,
}

impl Default for SeedOptions {
    fn default() -> Self {
        SeedOptions {
            autoinstall: Autoinstall::default(),
            cloud_init: CloudInit::default(),
            allow_passwords: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Autoinstall {
    /// A user-supplied `user-data` template (its bytes are shipped; kiln only adds what the recipe requires).
    #[serde(default)]
    pub template: Option<Utf8PathBuf>,
    #[serde(default = "default_interactive")]
    pub interactive_sections: Vec<String>,
    #[serde(default = "default_locale")]
    pub locale: String,
    #[serde(default = "default_keyboard")]
    pub keyboard_layout: String,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default = "yes")]
    pub ssh_install_server: bool,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Curtin storage layout name (`direct`, `lvm`).
    #[serde(default = "default_layout")]
    pub storage_layout: String,
    #[serde(default)]
    pub packages: Vec<String>,
    /// Extra late-commands, run after kiln's own.
    #[serde(default)]
    pub late_commands: Vec<String>,
}

impl Default for Autoinstall {
    fn default() -> Self {
        yaml_serde::from_str("{}").expect("defaults deserialize")
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CloudInit {
    /// A user-supplied `#cloud-config` template for qcow2/Pi seeds.
    #[serde(default)]
    pub template: Option<Utf8PathBuf>,
    /// `local-hostname` in meta-data (default: the appliance name).
    #[serde(default)]
    pub hostname: Option<String>,
    /// A `network-config` file to ship in the seed.
    #[serde(default)]
    pub network_config: Option<Utf8PathBuf>,
}

fn default_interactive() -> Vec<String> {
    vec!["network".into(), "storage".into(), "identity".into()]
}
fn default_locale() -> String {
    "en_US.UTF-8".into()
}
fn default_keyboard() -> String {
    "us".into()
}
fn default_timezone() -> String {
    "Etc/UTC".into()
}
fn default_layout() -> String {
    "direct".into()
}
fn yes() -> bool {
    true
}

impl SeedOptions {
    pub fn resolve(&mut self, _file: &Utf8Path) -> Result<()> {
        Ok(())
    }
}
