//! `iso:` — the installer ISO: a remastered Ubuntu ISO (`mode: remaster`)
//! or kiln's own offline installer of the appliance's disk (`mode:
//! installer`). (Build: `crate::iso`.)

use anyhow::{bail, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IsoOptions {
    /// `remaster` (an Ubuntu base ISO made into an autoinstall installer) or
    /// `installer` (a hybrid ISO that writes the appliance's disk onto a
    /// target disk) [default: `remaster` when `base` is set, else `installer`].
    #[serde(default)]
    pub mode: Option<IsoMode>,
    /// Installer mode: write onto a target disk that already holds
    /// partitions (otherwise refused unless the kernel argument `kiln.wipe=1`
    /// is given).
    #[serde(default)]
    pub wipe: bool,
    /// The base live-server ISO (overridden by `--base-iso`): `{path, sha256}`
    /// or `{url, sha256}`; a URL is downloaded once into the cache.
    #[serde(default)]
    pub base: Option<Source>,
    /// Title of the remastered ISO's default boot entry [default: `Install
    /// <product>`]. (The offline installer's is `Install <name> <version>`.)
    #[serde(default)]
    pub menu_title: Option<String>,
    /// Boot menu timeout in seconds.
    #[serde(default = "default_timeout")]
    pub timeout: u32,
    /// Directory on the ISO that carries the staged overlay (the installer's
    /// late-commands unpack it from `/cdrom/<overlay_dir>/`).
    #[serde(default = "default_overlay_dir")]
    pub overlay_dir: String,
    /// `tar`: one `overlay.tar.zst` (modes, owners and links exact); `tree`:
    /// the staged tree as files (ISO 9660 Rock Ridge keeps modes and links).
    #[serde(default)]
    pub overlay_format: OverlayFormat,
}

impl Default for IsoOptions {
    fn default() -> Self {
        IsoOptions {
            mode: None,
            wipe: false,
            base: None,
            menu_title: None,
            timeout: default_timeout(),
            overlay_dir: default_overlay_dir(),
            overlay_format: OverlayFormat::default(),
        }
    }
}

fn default_timeout() -> u32 {
    5
}

fn default_overlay_dir() -> String {
    "kiln".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IsoMode {
    Remaster,
    Installer,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OverlayFormat {
    #[default]
    Tar,
    Tree,
}

/// A file kiln does not build: a local path or a URL, always with its sha256.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default)]
    pub path: Option<Utf8PathBuf>,
    #[serde(default)]
    pub url: Option<String>,
    pub sha256: String,
}

/// Top-level ISO directories the overlay must not replace.
const RESERVED: &[&str] = &[
    "boot", "casper", "EFI", "efi", "nocloud", ".disk", "dists", "pool", "install",
];

impl IsoOptions {
    pub fn resolve(&mut self, file: &Utf8Path, appliance: &super::Appliance) -> Result<()> {
        if let Some(b) = &mut self.base {
            b.check(file, "iso.base")?;
            b.sha256 = b.sha256.to_ascii_lowercase();
            if let Some(u) = &b.url {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    bail!("{file}: iso.base.url `{u}` must be an http:// or https:// URL (use `path` for local files)");
                }
            }
        }
        if self.mode.is_none() {
            self.mode = Some(if self.base.is_some() {
                IsoMode::Remaster
            } else {
                IsoMode::Installer
            });
        }
        if self.mode == Some(IsoMode::Installer) && self.base.is_some() {
            bail!("{file}: iso.base is a base ISO to remaster, but iso.mode is `installer` (which needs no base); drop one of them");
        }
        if self.menu_title.is_none() {
            self.menu_title = Some(format!("Install {}", appliance.product()));
        }
        let t = self.menu_title.as_deref().unwrap_or_default();
        if t.trim().is_empty() || t.contains(['\n', '\r']) {
            bail!("{file}: iso.menu_title must be one non-empty line");
        }
        if self.timeout > 3600 {
            bail!(
                "{file}: iso.timeout {} is more than an hour; give seconds",
                self.timeout
            );
        }
        let d = &self.overlay_dir;
        if d.is_empty()
            || d.starts_with('.')
            || !d
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!(
                "{file}: iso.overlay_dir `{d}` must be one directory name of letters, digits, `-`, `_` \
                 (it becomes /cdrom/{d} in the installer)"
            );
        }
        if RESERVED.contains(&d.as_str()) {
            bail!("{file}: iso.overlay_dir `{d}` would collide with the installer's own `/{d}` directory");
        }
        Ok(())
    }

    /// The mode (filled by `resolve`).
    pub fn mode(&self) -> IsoMode {
        self.mode
            .unwrap_or_else(|| panic!("iso.mode is read before Recipe::resolve filled it"))
    }

    /// The menu title (filled by `resolve`).
    pub fn title(&self) -> &str {
        super::filled(&self.menu_title, "iso.menu_title")
    }
}

impl Source {
    pub fn check(&self, file: &Utf8Path, key: &str) -> Result<()> {
        anyhow::ensure!(
            self.path.is_some() != self.url.is_some(),
            "{file}: {key} needs exactly one of `path` or `url`"
        );
        anyhow::ensure!(
            self.sha256.len() == 64 && self.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            "{file}: {key}.sha256 must be 64 hex digits (the sha256 of the file)"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appliance() -> super::super::Appliance {
        yaml_serde::from_str("name: demo\nproduct: Demo Box\nversion: '1.2'\n").unwrap()
    }

    fn resolve(yaml: &str) -> Result<IsoOptions> {
        let mut o: IsoOptions = yaml_serde::from_str(yaml)?;
        o.resolve(Utf8Path::new("r.yaml"), &appliance())?;
        Ok(o)
    }

    #[test]
    fn defaults() {
        let o = resolve("{}").unwrap();
        assert_eq!(o.title(), "Install Demo Box");
        assert_eq!(o.mode(), IsoMode::Installer);
        assert!(!o.wipe);
        assert_eq!(
            (o.timeout, o.overlay_dir.as_str(), o.overlay_format),
            (5, "kiln", OverlayFormat::Tar)
        );
        assert!(o.base.is_none());
    }

    #[test]
    fn base_needs_path_or_url_and_a_sha256() {
        let sha = "A".repeat(64);
        let o = resolve(&format!("base: {{url: 'https://x/u.iso', sha256: {sha}}}")).unwrap();
        assert_eq!(o.mode(), IsoMode::Remaster);
        assert_eq!(o.title(), "Install Demo Box");
        assert!(resolve(&format!(
            "{{mode: installer, base: {{url: 'https://x/u.iso', sha256: {sha}}}}}"
        ))
        .unwrap_err()
        .to_string()
        .contains("iso.mode"));
        assert_eq!(
            resolve("{mode: installer, wipe: true}").unwrap().mode(),
            IsoMode::Installer
        );
        assert!(resolve("mode: netboot").is_err());
        assert_eq!(o.base.unwrap().sha256, "a".repeat(64));
        for bad in [
            format!("base: {{path: a.iso, url: 'https://x', sha256: {sha}}}"),
            "base: {path: a.iso, sha256: abc}".to_string(),
            format!("base: {{url: 'ftp://x/a.iso', sha256: {sha}}}"),
        ] {
            assert!(resolve(&bad).is_err(), "{bad}");
        }
        assert!(resolve("base: {path: a.iso}")
            .unwrap_err()
            .to_string()
            .contains("sha256"));
    }

    #[test]
    fn overlay_dir_and_title_are_checked() {
        assert!(resolve("overlay_dir: casper")
            .unwrap_err()
            .to_string()
            .contains("collide"));
        assert!(resolve("overlay_dir: a/b").is_err());
        assert!(resolve("overlay_dir: ''").is_err());
        assert!(resolve("menu_title: \"a\\nb\"").is_err());
        assert_eq!(
            resolve("overlay_format: tree").unwrap().overlay_format,
            OverlayFormat::Tree
        );
        assert!(resolve("overlay_format: zip").is_err());
        assert!(resolve("bogus: 1").is_err());
    }
}
